// Host wrapper of topk.wgsl: the k ≤ 64 largest logits of each row with their ids, sorted,
// so a sampled step reads back 2k words per row instead of the vocabulary.

import type { GpuContext } from './gpu.ts';
import { type Buf, type Op, bindAll, cachedPipeline, uniformBuffer } from './op.ts';
import source from './topk.wgsl?raw';

export const MAX_TOPK = 64;

export interface TopkParams {
  vocab: number;
  k: number;
}
export const TOPK_PARAMS_BYTES = 16;

export function packTopkParams(p: TopkParams): ArrayBuffer {
  return new Uint32Array([p.vocab, p.k, 0, 0]).buffer;
}

export interface TopkBuffers {
  /** (M, vocab) f32 */
  logits: Buf;
  /** (M, 2, k) u32: ids, then logit bits; at least M * 2 * MAX_TOPK words to allow any k */
  out: Buf;
}

/** Candidates of one row, decoded from the words topk.wgsl writes. */
export interface TopkRow {
  ids: Uint32Array;
  logits: Float32Array;
}

/** Split the (M, 2, k) readback into rows. */
export function decodeTopk(words: Uint32Array, m: number, k: number): TopkRow[] {
  const rows: TopkRow[] = [];
  for (let r = 0; r < m; r++) {
    const o = r * 2 * k;
    rows.push({ ids: words.slice(o, o + k), logits: new Float32Array(words.slice(o + k, o + 2 * k).buffer) });
  }
  return rows;
}

const WG = 256;

/** encode(pass, {m, k}): top-k of rows 0..m-1; out holds m * 2k words. */
export async function createTopk(ctx: GpuContext, b: TopkBuffers, vocab: number, label = 'topk'): Promise<Op<{ m: number; k: number }>> {
  const pipeline = await cachedPipeline(ctx, 'topk', source, { WG });
  const params = uniformBuffer(ctx, TOPK_PARAMS_BYTES, `${label}.params`);
  const bindGroup = bindAll(ctx, pipeline, [params, b.logits, b.out], label);
  return {
    encode(pass, { m, k }) {
      if (!Number.isInteger(k) || k < 1 || k > Math.min(MAX_TOPK, vocab)) {
        throw new RangeError(`topk: k = ${k}; use 1..${Math.min(MAX_TOPK, vocab)}`);
      }
      if (m <= 0) return;
      ctx.device.queue.writeBuffer(params, 0, packTopkParams({ vocab, k }));
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(m);
    },
  };
}
