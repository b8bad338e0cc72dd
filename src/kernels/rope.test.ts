// rope.wgsl vs the CPU reference's rope (HF rotate_half, llama3 frequencies): NMSE ≤ 1e-7.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ropeInvFreq, syntheticConfig } from '../engine/config.ts';
import { rope } from '../engine/reference.ts';
import { type GpuContext, requestDevice } from './gpu.ts';
import { ROPE_PARAMS_BYTES, createRope, packRopeParams, ropeTable } from './rope.ts';
import source from './rope.wgsl?raw';
import { compare, randomF32 } from './testing.ts';
import { runPass, sentinelBuffer, upload, wgslStructBytes } from './testkit.ts';

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
      const c = syntheticConfig('1b', { headDim, numHeads: nHeads });
      const invFreq = ropeInvFreq(c);
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
