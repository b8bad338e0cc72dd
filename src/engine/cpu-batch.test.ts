// CpuBatchLlama against the reference (CpuLlama, the independent oracle): every row of a mixed
// batch (prefill, decode steps, verify blocks, rollbacks) on odd shapes, by NMSE with a stated
// bound and equal argmax, on both matmul paths (WebAssembly SIMD and JavaScript); the SIMD
// kernel against an f64 oracle with sentinels; and batch invariance: a row's logits are
// bit-identical alone and beside any other rows.

import { describe, expect, it } from 'vitest';
import { CpuBatchLlama, CpuBatchSession, expFast, matmulRows, type CpuKv, type CpuRow } from './cpu-batch.ts';
import { WasmMatmul, wasmSimdAvailable } from './cpu-matmul.ts';
import { CpuLlama, matmul } from './reference.ts';
import { kvDim, syntheticConfig } from './config.ts';
import { mulberry32, randomWeights } from './weights.ts';
import { argmax } from './sampling.ts';

/**
 * NMSE bound vs the reference (f64 sums). The JavaScript path sums in f64 in the reference's
 * order (in practice bit-equal); the SIMD path sums in f32 lanes, whose rounding (about 1e-7
 * relative per dot product at these widths) compounds through two layers to NMSE ~1e-12 here.
 */
const NMSE = { js: 1e-12, wasm: 1e-9 };
const PATHS = (['js', 'wasm'] as const).filter((p) => p === 'js' || wasmSimdAvailable());

function nmse(got: Float32Array, want: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < want.length; i++) {
    if (!Number.isFinite(got[i])) return Infinity;
    num += (got[i] - want[i]) ** 2;
    den += want[i] ** 2;
  }
  return num / Math.max(den, 1e-30);
}

function expectClose(got: Float32Array, want: Float32Array, vocab: number, what: string, bound: number): void {
  expect(got.length, what).toBe(want.length);
  const e = nmse(got, want);
  expect(e, `${what}: NMSE ${e}`).toBeLessThanOrEqual(bound);
  for (let r = 0; r < want.length / vocab; r++) expect(argmax(got, r * vocab, vocab), `${what} row ${r} argmax`).toBe(argmax(want, r * vocab, vocab));
}

// odd on purpose: dim 60, hidden 91 (7·13, not a multiple of 4), 5 query heads over 1 KV head of
// width 12, vocab 263 (prime)
const config = syntheticConfig('tiny', { hiddenSize: 60, intermediateSize: 91, numHeads: 5, numKvHeads: 1, headDim: 12, vocabSize: 263, numLayers: 2 });
const weights = randomWeights(config, 5);
const vocab = config.vocabSize;

describe('matmulRows', () => {
  it('equals the reference matmul bit for bit on odd shapes, each row alone or in any batch', () => {
    const rand = mulberry32(9);
    for (const [n, d, m] of [[1, 1, 1], [7, 5, 3], [13, 9, 2], [31, 17, 7], [64, 3, 1]]) {
      const w = Float32Array.from({ length: n * d }, () => rand() - 0.5);
      const x = Float32Array.from({ length: n * m }, () => rand() - 0.5);
      // a sentinel after the output catches a write past m * d
      const o = new Float32Array(m * d + 1).fill(NaN);
      o[m * d] = 12345;
      matmulRows(o, x, w, n, d, m);
      expect(o[m * d]).toBe(12345);
      const want = new Float32Array(m * d);
      for (let r = 0; r < m; r++) matmul(want, x, w, n, d, r * n, r * d);
      expect(Array.from(o.subarray(0, m * d))).toEqual(Array.from(want));
    }
  });
});

describe('expFast (the forward\'s exp in SiLU and softmax)', () => {
  it('is within 1e-8 relative of Math.exp wherever e^x is a normal f64, and right at the edges', () => {
    const rand = mulberry32(5);
    let worst = 0;
    for (let i = 0; i < 200_000; i++) {
      const x = -708 + rand() * 1417; // normal results (below -708 they are subnormal, with fewer bits); above 709 Math.exp itself
      const want = Math.exp(x);
      worst = Math.max(worst, Math.abs(expFast(x) - want) / want);
    }
    expect(worst).toBeLessThan(1e-8);
    expect(expFast(0)).toBe(1);
    expect(expFast(-Infinity)).toBe(0);
    expect(expFast(-800)).toBe(0);
    expect(expFast(710)).toBe(Infinity);
    expect(expFast(709.5)).toBe(Math.exp(709.5));
    expect(expFast(NaN)).toBeNaN();
  });
});

