// Host wrapper of rope.wgsl, and the cos/sin table it reads (built from ropeInvFreq in f64).

import type { GpuContext } from './gpu.ts';
import { type Buf, type Op, bindAll, cachedPipeline, grid1d, uniformBuffer } from './op.ts';
import source from './rope.wgsl?raw';

export interface RopeParams {
  nHeads: number;
  headDim: number;
  startPos: number;
  /** M * nHeads * headDim / 2 */
  count: number;
}
export const ROPE_PARAMS_BYTES = 16;

export function packRopeParams(p: RopeParams): ArrayBuffer {
  return new Uint32Array([p.nHeads, p.headDim, p.startPos, p.count]).buffer;
}

/** (maxPositions, headDim/2, 2): cos and sin of p * invFreq[i], evaluated in f64 like the CPU reference. */
export function ropeTable(invFreq: Float32Array, maxPositions: number): Float32Array {
  const half = invFreq.length;
  const t = new Float32Array(maxPositions * half * 2);
  for (let p = 0; p < maxPositions; p++) {
    for (let i = 0; i < half; i++) {
      const angle = p * invFreq[i];
      t[(p * half + i) * 2] = Math.cos(angle);
      t[(p * half + i) * 2 + 1] = Math.sin(angle);
    }
  }
  return t;
}

export interface RopeBuffers {
  /** (maxPositions, headDim/2, 2) from ropeTable */
  table: Buf;
  /** (M, nHeads * headDim), rotated in place */
  x: Buf;
}

export interface RopeDims {
  nHeads: number;
  headDim: number;
  /** rows of the table */
  maxPositions: number;
}

const WG = 64;

/** encode(pass, {m, startPos}): rotate rows 0..m-1 at positions startPos.. */
export async function createRope(ctx: GpuContext, b: RopeBuffers, d: RopeDims, label = 'rope'): Promise<Op<{ m: number; startPos: number }>> {
  if (d.headDim % 2 !== 0) throw new RangeError(`rope: headDim ${d.headDim} must be even`);
  const pipeline = await cachedPipeline(ctx, 'rope', source, { WG });
  const params = uniformBuffer(ctx, ROPE_PARAMS_BYTES, `${label}.params`);
  const bindGroup = bindAll(ctx, pipeline, [params, b.table, b.x], label);
  return {
    encode(pass, { m, startPos }) {
      if (startPos + m > d.maxPositions) throw new RangeError(`rope: position ${startPos + m - 1} beyond the table's ${d.maxPositions} positions`);
      const count = (m * d.nHeads * d.headDim) / 2;
      if (count === 0) return;
      ctx.device.queue.writeBuffer(params, 0, packRopeParams({ nHeads: d.nHeads, headDim: d.headDim, startPos, count }));
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(...grid1d(count, WG));
    },
  };
}
