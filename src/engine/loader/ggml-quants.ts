// ggml tensor types of GGUF files → f32, value for value as llama.cpp's dequantize_row_*
// defines them (layouts: ggml/src/ggml-common.h; math: ggml/src/ggml-quants.c). Written from
// the layouts below, not translated from ggml's code. Everything is little-endian; "f16" is
// an IEEE half; blocks run along a row (ne0), so a row of n values is n / QK whole blocks.
//
// Blocks of 32 (j < 16 indexes the 16 quant bytes; byte j holds x[j] in its low nibble and
// x[j+16] in its high nibble):
//   Q4_0   18 B  d:f16 qs[16]               x = d·(q − 8)
//   Q4_1   20 B  d:f16 m:f16 qs[16]         x = d·q + m
//   Q5_0   22 B  d:f16 qh:u32 qs[16]        q |= bit i of qh << 4 (i = element 0..31); x = d·(q − 16)
//   Q5_1   24 B  d:f16 m:f16 qh:u32 qs[16]  as Q5_0, x = d·q + m
//   Q8_0   34 B  d:f16 qs:i8[32]            x = d·q (element i in byte i)
//   IQ4_NL 18 B  d:f16 qs[16]               x = d·K[q], K = the 16 non-linear levels below
//
// Super-blocks of 256 (K-quants). "sub-block b" is elements [16b, 16b+16) or [32b, 32b+32):
//   Q2_K  84 B  scales[16] qs[64] d:f16 dmin:f16
//         16 sub-blocks of 16; scales[b] = sc (low nibble) | m (high nibble).
//         Element i: half h = i>>7, r = i&127, 2-bit q = (qs[32h + (r&31)] >> 2·(r>>5)) & 3;
//         x = d·sc_b·q − dmin·m_b, b = i>>4.
//   Q3_K 110 B  hmask[32] qs[64] scales[12] d:f16
//         16 sub-blocks of 16, 6-bit scales: low 4 bits = scales[b] & 15 (b < 8) or
//         scales[b−8] >> 4 (b ≥ 8); high 2 bits = (scales[8 + b%4] >> 2·(b>>2)) & 3.
//         Low 2 bits of q as Q2_K; bit (4h + (r>>5)) of hmask[r&31] set → q as is, clear → q − 4.
//         x = d·(sc_b − 32)·q.
//   Q4_K 144 B  d:f16 dmin:f16 scales[12] qs[128]
//         8 sub-blocks of 32 with 6-bit (sc, m) pairs packed in 12 bytes: b < 4: sc = s[b]&63,
//         m = s[b+4]&63; b ≥ 4: sc = (s[b+4]&15) | (s[b−4]>>6)<<4, m = (s[b+4]>>4) | (s[b]>>6)<<4.
//         Byte qs[32c + l] holds element 64c + l (low nibble) and 64c + 32 + l (high nibble).
//         x = d·sc_b·q − dmin·m_b, b = i>>5.
//   Q5_K 176 B  d:f16 dmin:f16 scales[12] qh[32] qs[128]
//         as Q4_K, plus bit b of qh[i&31] as the 5th bit (+16) of element i.
//   Q6_K 210 B  ql[128] qh[64] scales:i8[16] d:f16
//         16 sub-blocks of 16. Element i: h = i>>7, quarter k = (i>>5)&3, l = i&31:
//         low 4 bits from ql[64h + 32(k&1) + l] (low nibble for k < 2, high for k ≥ 2),
//         high 2 bits = (qh[32h + l] >> 2k) & 3; x = d·scales[i>>4]·(q − 32).
//   IQ4_XS 136 B  d:f16 scales_h:u16 scales_l[4] qs[128]
//         8 sub-blocks of 32, 6-bit scale ls_b = ((scales_l[b>>1] >> 4(b&1)) & 15) |
//         ((scales_h >> 2b) & 3) << 4; qs[16b..16b+16) as one IQ4_NL block; x = d·(ls_b − 32)·K[q].
//
// Every product above is exact in f32 (an f16 mantissa times small integers stays within 24
// bits) except at most one, so computing in f64 and rounding once on the store into a
// Float32Array gives llama.cpp's f32 results bit for bit.

