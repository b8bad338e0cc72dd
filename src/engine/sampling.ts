// Sampling, shared by target (p) and draft (q): the parameters, a seeded RNG that gives the
// same stream in the browser and in Node, the processed distribution (temperature → top-k →
// top-p → renormalize) and sampling from it. Speculative sampling is only exact if both sides
// (the draft in the browser/Node, the verifier on the gateway) build p and q with this one
// code, so it is deliberately plain and deterministic.

export interface SamplingParams {
  /** 0 = greedy (argmax). */
  temperature: number;
  /** 0 = off. */
  topK: number;
  /** 1 = off. */
  topP: number;
  /** Seed of the session's RNG (both sides seed their own stream from it). */
  seed: number;
}

export const GREEDY: SamplingParams = { temperature: 0, topK: 0, topP: 1, seed: 0 };

/** A sparse distribution: the support after top-k/top-p, with probabilities summing to 1. */
export interface SparseDist {
  ids: Int32Array;
  probs: Float32Array;
}

export class SamplingParamsError extends Error {
  override name = 'SamplingParamsError';
}

/** Check params before a session starts; the message says which field and what is allowed. */
export function validateSampling(p: SamplingParams): void {
  const bad = (field: string, want: string, got: unknown): never => {
    throw new SamplingParamsError(`sampling.${field}: expected ${want}, got ${JSON.stringify(got)}`);
  };
  if (typeof p.temperature !== 'number' || !Number.isFinite(p.temperature) || p.temperature < 0) bad('temperature', 'a finite number >= 0 (0 = greedy)', p.temperature);
  if (!Number.isInteger(p.topK) || p.topK < 0) bad('topK', 'an integer >= 0 (0 = off)', p.topK);
  if (typeof p.topP !== 'number' || !(p.topP > 0 && p.topP <= 1)) bad('topP', 'a number in (0, 1] (1 = off)', p.topP);
  if (!Number.isInteger(p.seed) || p.seed < 0 || p.seed > 0xffffffff) bad('seed', 'an integer in [0, 2^32)', p.seed);
}

// ---- RNG ----

/**
 * Which side draws from a stream. Target and draft seed from the same session seed but
 * must not share draws: the acceptance test needs the draft's randomness independent of the
 * target's.
 */
export const STREAM_TARGET = 1;
export const STREAM_DRAFT = 2;

/**
 * xoshiro128** (Blackman & Vigna) on 32-bit integer math, so browser and Node agree bit for bit.
 * Seed → stream rule: the four state words are the first four outputs of splitmix32 started at
 * (seed XOR imul(stream, 0x9e3779b9)). uniform() builds a 53-bit double in [0, 1) from two
 * outputs, as MT19937's genrand_res53 does.
 */
