// Host wrapper of kvwrite.wgsl: append a block's K and V rows to one layer's KV cache.

import type { GpuContext } from './gpu.ts';
import { type Buf, type Op, bindAll, cachedPipeline, grid1d, uniformBuffer } from './op.ts';
import source from './kvwrite.wgsl?raw';

export type KvFormat = 'f32' | 'f16';

export interface KvWriteParams {
  kvDim: number;
  startPos: number;
  /** M * words per row */
  count: number;
}
export const KVWRITE_PARAMS_BYTES = 16;

export function packKvWriteParams(p: KvWriteParams): ArrayBuffer {
  return new Uint32Array([p.kvDim, p.startPos, p.count, 0]).buffer;
}

/** Bytes of one layer's K (or V) cache of maxContext positions. */
export function kvCacheBytes(format: KvFormat, maxContext: number, kvDim: number): number {
  return maxContext * kvDim * (format === 'f16' ? 2 : 4);
}

export interface KvWriteBuffers {
  /** (M, kvDim) f32, RoPE already applied */
  k: Buf;
  /** (M, kvDim) f32 */
  v: Buf;
  /** (maxContext, kvDim) in `format`, as u32 words */
  kCache: Buf;
  vCache: Buf;
}

export interface KvWriteDims {
  kvDim: number;
  maxContext: number;
  format: KvFormat;
}

const WG = 64;

export async function createKvWrite(ctx: GpuContext, b: KvWriteBuffers, d: KvWriteDims, label = 'kvwrite'): Promise<Op<{ m: number; startPos: number }>> {
  if (d.format === 'f16' && d.kvDim % 2 !== 0) throw new RangeError(`kvwrite: f16 cache needs an even kvDim, got ${d.kvDim}`);
  const pipeline = await cachedPipeline(ctx, 'kvwrite', source, { WG, KV_F16: d.format === 'f16' ? 1 : 0 });
  const params = uniformBuffer(ctx, KVWRITE_PARAMS_BYTES, `${label}.params`);
  const bindGroup = bindAll(ctx, pipeline, [params, b.k, b.v, b.kCache, b.vCache], label);
  const wordsPerRow = d.format === 'f16' ? d.kvDim / 2 : d.kvDim;
  return {
    encode(pass, { m, startPos }) {
      if (startPos + m > d.maxContext) throw new RangeError(`kvwrite: positions up to ${startPos + m} exceed maxContext ${d.maxContext}`);
      const count = m * wordsPerRow;
      if (count === 0) return;
      ctx.device.queue.writeBuffer(params, 0, packKvWriteParams({ kvDim: d.kvDim, startPos, count }));
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(...grid1d(count, WG));
    },
  };
}
