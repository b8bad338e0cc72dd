// Every GPU buffer the WGSL engine allocates, sized from the config and options alone, so the
// memory total is known (and checked against a budget) before anything is uploaded. The
// engine allocates exactly these buffers; its test checks bufferBytes === plan total.
// Weights and activations exist once per model (GpuModel); the KV cache once per session
// (planSessionKv), so N sessions cost weights + activations + N × KV.

import { type LlamaConfig, kvDim, qDim } from '../config.ts';
import { type WeightFormat, packedByteLength } from '../quantize.ts';
import { type KvFormat, kvCacheBytes } from '../../kernels/kvwrite.ts';
import { MAX_TOPK } from '../../kernels/topk.ts';

export interface GpuEngineOptions {
  /** Storage format of the matrices (embedding and LM head included). Default 'f32'. */
  format?: WeightFormat;
  /** KV-cache positions. Default min(maxPositionEmbeddings, 4096). */
  maxContext?: number;
  /** KV-cache storage; f16 halves its memory. Default 'f16'. */
  kvFormat?: KvFormat;
  /**
   * Most rows (tokens, summed over the sessions of a batch) per submission; longer forwards
   * run in chunks of this size. Default 32.
   */
  maxBatch?: number;
  /** Refuse (GpuOutOfMemoryError) before allocating when the plan exceeds this. */
  memoryBudgetBytes?: number;
  /**
   * Batch-invariant matmuls: m = 1 runs the same kernel as m > 1, so a row's result never
   * depends on how many rows share its pass. Verifiers set it (a session's greedy text must
   * not depend on its batch-mates); default false, since on GPUs it costs the decode GEMV's
   * speed-up (on CPU adapters both are the rows kernel anyway).
   */
  invariant?: boolean;
  /** Split each matrix into buffers of at most this many bytes (default: the device's limits; tests force splits). */
  maxChunkBytes?: number;
}

export interface ResolvedOptions {
  format: WeightFormat;
  maxContext: number;
  kvFormat: KvFormat;
  maxBatch: number;
  invariant: boolean;
}

export function resolveOptions(c: LlamaConfig, o: GpuEngineOptions = {}): ResolvedOptions {
  const r = {
    format: o.format ?? 'f32',
    maxContext: o.maxContext ?? Math.min(c.maxPositionEmbeddings, 4096),
    kvFormat: o.kvFormat ?? 'f16',
    maxBatch: o.maxBatch ?? 32,
    invariant: o.invariant ?? false,
  };
  for (const k of ['maxContext', 'maxBatch'] as const) {
    if (!Number.isInteger(r[k]) || r[k] < 1) throw new RangeError(`GPU engine option ${k} = ${r[k]} must be a positive integer`);
  }
  return r;
}

/** One planned buffer: label, bytes, and the group it is reported under. */
export interface PlannedBuffer {
  label: string;
  bytes: number;
  group: 'weights' | 'kv' | 'activations' | 'uniforms';
}

/** Uniform buffers are 16..48 bytes each; counted exactly by the engine, estimated here per op. */
export interface MemoryPlan {
  buffers: PlannedBuffer[];
  weights: number;
  kv: number;
  activations: number;
  total: number;
}

/** Norm vectors are plain f32 arrays, padded like createBufferFrom pads (≥16 bytes, whole words). */
const vecBytes = (n: number): number => Math.max(16, n * 4);

export function planBuffers(c: LlamaConfig, opts: ResolvedOptions): MemoryPlan {
  const buffers: PlannedBuffer[] = [];
  const add = (label: string, bytes: number, group: PlannedBuffer['group']) => buffers.push({ label, bytes, group });
  const dim = c.hiddenSize;
  const kv = kvDim(c);
  const qd = qDim(c);
  const hidden = c.intermediateSize;
  const f = opts.format;
  const M = opts.maxBatch;
  add('embed', packedByteLength(c.vocabSize, dim, f), 'weights');
  for (let l = 0; l < c.numLayers; l++) {
    add(`l${l}.attnNorm`, vecBytes(dim), 'weights');
    add(`l${l}.wqkv`, packedByteLength(qd + 2 * kv, dim, f), 'weights');
    add(`l${l}.wo`, packedByteLength(dim, qd, f), 'weights');
    add(`l${l}.ffnNorm`, vecBytes(dim), 'weights');
    add(`l${l}.wGateUp`, packedByteLength(2 * hidden, dim, f), 'weights');
    add(`l${l}.wDown`, packedByteLength(dim, hidden, f), 'weights');
  }
  for (const b of planSessionKv(c, opts.kvFormat, opts.maxContext)) buffers.push(b);
  add('finalNorm', vecBytes(dim), 'weights');
  if (!c.tieWordEmbeddings) add('lmHead', packedByteLength(c.vocabSize, dim, f), 'weights');
  add('ropeTable', opts.maxContext * c.headDim * 4, 'activations');
  add('ids', vecBytes(M), 'activations');
  add('x', M * dim * 4, 'activations');
  add('xb', M * Math.max(dim, qd) * 4, 'activations');
  add('qkv', M * (qd + 2 * kv) * 4, 'activations');
  add('att', M * qd * 4, 'activations');
  add('gu', M * 2 * hidden * 4, 'activations');
  add('logits', M * c.vocabSize * 4, 'activations');
  add('picks', M * 2 * MAX_TOPK * 4, 'activations');
  add('picksStaging', M * 2 * MAX_TOPK * 4, 'activations');
  const sum = (g: PlannedBuffer['group']) => buffers.filter((b) => b.group === g).reduce((s, b) => s + b.bytes, 0);
  const weights = sum('weights');
  const kvBytes = sum('kv');
  const activations = sum('activations');
  return { buffers, weights, kv: kvBytes, activations, total: weights + kvBytes + activations };
}

/** The KV cache of one session: per layer a K and a V buffer of maxContext positions. */
export function planSessionKv(c: LlamaConfig, kvFormat: KvFormat, maxContext: number): PlannedBuffer[] {
  const bytes = kvCacheBytes(kvFormat, maxContext, kvDim(c));
  const out: PlannedBuffer[] = [];
  for (let l = 0; l < c.numLayers; l++) {
    out.push({ label: `l${l}.kCache`, bytes, group: 'kv' }, { label: `l${l}.vCache`, bytes, group: 'kv' });
  }
  return out;
}

/** Bytes of one session's KV cache (what an open adds to the device's use). */
export function sessionKvBytes(c: LlamaConfig, kvFormat: KvFormat, maxContext: number): number {
  return planSessionKv(c, kvFormat, maxContext).reduce((s, b) => s + b.bytes, 0);
}
