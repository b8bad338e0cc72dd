// The packed weight layout shared by the CPU packer (src/engine/quantize.ts, which documents
// every format bit by bit) and the GPU matmul (matmul.ts). It lives under kernels/ because
// kernels may not import engine; quantize.ts re-exports all of it.

export type WeightFormat = 'f32' | 'f16' | 'bf16' | 'q8' | 'q4';
export const WEIGHT_FORMATS: readonly WeightFormat[] = ['f32', 'f16', 'bf16', 'q8', 'q4'];

/** Columns per quantization group (q8, q4) and the column padding unit of every format. */
export const GROUP_SIZE = 32;

export interface PackedMatrix {
  rows: number;
  cols: number;
  format: WeightFormat;
  /** cols rounded up to a multiple of GROUP_SIZE. */
  colsPadded: number;
  /** u32 words per row (multiple of 4). */
  rowWords: number;
  /** Word offset of the scales inside each row (q8/q4: right after the quant words; else the end of the values). */
  scaleWordOffset: number;
  /** rows * rowWords words. */
  data: Uint32Array;
}

export class QuantizeError extends Error {
  override name = 'QuantizeError';
}

export function isWeightFormat(s: string): s is WeightFormat {
  return (WEIGHT_FORMATS as readonly string[]).includes(s);
}

/** Row layout of a format: [quant/value words per row, scale words per row, rowWords]. */
export function rowLayout(cols: number, format: WeightFormat): { colsPadded: number; scaleWordOffset: number; rowWords: number } {
  const colsPadded = Math.ceil(cols / GROUP_SIZE) * GROUP_SIZE;
  const groups = colsPadded / GROUP_SIZE;
  let valueWords: number;
  let scaleWords = 0;
  switch (format) {
    case 'f32': valueWords = colsPadded; break;
    case 'f16': case 'bf16': valueWords = colsPadded / 2; break;
    case 'q8': valueWords = colsPadded / 4; scaleWords = Math.ceil(groups / 2); break;
    case 'q4': valueWords = colsPadded / 8; scaleWords = Math.ceil(groups / 2); break;
    default: throw new QuantizeError(`unknown weight format "${format as string}"; use one of ${WEIGHT_FORMATS.join(', ')}`);
  }
  const rowWords = Math.ceil((valueWords + scaleWords) / 4) * 4;
  return { colsPadded, scaleWordOffset: valueWords, rowWords };
}

/** Bytes of a packed rows × cols matrix (what uploadMatrix puts on the GPU). */
export function packedByteLength(rows: number, cols: number, format: WeightFormat): number {
  return rows * rowLayout(cols, format).rowWords * 4;
}

