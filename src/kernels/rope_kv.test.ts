// rope_kv.wgsl (RoPE on q and k fused with the cache write) and attention.wgsl's batch form
// (rowOffset, qStride) vs plain TypeScript in f64: several sessions' rows share one q|k|v
// buffer, each session is rotated, cached and attended at its own offset and position.
// q after rotation, the cache rows and the attention output: NMSE ≤ 1e-7 (f32 and f16 caches;
// the oracle reads f16-rounded K/V); cache rows outside the block keep their old contents;
// sentinels catch writes past the outputs; rows of other sessions are left alone.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ATTENTION_PARAMS_BYTES, createAttention, packAttentionParams, writeAttentionParams } from './attention.ts';
import { type GpuContext, requestDevice } from './gpu.ts';
import type { KvFormat } from './kvwrite.ts';
import { ropeTable } from './rope.ts';
import { ROPE_KV_PARAMS_BYTES, createRopeKv, packRopeKvParams, writeRopeKvParams } from './rope_kv.ts';
import source from './rope_kv.wgsl?raw';
import { compare, randomF32, f16Round, runPass, sentinelBuffer, upload, wgslStructBytes } from './testing.ts';
import { uniformBuffer } from './op.ts';

let ctx: GpuContext;
beforeAll(async () => {
  ctx = await requestDevice();
});
afterAll(() => ctx?.device.destroy());

/** HF rotate_half RoPE of one head vector in place at position pos, f64 angles. */
function ropeHead(v: Float32Array | Float64Array, off: number, headDim: number, pos: number, invFreq: Float32Array): void {
  const half = headDim / 2;
  for (let i = 0; i < half; i++) {
    const angle = pos * invFreq[i];
    const a = v[off + i];
    const b = v[off + i + half];
    v[off + i] = a * Math.cos(angle) - b * Math.sin(angle);
    v[off + i + half] = b * Math.cos(angle) + a * Math.sin(angle);
  }
}

/** Causal GQA attention of one query head vector over keys/values 0..last, f64 softmax. */
function attendRef(q: Float64Array, qOff: number, k: Float64Array, v: Float64Array, last: number, g: number, kvDim: number, hd: number, out: Float64Array, oOff: number): void {
  const s = new Float64Array(last + 1);
  let max = -Infinity;
  for (let t = 0; t <= last; t++) {
    let d = 0;
    for (let i = 0; i < hd; i++) d += q[qOff + i] * k[t * kvDim + g * hd + i];
    s[t] = d / Math.sqrt(hd);
    max = Math.max(max, s[t]);
  }
  let sum = 0;
  for (let t = 0; t <= last; t++) sum += (s[t] = Math.exp(s[t] - max));
  for (let i = 0; i < hd; i++) {
    let a = 0;
    for (let t = 0; t <= last; t++) a += s[t] * v[t * kvDim + g * hd + i];
    out[oOff + i] = a / sum;
  }
}

const invFreqFor = (headDim: number) => Float32Array.from({ length: headDim / 2 }, (_, i) => 500000 ** (-(2 * i) / headDim) / (i >= headDim / 4 ? 8 : 1));

