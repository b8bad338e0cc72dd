// Host wrapper of attention.wgsl: causal GQA attention of M query rows over one layer's cache.

import type { GpuContext } from './gpu.ts';
import type { KvFormat } from './kvwrite.ts';
import { type Buf, type Op, bindAll, cachedPipeline, uniformBuffer } from './op.ts';
import source from './attention.wgsl?raw';

export interface AttentionParams {
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  startPos: number;
  scale: number;
  /** First query/output row (a session's rows inside a batch). Default 0. */
  rowOffset?: number;
  /** f32 elements per q row. Default nHeads * headDim. */
  qStride?: number;
}
export const ATTENTION_PARAMS_BYTES = 32;

export function packAttentionParams(p: AttentionParams): ArrayBuffer {
  const buf = new ArrayBuffer(ATTENTION_PARAMS_BYTES);
  const v = new DataView(buf);
  v.setUint32(0, p.nHeads, true);
  v.setUint32(4, p.nKvHeads, true);
  v.setUint32(8, p.headDim, true);
  v.setUint32(12, p.startPos, true);
  v.setFloat32(16, p.scale, true);
  v.setUint32(20, p.rowOffset ?? 0, true);
  v.setUint32(24, p.qStride ?? p.nHeads * p.headDim, true);
  return buf;
}

export interface AttentionBuffers {
  /** (M, nHeads * headDim), RoPE applied */
  q: Buf;
  /** (maxContext, nKvHeads * headDim) u32 words in `format`, this block already written */
  kCache: Buf;
  vCache: Buf;
  /** (M, nHeads * headDim) */
  out: Buf;
  /**
   * A caller-owned params uniform (ATTENTION_PARAMS_BYTES), written with writeAttentionParams
   * before the submission: the layers of one session then share one uniform and one queue
   * write per pass, and encode() writes nothing. Default: the op's own, written by encode().
   */
  params?: GPUBuffer;
}

export interface AttentionDims {
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  maxContext: number;
  format: KvFormat;
}

const WG = 64;
const DPT = 4;
const MAX_HEAD_DIM = 256;

/** encode(pass, {m, startPos}): rows 0..m-1 at positions startPos.., each attending to 0..its position. */
export async function createAttention(ctx: GpuContext, b: AttentionBuffers, d: AttentionDims, label = 'attention'): Promise<Op<{ m: number; startPos: number }>> {
  if (d.headDim > MAX_HEAD_DIM || d.headDim > DPT * WG || d.headDim % 2 !== 0) {
    throw new RangeError(`attention: headDim ${d.headDim} unsupported (even, at most ${Math.min(MAX_HEAD_DIM, DPT * WG)})`);
  }
  if (d.nHeads % d.nKvHeads !== 0) throw new RangeError(`attention: nKvHeads ${d.nKvHeads} must divide nHeads ${d.nHeads}`);
  const pipeline = await cachedPipeline(ctx, 'attention', source, { WG, KV_F16: d.format === 'f16' ? 1 : 0 });
  const shared = b.params !== undefined;
  const params = b.params ?? uniformBuffer(ctx, ATTENTION_PARAMS_BYTES, `${label}.params`);
  const bindGroup = bindAll(ctx, pipeline, [params, b.q, b.kCache, b.vCache, b.out], label);
  const scale = 1 / Math.sqrt(d.headDim);
  return {
    encode(pass, { m, startPos }) {
      if (startPos + m > d.maxContext) throw new RangeError(`attention: positions up to ${startPos + m} exceed maxContext ${d.maxContext}`);
      if (m === 0) return;
      if (!shared) ctx.device.queue.writeBuffer(params, 0, packAttentionParams({ nHeads: d.nHeads, nKvHeads: d.nKvHeads, headDim: d.headDim, startPos, scale }));
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(d.nHeads, m);
    },
  };
}

/** Queue the params of one session's rows into a shared uniform (see AttentionBuffers.params). */
export function writeAttentionParams(ctx: GpuContext, params: GPUBuffer, d: AttentionDims, at: { startPos: number; m: number; rowOffset: number; qStride: number }): void {
  if (at.startPos + at.m > d.maxContext) throw new RangeError(`attention: positions up to ${at.startPos + at.m} exceed maxContext ${d.maxContext}`);
  ctx.device.queue.writeBuffer(params, 0, packAttentionParams({ nHeads: d.nHeads, nKvHeads: d.nKvHeads, headDim: d.headDim, startPos: at.startPos, scale: 1 / Math.sqrt(d.headDim), rowOffset: at.rowOffset, qStride: at.qStride }));
}
