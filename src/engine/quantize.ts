// Weight formats of the GPU engine and the CPU packer for them: f32, f16, bf16, q8, q4.
// packMatrix is deterministic (same input → same bits); dequantize gives exactly the values
// the matmul kernels see, so tests use it as the oracle for the quantized formats.
//
// Packed layout (all formats): a matrix of `rows` × `cols` in HF [out, in] layout becomes
// `rows` rows of `rowWords` u32 words each, row r starting at word r*rowWords. Columns are
// zero-padded to colsPadded = ceil(cols/32)*32 (one quantization group is 32 columns), and
// rowWords is rounded up to a multiple of 4 so every row starts 16-byte aligned (vec4<u32>
// loads). Zero padding is exact: padded weights are 0 and never change a dot product, and
// they do not move any group's absmax. Inside a row:
//   f32  : word j = bits of w[j]                                   (colsPadded words)
//   f16  : word j = f16(w[2j]) | f16(w[2j+1]) << 16  (unpack2x16float order; RNE rounding)
//   bf16 : word j = bf16(w[2j]) | bf16(w[2j+1]) << 16 (bf16 = top 16 bits of f32, RNE)
//   q8   : colsPadded/4 quant words, then ceil(groups/2) scale words.
//          Quant word j holds int8 q[4j+b] (two's complement) in byte b.
//          llama.cpp Q8_0 rule per group of 32: d = absmax/127, q = round(w/d) (half away
//          from zero), scale stored as f16(d); value = q * f16(d).
//   q4   : colsPadded/8 quant words, then ceil(groups/2) scale words.
//          Quant word j holds u4 q[8j+n] in nibble n (bits 4n..4n+3), value = (q-8) * f16(d).
//          llama.cpp Q4_0 rule (symmetric): m = the signed value of largest |w| in the group,
//          d = m / -8, q = min(15, trunc(w/d + 8.5)); so the extreme weight is exact (q=0).
//          Only the nibble order differs from GGUF Q4_0 (which puts q[j], q[j+16] in byte
//          j), so GGUF Q4_0/Q8_0 blocks repack into these formats losslessly.
//   Scale words (q8, q4): word g holds f16 scales of groups 2g (low half) and 2g+1 (high).
// f16 scales: a group whose scale falls below f16's normal range (|w| < ~1e-2 · 2^-14·127)
// may lose precision; real checkpoints are far above it.

import { GROUP_SIZE, type PackedMatrix, type WeightFormat, QuantizeError, rowLayout } from '../kernels/matmul-layout.ts';

export { GROUP_SIZE, QuantizeError, WEIGHT_FORMATS, isWeightFormat, packedByteLength, rowLayout } from '../kernels/matmul-layout.ts';
export type { PackedMatrix, WeightFormat } from '../kernels/matmul-layout.ts';

// ---- scalar conversions (shared scratch; JS is single-threaded) ----
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** f32 → IEEE half bits, round to nearest even; overflow → ±inf; NaN kept. */
export function f32ToF16Bits(x: number): number {
  f32[0] = x;
  const u = u32[0];
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  const mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    let r = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && r & 1)) r++;
    return sign | r;
  }
  let r = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && r & 1)) r++;
  return sign | r;
}

export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** bf16's canonical quiet NaN (c10::BFloat16's): every NaN converts to it. */
export const BF16_NAN = 0x7fc0;

/**
 * The one f32 → bf16 conversion (engine packing, fixture writers): bf16 bits of the f32 whose
 * bits are `u`, rounded to nearest even (ties to even; overflow → ±inf; subnormals round like
 * any other value). Every NaN, quiet or signalling, of either sign, becomes BF16_NAN: a NaN's
 * payload does not survive a JS number anyway, and truncating or rounding one could make ±inf.
 */
