// Host wrapper of swiglu.wgsl: SwiGLU (silu(gate) * up) in place on the gate buffer over M rows of width n.

import type { GpuContext } from './gpu.ts';
import { type Buf, type Op, bindAll, cachedPipeline, grid1d, uniformBuffer } from './op.ts';
import source from './swiglu.wgsl?raw';

export interface SwigluParams {
  count: number;
}
export const SWIGLU_PARAMS_BYTES = 16;

export function packSwigluParams(p: SwigluParams): ArrayBuffer {
  return new Uint32Array([p.count, 0, 0, 0]).buffer;
}

export interface SwigluBuffers {
  /** (M, hidden) gate projection, overwritten with silu(gate) * up */
  gate: Buf;
  /** (M, hidden) */
  up: Buf;
}

const WG = 256;

/** encode(pass, m): rows 0..m-1 of width n. */
export async function createSwiglu(ctx: GpuContext, b: SwigluBuffers, n: number, label = 'swiglu'): Promise<Op<number>> {
  const pipeline = await cachedPipeline(ctx, 'swiglu', source, { WG });
  const params = uniformBuffer(ctx, SWIGLU_PARAMS_BYTES, `${label}.params`);
  const bindGroup = bindAll(ctx, pipeline, [params, b.gate, b.up], label);
  return {
    encode(pass, m) {
      const count = m * n;
      if (count === 0) return;
      ctx.device.queue.writeBuffer(params, 0, packSwigluParams({ count }));
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(...grid1d(count, WG));
    },
  };
}
