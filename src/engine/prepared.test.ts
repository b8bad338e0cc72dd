// Pre-packed (cached) draft weights: an engine fed the packed words must compute exactly what
// an engine fed the f32 tensors computes in the same format (the oracle: the engine's own
// packMatrix path, bit for bit); a packed entry that does not fit is refused with a typed
// error; the cache round-trips packed entries (memoryStore: structured clone, like IndexedDB)
// so a hit neither reads the source nor packs, and a full store leaves a working uncached load.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { syntheticConfig, type LlamaConfig } from './config.ts';
import { expectedShapes, layerTensorNames, randomWeights, type LlamaWeights } from './weights.ts';
import { type WeightFormat, packMatrix } from './quantize.ts';
import { WeightsCache, memoryStore, type CacheStore } from './cache.ts';
import { f32Tensor, prepareTensor, prepareWeights, streamItem } from './prepared.ts';
import { PackedWeightsError, WebGpuLlama, type StreamItem } from './gpu/index.ts';
import { type GpuContext, requestDevice } from '../kernels/gpu.ts';
import { prompt } from './gpu/testing.ts';

let ctx: GpuContext;
beforeAll(async () => {
  ctx = await requestDevice();
});
afterAll(() => ctx?.device.destroy());

type F32Tensor = { name: string; shape: number[]; data: Float32Array };

/** The weights as the loader streams them (HF names, f32), plus a tensor the engine ignores. */
function tensorsOf(c: LlamaConfig, w: LlamaWeights): F32Tensor[] {
  const shapes = expectedShapes(c);
  const out: F32Tensor[] = [{ name: 'model.embed_tokens.weight', shape: shapes.get('model.embed_tokens.weight')!, data: w.embed }];
  out.push({ name: 'model.rotary_emb.inv_freq', shape: [c.headDim / 2], data: new Float32Array(c.headDim / 2) });
  w.layers.forEach((L, l) => {
    const names = layerTensorNames(l);
    for (const k of Object.keys(names) as (keyof typeof names)[]) out.push({ name: names[k], shape: shapes.get(names[k])!, data: L[k] });
  });
  out.push({ name: 'model.norm.weight', shape: [c.hiddenSize], data: w.finalNorm });
  if (w.lmHead) out.push({ name: 'lm_head.weight', shape: shapes.get('lm_head.weight')!, data: w.lmHead });
  return out;
}

async function* streamOf<T>(items: T[]): AsyncIterable<T> {
  yield* items;
}

/** Logits of a 13-token prefill then one decode step. */
async function logitsOf(gpu: WebGpuLlama, vocab: number): Promise<Float32Array[]> {
  const p = prompt(13, vocab, 4);
  const a = await gpu.forward(p, 0);
  const b = await gpu.forward([p[3]], p.length);
  return [a, b];
}

/** Mismatches between two arrays, bit for bit (NaN-safe), with the first index. */
function bitDiff(a: Float32Array, b: Float32Array): { count: number; first: number } {
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  let count = 0;
  let first = -1;
  for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) { count++; if (first < 0) first = i; }
  return { count: count + Math.abs(a.length - b.length), first };
}