export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: number, stream = 0) {
    let x = (seed ^ Math.imul(stream, 0x9e3779b9)) >>> 0;
    const splitmix32 = (): number => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s0 = splitmix32();
    this.s1 = splitmix32();
    this.s2 = splitmix32();
    this.s3 = splitmix32();
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1; // the all-zero state is a fixed point
  }

  /**
   * A generator for one position of a sequence: seeded with seed XOR imul(pos + 1, 0x85ebca6b)
   * (a bijection of pos, so positions of one session never share a seed) on the given stream.
   * The draft uses this so its draw for a position does not depend on how many drafts came before.
   */
  static forPosition(seed: number, stream: number, pos: number): Rng {
    return new Rng((seed ^ Math.imul(pos + 1, 0x85ebca6b)) >>> 0, stream);
  }

  /** Next 32-bit output as an unsigned integer. */
  nextU32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform double in [0, 1) with 53 random bits. */
  uniform(): number {
    const a = this.nextU32() >>> 5; // 27 bits
    const b = this.nextU32() >>> 6; // 26 bits
    return (a * 67108864 + b) / 9007199254740992;
  }

  /** The four state words, to carry a session's stream across a resume. */
  getState(): [number, number, number, number] {
    return [this.s0 >>> 0, this.s1 >>> 0, this.s2 >>> 0, this.s3 >>> 0];
  }

  setState(s: readonly number[]): void {
    if (s.length !== 4 || s.some((w) => !Number.isInteger(w) || w < 0 || w > 0xffffffff) || s.every((w) => w === 0)) {
      throw new RangeError('Rng.setState: expected four uint32 words, not all zero');
    }
    [this.s0, this.s1, this.s2, this.s3] = s;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

// ---- distributions ----

/** Index of the largest value; the lowest index wins ties (NaN never wins). */
export function argmax(row: ArrayLike<number>, off = 0, n = row.length - off): number {
  let best = 0;
  let bestV = -Infinity;
  for (let i = 0; i < n; i++) {
    const v = row[off + i];
    if (v > bestV) {
      bestV = v;
      best = i;
    }
  }
  return best;
}

/** A one-token distribution: what greedy decoding samples from. */
export function pointMass(id: number): SparseDist {
  return { ids: Int32Array.of(id), probs: Float32Array.of(1) };
}

/**
 * Order-preserving map from a float32 logit to a uint32 (negative floats flip all bits,
 * positive ones flip the sign bit), so one native Float64Array sort ranks tokens.
 */
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
function orderedBits(v: number): number {
  f32[0] = Number.isNaN(v) ? -Infinity : v;
  const b = u32[0];
  return (b & 0x80000000 ? ~b : b | 0x80000000) >>> 0;
}

const ID_BITS = 2 ** 21; // vocab ids must fit in 21 bits so key = bits * 2^21 + rank stays exact in a double

/**
 * Token ids ranked by logit, highest first; equal logits rank the lower id first. With
 * limit > 0 only the first `limit` are returned (a bounded selection instead of a full sort).
 */
export function rankByLogit(row: ArrayLike<number>, off: number, vocab: number, limit = 0): Int32Array {
  if (vocab > ID_BITS) throw new RangeError(`vocab ${vocab} exceeds 2^21 ids`);
  // key ascending = logit ascending, and for equal logits higher id first; read from the end.
  const keyOf = (i: number): number => orderedBits(row[off + i]) * ID_BITS + (ID_BITS - 1 - i);
  const n = limit > 0 ? Math.min(limit, vocab) : vocab;
  let keys: Float64Array;
  if (n < vocab && n * 8 < vocab) {
    // keep the n largest keys in a min-heap; O(V log n)
    const heap = new Float64Array(n);
    let size = 0;
    for (let i = 0; i < vocab; i++) {
      const k = keyOf(i);
      if (size < n) {
        let j = size++;
        heap[j] = k;
        while (j > 0) {
          const p = (j - 1) >> 1;
          if (heap[p] <= heap[j]) break;
          [heap[p], heap[j]] = [heap[j], heap[p]];
          j = p;
        }
      } else if (k > heap[0]) {
        heap[0] = k;
        let j = 0;
        for (;;) {
          const l = 2 * j + 1;
          const r = l + 1;
          let m = j;
          if (l < n && heap[l] < heap[m]) m = l;
          if (r < n && heap[r] < heap[m]) m = r;
          if (m === j) break;
          [heap[m], heap[j]] = [heap[j], heap[m]];
          j = m;
        }
      }
    }
    keys = heap;
  } else {
    keys = new Float64Array(vocab);
    for (let i = 0; i < vocab; i++) keys[i] = keyOf(i);
  }
  keys.sort();
  const ids = new Int32Array(n);
  for (let r = 0; r < n; r++) {
    const key = keys[keys.length - 1 - r];
    ids[r] = ID_BITS - 1 - (key % ID_BITS);
  }
  return ids;
}

/**
 * p (or q) from one row of logits: softmax(logits / T) over the whole vocabulary, keep the
 * topK most likely (0 = all), then the shortest prefix whose mass reaches topP (the token that
 * crosses the threshold is kept), renormalize. Ids come out most likely first. T = 0 is greedy:
 * a point mass on the argmax (lowest id on ties).
 */
export function processedDist(row: ArrayLike<number>, params: SamplingParams, off = 0, vocab = row.length - off): SparseDist {
  if (params.temperature === 0) return pointMass(argmax(row, off, vocab));
  const invT = 1 / params.temperature;
  let max = -Infinity;
  for (let i = 0; i < vocab; i++) if (row[off + i] > max) max = row[off + i];
  // full-vocabulary normalizer: top-p thresholds refer to the untruncated distribution
  let z = 0;
  for (let i = 0; i < vocab; i++) {
    const v = row[off + i];
    if (!Number.isNaN(v)) z += Math.exp((v - max) * invT);
  }
  // Top-p alone: rank only the top 256 first and widen (x16) while the nucleus is not inside
  // them; the result is the same as ranking everything, without sorting a 128k vocabulary.
  let limit = params.topK > 0 ? params.topK : params.topP < 1 ? 256 : 0;
  let ranked: Int32Array;
  let probs: Float64Array;
  let keep: number;
  for (;;) {
    ranked = rankByLogit(row, off, vocab, limit);
    probs = new Float64Array(ranked.length);
    keep = ranked.length;
    let cum = 0;
    for (let r = 0; r < ranked.length; r++) {
      const pr = Math.exp((row[off + ranked[r]] - max) * invT) / z;
      probs[r] = pr;
      if (params.topP < 1 && cum >= params.topP) {
        keep = r;
        break;
      }
      cum += pr;
    }
    const nucleusIncomplete = params.topK === 0 && params.topP < 1 && keep === ranked.length && cum < params.topP;
    if (!nucleusIncomplete || ranked.length >= vocab) break;
    limit = limit * 16 >= vocab ? 0 : limit * 16;
  }
  let kept = 0;
  for (let r = 0; r < keep; r++) kept += probs[r];
  const out: SparseDist = { ids: ranked.slice(0, keep), probs: new Float32Array(keep) };
  for (let r = 0; r < keep; r++) out.probs[r] = probs[r] / kept;
  return out;
}

/** Probability of `id` under a sparse distribution (0 outside its support). */
export function probOf(dist: SparseDist, id: number): number {
  for (let i = 0; i < dist.ids.length; i++) if (dist.ids[i] === id) return dist.probs[i];
  return 0;
}

/** Inverse-CDF draw with one uniform; float error that leaves mass unassigned falls to the last support token. */
export function sample(dist: SparseDist, rng: Rng): number {
  const n = dist.ids.length;
  if (n === 0) throw new RangeError('sample: empty distribution');
  if (n === 1) return dist.ids[0];
  let total = 0;
  for (let i = 0; i < n; i++) total += dist.probs[i];
  const u = rng.uniform() * total;
  let cum = 0;
  for (let i = 0; i < n; i++) {
    cum += dist.probs[i];
    if (u < cum) return dist.ids[i];
  }
  return dist.ids[n - 1];
}

/** The token at one logits row: argmax when greedy (no RNG draw), else a draw from the processed p. */
export function sampleRow(row: ArrayLike<number>, params: SamplingParams, rng: Rng, off = 0, vocab = row.length - off): number {
  if (params.temperature === 0) return argmax(row, off, vocab);
  return sample(processedDist(row, params, off, vocab), rng);
}
