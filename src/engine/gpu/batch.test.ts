// GpuModel + GpuSession: one copy of the weights, a KV cache per session, and forwards that
// run the rows of several sessions in one submission.
// - Memory, at Llama-3.2-3B layer shapes (2 layers, vocab 4096, q4 weights streamed pre-packed
//   as zeros, so no CPU packing): N sessions allocate weights + activations + N × KV, exactly
//   the plan; an open past the budget is refused with GpuOutOfMemoryError naming needed and
//   available bytes; closing a session frees its share.
// - Results: three sessions whose prefill, decode steps and verify blocks share passes (and a
//   pass split by maxBatch) each match the CPU reference by NMSE ≤ 1e-9 (f32, as llama.test.ts)
//   with equal argmax; and a session's logits are bit-for-bit the same alone and batched.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type LlamaConfig, kvDim, qDim, syntheticConfig } from '../config.ts';
import { CpuLlama } from '../reference.ts';
import { randomWeights, layerTensorNames } from '../weights.ts';
import { rowLayout } from '../quantize.ts';
import { type GpuContext, GpuOutOfMemoryError, requestDevice } from '../../kernels/gpu.ts';
import { compare } from '../../kernels/testing.ts';
import { GpuModel, type StreamItem, sessionKvBytes } from './index.ts';
import { argmaxRows, prompt } from './testing.ts';

let ctx: GpuContext;
beforeAll(async () => {
  ctx = await requestDevice();
});
afterAll(() => ctx?.device.destroy());

/** Every tensor of c as zero-filled pre-packed `format` matrices (norms as f32 ones). */
async function* zeroPacked(c: LlamaConfig, format: 'q4'): AsyncIterable<StreamItem> {
  const matrix = (name: string, rows: number, cols: number): StreamItem => {
    const { colsPadded, rowWords, scaleWordOffset } = rowLayout(cols, format);
    return { name, packed: { rows, cols, format, colsPadded, rowWords, scaleWordOffset, data: new Uint32Array(rows * rowWords) } };
  };
  const dim = c.hiddenSize;
  yield matrix('model.embed_tokens.weight', c.vocabSize, dim);
  yield { name: 'model.norm.weight', shape: [dim], data: new Float32Array(dim).fill(1) };
  for (let l = 0; l < c.numLayers; l++) {
    const n = layerTensorNames(l);
    yield { name: n.attnNorm, shape: [dim], data: new Float32Array(dim).fill(1) };
    yield { name: n.ffnNorm, shape: [dim], data: new Float32Array(dim).fill(1) };
    yield matrix(n.wq, qDim(c), dim);
    yield matrix(n.wk, kvDim(c), dim);
    yield matrix(n.wv, kvDim(c), dim);
    yield matrix(n.wo, dim, qDim(c));
    yield matrix(n.wGate, c.intermediateSize, dim);
    yield matrix(n.wUp, c.intermediateSize, dim);
    yield matrix(n.wDown, dim, c.intermediateSize);
  }
}

