// topk.wgsl vs a plain sort (logit descending, id ascending on ties): exact ids and logit
// bits for k = 1, primes and 64, vocab sizes below and above the workgroup size, heavy ties,
// negative rows and the 128256-token vocabulary; sentinels after the output.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GpuContext, requestDevice } from './gpu.ts';
import { randomF32, runPass, sentinelBuffer, upload, wgslStructBytes } from './testing.ts';
import { MAX_TOPK, TOPK_PARAMS_BYTES, createTopk, decodeTopk, packTopkParams } from './topk.ts';
import source from './topk.wgsl?raw';

let ctx: GpuContext;
beforeAll(async () => {
  ctx = await requestDevice();
});
afterAll(() => ctx?.device.destroy());

function topkRef(x: Float32Array, row: number, vocab: number, k: number): { ids: number[]; logits: number[] } {
  const idx = Array.from({ length: vocab }, (_, j) => j);
  const v = (j: number) => x[row * vocab + j];
  idx.sort((a, b) => v(b) - v(a) || a - b);
  const ids = idx.slice(0, k);
  return { ids, logits: ids.map(v) };
}

describe('topk', () => {
  it('uniform packer matches the WGSL struct', () => {
    expect(packTopkParams({ vocab: 1, k: 1 }).byteLength).toBe(TOPK_PARAMS_BYTES);
    expect(wgslStructBytes(source, 'Params')).toBe(TOPK_PARAMS_BYTES);
  });

  // [M, vocab, k, kind]
  const cases: [number, number, number, string][] = [
    [1, 1, 1, 'plain'],
    [3, 7, 5, 'plain'],
    [2, 257, 64, 'plain'],
    [5, 1031, 13, 'ties'],
    [4, 1031, 64, 'coarse'],
    [17, 300, 1, 'negative'],
    [3, 64, 64, 'plain'],
    [2, 128256, 40, 'plain'],
    [1, 128256, 64, 'ties'],
  ];
  for (const [m, vocab, k, kind] of cases) {
    it(`M=${m} vocab=${vocab} k=${k} ${kind}`, async () => {
      let x = randomF32(m * vocab, 23 + vocab + k, 10);
      if (kind === 'ties') x = x.map((v) => Math.round(v * 4) / 4);
      // Only 5 distinct values: the k-th value is shared by hundreds of ids.
      if (kind === 'coarse') x = x.map((v) => Math.round(v / 5));
      if (kind === 'negative') x = x.map((v) => -Math.abs(v) - 1e3);
      const out = sentinelBuffer(ctx, m * 2 * k);
      const op = await createTopk(ctx, { logits: upload(ctx, x), out: out.binding }, vocab);
      await runPass(ctx, (pass) => op.encode(pass, { m, k }));
      const { words, broken } = await out.read();
      const rows = decodeTopk(words, m, k);
      for (let r = 0; r < m; r++) {
        const want = topkRef(x, r, vocab, k);
        expect(Array.from(rows[r].ids), `row ${r} ids`).toEqual(want.ids);
        expect(Array.from(rows[r].logits), `row ${r} logits`).toEqual(want.logits);
      }
      expect(broken, 'sentinels overwritten').toBe(0);
    });
  }

  it('refuses k outside 1..min(64, vocab)', async () => {
    const op = await createTopk(ctx, { logits: upload(ctx, new Float32Array(10)), out: upload(ctx, new Uint32Array(256)) }, 10);
    await expect(runPass(ctx, (pass) => op.encode(pass, { m: 1, k: 11 }))).rejects.toThrow(RangeError);
    await expect(runPass(ctx, (pass) => op.encode(pass, { m: 1, k: 0 }))).rejects.toThrow(RangeError);
    expect(MAX_TOPK).toBe(64);
  });
});