describe('the SIMD matmul (cpu-matmul.wat)', () => {
  it.runIf(wasmSimdAvailable())('matches an f64 oracle (relative error <= 1e-6 of the row scale) on odd shapes, leaves the rest alone, and is the same value in any batch (both of its paths)', () => {
    const rand = mulberry32(21);
    // m = 1, and m up to 9 with n <= 1024, take the kernel's small path (one weight row per tile); the rest the large one (4 weight rows × 2 input rows)
    for (const [n, d, m] of [[1, 1, 1], [3, 5, 3], [4, 4, 2], [13, 9, 5], [64, 7, 1], [257, 18, 4], [96, 33, 7], [37, 11, 9], [29, 13, 10], [70, 23, 13], [5, 6, 27], [1031, 6, 3], [1030, 5, 1]]) {
      const mm = new WasmMatmul();
      const w = Float32Array.from({ length: n * d }, () => rand() - 0.5);
      const x = Float32Array.from({ length: n * m }, () => rand() - 0.5);
      const wm = mm.upload(w, n, d);
      const o = new Float32Array(m * d + 2).fill(12345);
      mm.run(o, x, wm, m);
      expect([o[m * d], o[m * d + 1]], 'sentinels after the output').toEqual([12345, 12345]);
      let bad = 0;
      let worst = 0;
      for (let r = 0; r < m; r++) {
        for (let i = 0; i < d; i++) {
          let s = 0;
          let scale = 0;
          for (let j = 0; j < n; j++) {
            s += w[i * n + j] * x[r * n + j];
            scale += Math.abs(w[i * n + j] * x[r * n + j]);
          }
          const err = Math.abs(o[r * d + i] - s) / Math.max(scale, 1e-30);
          worst = Math.max(worst, err);
          if (!(err <= 1e-6)) bad++;
        }
      }
      expect(bad, `(${n}, ${d}, ${m}): ${bad} of ${m * d} outside 1e-6, worst ${worst}`).toBe(0);
      // each row alone gives the same bits as in the batch
      for (let r = 0; r < m; r++) {
        const one = new Float32Array(d);
        mm.run(one, x.subarray(r * n, (r + 1) * n), wm, 1);
        expect(Array.from(one), `(${n}, ${d}, ${m}) row ${r} alone`).toEqual(Array.from(o.subarray(r * d, (r + 1) * d)));
      }
    }
  });
});

