// WebGpuLlama vs CpuLlama (the f32 reference) on random-weight models: a 17+ token prompt,
// 1-token decode steps, then a 5-token verify block after a rollback. Logits must match by
// NMSE (bounds stated per case below) and argmax must agree at every position. Quantized
// formats run the CPU reference on the DEQUANTIZED weights, so the oracle is exact for the
// format and only f32 accumulation order differs.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { syntheticConfig } from '../config.ts';
import { CpuLlama } from '../reference.ts';
import { expectedShapes, layerTensorNames, randomWeights } from '../weights.ts';
import { type GpuContext, GpuOutOfMemoryError, requestDevice } from '../../kernels/gpu.ts';
import { WebGpuLlama, planBuffers, resolveOptions } from './index.ts';
import { argmaxRows, build as buildWith, prompt, roundTrip, scenario } from './testing.ts';

let ctx: GpuContext;
beforeAll(async () => {
  ctx = await requestDevice();
});
afterAll(() => ctx?.device.destroy());

const build = (...a: Parameters<typeof buildWith> extends [GpuContext, ...infer R] ? R : never) => buildWith(ctx, ...a);

describe('WebGpuLlama vs CpuLlama', () => {
  // maxChunkBytes splits every matrix (the tied embedding / LM head into 4) as a big vocabulary
  // does past maxStorageBufferBindingSize.
  it('tiny config, f32, split matrices, prefill in chunks of 8 (maxBatch), f32 KV: NMSE ≤ 1e-9', async () => {
    const c = syntheticConfig('tiny');
    const { gpu, cpu } = await build(c, 'f32', { kvFormat: 'f32', maxBatch: 8, maxContext: 64, maxChunkBytes: 100_000 });
    const worst = await scenario(gpu, cpu, 19, 1e-9);
    console.log(`tiny f32: worst NMSE ${worst.toExponential(2)}`);
    expect(gpu.allocatedStorageBytes).toBe(gpu.plan.total);
    gpu.dispose();
  });

  // f16 K/V round each cached value by up to 2^-11 relative; over 2 layers that gives logits
  // NMSE around 1e-7 (measured ~1e-7 here); bound 1e-5.
  it('tiny config, q8 weights streamed as tensors, f16 KV: NMSE ≤ 1e-5', async () => {
    const c = syntheticConfig('tiny', { tieWordEmbeddings: false });
    const w = roundTrip(c, randomWeights(c, 3), 'q8');
    const stream = async function* () {
      yield { name: 'model.embed_tokens.weight', shape: [c.vocabSize, c.hiddenSize], data: w.embed };
      yield { name: 'model.rotary_emb.inv_freq', shape: [c.headDim / 2], data: new Float32Array(c.headDim / 2) };
      for (let l = 0; l < c.numLayers; l++) {
        const names = layerTensorNames(l);
        for (const [k, name] of Object.entries(names)) yield { name, shape: expectedShapes(c).get(name)!, data: w.layers[l][k as keyof typeof names] };
      }
      yield { name: 'model.norm.weight', shape: [c.hiddenSize], data: w.finalNorm };
      yield { name: 'lm_head.weight', shape: [c.vocabSize, c.hiddenSize], data: w.lmHead! };
    };
    const gpu = await WebGpuLlama.create(ctx, c, stream(), { format: 'q8', maxContext: 64 });
    const cpu = new CpuLlama(c, w, 64);
    const worst = await scenario(gpu, cpu, 17, 1e-5);
    console.log(`tiny q8 streamed, f16 KV: worst NMSE ${worst.toExponential(2)}`);
    gpu.dispose();
  });

  it('forwardArgmax and forwardTopK read back what forward computes', async () => {
    const c = syntheticConfig('tiny');
    const { gpu } = await build(c, 'f32', { maxContext: 64, maxBatch: 4 }, 5);
    const p = prompt(11, c.vocabSize, 2);
    const logits = await gpu.forward(p, 0);
    gpu.rollback(0);
    expect(Array.from(await gpu.forwardArgmax(p, 0))).toEqual(argmaxRows(logits, p.length, c.vocabSize));
    for (const k of [1, 7, 64]) {
      const rows = await gpu.forwardTopK(p, 0, k);
      rows.forEach((row, r) => {
        const ids = Array.from({ length: c.vocabSize }, (_, j) => j).sort((a, b) => logits[r * c.vocabSize + b] - logits[r * c.vocabSize + a] || a - b);
        expect(Array.from(row.ids), `row ${r} k=${k}`).toEqual(ids.slice(0, k));
        expect(Array.from(row.logits)).toEqual(ids.slice(0, k).map((j) => logits[r * c.vocabSize + j]));
      });
      expect(gpu.length).toBe(p.length);
    }
    await expect(gpu.forwardTopK([1], 0, 65)).rejects.toThrow(RangeError);
    await expect(gpu.forward([c.vocabSize], 0)).rejects.toThrow(/outside the vocabulary/);
    await expect(gpu.forward([1], gpu.length + 1)).rejects.toThrow(RangeError);
    await expect(gpu.forward(new Array(65).fill(1), 0)).rejects.toThrow(/context full/);
    expect(() => gpu.rollback(gpu.length + 1)).toThrow(RangeError);
    gpu.dispose();
  });

});

describe('memory', () => {
  it('the 1B shape in q4 with a 4096-token KV cache plans ≤ 1.0 GB (1e9 bytes) of buffers', () => {
    const c = syntheticConfig('1b');
    const plan = planBuffers(c, resolveOptions(c, { format: 'q4', maxContext: 4096 }));
    console.log(`1B q4 4096 ctx: weights ${plan.weights} kv ${plan.kv} activations ${plan.activations} total ${plan.total}`);
    expect(plan.total).toBeLessThanOrEqual(1e9);
    // The same model in f32 would not fit: the plan is not trivially small.
    expect(planBuffers(c, resolveOptions(c, { format: 'f32', maxContext: 4096 })).total).toBeGreaterThan(4e9);
  });

  it('a model over the budget is refused before allocation, naming needed and available bytes', async () => {
    const c = syntheticConfig('tiny');
    const err = await WebGpuLlama.create(ctx, c, randomWeights(c), { memoryBudgetBytes: 100_000 }).catch((e) => e);
    expect(err).toBeInstanceOf(GpuOutOfMemoryError);
    expect(err.neededBytes).toBeGreaterThan(100_000);
    expect(err.availableBytes).toBe(100_000);
  });

  it('a logits buffer over the binding limit is refused with needed and allowed bytes', async () => {
    const c = syntheticConfig('tiny');
    const maxBatch = Math.ceil(ctx.limits.maxStorageBufferBindingSize / (c.vocabSize * 4)) + 1;
    const err = await WebGpuLlama.create(ctx, c, randomWeights(c), { maxBatch, maxContext: 16 }).catch((e) => e);
    expect(err).toBeInstanceOf(GpuOutOfMemoryError);
    expect(err.neededBytes).toBe(maxBatch * c.vocabSize * 4);
    expect(err.availableBytes).toBe(ctx.limits.maxStorageBufferBindingSize);
    expect(err.message).toMatch(/lower maxBatch/);
  });
});
