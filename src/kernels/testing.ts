// Test helpers shared by kernel and engine tests: the NMSE metric of llama.cpp's
// test-backend-ops, a failure report that says how many, how much and where, and sentinel
// padding around GPU outputs that catches out-of-bounds writes.

/** Normalized mean squared error: sum((a-b)^2) / sum(b^2), b the reference. */
export function nmse(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let err = 0;
  let ref = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = actual[i] - expected[i];
    err += d * d;
    ref += expected[i] * expected[i];
  }
  return ref === 0 ? (err === 0 ? 0 : Infinity) : err / ref;
}

export interface Comparison {
  ok: boolean;
  nmse: number;
  maxAbsErr: number;
  worstIndex: number;
  nonFinite: number;
  summary: string;
}

/** Compare by NMSE; NaN/Inf in the actual output fail first. */
export function compare(actual: ArrayLike<number>, expected: ArrayLike<number>, maxNmse: number, what = 'output'): Comparison {
  if (actual.length !== expected.length) {
    return { ok: false, nmse: Infinity, maxAbsErr: Infinity, worstIndex: -1, nonFinite: 0, summary: `${what}: length ${actual.length} != expected ${expected.length}` };
  }
  let nonFinite = 0;
  let maxAbsErr = 0;
  let worstIndex = -1;
  for (let i = 0; i < expected.length; i++) {
    if (!Number.isFinite(actual[i])) nonFinite++;
    const d = Math.abs(actual[i] - expected[i]);
    if (d > maxAbsErr || Number.isNaN(d)) {
      maxAbsErr = d;
      worstIndex = i;
    }
  }
  const e = nonFinite ? Infinity : nmse(actual, expected);
  const ok = nonFinite === 0 && e <= maxNmse;
  const summary =
    `${what}: n=${expected.length} nmse=${e.toExponential(3)} (bound ${maxNmse.toExponential(1)}) ` +
    `maxAbsErr=${maxAbsErr.toExponential(3)} at [${worstIndex}] (got ${actual[worstIndex]}, want ${expected[worstIndex]}) nonFinite=${nonFinite}`;
  return { ok, nmse: e, maxAbsErr, worstIndex, nonFinite, summary };
}

/** A bit pattern no kernel produces by accident (a quiet NaN with a payload). */
export const SENTINEL_U32 = 0x7fc0dead;
export const SENTINEL_WORDS = 64;

/** Float32 data with SENTINEL_WORDS sentinel words before and after; the kernel writes at offset SENTINEL_WORDS. */
export function withSentinels(n: number): Uint32Array {
  const a = new Uint32Array(n + 2 * SENTINEL_WORDS);
  a.fill(SENTINEL_U32);
  return a;
}

/** Count sentinel words that were overwritten (out-of-bounds writes). */
export function brokenSentinels(words: Uint32Array, n: number): number {
  let broken = 0;
  for (let i = 0; i < SENTINEL_WORDS; i++) {
    if (words[i] !== SENTINEL_U32) broken++;
    if (words[SENTINEL_WORDS + n + i] !== SENTINEL_U32) broken++;
  }
  return broken;
}

/** Deterministic uniform(-scale, scale) test data. */
export function randomF32(n: number, seed: number, scale = 1): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale;
  }
  return out;
}
