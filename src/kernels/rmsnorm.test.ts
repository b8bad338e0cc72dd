// rmsnorm.wgsl vs plain TypeScript RMSNorm in f64 (the same math as engine/reference.ts, which
// kernels may not import): NMSE ≤ 1e-7, sentinels intact.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GpuContext, requestDevice } from './gpu.ts';
import { RMSNORM_PARAMS_BYTES, createRmsnorm, packRmsnormParams } from './rmsnorm.ts';
import source from './rmsnorm.wgsl?raw';
import { compare, randomF32, runPass, sentinelBuffer, upload, wgslStructBytes } from './testing.ts';

/** o = x / rms(x) * w for one row, in f64. */
function rmsnorm(o: Float32Array, x: Float32Array, w: Float32Array, n: number, eps: number, xOff: number, oOff: number): void {
  let ss = 0;
  for (let i = 0; i < n; i++) ss += x[xOff + i] * x[xOff + i];
  const scale = 1 / Math.sqrt(ss / n + eps);
  for (let i = 0; i < n; i++) o[oOff + i] = x[xOff + i] * scale * w[i];
}

let ctx: GpuContext;
beforeAll(async () => {
  ctx = await requestDevice();
});
afterAll(() => ctx?.device.destroy());

describe('rmsnorm', () => {
  it('uniform packer matches the WGSL struct', () => {
    expect(packRmsnormParams({ n: 3, eps: 1e-5 }).byteLength).toBe(RMSNORM_PARAMS_BYTES);
    expect(wgslStructBytes(source, 'Params')).toBe(RMSNORM_PARAMS_BYTES);
  });

  for (const [m, n] of [[1, 1], [3, 7], [1, 256], [5, 257], [17, 2048], [2, 3072], [4, 1031]]) {
    it(`M=${m} n=${n}`, async () => {
      const eps = 1e-5;
      const x = randomF32(m * n, 11 + n, 3);
      const w = randomF32(n, 29 + m);
      const out = sentinelBuffer(ctx, m * n);
      const op = await createRmsnorm(ctx, { out: out.binding, x: upload(ctx, x), weight: upload(ctx, w) }, { n, eps });
      await runPass(ctx, (pass) => op.encode(pass, m));
      const { words, broken } = await out.read();
      const want = new Float32Array(m * n);
      for (let r = 0; r < m; r++) rmsnorm(want, x, w, n, eps, r * n, r * n);
      const c = compare(new Float32Array(words.buffer), want, 1e-7);
      expect(c.ok, c.summary).toBe(true);
      expect(broken, 'sentinels overwritten').toBe(0);
    });
  }
});
