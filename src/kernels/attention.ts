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
  const params = uniformBuffer(ctx, ATTENTION_PARAMS_BYTES, `${label}.params`);
  const bindGroup = bindAll(ctx, pipeline, [params, b.q, b.kCache, b.vCache, b.out], label);
  const scale = 1 / Math.sqrt(d.headDim);
  return {
    encode(pass, { m, startPos }) {
      if (startPos + m > d.maxContext) throw new RangeError(`attention: positions up to ${startPos + m} exceed maxContext ${d.maxContext}`);
      if (m === 0) return;
      ctx.device.queue.writeBuffer(params, 0, packAttentionParams({ nHeads: d.nHeads, nKvHeads: d.nKvHeads, headDim: d.headDim, startPos, scale }));
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(d.nHeads, m);
    },
  };
}
