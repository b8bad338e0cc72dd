// Tests of the acceptance rule on hand-built logits: greedy outcomes by construction, the
// sampled rule's output marginals against p by chi-square (and a broken rule caught), edge
// cases (q(d) = 0, d outside p's support, zero residual), and typed errors on bad input.

import { describe, expect, it } from 'vitest';
import { acceptBlock, sampleResidual, VerifyInputError } from './accept.ts';
import { Rng, probOf, processedDist, sample, type SamplingParams, type SparseDist } from './sampling.ts';
import { chiSquareFit } from './stats.ts';
import { mulberry32 } from './weights.ts';

const GREEDY: SamplingParams = { temperature: 0, topK: 0, topP: 1, seed: 0 };
const dist = (ids: number[], probs: number[]): SparseDist => ({ ids: Int32Array.from(ids), probs: Float32Array.from(probs) });
const asMap = (d: SparseDist) => new Map([...d.ids].map((id, i) => [id, d.probs[i]] as [number, number]));

/** (rows, vocab) logits with row r peaked at peaks[r]. */
function peaked(vocab: number, peaks: number[]): Float32Array {
  const l = new Float32Array(peaks.length * vocab);
  peaks.forEach((p, r) => (l[r * vocab + p] = 5));
  return l;
}

describe('acceptBlock, greedy', () => {
  const vocab = 11;
  const rng = new Rng(1, 1);
  it('accepts the matching prefix and returns the argmax at the first mismatch', () => {
    expect(acceptBlock(peaked(vocab, [3, 4, 5]), vocab, [3, 4], undefined, GREEDY, rng)).toEqual({ accepted: 2, token: 5 });
    expect(acceptBlock(peaked(vocab, [3, 4, 5]), vocab, [3, 9], undefined, GREEDY, rng)).toEqual({ accepted: 1, token: 4 });
    expect(acceptBlock(peaked(vocab, [3, 4, 5]), vocab, [0, 4], undefined, GREEDY, rng)).toEqual({ accepted: 0, token: 3 });
    expect(acceptBlock(peaked(vocab, [7]), vocab, [], undefined, GREEDY, rng)).toEqual({ accepted: 0, token: 7 });
  });
  it('breaks ties toward the lowest id, as the draft does', () => {
    const l = new Float32Array(2 * vocab);
    l[6] = l[2] = 1; // row 0: ids 2 and 6 tie
    l[vocab + 8] = 1;
    expect(acceptBlock(l, vocab, [2], undefined, GREEDY, rng)).toEqual({ accepted: 1, token: 8 });
    expect(acceptBlock(l, vocab, [6], undefined, GREEDY, rng)).toEqual({ accepted: 0, token: 2 });
  });
});