describe('rope_kv + batched attention', () => {
  it('uniform packers match the WGSL structs', () => {
    expect(packRopeKvParams({ nHeads: 1, nKvHeads: 1, headDim: 2, startPos: 0, rowOffset: 0, rowStride: 6, count: 1 }).byteLength).toBe(ROPE_KV_PARAMS_BYTES);
    expect(wgslStructBytes(source, 'Params')).toBe(ROPE_KV_PARAMS_BYTES);
    expect(packAttentionParams({ nHeads: 1, nKvHeads: 1, headDim: 2, startPos: 0, scale: 1, rowOffset: 3, qStride: 7 }).byteLength).toBe(ATTENTION_PARAMS_BYTES);
  });

  // [nHeads, nKvHeads, headDim, format, sessions as [M, startPos]...]
  const cases: [number, number, number, KvFormat, [number, number][]][] = [
    [1, 1, 2, 'f32', [[1, 0]]],
    [6, 2, 16, 'f32', [[3, 0], [1, 7], [5, 30]]],
    [24, 8, 128, 'f32', [[1, 40], [6, 0]]],
    [8, 2, 32, 'f16', [[2, 5], [1, 0], [9, 70]]],
    [3, 3, 10, 'f16', [[7, 3], [1, 1]]],
  ];
  for (const [nHeads, nKv, hd, format, sess] of cases) {
    it(`nHeads=${nHeads} nKv=${nKv} headDim=${hd} ${format} sessions ${JSON.stringify(sess)}`, async () => {
      const qDim = nHeads * hd;
      const kvDim = nKv * hd;
      const stride = qDim + 2 * kvDim + 3; // a padded row: the kernels must use rowStride/qStride
      const rows = sess.reduce((a, [m]) => a + m, 0);
      const maxContext = Math.max(...sess.map(([m, p]) => m + p)) + 2;
      const invFreq = invFreqFor(hd);
      const table = upload(ctx, ropeTable(invFreq, maxContext));
      const qkvInit = randomF32(rows * stride, 7 + hd + rows, 2);
      const qkv = sentinelBuffer(ctx, rows * stride, qkvInit, 'qkv');
      const att = sentinelBuffer(ctx, rows * qDim, undefined, 'att');
      const words = format === 'f16' ? kvDim / 2 : kvDim;
      const dims = { nHeads, nKvHeads: nKv, headDim: hd, maxContext, format };
      const round = (x: number) => (format === 'f16' ? f16Round(x) : x);
      // per session: a cache with random history before startPos, its own uniforms and ops
      const state = await Promise.all(sess.map(async ([m, startPos], si) => {
        // history on a 1/64 grid: exact in f16 and f32, so its packing below is exact
        const hist = Float32Array.from(randomF32(startPos * kvDim * 2, 50 + si, 2), (x) => Math.round(x * 64) / 64);
        const init = new Uint32Array(maxContext * words).fill(0x3f800000);
        const pack = (src: Float32Array, off: number) => {
          for (let t = 0; t < startPos; t++) {
            for (let w = 0; w < words; w++) {
              if (format === 'f32') init[t * words + w] = new Uint32Array(Float32Array.of(src[off + t * kvDim + w]).buffer)[0];
              else init[t * words + w] = f16Bits(src[off + t * kvDim + 2 * w]) | (f16Bits(src[off + t * kvDim + 2 * w + 1]) << 16);
            }
          }
          return init.slice();
        };
        const kc = sentinelBuffer(ctx, maxContext * words, pack(hist, 0), `k${si}`);
        const vc = sentinelBuffer(ctx, maxContext * words, pack(hist, startPos * kvDim), `v${si}`);
        const rp = uniformBuffer(ctx, ROPE_KV_PARAMS_BYTES, 'rp');
        const ap = uniformBuffer(ctx, ATTENTION_PARAMS_BYTES, 'ap');
        const ropeKv = await createRopeKv(ctx, { table, qkv: qkv.binding, kCache: kc.binding, vCache: vc.binding, params: rp }, dims);
        const attention = await createAttention(ctx, { q: qkv.binding, kCache: kc.binding, vCache: vc.binding, out: att.binding, params: ap }, dims);
        return { m, startPos, hist, kc, vc, rp, ap, ropeKv, attention };
      }));
      let row = 0;
      for (const s of state) {
        writeRopeKvParams(ctx, s.rp, dims, { m: s.m, startPos: s.startPos, rowOffset: row, rowStride: stride });
        writeAttentionParams(ctx, s.ap, dims, { m: s.m, startPos: s.startPos, rowOffset: row, qStride: stride });
        row += s.m;
      }
      await runPass(ctx, (pass) => {
        for (const s of state) s.ropeKv.encode(pass, s.m);
        for (const s of state) s.attention.encode(pass, { m: s.m, startPos: s.startPos });
      });
      // oracle, f64
      const wantQkv = Float64Array.from(qkvInit);
      const wantAtt = new Float64Array(rows * qDim);
      const gotQkv = await qkv.read();
      const gotAtt = await att.read();
      expect(gotQkv.broken + gotAtt.broken, 'sentinels overwritten').toBe(0);
      row = 0;
      for (const s of state) {
        const total = s.startPos + s.m;
        const K = new Float64Array(total * kvDim);
        const V = new Float64Array(total * kvDim);
        K.set(s.hist.subarray(0, s.startPos * kvDim));
        V.set(s.hist.subarray(s.startPos * kvDim));
        for (let r = 0; r < s.m; r++) {
          const base = (row + r) * stride;
          const pos = s.startPos + r;
          for (let h = 0; h < nHeads; h++) ropeHead(wantQkv, base + h * hd, hd, pos, invFreq);
          const k = Float64Array.from(qkvInit.subarray(base + qDim, base + qDim + kvDim));
          for (let h = 0; h < nKv; h++) ropeHead(k, h * hd, hd, pos, invFreq);
          for (let i = 0; i < kvDim; i++) {
            K[pos * kvDim + i] = round(k[i]);
            V[pos * kvDim + i] = round(qkvInit[base + qDim + kvDim + i]);
          }
        }
        for (let r = 0; r < s.m; r++) {
          for (let h = 0; h < nHeads; h++) {
            attendRef(wantQkv, (row + r) * stride + h * hd, K, V, s.startPos + r, Math.floor(h / (nHeads / nKv)), kvDim, hd, wantAtt, ((row + r) * nHeads + h) * hd);
          }
        }
        for (const [cache, src] of [[s.kc, K], [s.vc, V]] as const) {
          const { words: w, broken } = await cache.read();
          expect(broken, 'cache sentinels overwritten').toBe(0);
          for (let i = total * words; i < w.length; i++) expect(w[i], `cache word ${i} past the block`).toBe(0x3f800000);
          const stored = format === 'f16' ? unpackF16(w, total * kvDim) : new Float32Array(w.buffer, 0, total * kvDim);
          const c = compare(stored, Float32Array.from(src), 1e-7, 'cache');
          expect(c.ok, c.summary).toBe(true);
        }
        row += s.m;
      }
      const cq = compare(new Float32Array(gotQkv.words.buffer), Float32Array.from(wantQkv), 1e-7, 'qkv');
      expect(cq.ok, cq.summary).toBe(true);
      const ca = compare(new Float32Array(gotAtt.words.buffer), Float32Array.from(wantAtt), 1e-7, 'attention');
      expect(ca.ok, ca.summary).toBe(true);
    });
  }
});

/** f16 bits of x, exact for the 1/64-grid history values (normal f16 numbers and 0). */
function f16Bits(x: number): number {
  const f = new Float32Array([x]);
  const b = new Uint32Array(f.buffer)[0];
  const s = (b >>> 16) & 0x8000;
  const v = f16Round(x);
  if (v === 0) return s;
  const a = Math.abs(v);
  const e = Math.floor(Math.log2(a));
  if (e < -14) return s | Math.round(a / 2 ** -24);
  return s | ((e + 15) << 10) | Math.round((a / 2 ** e - 1) * 1024);
}

function unpackF16(words: Uint32Array, n: number): Float32Array {
  const out = new Float32Array(n);
  const f16 = (b: number) => {
    const s = b & 0x8000 ? -1 : 1;
    const e = (b >> 10) & 0x1f;
    const f = b & 0x3ff;
    return e === 0 ? s * f * 2 ** -24 : s * (1 + f / 1024) * 2 ** (e - 15);
  };
  for (let i = 0; i < n; i++) out[i] = f16(i % 2 === 0 ? words[i >> 1] & 0xffff : words[i >> 1] >>> 16);
  return out;
}
