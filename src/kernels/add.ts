// Host wrapper of add.wgsl: residual add x += y over M rows of width n.

import type { GpuContext } from './gpu.ts';
import { type Buf, type Op, bindAll, cachedPipeline, grid1d, uniformBuffer } from './op.ts';
import source from './add.wgsl?raw';

export interface AddParams {
  count: number;
}
export const ADD_PARAMS_BYTES = 16;

export function packAddParams(p: AddParams): ArrayBuffer {
  return new Uint32Array([p.count, 0, 0, 0]).buffer;
}

export interface AddBuffers {
  /** (M, dim) residual stream, y added in place */
  x: Buf;
  /** (M, dim) */
  y: Buf;
}

const WG = 256;

/** encode(pass, m): rows 0..m-1 of width n. */
export async function createAdd(ctx: GpuContext, b: AddBuffers, n: number, label = 'add'): Promise<Op<number>> {
  const pipeline = await cachedPipeline(ctx, 'add', source, { WG });
  const params = uniformBuffer(ctx, ADD_PARAMS_BYTES, `${label}.params`);
  const bindGroup = bindAll(ctx, pipeline, [params, b.x, b.y], label);
  return {
    encode(pass, m) {
      const count = m * n;
      if (count === 0) return;
      ctx.device.queue.writeBuffer(params, 0, packAddParams({ count }));
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(...grid1d(count, WG));
    },
  };
}