import { WeightsFormatError } from './errors.ts';
import { convertInto, halfTable } from './safetensors.ts';

/** How a type's precision maps onto the engine's formats (`--quant auto`). */
export type GgmlPrecision = 'float' | 'q8' | 'q4';

export interface GgmlTypeInfo {
  id: number;
  name: string;
  /** elements per block (1 for plain floats) */
  blockElems: number;
  blockBytes: number;
  /** 2- to 4-bit types → q4, 5- to 8-bit → q8, floats stay as today (f32) */
  precision: GgmlPrecision;
}

const info = (id: number, name: string, blockElems: number, blockBytes: number, precision: GgmlPrecision): [number, GgmlTypeInfo] =>
  [id, { id, name, blockElems, blockBytes, precision }];

/** The ggml types duet decodes, by ggml type id (ggml.h enum ggml_type). */
export const GGML_TYPES: ReadonlyMap<number, GgmlTypeInfo> = new Map([
  info(0, 'F32', 1, 4, 'float'),
  info(1, 'F16', 1, 2, 'float'),
  info(2, 'Q4_0', 32, 18, 'q4'),
  info(3, 'Q4_1', 32, 20, 'q4'),
  info(6, 'Q5_0', 32, 22, 'q8'),
  info(7, 'Q5_1', 32, 24, 'q8'),
  info(8, 'Q8_0', 32, 34, 'q8'),
  info(10, 'Q2_K', 256, 84, 'q4'),
  info(11, 'Q3_K', 256, 110, 'q4'),
  info(12, 'Q4_K', 256, 144, 'q4'),
  info(13, 'Q5_K', 256, 176, 'q8'),
  info(14, 'Q6_K', 256, 210, 'q8'),
  info(20, 'IQ4_NL', 32, 18, 'q4'),
  info(23, 'IQ4_XS', 256, 136, 'q4'),
  info(30, 'BF16', 1, 2, 'float'),
]);

/** Names of the ggml types duet does not decode, for error messages. */
const OTHER_NAMES: Record<number, string> = {
  9: 'Q8_1', 15: 'Q8_K', 16: 'IQ2_XXS', 17: 'IQ2_XS', 18: 'IQ3_XXS', 19: 'IQ1_S', 21: 'IQ3_S', 22: 'IQ2_S',
  24: 'I8', 25: 'I16', 26: 'I32', 27: 'I64', 28: 'F64', 29: 'IQ1_M', 34: 'TQ1_0', 35: 'TQ2_0', 39: 'MXFP4', 40: 'NVFP4',
};

export const SUPPORTED_GGML_NAMES = [...GGML_TYPES.values()].map((t) => t.name).join(', ');

/** The ggml type of tensor `tensor`, or a typed error naming the tensor and the type. */
export function ggmlType(file: string, tensor: string, id: number): GgmlTypeInfo {
  const t = GGML_TYPES.get(id);
  if (t) return t;
  const name = OTHER_NAMES[id] ? `${OTHER_NAMES[id]} (ggml type ${id})` : `unknown ggml type id ${id}`;
  throw new WeightsFormatError(file, tensor, `tensor type ${name} is not supported; duet reads ${SUPPORTED_GGML_NAMES} (re-quantize with llama-quantize, e.g. to Q4_K_M or Q8_0)`);
}

/** IQ4_NL / IQ4_XS levels (kvalues_iq4nl in ggml-common.h). */
export const IQ4_LEVELS: readonly number[] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

type BlockDecoder = (src: Uint8Array, s: number, out: Float32Array, o: number, half: Float32Array) => void;

const h16 = (src: Uint8Array, s: number, half: Float32Array): number => half[src[s] | (src[s + 1] << 8)];

