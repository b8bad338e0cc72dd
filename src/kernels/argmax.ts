// Host wrapper of argmax.wgsl: one u32 token id per logits row (greedy decoding reads back M words).

import type { GpuContext } from './gpu.ts';
import { type Buf, type Op, bindAll, cachedPipeline, uniformBuffer } from './op.ts';
import source from './argmax.wgsl?raw';

export interface ArgmaxParams {
  vocab: number;
}
export const ARGMAX_PARAMS_BYTES = 16;

export function packArgmaxParams(p: ArgmaxParams): ArrayBuffer {
  return new Uint32Array([p.vocab, 0, 0, 0]).buffer;
}

export interface ArgmaxBuffers {
  /** (M, vocab) f32 */
  logits: Buf;
  /** (M) u32 */
  ids: Buf;
}

const WG = 256;

/** encode(pass, m): ids of rows 0..m-1. */
export async function createArgmax(ctx: GpuContext, b: ArgmaxBuffers, vocab: number, label = 'argmax'): Promise<Op<number>> {
  const pipeline = await cachedPipeline(ctx, 'argmax', source, { WG });
  const params = uniformBuffer(ctx, ARGMAX_PARAMS_BYTES, `${label}.params`);
  ctx.device.queue.writeBuffer(params, 0, packArgmaxParams({ vocab }));
  const bindGroup = bindAll(ctx, pipeline, [params, b.logits, b.ids], label);
  return {
    encode(pass, m) {
      if (m <= 0) return;
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(m);
    },
  };
}
