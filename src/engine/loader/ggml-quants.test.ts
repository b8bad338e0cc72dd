// ggml block decoders (ggml-quants.ts) against two oracles that never share its code:
// 1. round trip: tools/fixtures/ggml-encode.ts encodes random rows (3×768, 7×256, 37×512,
//    with an all-zero, an all-positive and an all-negative block mixed in) and reports the
//    values it meant; the decode must equal them bit for bit, and be within the format's
//    error bound of the input (errorBound: half a step after the round-up of every scale).
// 2. known values: one block per format assembled byte by byte from the layout, with the
//    decoded values worked out by hand in the comments.
import { describe, expect, it } from 'vitest';
import { mulberry32 } from '../weights.ts';
import { GGML_TYPES, dequantizeGgml, ggmlType } from './ggml-quants.ts';
import { WeightsFormatError } from './errors.ts';
import { GGML_BLOCK, GGML_TYPE_ID, type GgmlType, encodeGgml, errorBound } from '../../../tools/fixtures/ggml-encode.ts';

const QUANT_TYPES: GgmlType[] = ['Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q8_0', 'Q2_K', 'Q3_K', 'Q4_K', 'Q5_K', 'Q6_K', 'IQ4_NL', 'IQ4_XS'];
const SHAPES: [number, number][] = [[3, 768], [7, 256], [37, 512]];

/** Rows of N(0, s_row) values with per-row scales 0.01..3, a few outliers, and three special blocks. */
function sample(rows: number, cols: number, seed: number): Float32Array {
  const rand = mulberry32(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
  const x = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const s = 0.01 * 300 ** rand();
    for (let c = 0; c < cols; c++) x[r * cols + c] = s * gauss() * (rand() < 0.01 ? 8 : 1);
  }
  // row 1: columns 0..255 zero, 256.. positive only (if the row has them); row 2: negative only
  x.fill(0, cols, cols + 256);
  if (cols > 256) for (let c = 256; c < cols; c++) x[cols + c] = Math.abs(x[cols + c]) + 0.5;
  if (rows > 2) for (let c = 0; c < cols; c++) x[2 * cols + c] = -Math.abs(x[2 * cols + c]) - 0.25;
  return x;
}

describe('ggml decoders: round trip through an independent encoder', () => {
  for (const type of QUANT_TYPES) {
    it(`${type}: decode = the encoder's values bit for bit, within the error bound`, () => {
      const info = GGML_TYPES.get(GGML_TYPE_ID[type])!;
      const [blockElems, blockBytes] = GGML_BLOCK[type];
      expect([info.name, info.blockElems, info.blockBytes]).toEqual([type, blockElems, blockBytes]);
      let worstRatio = 0;
      let sumErr = 0;
      for (const [rows, cols] of SHAPES) {
        const x = sample(rows, cols, rows * 1000 + cols);
        const enc = encodeGgml(x, type);
        expect(enc.bytes.length).toBe((x.length / blockElems) * blockBytes);
        const got = dequantizeGgml(enc.bytes, info, x.length);
        let mismatches = 0;
        let first = -1;
        for (let i = 0; i < x.length; i++) {
          if (!Object.is(got[i], enc.values[i])) {
            mismatches++;
            if (first < 0) first = i;
          }
        }
        expect(mismatches, `${type} ${rows}×${cols}: ${mismatches} values differ from the encoder's, first at ${first} (row ${Math.floor(first / cols)}, col ${first % cols}): ${got[first]} vs ${enc.values[first]}`).toBe(0);
        for (let b = 0; b < x.length; b += blockElems) {
          const bound = errorBound(type, x, b);
          let err = 0;
          let at = b;
          for (let i = b; i < b + blockElems; i++) {
            const e = Math.abs(got[i] - x[i]);
            sumErr += e;
            if (e > err) [err, at] = [e, i];
          }
          if (bound > 0) worstRatio = Math.max(worstRatio, err / bound);
          expect(err, `${type} ${rows}×${cols} block at ${b}: |err| ${err} at ${at} (x = ${x[at]}, got ${got[at]}) over bound ${bound}`).toBeLessThanOrEqual(bound);
        }
      }
      console.log(`${type}: worst |err| / bound ${worstRatio.toFixed(3)}`);
      // the bound is not vacuous: some block uses a good part of it, and quantization happened
      expect(worstRatio, `${type}: worst error / bound`).toBeGreaterThan(0.3);
      expect(sumErr).toBeGreaterThan(0);
    });
  }

  it('the special blocks decode exactly where the format can represent them', () => {
    // An all-zero block decodes to zeros in every format (scale 0 or zero quants).
    for (const type of QUANT_TYPES) {
      const x = new Float32Array(256);
      const got = dequantizeGgml(encodeGgml(x, type).bytes, GGML_TYPES.get(GGML_TYPE_ID[type])!, 256);
      expect(got.every((v) => v === 0), type).toBe(true);
    }
  });
});