describe('GpuModel: weights once, sessions many', () => {
  it('3B layer shapes, 2 layers: N sessions use weights + activations + N × KV; an open past the budget is refused', async () => {
    const c = syntheticConfig('3b', { numLayers: 2, vocabSize: 4096, maxPositionEmbeddings: 512 });
    const maxContext = 512;
    const kv = sessionKvBytes(c, 'f16', maxContext);
    const probe = await GpuModel.create(ctx, c, zeroPacked(c, 'q4'), { format: 'q4', maxContext, maxBatch: 8 });
    const base = probe.baseBytes;
    expect(probe.allocatedStorageBytes, 'weights + activations, allocated as planned').toBe(base);
    const sessions = [];
    for (let n = 1; n <= 3; n++) {
      sessions.push(await probe.openSession());
      const allocated = probe.allocatedStorageBytes + sessions.reduce((s, x) => s + x.allocatedStorageBytes, 0);
      expect(allocated, `${n} session(s)`).toBe(base + n * kv);
      expect(probe.memory.kv).toBe(n * kv);
    }
    console.log(`3B×2 layers q4: weights+activations ${(base / 2 ** 20).toFixed(1)} MiB, KV ${(kv / 2 ** 20).toFixed(1)} MiB per session`);
    probe.dispose();

    // a budget for the weights and 2.5 caches: the third open is refused, with numbers
    const uniforms = probe.memory.uniforms; // the model's own uniform buffers (sessions add 64 B each)
    const budget = base + uniforms + 2.5 * kv;
    const m = await GpuModel.create(ctx, c, zeroPacked(c, 'q4'), { format: 'q4', maxContext, maxBatch: 8, memoryBudgetBytes: budget });
    const a = await m.openSession();
    const b = await m.openSession();
    const err = await m.openSession().then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(GpuOutOfMemoryError);
    const oom = err as GpuOutOfMemoryError;
    expect(oom.neededBytes).toBe(kv);
    expect(oom.availableBytes).toBeCloseTo(budget - m.memory.total, 0);
    expect(oom.availableBytes).toBeLessThan(kv);
    expect(m.sessions).toBe(2);
    b.dispose();
    const c3 = await m.openSession(); // the freed share fits again
    expect(m.sessions).toBe(2);
    c3.dispose();
    a.dispose();
    m.dispose();
  });

  it('sessions sharing passes (prefill + decode + verify, split by maxBatch) each equal the CPU reference; batched == alone, bit for bit', async () => {
    const c = syntheticConfig('tiny');
    const w = randomWeights(c, 5);
    const V = c.vocabSize;
    const model = await GpuModel.create(ctx, c, w, { format: 'f32', kvFormat: 'f32', maxContext: 64, maxBatch: 8, invariant: true });
    const [a, b, d] = [await model.openSession(), await model.openSession(), await model.openSession()];
    const cpus = [a, b, d].map(() => new CpuLlama(c, w, 64));
    const run = async (items: { i: number; tokens: number[]; startPos: number }[], what: string) => {
      const sess = [a, b, d];
      const got = await model.forwardBatch(items.map((x) => ({ session: sess[x.i], tokens: x.tokens, startPos: x.startPos })), { kind: 'logits' });
      const out: Float32Array[] = [];
      for (const [j, x] of items.entries()) {
        const g = new Float32Array(got[j].buffer, got[j].byteOffset, got[j].length);
        const want = await cpus[x.i].forward(x.tokens, x.startPos);
        const cmp = compare(g, want, 1e-9, `${what}: session ${x.i}`);
        expect(cmp.ok, cmp.summary).toBe(true);
        expect(argmaxRows(g, x.tokens.length, V), `${what}: session ${x.i} argmax`).toEqual(argmaxRows(want, x.tokens.length, V));
        expect(sess[x.i].length).toBe(x.startPos + x.tokens.length);
        out.push(Float32Array.from(g));
      }
      return out;
    };
    // pass 1: two prefills (13 rows > maxBatch 8: two submissions, one readback)
    await run([{ i: 0, tokens: prompt(6, V, 1), startPos: 0 }, { i: 1, tokens: prompt(7, V, 2), startPos: 0 }], 'prefill a+b');
    // a decode step, a verify block and a fresh prefill in one pass
    await run([{ i: 0, tokens: [11], startPos: 6 }, { i: 1, tokens: [3, 4, 5, 6, 7], startPos: 7 }, { i: 2, tokens: prompt(2, V, 3), startPos: 0 }], 'mixed');
    // a verify after a partial accept (rollback by startPos < length), beside decode steps
    const mixed = await run([{ i: 1, tokens: [9, 8, 7], startPos: 9 }, { i: 0, tokens: [12], startPos: 7 }, { i: 2, tokens: [1], startPos: 2 }], 'rollback verify');
    // batch invariance: session 1's same block alone gives the same bits
    const [alone] = await run([{ i: 1, tokens: [9, 8, 7], startPos: 9 }], 'alone');
    let differ = 0;
    for (let j = 0; j < alone.length; j++) if (alone[j] !== mixed[0][j]) differ++;
    expect(differ, 'logits differing alone vs batched').toBe(0);
    model.dispose();
  });

  it('refuses a session twice in one batch, a session of another model, and a start beyond its cache', async () => {
    const c = syntheticConfig('tiny');
    const w = randomWeights(c, 6);
    const model = await GpuModel.create(ctx, c, w, { maxContext: 16, maxBatch: 4 });
    const s = await model.openSession();
    await expect(model.forwardBatch([{ session: s, tokens: [1], startPos: 0 }, { session: s, tokens: [2], startPos: 1 }], { kind: 'argmax' })).rejects.toThrow(/twice/);
    await expect(model.forwardBatch([{ session: s, tokens: [1], startPos: 3 }], { kind: 'argmax' })).rejects.toThrow(/cache holds 0/);
    await expect(model.forwardBatch([{ session: s, tokens: new Array(17).fill(1), startPos: 0 }], { kind: 'argmax' })).rejects.toThrow(/context full/);
    const other = await GpuModel.create(ctx, c, w, { maxContext: 16, maxBatch: 4 });
    await expect(other.forwardBatch([{ session: s, tokens: [1], startPos: 0 }], { kind: 'argmax' })).rejects.toThrow(/another model/);
    other.dispose();
    model.dispose();
  });
});
