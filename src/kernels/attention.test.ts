// kvwrite.wgsl + attention.wgsl vs a plain TypeScript causal GQA attention (f64 softmax) over
// the same cache contents: NMSE ≤ 1e-7 with f32 and with f16 caches (the oracle reads the
// f16-rounded K/V, so both compare exact math); the cache rows outside the block keep their
// old contents; sentinels catch writes past the output and past the cache.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ATTENTION_PARAMS_BYTES, createAttention, packAttentionParams } from './attention.ts';
import attentionSource from './attention.wgsl?raw';
import { type GpuContext, requestDevice } from './gpu.ts';
import { KVWRITE_PARAMS_BYTES, type KvFormat, createKvWrite, packKvWriteParams } from './kvwrite.ts';
import kvwriteSource from './kvwrite.wgsl?raw';
import { compare, randomF32, f16Round, runPass, sentinelBuffer, upload, wgslStructBytes } from './testing.ts';

let ctx: GpuContext;
beforeAll(async () => {
  ctx = await requestDevice();
});
afterAll(() => ctx?.device.destroy());

/** out(m, h, :) for rows at positions startPos + m over keys/values (pos, kvDim), f64. */
function attentionRef(q: Float32Array, k: Float32Array, v: Float32Array, m: number, startPos: number, nHeads: number, nKv: number, hd: number): Float32Array {
  const kvDim = nKv * hd;
  const out = new Float32Array(m * nHeads * hd);
  const group = nHeads / nKv;
  for (let r = 0; r < m; r++) {
    const last = startPos + r;
    for (let h = 0; h < nHeads; h++) {
      const g = Math.floor(h / group);
      const s = new Float64Array(last + 1);
      let max = -Infinity;
      for (let t = 0; t <= last; t++) {
        let d = 0;
        for (let i = 0; i < hd; i++) d += q[(r * nHeads + h) * hd + i] * k[t * kvDim + g * hd + i];
        s[t] = d / Math.sqrt(hd);
        max = Math.max(max, s[t]);
      }
      let sum = 0;
      for (let t = 0; t <= last; t++) sum += (s[t] = Math.exp(s[t] - max));
      for (let i = 0; i < hd; i++) {
        let a = 0;
        for (let t = 0; t <= last; t++) a += s[t] * v[t * kvDim + g * hd + i];
        out[(r * nHeads + h) * hd + i] = a / sum;
      }
    }
  }
  return out;
}

describe('attention + kvwrite', () => {
  it('uniform packers match the WGSL structs', () => {
    expect(packAttentionParams({ nHeads: 1, nKvHeads: 1, headDim: 2, startPos: 0, scale: 1 }).byteLength).toBe(ATTENTION_PARAMS_BYTES);
    expect(wgslStructBytes(attentionSource, 'Params')).toBe(ATTENTION_PARAMS_BYTES);
    expect(packKvWriteParams({ kvDim: 2, startPos: 0, count: 1 }).byteLength).toBe(KVWRITE_PARAMS_BYTES);
    expect(wgslStructBytes(kvwriteSource, 'Params')).toBe(KVWRITE_PARAMS_BYTES);
  });

  // [nHeads, nKvHeads, headDim, M, startPos, format]
  const cases: [number, number, number, number, number, KvFormat][] = [
    [1, 1, 2, 1, 0, 'f32'],
    [4, 1, 64, 1, 0, 'f32'],
    [32, 8, 64, 17, 0, 'f32'],
    [24, 8, 128, 5, 20, 'f32'],
    [6, 2, 16, 3, 130, 'f32'],
    [32, 8, 64, 1, 300, 'f32'],
    [3, 3, 10, 67, 0, 'f32'],
    [32, 8, 64, 17, 0, 'f16'],
    [24, 8, 128, 5, 61, 'f16'],
    [6, 2, 16, 1, 200, 'f16'],
  ];
  for (const [nHeads, nKv, hd, m, startPos, format] of cases) {
    it(`nHeads=${nHeads} nKv=${nKv} headDim=${hd} M=${m} startPos=${startPos} ${format}`, async () => {
      const kvDim = nKv * hd;
      const total = startPos + m;
      const maxContext = total + 3;
      const wordsPerRow = format === 'f16' ? kvDim / 2 : kvDim;
      const kAll = randomF32(total * kvDim, 100 + hd, 2);
      const vAll = randomF32(total * kvDim, 200 + m);
      const q = randomF32(m * nHeads * hd, 300 + nHeads, 2);
      const cacheInit = new Uint32Array(maxContext * wordsPerRow).fill(0x3f800000);
      const kCache = sentinelBuffer(ctx, maxContext * wordsPerRow, cacheInit, 'kCache');
      const vCache = sentinelBuffer(ctx, maxContext * wordsPerRow, cacheInit, 'vCache');
      const out = sentinelBuffer(ctx, m * nHeads * hd);
      const dims = { kvDim, maxContext, format };
      const prefix = await createKvWrite(ctx, { k: upload(ctx, kAll), v: upload(ctx, vAll), kCache: kCache.binding, vCache: vCache.binding }, dims, 'prefix');
      const block = await createKvWrite(
        ctx,
        { k: upload(ctx, kAll.slice(startPos * kvDim)), v: upload(ctx, vAll.slice(startPos * kvDim)), kCache: kCache.binding, vCache: vCache.binding },
        dims,
        'block',
      );
      const att = await createAttention(ctx, { q: upload(ctx, q), kCache: kCache.binding, vCache: vCache.binding, out: out.binding }, { nHeads, nKvHeads: nKv, headDim: hd, maxContext, format });
      await runPass(ctx, (pass) => {
        prefix.encode(pass, { m: startPos, startPos: 0 });
        block.encode(pass, { m, startPos });
        att.encode(pass, { m, startPos });
      });
      const round = (a: Float32Array) => (format === 'f16' ? a.map(f16Round) : a);
      const want = attentionRef(q, round(kAll), round(vAll), m, startPos, nHeads, nKv, hd);
      const got = await out.read();
      const c = compare(new Float32Array(got.words.buffer), want, 1e-7);
      expect(c.ok, c.summary).toBe(true);
      expect(got.broken, 'output sentinels overwritten').toBe(0);
      for (const [cache, src] of [[kCache, kAll], [vCache, vAll]] as const) {
        const { words, broken } = await cache.read();
        expect(broken, 'cache sentinels overwritten').toBe(0);
        // rows past the block are untouched
        for (let i = total * wordsPerRow; i < words.length; i++) expect(words[i]).toBe(0x3f800000);
        const stored = format === 'f16' ? unpackF16Rows(words, total * kvDim) : new Float32Array(words.buffer, 0, total * kvDim);
        const cc = compare(stored, round(src), 0, 'cache');
        expect(cc.ok, cc.summary).toBe(true);
      }
    });
  }
});

function unpackF16Rows(words: Uint32Array, n: number): Float32Array {
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
