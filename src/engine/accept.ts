// The exact acceptance rule of speculative decoding (Leviathan et al. 2023, Chen et al. 2023),
// applied where the target ran: given the target logits for the k + 1 positions of a verify
// block, the draft tokens and their q's, decide how many stand and which target token follows.
// Every verifier (cpu, webgpu, batched) calls this one function; see ARCHITECTURE.md "Exactness".

import { argmax, probOf, processedDist, sample, type SamplingParams, type SparseDist, type Rng } from './sampling.ts';

export class VerifyInputError extends Error {
  override name = 'VerifyInputError';
}

export interface AcceptResult {
  /** Draft tokens that stand, 0..k. */
  accepted: number;
  /** Correction (accepted < k) or bonus (accepted == k). */
  token: number;
}

/**
 * Below this much residual mass, norm(max(0, p − q)) is float noise (p and q equal up to
 * rounding), and the rule falls back to sampling from p. A rejection only happens there with
 * probability equal to that mass, so the fallback changes the output distribution by < 1e-6.
 */
export const RESIDUAL_EPS = 1e-6;

/**
 * logits: (k + 1, vocab) row-major, row i scoring the token after draft[0..i).
 * Greedy (temperature 0): accept while draft[i] == argmax(row i); the token is the argmax at the
 * first mismatch, or of row k (bonus). No RNG draw.
 * Sampled: accept d_i with probability min(1, p(d_i)/q(d_i)) (q(d_i) = 0 or p(d_i) = 0 rejects);
 * at the first rejection sample from norm(max(0, p − q)); if all stand, sample the bonus from p_k.
 */
export function acceptBlock(
  logits: Float32Array,
  vocab: number,
  draft: readonly number[],
  draftDists: readonly SparseDist[] | undefined,
  params: SamplingParams,
  rng: Rng,
): AcceptResult {
  const k = draft.length;
  if (logits.length !== (k + 1) * vocab) {
    throw new VerifyInputError(`acceptBlock: logits hold ${logits.length} values, expected (k + 1) * vocab = ${(k + 1) * vocab}`);
  }
  for (const d of draft) {
    if (!Number.isInteger(d) || d < 0 || d >= vocab) throw new VerifyInputError(`draft token ${d} outside the vocabulary [0, ${vocab})`);
  }
  if (params.temperature === 0) {
    for (let i = 0; i < k; i++) {
      const best = argmax(logits, i * vocab, vocab);
      if (draft[i] !== best) return { accepted: i, token: best };
    }
    return { accepted: k, token: argmax(logits, k * vocab, vocab) };
  }
  // k = 0 (a plain decode step, e.g. a baseline token) needs no q's: only the bonus draw below
  if (k > 0 && (!draftDists || draftDists.length !== k)) {
    throw new VerifyInputError(`sampled verify needs one draft distribution q per draft token: got ${draftDists?.length ?? 0} for k = ${k}`);
  }
  for (let i = 0; i < k; i++) {
    const q = (draftDists as readonly SparseDist[])[i];
    validateDist(q, vocab, i);
    const p = processedDist(logits, params, i * vocab, vocab);
    const pd = probOf(p, draft[i]);
    const qd = probOf(q, draft[i]);
    // u < p/q, written without the division; qd = 0 (a token q could not have drawn) rejects
    const accept = qd > 0 && pd > 0 && (pd >= qd || rng.uniform() * qd < pd);
    if (!accept) return { accepted: i, token: sampleResidual(p, q, rng) };
  }
  return { accepted: k, token: sample(processedDist(logits, params, k * vocab, vocab), rng) };
}

/** A draw from norm(max(0, p − q)); the residual lives on p's support only. */
export function sampleResidual(p: SparseDist, q: SparseDist, rng: Rng): number {
  const qMap = new Map<number, number>();
  for (let i = 0; i < q.ids.length; i++) qMap.set(q.ids[i], q.probs[i]);
  const probs = new Float32Array(p.ids.length);
  let mass = 0;
  for (let i = 0; i < p.ids.length; i++) {
    const r = p.probs[i] - (qMap.get(p.ids[i]) ?? 0);
    if (r > 0) {
      probs[i] = r;
      mass += r;
    }
  }
  if (!(mass > RESIDUAL_EPS)) return sample(p, rng);
  return sample({ ids: p.ids, probs }, rng);
}

function validateDist(q: SparseDist, vocab: number, i: number): void {
  if (!(q.ids instanceof Int32Array) || !(q.probs instanceof Float32Array) || q.ids.length !== q.probs.length || q.ids.length === 0) {
    throw new VerifyInputError(`draft distribution ${i}: expected non-empty Int32Array ids and Float32Array probs of equal length`);
  }
  let sum = 0;
  const seen = new Uint8Array(vocab);
  for (let j = 0; j < q.ids.length; j++) {
    const id = q.ids[j];
    const pr = q.probs[j];
    if (!Number.isInteger(id) || id < 0 || id >= vocab) throw new VerifyInputError(`draft distribution ${i}: id ${id} outside [0, ${vocab})`);
    if (seen[id]++) throw new VerifyInputError(`draft distribution ${i}: id ${id} appears twice`);
    if (!(pr >= 0 && pr <= 1)) throw new VerifyInputError(`draft distribution ${i}: probability ${pr} outside [0, 1]`);
    sum += pr;
  }
  if (Math.abs(sum - 1) > 1e-3) throw new VerifyInputError(`draft distribution ${i}: probabilities sum to ${sum}, expected 1`);
}
