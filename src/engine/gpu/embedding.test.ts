// embedding.wgsl (src/kernels) vs quantize.ts's dequantize: bit-exact rows for every weight
// format, with the table split into several chunks, ids at both ends of the vocabulary and
// repeated ids; sentinels after the output. Lives under engine/ because its oracle does
// (src/kernels may not import src/engine).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EMBEDDING_PARAMS_BYTES, createEmbedding, packEmbeddingParams } from '../../kernels/embedding.ts';
import source from '../../kernels/embedding.wgsl?raw';
import { type GpuContext, requestDevice } from '../../kernels/gpu.ts';
import { uploadMatrix } from '../../kernels/matmul.ts';
import { randomF32, runPass, sentinelBuffer, upload, wgslStructBytes } from '../../kernels/testing.ts';
import { type WeightFormat, dequantize, packMatrix, packedByteLength } from '../quantize.ts';

let ctx: GpuContext;
beforeAll(async () => {
  ctx = await requestDevice();
});
afterAll(() => ctx?.device.destroy());

describe('embedding', () => {
  it('uniform packer matches the WGSL struct', () => {
    expect(packEmbeddingParams({ cols: 1, rowWords: 4, scaleWordOffset: 1, rowStart: 0, rows: 1, count: 1 }).byteLength).toBe(EMBEDDING_PARAMS_BYTES);
    expect(wgslStructBytes(source, 'Params')).toBe(EMBEDDING_PARAMS_BYTES);
  });

  const formats: WeightFormat[] = ['f32', 'f16', 'bf16', 'q8', 'q4'];
  // [vocab, cols, chunks]
  const shapes = [[1, 1, 1], [37, 96, 3], [1031, 2048, 4], [13, 33, 2]];
  for (const format of formats) {
    for (const [vocab, cols, nChunks] of shapes) {
      it(`${format} vocab=${vocab} cols=${cols} in ${nChunks} chunk(s)`, async () => {
        const w = randomF32(vocab * cols, vocab + cols, 0.3);
        const packed = packMatrix(w, vocab, cols, format);
        const rowBytes = packedByteLength(1, cols, format);
        const table = uploadMatrix(ctx, packed, 'embed', { maxChunkBytes: Math.ceil(vocab / nChunks) * rowBytes });
        expect(table.chunks.length).toBe(Math.min(nChunks, vocab));
        const tokens = [0, vocab - 1, Math.floor(vocab / 2), 0, Math.floor(vocab / 3), vocab - 1, 1 % vocab];
        const m = tokens.length;
        const out = sentinelBuffer(ctx, m * cols);
        const op = await createEmbedding(ctx, { ids: upload(ctx, Uint32Array.from(tokens)), table, out: out.binding });
        await runPass(ctx, (pass) => op.encode(pass, m));
        const { words, broken } = await out.read();
        const deq = dequantize(packed);
        const want = new Float32Array(m * cols);
        tokens.forEach((t, r) => want.set(deq.subarray(t * cols, (t + 1) * cols), r * cols));
        expect(Array.from(new Float32Array(words.buffer))).toEqual(Array.from(want));
        expect(broken, 'sentinels overwritten').toBe(0);
      });
    }
  }
});
