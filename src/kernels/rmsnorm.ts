// Host wrapper of rmsnorm.wgsl: RMSNorm of M rows of width n into a separate output buffer.

import type { GpuContext } from './gpu.ts';
import { type Buf, type Op, bindAll, cachedPipeline, uniformBuffer } from './op.ts';
import source from './rmsnorm.wgsl?raw';

export interface RmsnormParams {
  n: number;
  eps: number;
}
export const RMSNORM_PARAMS_BYTES = 16;

export function packRmsnormParams(p: RmsnormParams): ArrayBuffer {
  const buf = new ArrayBuffer(RMSNORM_PARAMS_BYTES);
  const v = new DataView(buf);
  v.setUint32(0, p.n, true);
  v.setFloat32(4, p.eps, true);
  return buf;
}

export interface RmsnormBuffers {
  /** (M, n) */
  out: Buf;
  /** (M, n), a different buffer from out */
  x: Buf;
  /** (n) */
  weight: Buf;
}

const WG = 256;

/** encode(pass, m): normalize rows 0..m-1. */
export async function createRmsnorm(ctx: GpuContext, b: RmsnormBuffers, dims: RmsnormParams, label = 'rmsnorm'): Promise<Op<number>> {
  const pipeline = await cachedPipeline(ctx, 'rmsnorm', source, { WG });
  const params = uniformBuffer(ctx, RMSNORM_PARAMS_BYTES, `${label}.params`);
  ctx.device.queue.writeBuffer(params, 0, packRmsnormParams(dims));
  const bindGroup = bindAll(ctx, pipeline, [params, b.x, b.weight, b.out], label);
  return {
    encode(pass, m) {
      if (m <= 0) return;
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(m);
    },
  };
}