describe('engine from pre-packed matrices', () => {
  const cases: { format: WeightFormat; tied: boolean }[] = [
    { format: 'q4', tied: true },
    { format: 'q8', tied: false },
    { format: 'bf16', tied: true },
  ];
  for (const { format, tied } of cases) {
    it(`${format}, ${tied ? 'tied' : 'untied'} LM head: logits bit-identical to the engine packing the f32 stream`, async () => {
      const c = syntheticConfig('tiny', { tieWordEmbeddings: tied });
      const f32 = tensorsOf(c, randomWeights(c, 11));
      // Through a structured clone, as an IndexedDB read returns it.
      const cached = structuredClone(f32.map((t) => prepareTensor(t, format)));
      expect(cached.filter((t) => t.meta?.packed).length).toBe(1 + 7 * c.numLayers + (tied ? 0 : 1));
      const fromF32 = await WebGpuLlama.create(ctx, c, streamOf<StreamItem>(f32), { format, maxContext: 32 });
      const fromPacked = await WebGpuLlama.create(ctx, c, streamOf(cached.map(streamItem)), { format, maxContext: 32 });
      const [a, b] = [await logitsOf(fromF32, c.vocabSize), await logitsOf(fromPacked, c.vocabSize)];
      for (let i = 0; i < a.length; i++) {
        const d = bitDiff(b[i], a[i]);
        expect(d.count, `${format} forward ${i}: ${d.count} of ${a[i].length} logits differ, first at ${d.first}`).toBe(0);
        expect(a[i].every(Number.isFinite)).toBe(true);
      }
      fromF32.dispose();
      fromPacked.dispose();
    });
  }

  it('refuses a packed matrix of the wrong format, shape or length, and a packed 1-D tensor, with PackedWeightsError', async () => {
    const c = syntheticConfig('tiny');
    const f32 = tensorsOf(c, randomWeights(c, 2));
    const wq = f32.find((t) => t.name === 'model.layers.0.self_attn.k_proj.weight')!; // (kvDim 32, dim 96)
    const bad = (replace: StreamItem): StreamItem[] => f32.map((t) => (t.name === replace.name ? replace : streamItem(prepareTensor(t, 'q4'))));
    const wrongFormat = { name: wq.name, packed: packMatrix(wq.data, wq.shape[0], wq.shape[1], 'q8') };
    const transposed = { name: wq.name, packed: packMatrix(wq.data, wq.shape[1], wq.shape[0], 'q4') };
    const full = packMatrix(wq.data, wq.shape[0], wq.shape[1], 'q4');
    const short = { name: wq.name, packed: { ...full, data: full.data.subarray(4) } };
    const norm = f32.find((t) => t.name === 'model.norm.weight')!;
    const packedNorm = { name: norm.name, packed: packMatrix(norm.data, 1, norm.data.length, 'q4') };
    for (const [what, item, msg] of [
      ['format', wrongFormat, /packed as q8, but the engine runs q4/],
      ['shape', transposed, /packed shape \[96, 32\] does not match the config's \[32, 96\]/],
      ['length', short, /packed data holds/],
      ['1-D', packedNorm, /must come as f32/],
    ] as const) {
      const err = await WebGpuLlama.create(ctx, c, streamOf(bad(item)), { format: 'q4', maxContext: 16 }).catch((e: unknown) => e);
      expect(err, what).toBeInstanceOf(PackedWeightsError);
      expect((err as Error).message, what).toMatch(msg);
      expect((err as PackedWeightsError).tensor, what).toBe(item.name);
    }
  });
});

describe('prepareWeights (the worker\'s cache path)', () => {
  const c = syntheticConfig('tiny', { tieWordEmbeddings: false });
  const f32 = tensorsOf(c, randomWeights(c, 5));
  const f32Bytes = f32.reduce((a, t) => a + t.data.byteLength, 0);

  it('q4: a miss packs and stores; a hit returns the packed words without reading the source', async () => {
    const store = memoryStore();
    const cache = new WeightsCache(store);
    let reads = 0;
    const source = () => {
      reads++;
      return streamOf(f32);
    };
    const first = await prepareWeights(cache, 'k-q4', 'tiny', 'q4', source, f32Bytes);
    expect(first.fromCache).toBe(false);
    expect(first.notice).toBeNull();
    const second = await prepareWeights(cache, 'k-q4', 'tiny', 'q4', source, f32Bytes);
    expect(second.fromCache).toBe(true);
    expect(reads).toBe(1);
    const [info] = await cache.list();
    expect(info.format).toBe('q4');
    // q4: 4 bits + one f16 scale per 32 columns, rows padded to 16 bytes; norms stay f32.
    expect(info.byteLength).toBe(second.tensors.reduce((a, t) => a + t.data.byteLength, 0));
    expect(info.byteLength).toBeLessThan(f32Bytes / 5);
    second.tensors.forEach((t, i) => {
      expect(t.name).toBe(first.tensors[i].name);
      expect(Array.from(t.data), t.name).toEqual(Array.from(first.tensors[i].data));
      expect(t.data.constructor, t.name).toBe(first.tensors[i].data.constructor);
    });
    // The CPU fallback gets f32 back: norms exactly, matrices dequantized (within q4 error).
    const norm = second.tensors.find((t) => t.name === 'model.norm.weight')!;
    expect(Array.from(f32Tensor(norm).data)).toEqual(Array.from(f32.find((t) => t.name === norm.name)!.data));
    const gate = f32Tensor(second.tensors.find((t) => t.name === 'model.layers.1.mlp.gate_proj.weight')!);
    expect(gate.shape).toEqual([c.intermediateSize, c.hiddenSize]);
    expect(gate.data.length).toBe(c.intermediateSize * c.hiddenSize);
  });

  it('f32 (CPU path): stores the decoded tensors unchanged', async () => {
    const cache = new WeightsCache(memoryStore());
    await prepareWeights(cache, 'k-f32', 'tiny', 'f32', () => streamOf(f32), f32Bytes);
    const hit = await prepareWeights(cache, 'k-f32', 'tiny', 'f32', () => { throw new Error('source read on a hit'); }, f32Bytes);
    expect(hit.fromCache).toBe(true);
    hit.tensors.forEach((t, i) => expect(Array.from(t.data), t.name).toEqual(Array.from(f32[i].data)));
  });

  it('a full store (QuotaExceededError) leaves a notice and packed weights the engine runs', async () => {
    const full: CacheStore = {
      ...memoryStore(),
      set: async () => {
        throw new DOMException('quota', 'QuotaExceededError');
      },
    };
    const prepared = await prepareWeights(new WeightsCache(full), 'k', 'tiny', 'q4', () => streamOf(f32), f32Bytes);
    expect(prepared.fromCache).toBe(false);
    expect(prepared.notice).toMatch(/storage is full.*runs uncached/);
    const gpu = await WebGpuLlama.create(ctx, c, streamOf(prepared.tensors.map(streamItem)), { format: 'q4', maxContext: 16 });
    const ref = await WebGpuLlama.create(ctx, c, streamOf<StreamItem>(f32), { format: 'q4', maxContext: 16 });
    const p = prompt(5, c.vocabSize, 1);
    const d = bitDiff(await gpu.forward(p, 0), await ref.forward(p, 0));
    expect(d.count, `first differing logit at ${d.first}`).toBe(0);
    gpu.dispose();
    ref.dispose();
  });
});