/** A zeroed block with some bytes set, and f16 bit patterns written at given offsets. */
function block(bytes: number, set: Record<number, number>, halves: Record<number, number> = {}): Uint8Array {
  const b = new Uint8Array(bytes);
  for (const [at, v] of Object.entries(set)) b[Number(at)] = v;
  for (const [at, h] of Object.entries(halves)) {
    b[Number(at)] = h & 255;
    b[Number(at) + 1] = h >> 8;
  }
  return b;
}
// f16 bit patterns
const H = { half: 0x3800, quarter: 0x3400, one: 0x3c00, two: 0x4000, minusOne: 0xbc00, minusEighth: 0xb000 };

function probe(type: GgmlType, bytes: Uint8Array, want: Record<number, number>): void {
  const info = GGML_TYPES.get(GGML_TYPE_ID[type])!;
  const got = dequantizeGgml(bytes, info, info.blockElems);
  for (const [i, v] of Object.entries(want)) expect(got[Number(i)], `${type} element ${i}`).toBe(v);
}

describe('ggml decoders: hand-built blocks', () => {
  it('Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL', () => {
    // Q4_0: d = 0.5; qs[0] = 0x9F → x0 = 0.5·(15−8) = 3.5, x16 = 0.5·(9−8) = 0.5;
    // qs[15] = 0x10 → x15 = 0.5·(0−8) = −4, x31 = 0.5·(1−8) = −3.5
    probe('Q4_0', block(18, { 2: 0x9f, 17: 0x10 }, { 0: H.half }), { 0: 3.5, 16: 0.5, 15: -4, 31: -3.5 });
    // Q4_1: d = 0.25, m = −1; qs[3] = 0x5A → x3 = 0.25·10 − 1 = 1.5, x19 = 0.25·5 − 1 = 0.25; x0 = m = −1
    probe('Q4_1', block(20, { 7: 0x5a }, { 0: H.quarter, 2: H.minusOne }), { 3: 1.5, 19: 0.25, 0: -1 });
    // Q5_0: d = 2, qh bits 3 and 20; qs[3] = 0x21 → x3 = (1|16) − 16 = 1 → 2, x19 = 2 − 16 → −28;
    // qs[4] = 0x0F → x4 = 15 − 16 → −2, x20 = (0|16) − 16 → 0
    probe('Q5_0', block(22, { 2: 0x08, 4: 0x10, 9: 0x21, 10: 0x0f }, { 0: H.two }), { 3: 2, 19: -28, 4: -2, 20: 0 });
    // Q5_1: d = 0.5, m = 1, qh bit 31; qs[15] = 0xF0 → x15 = 0·0.5 + 1 = 1, x31 = (15|16)·0.5 + 1 = 16.5
    probe('Q5_1', block(24, { 7: 0x80, 23: 0xf0 }, { 0: H.half, 2: H.one }), { 15: 1, 31: 16.5, 30: 1 });
    // Q8_0: d = −0.125; qs[5] = −127 → 15.875, qs[31] = 127 → −15.875
    probe('Q8_0', block(34, { 7: 0x81, 33: 0x7f }, { 0: H.minusEighth }), { 5: 15.875, 31: -15.875, 0: -0 });
    // IQ4_NL: d = 0.5; qs[0] = 0xF0 → x0 = 0.5·(−127) = −63.5, x16 = 0.5·113 = 56.5;
    // qs[7] = 0x87 → x7 = 0.5·(−10) = −5, x23 = 0.5·1 = 0.5
    probe('IQ4_NL', block(18, { 2: 0xf0, 9: 0x87 }, { 0: H.half }), { 0: -63.5, 16: 56.5, 7: -5, 23: 0.5 });
  });

  it('Q2_K, Q3_K', () => {
    // Q2_K: d = 0.5 (@80), dmin = 0.25 (@82). scales[0] = 0x21 (sc 1, m 2), scales[9] = 0x5F
    // (sc 15, m 5), scales[13] = 0x13 (sc 3, m 1).
    // x0: qs[0] bits 0-1 = 3 → 0.5·1·3 − 0.25·2 = 1.
    // x144 (half 1, r 16: qs[32+16] = qs[48] bits 0-1, sub-block 9): q = 2 → 0.5·15·2 − 0.25·5 = 13.75.
    // x208 (half 1, r 80: qs[48] bits 4-5, sub-block 13): q = 1 → 0.5·3·1 − 0.25·1 = 1.25.
    // x1: q = 0 → −0.25·2 = −0.5.
    probe('Q2_K', block(84, { 0: 0x21, 9: 0x5f, 13: 0x13, 16: 0x03, [16 + 48]: 0x12 }, { 80: H.half, 82: H.quarter }), { 0: 1, 144: 13.75, 208: 1.25, 1: -0.5 });
    // Q3_K: d = 0.5 (@108), scales @96. Sub-block 0: 33 = 0b10_0001 → low 1 in byte 96 (low
    // nibble), high 2 in byte 104 bits 0-1. Sub-block 13: 27 = 0b01_1011 → low 11 in byte
    // 96+5 high nibble, high 1 in byte 96+8+1 bits 6-7.
    // x0: qs[32+0] bits 0-1 = 2, hmask[0] bit 0 set → q = 2 → 0.5·(33−32)·2 = 1.
    // x1: low 0, hmask bit clear → q = −4 → 0.5·1·(−4) = −2.
    // x208 (half 1, r 80 → qs byte 32+32+16 = 80 bits 4-5, hmask[16] bit 4+2): low 1, bit clear
    //   → q = −3 → 0.5·(27−32)·(−3) = 7.5.
    probe('Q3_K', block(110, { 0: 0x01, 32: 0x02, 96: 0x01, 101: 0xb0, 104: 0x02, 105: 0x40, 80: 0x10 }, { 108: H.half }), { 0: 1, 1: -2, 208: 7.5 });
  });

  it('Q4_K, Q5_K, Q6_K, IQ4_XS', () => {
    // Q4_K: d = 0.5, dmin = 0.25, scales s = bytes 4..15. Sub-block 0: sc = s[0] = 1, m = s[4] = 2.
    // Sub-block 5: sc = 37 = 0b10_0101 → s[9] low nibble 5, s[1] bits 6-7 = 2;
    //              m  = 50 = 0b11_0010 → s[9] high nibble 2, s[5] bits 6-7 = 3.
    // x0: qs[0] (byte 16) low nibble 10 → 0.5·1·10 − 0.25·2 = 4.5.
    // x167 (sub-block 5, l 7: qs[32·2 + 7] = byte 16+71 = 87, high nibble): 12 → 0.5·37·12 − 0.25·50 = 209.5.
    const k4 = { 4: 0x01, 8: 0x02, 5: 0x80, 9: 0xc0, 13: 0x25 };
    probe('Q4_K', block(144, { ...k4, 16: 0x0a, 87: 0xc0 }, { 0: H.half, 2: H.quarter }), { 0: 4.5, 167: 209.5, 1: -0.5 });
    // Q5_K: same scales; qh = bytes 16..47, qs from 48. x167 also gets qh[7] bit 5 (+16):
    // q = 28 → 0.5·37·28 − 12.5 = 505.5. x0 as Q4_K (qh[0] bit 0 clear) = 4.5.
    probe('Q5_K', block(176, { ...k4, 23: 0x20, 48: 0x0a, [48 + 71]: 0xc0 }, { 0: H.half, 2: H.quarter }), { 0: 4.5, 167: 505.5 });
    // Q6_K: d = 0.5 (@208), scales @192: sc[0] = 2, sc[13] = −3.
    // x0: ql[0] low 5, qh[0] (byte 128) bits 0-1 = 2 → q = 5 | 32 = 37 − 32 = 5 → 0.5·2·5 = 5.
    // x1: q = 0 − 32 → 0.5·2·(−32) = −32.
    // x209 (half 1, quarter 2, l 17): ql[64 + 17] = byte 81 high nibble 3, qh[32 + 17] = byte 177
    //   bits 4-5 = 1 → q = 3 | 16 = 19 − 32 = −13 → 0.5·(−3)·(−13) = 19.5.
    probe('Q6_K', block(210, { 0: 0x05, 128: 0x02, 81: 0x30, 177: 0x10, 192: 2, 205: 0xfd }, { 208: H.half }), { 0: 5, 1: -32, 209: 19.5 });
    // IQ4_XS: d = 0.5, scales_h = bytes 2-3, scales_l = bytes 4..7, qs from 8.
    // Sub-block 0: ls = 33 → scales_l[0] low nibble 1, scales_h bits 0-1 = 2.
    // Sub-block 7: ls = 28 = 0b01_1100 → scales_l[3] high nibble 12, scales_h bits 14-15 = 1.
    // x0: qs[0] low 15 → 0.5·1·113 = 56.5. Sub-block 7 bytes are 8 + 112..: byte 123 = 0x09 →
    // x227 = 0.5·(−4)·K[9] = −2·13 = −26, x243 = 0.5·(−4)·K[0] = −2·(−127) = 254.
    probe('IQ4_XS', block(136, { 2: 0x02, 3: 0x40, 4: 0x01, 7: 0xc0, 8: 0x0f, 123: 0x09 }, { 0: H.half }), { 0: 56.5, 227: -26, 243: 254 });
  });
});

describe('ggml types', () => {
  it('an unsupported or unknown type is a WeightsFormatError naming the tensor and the type', () => {
    const e1 = (() => { try { ggmlType('m.gguf', 'blk.3.ffn_up.weight', 16); } catch (e) { return e; } })() as Error;
    expect(e1).toBeInstanceOf(WeightsFormatError);
    expect(e1.message).toMatch(/^m\.gguf: blk\.3\.ffn_up\.weight: tensor type IQ2_XXS \(ggml type 16\) is not supported; duet reads .*Q4_K.*re-quantize/);
    expect(() => ggmlType('m.gguf', 'output.weight', 99)).toThrow(/output\.weight: tensor type unknown ggml type id 99 is not supported/);
  });
});
