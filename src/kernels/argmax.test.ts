// argmax.wgsl vs a plain scan (first maximum wins): exact ids, including ties, all-negative
// rows and the 128256-token vocabulary; sentinels after the ids.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ARGMAX_PARAMS_BYTES, createArgmax, packArgmaxParams } from './argmax.ts';
import source from './argmax.wgsl?raw';
import { type GpuContext, requestDevice } from './gpu.ts';
import { randomF32, runPass, sentinelBuffer, upload, wgslStructBytes } from './testing.ts';

let ctx: GpuContext;
beforeAll(async () => {
  ctx = await requestDevice();
});
afterAll(() => ctx?.device.destroy());

function argmaxRef(x: Float32Array, m: number, vocab: number): number[] {
  const ids: number[] = [];
  for (let r = 0; r < m; r++) {
    let best = 0;
    for (let j = 1; j < vocab; j++) if (x[r * vocab + j] > x[r * vocab + best]) best = j;
    ids.push(best);
  }
  return ids;
}

describe('argmax', () => {
  it('uniform packer matches the WGSL struct', () => {
    expect(packArgmaxParams({ vocab: 1 }).byteLength).toBe(ARGMAX_PARAMS_BYTES);
    expect(wgslStructBytes(source, 'Params')).toBe(ARGMAX_PARAMS_BYTES);
  });

  // [M, vocab, kind]: 'ties' rounds values to quarters so many rows have tied maxima
  const cases: [number, number, string][] = [[1, 1, 'plain'], [3, 7, 'plain'], [5, 257, 'ties'], [17, 1031, 'negative'], [2, 128256, 'plain'], [4, 4099, 'ties']];
  for (const [m, vocab, kind] of cases) {
    it(`M=${m} vocab=${vocab} ${kind}`, async () => {
      let x = randomF32(m * vocab, 17 + vocab, 8);
      if (kind === 'ties') x = x.map((v) => Math.round(v * 0.5) / 0.5);
      if (kind === 'negative') x = x.map((v) => -Math.abs(v) - 100);
      const ids = sentinelBuffer(ctx, m);
      const op = await createArgmax(ctx, { logits: upload(ctx, x), ids: ids.binding }, vocab);
      await runPass(ctx, (pass) => op.encode(pass, m));
      const { words, broken } = await ids.read();
      expect(Array.from(words)).toEqual(argmaxRef(x, m, vocab));
      expect(broken, 'sentinels overwritten').toBe(0);
    });
  }
});