export function bf16FromF32Bits(u: number): number {
  if ((u & 0x7fffffff) > 0x7f800000) return BF16_NAN;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** f32 → bf16 bits (bf16FromF32Bits of x's f32 bits). */
export function f32ToBf16Bits(x: number): number {
  f32[0] = x;
  return bf16FromF32Bits(u32[0]);
}

export function bf16BitsToF32(h: number): number {
  u32[0] = (h << 16) >>> 0;
  return f32[0];
}

/** C roundf: half away from zero. */
const roundAway = (v: number): number => (v < 0 ? -Math.round(-v) : Math.round(v));
const fr = Math.fround;

// ---- packing ----

/**
 * Pack a rows × cols f32 matrix (HF [out, in] layout, row-major) into `format`.
 * q8/q4 follow llama.cpp's Q8_0/Q4_0 reference quantizers step for step in f32.
 */
export function packMatrix(w: Float32Array, rows: number, cols: number, format: WeightFormat): PackedMatrix {
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 1 || cols < 1) {
    throw new QuantizeError(`packMatrix: bad shape ${rows}×${cols}; rows and cols must be positive integers`);
  }
  if (w.length !== rows * cols) {
    throw new QuantizeError(`packMatrix: ${w.length} values for a ${rows}×${cols} matrix (want ${rows * cols})`);
  }
  const { colsPadded, scaleWordOffset, rowWords } = rowLayout(cols, format);
  const data = new Uint32Array(rows * rowWords);
  const groups = colsPadded / GROUP_SIZE;
  const block = new Float32Array(GROUP_SIZE);
  for (let r = 0; r < rows; r++) {
    const src = r * cols;
    const dst = r * rowWords;
    switch (format) {
      case 'f32':
        data.set(new Uint32Array(w.buffer, w.byteOffset + src * 4, cols), dst);
        break;
      case 'f16':
      case 'bf16': {
        const conv = format === 'f16' ? f32ToF16Bits : f32ToBf16Bits;
        for (let j = 0; j < cols; j += 2) {
          const lo = conv(w[src + j]);
          const hi = j + 1 < cols ? conv(w[src + j + 1]) : 0;
          data[dst + (j >> 1)] = (lo | (hi << 16)) >>> 0;
        }
        break;
      }
      case 'q8':
      case 'q4':
        for (let g = 0; g < groups; g++) {
          const c0 = g * GROUP_SIZE;
          const n = Math.min(GROUP_SIZE, cols - c0);
          block.fill(0);
          block.set(w.subarray(src + c0, src + c0 + n));
          const dBits = format === 'q8' ? quantizeQ8Block(block, data, dst + c0 / 4) : quantizeQ4Block(block, data, dst + c0 / 8);
          const sw = dst + scaleWordOffset + (g >> 1);
          data[sw] = (data[sw] | (g & 1 ? dBits << 16 : dBits)) >>> 0;
        }
        break;
    }
  }
  return { rows, cols, format, colsPadded, rowWords, scaleWordOffset, data };
}

/** Q8_0: writes 8 quant words at data[at..], returns the f16 scale bits. */
function quantizeQ8Block(x: Float32Array, data: Uint32Array, at: number): number {
  let amax = 0;
  for (let i = 0; i < GROUP_SIZE; i++) amax = Math.max(amax, Math.abs(x[i]));
  const d = fr(amax / 127);
  const id = d ? fr(1 / d) : 0;
  for (let j = 0; j < GROUP_SIZE / 4; j++) {
    let word = 0;
    for (let b = 0; b < 4; b++) {
      const q = Math.max(-127, Math.min(127, roundAway(fr(x[4 * j + b] * id))));
      word |= (q & 0xff) << (8 * b);
    }
    data[at + j] = word >>> 0;
  }
  return f32ToF16Bits(d);
}

/** Q4_0: writes 4 quant words at data[at..], returns the f16 scale bits. */
function quantizeQ4Block(x: Float32Array, data: Uint32Array, at: number): number {
  let amax = 0;
  let max = 0;
  for (let i = 0; i < GROUP_SIZE; i++) {
    if (Math.abs(x[i]) > amax) {
      amax = Math.abs(x[i]);
      max = x[i];
    }
  }
  const d = fr(max / -8);
  const id = d ? fr(1 / d) : 0;
  for (let j = 0; j < GROUP_SIZE / 8; j++) {
    let word = 0;
    for (let n = 0; n < 8; n++) {
      const q = Math.min(15, Math.trunc(fr(fr(x[8 * j + n] * id) + 8.5)));
      word |= q << (4 * n);
    }
    data[at + j] = word >>> 0;
  }
  return f32ToF16Bits(d);
}

// ---- dequantization (the test oracle) ----

/** The rows × cols f32 values the GPU kernels compute with (padding dropped). */
export function dequantize(p: PackedMatrix): Float32Array {
  const { rows, cols, rowWords, scaleWordOffset, data } = p;
  const out = new Float32Array(rows * cols);
  const asF32 = new Float32Array(data.buffer, data.byteOffset, data.length);
  for (let r = 0; r < rows; r++) {
    const base = r * rowWords;
    const o = r * cols;
    for (let c = 0; c < cols; c++) {
      let v: number;
      switch (p.format) {
        case 'f32': v = asF32[base + c]; break;
        case 'f16': v = f16BitsToF32((data[base + (c >> 1)] >>> (16 * (c & 1))) & 0xffff); break;
        case 'bf16': v = bf16BitsToF32((data[base + (c >> 1)] >>> (16 * (c & 1))) & 0xffff); break;
        case 'q8': {
          const q = (data[base + (c >> 2)] << (24 - 8 * (c & 3))) >> 24;
          v = q * scaleOf(data, base + scaleWordOffset, c);
          break;
        }
        case 'q4': {
          const q = (data[base + (c >> 3)] >>> (4 * (c & 7))) & 0xf;
          v = (q - 8) * scaleOf(data, base + scaleWordOffset, c);
          break;
        }
      }
      out[o + c] = v;
    }
  }
  return out;
}

function scaleOf(data: Uint32Array, scaleBase: number, c: number): number {
  const g = (c / GROUP_SIZE) | 0;
  return f16BitsToF32((data[scaleBase + (g >> 1)] >>> (16 * (g & 1))) & 0xffff);
}