describe.each(PATHS)('CpuBatchLlama (%s matmul) vs CpuLlama', (path) => {
  const bound = NMSE[path];
  const newEngine = (ctx: number): CpuBatchLlama => new CpuBatchLlama(config, weights, ctx, { matmul: path });
  it('a mixed batch of prefills, decode steps and verify blocks (with rollbacks) matches each session on the reference', () => {
    const engine = newEngine(64);
    expect(engine.matmulPath).toBe(path);
    const rand = mulberry32(3);
    const tok = (): number => Math.floor(rand() * vocab);
    const S = 5;
    const kvs: CpuKv[] = Array.from({ length: S }, () => engine.newKv(64));
    const refs = Array.from({ length: S }, () => new CpuLlama(config, weights, 64));
    // round 0: prefills of lengths 1, 2, 5, 9, 13 in one pass
    const lens = [1, 2, 5, 9, 13];
    let rows: CpuRow[] = kvs.map((kv, s) => ({ kv, tokens: Array.from({ length: lens[s] }, tok), startPos: 0 }));
    for (let round = 0; round < 6; round++) {
      const got = engine.forwardBatch(rows);
      rows.forEach((r, s) => {
        const want = refs[s].forwardSync(r.tokens, r.startPos);
        expectClose(got[s], want, vocab, `round ${round} session ${s} (T ${r.tokens.length} at ${r.startPos})`, bound);
        expect(r.kv.length).toBe(r.startPos + r.tokens.length);
      });
      // next round: each session T in 1..9, starting 0..2 positions back (a partial acceptance rolls back)
      rows = kvs.map((kv) => {
        const back = Math.min(kv.length - 1, Math.floor(rand() * 3));
        return { kv, tokens: Array.from({ length: 1 + Math.floor(rand() * 9) }, tok), startPos: kv.length - back };
      });
    }
  });

  it('lastOnly returns the last position only, equal to the full pass', () => {
    const engine = newEngine(32);
    const prompt = [3, 99, 250, 7, 7, 1, 0];
    const full = engine.forwardBatch([{ kv: engine.newKv(), tokens: prompt, startPos: 0 }])[0];
    const last = engine.forwardBatch([{ kv: engine.newKv(), tokens: prompt, startPos: 0, lastOnly: true }])[0];
    expect(Array.from(last)).toEqual(Array.from(full.subarray((prompt.length - 1) * vocab)));
  });

  it('a prompt prefilled in chunks (noLogits rows, then lastOnly) gives bit-identical last logits and cache to one pass', () => {
    const engine = newEngine(40);
    const rand = mulberry32(29);
    for (const len of [1, 2, 7, 13, 31]) {
      const prompt = Array.from({ length: len }, () => Math.floor(rand() * vocab));
      const whole = engine.newKv();
      const want = Array.from(engine.forwardBatch([{ kv: whole, tokens: prompt, startPos: 0, lastOnly: true }])[0]);
      for (const chunk of [1, 3, 5]) {
        const kv = engine.newKv();
        let got: Float32Array = new Float32Array(0);
        for (let at = 0; at < len; at += chunk) {
          const end = Math.min(len, at + chunk);
          const [out] = engine.forwardBatch([{ kv, tokens: prompt.slice(at, end), startPos: at, ...(end === len ? { lastOnly: true } : { noLogits: true }) }]);
          if (end < len) expect(out.length, 'a noLogits row returns no logits').toBe(0);
          got = out;
        }
        expect(kv.length).toBe(len);
        expect(Array.from(got), `prompt ${len} in chunks of ${chunk}`).toEqual(want);
        const n = len * kvDim(config);
        for (let l = 0; l < config.numLayers; l++) {
          const at = l * kv.maxContext * kvDim(config);
          expect(kv.key.subarray(at, at + n)).toEqual(whole.key.subarray(at, at + n));
          expect(kv.value.subarray(at, at + n)).toEqual(whole.value.subarray(at, at + n));
        }
      }
    }
  });

  it('as a CausalLM (CpuBatchSession) it decodes like the reference', async () => {
    const s = new CpuBatchSession(newEngine(32));
    const ref = new CpuLlama(config, weights, 32);
    expectClose(await s.forward([4, 5, 6], 0), ref.forwardSync([4, 5, 6], 0), vocab, 'prefill', bound);
    s.rollback(2);
    ref.rollback(2);
    expectClose(await s.forward([8], 2), ref.forwardSync([8], 2), vocab, 'decode after rollback', bound);
    expect(() => s.rollback(9)).toThrow(RangeError);
  });

  it('bad input throws before any cache changes', () => {
    const engine = newEngine(8);
    const a = engine.newKv();
    const b = engine.newKv();
    engine.forwardBatch([{ kv: a, tokens: [1, 2], startPos: 0 }]);
    expect(() => engine.forwardBatch([{ kv: a, tokens: [3], startPos: 2 }, { kv: b, tokens: [vocab], startPos: 0 }])).toThrow(/outside the vocabulary/);
    expect(() => engine.forwardBatch([{ kv: b, tokens: [1], startPos: 1 }])).toThrow(/cache holds 0/);
    expect(() => engine.forwardBatch([{ kv: a, tokens: [1, 2, 3, 4, 5, 6, 7], startPos: 2 }])).toThrow(/context full/);
    expect(() => engine.forwardBatch([{ kv: a, tokens: [1], startPos: 2 }, { kv: a, tokens: [1], startPos: 2 }])).toThrow(/twice/);
    expect(a.length).toBe(2);
    expect(b.length).toBe(0);
  });
});

describe.each(PATHS)('batch invariance (%s matmul)', (path) => {
  it('a row gives bit-identical logits alone and beside 1, 7 and 31 other rows of mixed lengths', () => {
    const engine = new CpuBatchLlama(config, weights, 48, { matmul: path });
    const rand = mulberry32(17);
    const tok = (): number => Math.floor(rand() * vocab);
    const prompt = [11, 22, 33, 44, 55];
    const block = [5, 6, 7, 8];
    const solo = engine.newKv();
    engine.forwardBatch([{ kv: solo, tokens: prompt, startPos: 0 }]);
    const alone = Array.from(engine.forwardBatch([{ kv: solo, tokens: block, startPos: prompt.length }])[0]);
    for (const others of [1, 7, 31]) {
      const mine = engine.newKv();
      const rows: CpuRow[] = [];
      for (let i = 0; i < others; i++) {
        const kv = engine.newKv();
        const pre = Array.from({ length: 1 + Math.floor(rand() * 12) }, tok);
        engine.forwardBatch([{ kv, tokens: pre, startPos: 0 }]);
        rows.push({ kv, tokens: Array.from({ length: 1 + Math.floor(rand() * 9) }, tok), startPos: kv.length });
      }
      engine.forwardBatch([{ kv: mine, tokens: prompt, startPos: 0 }, ...rows.map((r) => ({ ...r, tokens: [r.tokens[0]], startPos: r.startPos - 1 }))]);
      const at = Math.floor(rand() * (others + 1));
      rows.splice(at, 0, { kv: mine, tokens: block, startPos: prompt.length });
      const got = engine.forwardBatch(rows)[at];
      expect(Array.from(got), `beside ${others} others at index ${at}`).toEqual(alone);
    }
  });
});
