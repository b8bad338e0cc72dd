// Host wrapper of embedding.wgsl: token ids → rows of a packed (possibly quantized, possibly
// split) table, the same GpuMatrix the tied LM head's matmul reads.

import type { GpuContext } from './gpu.ts';
import type { GpuMatrix, WeightFormat } from './matmul.ts';
import { type Buf, type Op, bindAll, cachedPipeline, grid1d, uniformBuffer } from './op.ts';
import source from './embedding.wgsl?raw';

export interface EmbeddingParams {
  cols: number;
  rowWords: number;
  scaleWordOffset: number;
  rowStart: number;
  rows: number;
  /** M * cols */
  count: number;
}
export const EMBEDDING_PARAMS_BYTES = 32;

export function packEmbeddingParams(p: EmbeddingParams): ArrayBuffer {
  return new Uint32Array([p.cols, p.rowWords, p.scaleWordOffset, p.rowStart, p.rows, p.count, 0, 0]).buffer;
}

const FORMAT_CODE: Record<WeightFormat, number> = { f32: 0, f16: 1, bf16: 2, q8: 3, q4: 4 };

export interface EmbeddingBuffers {
  /** (M) u32 token ids, each < table.rows (the host validates) */
  ids: Buf;
  /** (vocab, dim) packed */
  table: GpuMatrix;
  /** (M, dim) f32 */
  out: Buf;
}

const WG = 256;

/** encode(pass, m): rows for ids 0..m-1, one dispatch per table chunk. */
export async function createEmbedding(ctx: GpuContext, b: EmbeddingBuffers, label = 'embedding'): Promise<Op<number>> {
  const t = b.table;
  const pipeline = await cachedPipeline(ctx, 'embedding', source, { WG, FORMAT: FORMAT_CODE[t.format] });
  const chunks = t.chunks.map((c, i) => {
    const params = uniformBuffer(ctx, EMBEDDING_PARAMS_BYTES, `${label}.params${i}`);
    return { c, params, bindGroup: bindAll(ctx, pipeline, [params, b.ids, c.buffer, b.out], `${label}${i}`) };
  });
  return {
    encode(pass, m) {
      const count = m * t.cols;
      if (count === 0) return;
      pass.setPipeline(pipeline);
      for (const { c, params, bindGroup } of chunks) {
        ctx.device.queue.writeBuffer(params, 0, packEmbeddingParams({ cols: t.cols, rowWords: t.rowWords, scaleWordOffset: t.scaleWordOffset, rowStart: c.rowStart, rows: c.rows, count }));
        pass.setBindGroup(0, bindGroup);
        pass.dispatchWorkgroups(...grid1d(count, WG));
      }
    },
  };
}