describe('acceptBlock, sampled', () => {
  const vocab = 9;
  const params: SamplingParams = { temperature: 1, topK: 0, topP: 1, seed: 0 };
  const r = mulberry32(4);
  // target rows for two positions, and draft q's that overlap them only partly
  const logits = Float32Array.from({ length: 3 * vocab }, () => (r() * 2 - 1) * 2);
  const qs = [0, 1].map((i) => processedDist(Float32Array.from({ length: vocab }, (_, j) => logits[i * vocab + j] + (r() * 2 - 1) * 1.5), params));
  const ps = [0, 1].map((i) => processedDist(logits, params, i * vocab, vocab));

  /** Output token at position pos over many trials; the draft samples from q with its own stream. */
  function outputs(pos: number, trials: number, rule: typeof acceptBlock): Map<number, number> {
    const target = new Rng(100 + pos, 1);
    const draftRng = new Rng(100 + pos, 2);
    const counts = new Map<number, number>();
    let counted = 0;
    while (counted < trials) {
      const draft = qs.map((q) => sample(q, draftRng));
      const { accepted, token } = rule(logits, vocab, draft, qs, params, target);
      const out = [...draft.slice(0, accepted), token];
      if (out.length <= pos) continue; // rows here do not depend on the prefix, so later positions are still ~ p_pos
      counts.set(out[pos], (counts.get(out[pos]) ?? 0) + 1);
      counted++;
    }
    return counts;
  }

  it('emits tokens distributed as p at positions 0 and 1 (chi-square p > 0.01)', () => {
    for (const pos of [0, 1]) {
      const fit = chiSquareFit(outputs(pos, 20_000, acceptBlock), asMap(ps[pos]));
      expect(fit.pValue, `position ${pos}: chi2 ${fit.stat.toFixed(1)} on ${fit.df} df`).toBeGreaterThan(0.01);
    }
  });

  it('has the power to catch a rule that resamples from p instead of max(0, p − q)', () => {
    const broken: typeof acceptBlock = (l, v, draft, dists, p, rng) => {
      for (let i = 0; i < draft.length; i++) {
        const pd = probOf(processedDist(l, p, i * v, v), draft[i]);
        const qd = probOf(dists![i], draft[i]);
        if (!(rng.uniform() * qd < pd)) return { accepted: i, token: sample(processedDist(l, p, i * v, v), rng) };
      }
      return { accepted: draft.length, token: sample(processedDist(l, p, draft.length * v, v), rng) };
    };
    const fit = chiSquareFit(outputs(0, 20_000, broken), asMap(ps[0]));
    expect(fit.pValue).toBeLessThan(0.01);
  });

  it('rejects a draft token q gives probability 0 and one outside p (top-k) support', () => {
    const rng = new Rng(5, 1);
    const topK: SamplingParams = { temperature: 1, topK: 2, topP: 1, seed: 0 };
    const l = peaked(vocab, [3, 4]);
    l[5] = 4; // row 0: support {3, 5} under top-k 2
    // d = 8: outside p's support even though q claims it
    for (let t = 0; t < 50; t++) {
      const v = acceptBlock(l, vocab, [8], [dist([8], [1])], topK, rng);
      expect(v.accepted).toBe(0);
      expect([3, 5]).toContain(v.token);
    }
    // d = 3 with q(3) = 0: rejected, correction from max(0, p − q) = p on {3, 5} minus q on {5}
    for (let t = 0; t < 50; t++) {
      const v = acceptBlock(l, vocab, [3], [dist([5], [1])], topK, rng);
      expect(v).toEqual({ accepted: 0, token: 3 });
    }
  });

  it('samples from p when max(0, p − q) has no mass', () => {
    const p = dist([1, 2], [0.5, 0.5]);
    const rng = new Rng(9, 1);
    const seen = new Set<number>();
    for (let t = 0; t < 100; t++) seen.add(sampleResidual(p, dist([2, 1], [0.5, 0.5]), rng));
    expect([...seen].sort()).toEqual([1, 2]);
    // residual on {1} only
    for (let t = 0; t < 20; t++) expect(sampleResidual(dist([1, 2], [0.7, 0.3]), dist([2, 1], [0.5, 0.5]), rng)).toBe(1);
  });
});

describe('acceptBlock input checks', () => {
  const vocab = 5;
  const l = new Float32Array(2 * vocab);
  const params: SamplingParams = { temperature: 1, topK: 0, topP: 1, seed: 0 };
  const rng = new Rng(0, 1);
  it('throws VerifyInputError with the reason', () => {
    expect(() => acceptBlock(l, vocab, [1, 2], undefined, GREEDY, rng)).toThrow(/k \+ 1/);
    expect(() => acceptBlock(l, vocab, [7], undefined, GREEDY, rng)).toThrow(/outside the vocabulary/);
    expect(() => acceptBlock(l, vocab, [1], undefined, params, rng)).toThrow(/one draft distribution/);
    expect(() => acceptBlock(l, vocab, [1], [dist([1, 9], [0.5, 0.5])], params, rng)).toThrow(/id 9 outside/);
    expect(() => acceptBlock(l, vocab, [1], [dist([1, 1], [0.5, 0.5])], params, rng)).toThrow(/twice/);
    expect(() => acceptBlock(l, vocab, [1], [dist([1, 2], [0.5, 0.2])], params, rng)).toThrow(/sum to/);
    expect(() => acceptBlock(l, vocab, [1], [dist([1], [NaN])], params, rng)).toThrow(VerifyInputError);
  });
});