/** Legacy 32-blocks: x[j] and x[j+16] from byte j; Q5 types add 5th bits from the u32 at qhAt (-1: none, likewise mAt). */
function legacy(dAt: number, mAt: number, qhAt: number, qsAt: number, offset: number): BlockDecoder {
  return (src, s, out, o, half) => {
    const d = h16(src, s + dAt, half);
    const m = mAt < 0 ? 0 : h16(src, s + mAt, half);
    const qh = qhAt < 0 ? 0 : (src[s + qhAt] | (src[s + qhAt + 1] << 8) | (src[s + qhAt + 2] << 16) | (src[s + qhAt + 3] << 24)) >>> 0;
    for (let j = 0; j < 16; j++) {
      const b = src[s + qsAt + j];
      const x0 = d * ((b & 15) + (((qh >>> j) & 1) << 4) - offset);
      const x1 = d * ((b >> 4) + (((qh >>> (j + 16)) & 1) << 4) - offset);
      // no "+ 0" for the symmetric types: it would turn ggml's -0 (negative d, q = offset) into +0
      out[o + j] = mAt < 0 ? x0 : x0 + m;
      out[o + j + 16] = mAt < 0 ? x1 : x1 + m;
    }
  };
}

const decodeQ8_0: BlockDecoder = (src, s, out, o, half) => {
  const d = h16(src, s, half);
  for (let i = 0; i < 32; i++) out[o + i] = d * ((src[s + 2 + i] << 24) >> 24);
};

const decodeIq4Nl: BlockDecoder = (src, s, out, o, half) => {
  const d = h16(src, s, half);
  for (let j = 0; j < 16; j++) {
    const b = src[s + 2 + j];
    out[o + j] = d * IQ4_LEVELS[b & 15];
    out[o + j + 16] = d * IQ4_LEVELS[b >> 4];
  }
};

const decodeQ2_K: BlockDecoder = (src, s, out, o, half) => {
  const d = h16(src, s + 80, half);
  const dmin = h16(src, s + 82, half);
  for (let i = 0; i < 256; i++) {
    const r = i & 127;
    const q = (src[s + 16 + 32 * (i >> 7) + (r & 31)] >> (2 * (r >> 5))) & 3;
    const sc = src[s + (i >> 4)];
    out[o + i] = d * (sc & 15) * q - dmin * (sc >> 4);
  }
};

/** Q3_K's 16 6-bit scales (offset 32 not yet removed). */
function q3kScale(src: Uint8Array, at: number, b: number): number {
  const low = b < 8 ? src[at + b] & 15 : src[at + b - 8] >> 4;
  return low | (((src[at + 8 + (b & 3)] >> (2 * (b >> 2))) & 3) << 4);
}

const sc16 = new Float64Array(16);

const decodeQ3_K: BlockDecoder = (src, s, out, o, half) => {
  const d = h16(src, s + 108, half);
  for (let b = 0; b < 16; b++) sc16[b] = d * (q3kScale(src, s + 96, b) - 32);
  for (let i = 0; i < 256; i++) {
    const r = i & 127;
    const low = (src[s + 32 + 32 * (i >> 7) + (r & 31)] >> (2 * (r >> 5))) & 3;
    const high = (src[s + (r & 31)] >> (4 * (i >> 7) + (r >> 5))) & 1;
    out[o + i] = sc16[i >> 4] * (high ? low : low - 4);
  }
};

/** Q4_K / Q5_K's 8 (scale, min) 6-bit pairs in 12 bytes at `at`, into sc[0..8) and mn[0..8). */
function k4Scales(src: Uint8Array, at: number, sc: Uint8Array, mn: Uint8Array): void {
  for (let b = 0; b < 8; b++) {
    if (b < 4) {
      sc[b] = src[at + b] & 63;
      mn[b] = src[at + b + 4] & 63;
    } else {
      sc[b] = (src[at + b + 4] & 15) | ((src[at + b - 4] >> 6) << 4);
      mn[b] = (src[at + b + 4] >> 4) | ((src[at + b] >> 6) << 4);
    }
  }
}

const sc8 = new Uint8Array(8);
const mn8 = new Uint8Array(8);

