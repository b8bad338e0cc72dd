// rope.wgsl vs plain TypeScript RoPE in f64 (HF rotate_half, as engine/reference.ts, which
// kernels may not import), with Llama-3-like frequencies theta^(-2i/d) scaled down by 8 for
// the lower half: NMSE ≤ 1e-7. The llama3 frequency formula itself is config.ts's, covered by
// the engine tests.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GpuContext, requestDevice } from './gpu.ts';
import { ROPE_PARAMS_BYTES, createRope, packRopeParams, ropeTable } from './rope.ts';
import source from './rope.wgsl?raw';
import { compare, randomF32, runPass, sentinelBuffer, upload, wgslStructBytes } from './testing.ts';

function rope(v: Float32Array, off: number, nHeads: number, headDim: number, pos: number, invFreq: Float32Array): void {
  const half = headDim / 2;
  for (let h = 0; h < nHeads; h++) {
    const base = off + h * headDim;
    for (let i = 0; i < half; i++) {
      const angle = pos * invFreq[i];
      const a = v[base + i];
      const b = v[base + i + half];
      v[base + i] = a * Math.cos(angle) - b * Math.sin(angle);
      v[base + i + half] = b * Math.cos(angle) + a * Math.sin(angle);
    }
  }
}

function invFreqFor(headDim: number): Float32Array {
  const half = headDim / 2;
  return Float32Array.from({ length: half }, (_, i) => 500000 ** (-(2 * i) / headDim) / (i >= half / 2 ? 8 : 1));
}

let ctx: GpuContext;
beforeAll(async () => {
  ctx = await requestDevice();
});
afterAll(() => ctx?.device.destroy());

describe('rope', () => {
  it('uniform packer matches the WGSL struct', () => {
    expect(packRopeParams({ nHeads: 1, headDim: 2, startPos: 0, count: 1 }).byteLength).toBe(ROPE_PARAMS_BYTES);
    expect(wgslStructBytes(source, 'Params')).toBe(ROPE_PARAMS_BYTES);
  });

  // [nHeads, headDim, M, startPos]
  const shapes = [[1, 2, 1, 0], [3, 64, 5, 7], [8, 128, 17, 1000], [32, 64, 1, 4095], [7, 16, 13, 250]];
  for (const [nHeads, headDim, m, startPos] of shapes) {
    it(`nHeads=${nHeads} headDim=${headDim} M=${m} startPos=${startPos}`, async () => {
      const invFreq = invFreqFor(headDim);
      const maxPositions = 4096;
      const n = m * nHeads * headDim;
      const x = randomF32(n, 5 + m + headDim);
      const out = sentinelBuffer(ctx, n, x);
      const op = await createRope(ctx, { table: upload(ctx, ropeTable(invFreq, maxPositions)), x: out.binding }, { nHeads, headDim, maxPositions });
      await runPass(ctx, (pass) => op.encode(pass, { m, startPos }));
      const { words, broken } = await out.read();
      const want = Float32Array.from(x);
      for (let r = 0; r < m; r++) rope(want, r * nHeads * headDim, nHeads, headDim, startPos + r, invFreq);
      const cmp = compare(new Float32Array(words.buffer), want, 1e-7);
      expect(cmp.ok, cmp.summary).toBe(true);
      expect(broken, 'sentinels overwritten').toBe(0);
    });
  }

  it('refuses positions beyond the table', async () => {
    const x = upload(ctx, new Float32Array(8));
    const op = await createRope(ctx, { table: upload(ctx, new Float32Array(16)), x }, { nHeads: 1, headDim: 8, maxPositions: 4 });
    await expect(runPass(ctx, (pass) => op.encode(pass, { m: 1, startPos: 4 }))).rejects.toThrow(RangeError);
  });
});
