// swiglu.wgsl and add.wgsl vs plain TypeScript (f64 math): NMSE ≤ 1e-7, sentinels intact.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADD_PARAMS_BYTES, createAdd, packAddParams } from './add.ts';
import addSource from './add.wgsl?raw';
import { type GpuContext, requestDevice } from './gpu.ts';
import { SWIGLU_PARAMS_BYTES, createSwiglu, packSwigluParams } from './swiglu.ts';
import swigluSource from './swiglu.wgsl?raw';
import { compare, randomF32, runPass, sentinelBuffer, upload, wgslStructBytes } from './testing.ts';

let ctx: GpuContext;
beforeAll(async () => {
  ctx = await requestDevice();
});
afterAll(() => ctx?.device.destroy());

const shapes = [[1, 1], [3, 257], [17, 2048], [2, 8192], [5, 1031]];

describe('swiglu', () => {
  it('uniform packer matches the WGSL struct', () => {
    expect(packSwigluParams({ count: 1 }).byteLength).toBe(SWIGLU_PARAMS_BYTES);
    expect(wgslStructBytes(swigluSource, 'Params')).toBe(SWIGLU_PARAMS_BYTES);
  });
  for (const [m, n] of shapes) {
    it(`M=${m} hidden=${n}`, async () => {
      const gate = randomF32(m * n, 3 + n, 12);
      const up = randomF32(m * n, 4 + m, 2);
      const g = sentinelBuffer(ctx, m * n, gate);
      const op = await createSwiglu(ctx, { gate: g.binding, up: upload(ctx, up) }, n);
      await runPass(ctx, (pass) => op.encode(pass, m));
      const { words, broken } = await g.read();
      const want = gate.map((v, i) => (v / (1 + Math.exp(-v))) * up[i]);
      const c = compare(new Float32Array(words.buffer), want, 1e-7);
      expect(c.ok, c.summary).toBe(true);
      expect(broken, 'sentinels overwritten').toBe(0);
    });
  }
});

describe('add', () => {
  it('uniform packer matches the WGSL struct', () => {
    expect(packAddParams({ count: 1 }).byteLength).toBe(ADD_PARAMS_BYTES);
    expect(wgslStructBytes(addSource, 'Params')).toBe(ADD_PARAMS_BYTES);
  });
  for (const [m, n] of shapes) {
    it(`M=${m} dim=${n}`, async () => {
      const x = randomF32(m * n, 7 + n);
      const y = randomF32(m * n, 8 + m);
      const xb = sentinelBuffer(ctx, m * n, x);
      const op = await createAdd(ctx, { x: xb.binding, y: upload(ctx, y) }, n);
      await runPass(ctx, (pass) => op.encode(pass, m));
      const { words, broken } = await xb.read();
      const c = compare(new Float32Array(words.buffer), x.map((v, i) => v + y[i]), 1e-7);
      expect(c.ok, c.summary).toBe(true);
      expect(broken, 'sentinels overwritten').toBe(0);
    });
  }
});