function decodeK4(withHighBits: boolean): BlockDecoder {
  const qsAt = withHighBits ? 48 : 16;
  return (src, s, out, o, half) => {
    const d = h16(src, s, half);
    const dmin = h16(src, s + 2, half);
    k4Scales(src, s + 4, sc8, mn8);
    for (let b = 0; b < 8; b++) {
      // (d·sc)·q − dmin·m: the same products, in the same order, as per element
      const d1 = d * sc8[b];
      const m1 = dmin * mn8[b];
      const qs = s + qsAt + 32 * (b >> 1);
      const shift = 4 * (b & 1);
      for (let l = 0; l < 32; l++) {
        let q = (src[qs + l] >> shift) & 15;
        if (withHighBits) q += ((src[s + 16 + l] >> b) & 1) << 4;
        out[o + 32 * b + l] = d1 * q - m1;
      }
    }
  };
}

const decodeQ6_K: BlockDecoder = (src, s, out, o, half) => {
  const d = h16(src, s + 208, half);
  for (let i = 0; i < 256; i++) {
    const h = i >> 7;
    const k = (i >> 5) & 3;
    const l = i & 31;
    const low = (src[s + 64 * h + 32 * (k & 1) + l] >> (4 * (k >> 1))) & 15;
    const high = (src[s + 128 + 32 * h + l] >> (2 * k)) & 3;
    const sc = (src[s + 192 + (i >> 4)] << 24) >> 24;
    out[o + i] = d * sc * ((low | (high << 4)) - 32);
  }
};

const decodeIq4Xs: BlockDecoder = (src, s, out, o, half) => {
  const d = h16(src, s, half);
  const scalesH = src[s + 2] | (src[s + 3] << 8);
  for (let b = 0; b < 8; b++) {
    const ls = ((src[s + 4 + (b >> 1)] >> (4 * (b & 1))) & 15) | (((scalesH >> (2 * b)) & 3) << 4);
    const dl = d * (ls - 32);
    for (let j = 0; j < 16; j++) {
      const q = src[s + 8 + 16 * b + j];
      out[o + 32 * b + j] = dl * IQ4_LEVELS[q & 15];
      out[o + 32 * b + 16 + j] = dl * IQ4_LEVELS[q >> 4];
    }
  }
};

const DECODERS: Record<string, BlockDecoder> = {
  Q4_0: legacy(0, -1, -1, 2, 8),
  Q4_1: legacy(0, 2, -1, 4, 0),
  Q5_0: legacy(0, -1, 2, 6, 16),
  Q5_1: legacy(0, 2, 4, 8, 0),
  Q8_0: decodeQ8_0,
  Q2_K: decodeQ2_K,
  Q3_K: decodeQ3_K,
  Q4_K: decodeK4(false),
  Q5_K: decodeK4(true),
  Q6_K: decodeQ6_K,
  IQ4_NL: decodeIq4Nl,
  IQ4_XS: decodeIq4Xs,
};

/**
 * Decode `numel` values of ggml type `type` from `bytes` (whole blocks) into out[at..].
 * Float types go through the safetensors converters (same bits).
 */
export function dequantizeInto(out: Float32Array, at: number, bytes: Uint8Array, type: GgmlTypeInfo, numel: number): void {
  if (numel % type.blockElems !== 0) throw new RangeError(`${type.name}: ${numel} values are not whole blocks of ${type.blockElems}`);
  const blocks = numel / type.blockElems;
  if (bytes.length < blocks * type.blockBytes) throw new RangeError(`${type.name}: ${bytes.length} bytes for ${blocks} blocks of ${type.blockBytes}`);
  if (type.precision === 'float') {
    convertInto(out, at, bytes.subarray(0, numel * type.blockBytes), type.name as 'F32' | 'F16' | 'BF16');
    return;
  }
  const decode = DECODERS[type.name];
  const half = halfTable();
  for (let b = 0; b < blocks; b++) decode(bytes, b * type.blockBytes, out, at + b * type.blockElems, half);
}

/** Decode a whole tensor (convenience over dequantizeInto). */
export function dequantizeGgml(bytes: Uint8Array, type: GgmlTypeInfo, numel: number): Float32Array {
  const out = new Float32Array(numel);
  dequantizeInto(out, 0, bytes, type, numel);
  return out;
}
