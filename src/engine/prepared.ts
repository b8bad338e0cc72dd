// Prepared draft weights for the cache: in a packed format (q8/q4/f16/bf16, for the WebGPU
// engine) every 2-D tensor is stored as its packMatrix words, so a cached load skips both the
// download and the packing; 1-D tensors (norms) stay f32, as the engine keeps them. In 'f32'
// (the CPU path) tensors are stored decoded. Node-free: used by the worker and its tests.

import type { LoadProgress } from './progress.ts';
import { type CachedTensor, type Prepared, type WeightsCache, cachedPrepare } from './cache.ts';
import { type PackedMatrix, type WeightFormat, dequantize, packMatrix } from './quantize.ts';
import type { StreamItem } from './gpu/index.ts';

/** What a tensor of a packed entry keeps beside its words, to rebuild the PackedMatrix. */
type PackedMeta = Omit<PackedMatrix, 'data'>;

/** One loaded f32 tensor as it goes into the cache in `format`. */
export function prepareTensor(t: { name: string; shape: number[]; data: Float32Array }, format: WeightFormat): CachedTensor {
  if (format === 'f32' || t.shape.length !== 2) return { name: t.name, data: t.data, meta: { shape: t.shape } };
  const { data, ...packed } = packMatrix(t.data, t.shape[0], t.shape[1], format);
  return { name: t.name, data, meta: { shape: t.shape, packed } };
}

/** A cached tensor as the engine's stream item (the engine checks packed ones against its layout). */
export function streamItem(t: CachedTensor): StreamItem {
  const packed = t.meta?.packed as PackedMeta | undefined;
  if (packed) return { name: t.name, packed: { ...packed, data: t.data as Uint32Array } };
  return { name: t.name, shape: (t.meta?.shape as number[]) ?? [t.data.length], data: t.data as Float32Array };
}

/** A cached tensor as f32 (the CPU fallback); packed matrices are dequantized. */
export function f32Tensor(t: CachedTensor): { name: string; shape: number[]; data: Float32Array } {
  const packed = t.meta?.packed as PackedMeta | undefined;
  const shape = (t.meta?.shape as number[]) ?? [t.data.length];
  return { name: t.name, shape, data: packed ? dequantize({ ...packed, data: t.data as Uint32Array }) : (t.data as Float32Array) };
}

export function isPackedEntry(tensors: CachedTensor[]): boolean {
  return tensors.some((t) => t.meta?.packed !== undefined);
}

/**
 * Cache lookup, else stream the source and prepare each tensor as it arrives (the f32 copy
 * of a matrix is dropped once packed). Quota or storage failures leave a notice and the
 * prepared tensors in memory; they never fail the load.
 */
export function prepareWeights(
  cache: WeightsCache | null, key: string, name: string, format: WeightFormat,
  source: () => AsyncIterable<{ name: string; shape: number[]; data: Float32Array }>,
  totalBytes: number, onProgress?: (p: LoadProgress) => void,
): Promise<Prepared> {
  return cachedPrepare(cache, key, { name, format }, async () => {
    const tensors: CachedTensor[] = [];
    let done = 0;
    for await (const t of source()) {
      tensors.push(prepareTensor(t, format));
      done += t.data.byteLength;
      if (format !== 'f32' && onProgress) {
        onProgress({ phase: 'quantize', fraction: totalBytes > 0 ? Math.min(1, done / totalBytes) : null, detail: `${format}: packed ${(done / 2 ** 20).toFixed(2)} MiB (f32)` });
      }
    }
    return { tensors };
  });
}
