// Host wrapper of rope_kv.wgsl: RoPE on one session's q rows (in place in the fused q/k/v
// projection) and its rotated k and v appended to one layer's KV cache, in one dispatch.

import type { GpuContext } from './gpu.ts';
import type { KvFormat } from './kvwrite.ts';
import { type Buf, type Op, bindAll, cachedPipeline, grid1d } from './op.ts';
import source from './rope_kv.wgsl?raw';

export interface RopeKvParams {
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  startPos: number;
  /** First row of this session inside the batch's qkv buffer. */
  rowOffset: number;
  /** f32 elements per qkv row (qDim + 2·kvDim for the fused projection). */
  rowStride: number;
  /** M * (nHeads * headDim/2 + words per cache row) */
  count: number;
}
export const ROPE_KV_PARAMS_BYTES = 32;

export function packRopeKvParams(p: RopeKvParams): ArrayBuffer {
  return new Uint32Array([p.nHeads, p.nKvHeads, p.headDim, p.startPos, p.rowOffset, p.rowStride, p.count, 0]).buffer;
}

export interface RopeKvDims {
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  /** Positions the cache (and the table) hold. */
  maxContext: number;
  format: KvFormat;
}

export interface RopeKvBuffers {
  /** (maxPositions, headDim/2, 2) from rope.ts ropeTable */
  table: Buf;
  /** (rows, rowStride): q | k | v per row; q rotated in place */
  qkv: Buf;
  /** (maxContext, kvDim) u32 words in `format` */
  kCache: Buf;
  vCache: Buf;
  /** The RopeKvParams uniform (ROPE_KV_PARAMS_BYTES); one per session, shared by its layers. */
  params: GPUBuffer;
}

const WG = 64;

/** Threads of one dispatch for m rows. */
export function ropeKvCount(d: Pick<RopeKvDims, 'nHeads' | 'nKvHeads' | 'headDim' | 'format'>, m: number): number {
  const kvDim = d.nKvHeads * d.headDim;
  return m * ((d.nHeads * d.headDim) / 2 + (d.format === 'f16' ? kvDim / 2 : kvDim));
}

/**
 * encode(pass, m): the uniform must already hold this pass's params (writeRopeKvParams), so
 * the layers of one session share one uniform and one queue write per pass.
 */
export async function createRopeKv(ctx: GpuContext, b: RopeKvBuffers, d: RopeKvDims, label = 'rope_kv'): Promise<Op<number>> {
  if (d.headDim % 2 !== 0) throw new RangeError(`rope_kv: headDim ${d.headDim} must be even`);
  const pipeline = await cachedPipeline(ctx, 'rope_kv', source, { WG, KV_F16: d.format === 'f16' ? 1 : 0 });
  const bindGroup = bindAll(ctx, pipeline, [b.params, b.table, b.qkv, b.kCache, b.vCache], label);
  return {
    encode(pass, m) {
      if (m <= 0) return;
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(...grid1d(ropeKvCount(d, m), WG));
    },
  };
}

/** Queue the params of one session's rows for the next submission (checks the cache bound). */
export function writeRopeKvParams(ctx: GpuContext, params: GPUBuffer, d: RopeKvDims, at: { m: number; startPos: number; rowOffset: number; rowStride: number }): void {
  if (at.startPos + at.m > d.maxContext) throw new RangeError(`rope_kv: positions up to ${at.startPos + at.m} exceed maxContext ${d.maxContext}`);
  const qkvCols = (d.nHeads + 2 * d.nKvHeads) * d.headDim;
  if (at.rowStride < qkvCols) throw new RangeError(`rope_kv: rowStride ${at.rowStride} < q+k+v width ${qkvCols}`);
  ctx.device.queue.writeBuffer(params, 0, packRopeKvParams({ nHeads: d.nHeads, nKvHeads: d.nKvHeads, headDim: d.headDim, ...at, count: ropeKvCount(d, at.m) }));
}
