// quantize.ts: half/bfloat conversions against an independent rounding oracle, the q8/q4
// quantizers on hand-computed blocks, layout sizes, determinism, the quantization error vs
// f32 weights (bounds derived below), and packMatrix → GPU matmul against the CPU reference
// matmul over dequantize() (NMSE ≤ 1e-7: the oracle sees exactly the GPU's weights).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GpuContext, requestDevice } from '../kernels/gpu.ts';
import { createMatmul, uploadMatrix } from '../kernels/matmul.ts';
import { compare, nmse, randomF32, f16Round, runPass, sentinelBuffer, upload } from '../kernels/testing.ts';
import {
  BF16_NAN, QuantizeError, WEIGHT_FORMATS, type WeightFormat, bf16BitsToF32, bf16FromF32Bits, dequantize, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits,
  packMatrix, packedByteLength,
} from './quantize.ts';
import { matmul } from './reference.ts';
import { encode } from '../../tools/fixtures/safetensors-writer.ts';

describe('f16 / bf16 conversion', () => {
  it('every finite f16 bit pattern round-trips', () => {
    for (let h = 0; h < 0x10000; h++) {
      if ((h & 0x7c00) === 0x7c00 && h & 0x3ff) continue; // NaN payloads
      expect(f32ToF16Bits(f16BitsToF32(h))).toBe(h);
    }
  });

  it('rounds to nearest even like an independent f16 rounder, including ties and subnormals', () => {
    const specials = [1 + 2 ** -11, 1 + 3 * 2 ** -11, 2 ** -25, 3 * 2 ** -25, 2 ** -24 * 1.5, 65504, 65519, 65520, -1e-8, 6.1e-5, 2 ** -14 - 2 ** -25];
    const values = [...specials, ...randomF32(20000, 5, 1).map((v, i) => v * 2 ** ((i % 40) - 26))];
    for (const v of values) expect(f16BitsToF32(f32ToF16Bits(v)), `f16(${v})`).toBe(f16Round(Math.fround(v)));
    expect(f32ToF16Bits(1)).toBe(0x3c00);
    expect(f32ToF16Bits(-2)).toBe(0xc000);
    expect(f32ToF16Bits(65520)).toBe(0x7c00);
    expect(Number.isNaN(f16BitsToF32(f32ToF16Bits(NaN)))).toBe(true);
  });

  it('bf16: round trip of every finite pattern; RNE on ties; known values', () => {
    for (let h = 0; h < 0x10000; h++) {
      if ((h & 0x7f80) === 0x7f80 && h & 0x7f) continue;
      expect(f32ToBf16Bits(bf16BitsToF32(h))).toBe(h);
    }
    expect(f32ToBf16Bits(1)).toBe(0x3f80);
    expect(f32ToBf16Bits(1 + 2 ** -8)).toBe(0x3f80); // tie → even (down)
    expect(f32ToBf16Bits(1 + 3 * 2 ** -8)).toBe(0x3f82); // tie → even (up)
    expect(f32ToBf16Bits(Math.PI)).toBe(0x4049);
    expect(Number.isNaN(bf16BitsToF32(f32ToBf16Bits(NaN)))).toBe(true);
  });

  // f32 bits → bf16 bits. The finite rows are what torch (2.x, CPU) gives for the same f32 bits;
  // the NaN rows are the one NaN rule (torch's scalar c10::BFloat16 rule; its vectorised CPU path
  // gives 0xffff instead, also a quiet NaN).
  const BF16_CASES: [number, number, string][] = [
    [0x00000000, 0x0000, '+0'], [0x80000000, 0x8000, '-0'], [0x3f800000, 0x3f80, '1'],
    [0x3f808000, 0x3f80, 'tie, even below'], [0x3f818000, 0x3f82, 'tie, even above'],
    [0x3f808001, 0x3f81, 'just above half'], [0x3f807fff, 0x3f80, 'just below half'],
    [0x7f800000, 0x7f80, '+inf'], [0xff800000, 0xff80, '-inf'],
    [0x7f7fffff, 0x7f80, 'largest f32 rounds to +inf'], [0x7f7f7fff, 0x7f7f, 'large, below half'],
    [0x00000001, 0x0000, 'smallest subnormal'], [0x00008000, 0x0000, 'subnormal tie, even below'],
    [0x00018000, 0x0002, 'subnormal tie, even above'], [0x00010000, 0x0001, 'smallest bf16 subnormal'],
    [0x00400000, 0x0040, 'subnormal'], [0x807fffff, 0x8080, 'largest subnormal rounds to -smallest normal'],
    [0x7fc00000, BF16_NAN, 'quiet NaN'], [0xffc00000, BF16_NAN, '-quiet NaN'],
    [0x7f800001, BF16_NAN, 'signalling NaN (truncation would give +inf)'],
    [0x7fffffff, BF16_NAN, 'NaN with a full payload (rounding would carry into the sign)'], [0xff800001, BF16_NAN, '-signalling NaN'],
  ];

  it('bf16: one rule on bit patterns (RNE; NaN → the quiet NaN 0x7fc0; ±inf; subnormals; ties), in the engine and in the fixture writer', () => {
    expect(BF16_NAN).toBe(0x7fc0);
    for (const [bits, want, what] of BF16_CASES) expect(bf16FromF32Bits(bits), `${what} (0x${bits.toString(16)})`).toBe(want);
    const f = new Float32Array(new Uint32Array(BF16_CASES.map(([b]) => b)).buffer);
    // the number API agrees wherever a JS number carries the f32 exactly (all but the NaN payloads)
    f.forEach((x, i) => {
      if (!Number.isNaN(x)) expect(f32ToBf16Bits(x), BF16_CASES[i][2]).toBe(BF16_CASES[i][1]);
    });
    expect(f32ToBf16Bits(NaN)).toBe(BF16_NAN);
    expect(f32ToBf16Bits(-NaN)).toBe(BF16_NAN);
    // the safetensors writer of the fixtures (and so the sidecar's and the loader's BF16 files) uses the same bits
    expect(Array.from(new Uint16Array(encode(f, 'BF16').slice().buffer))).toEqual(BF16_CASES.map(([, w]) => w));
  });
});

describe('q8 / q4 quantizers', () => {
  it('q4 follows Q4_0: d = (signed absmax) / -8, q = min(15, trunc(w/d + 8.5)), nibble n of word j = column 8j+n', () => {
    const w = new Float32Array(32);
    w.set([1, -2, 0.5, 0.3, 0, 1.9, 0.125, -0.125]);
    const p = packMatrix(w, 1, 32, 'q4');
    // q = [12, 0, 10, 9, 8, 15 (clamped from 16), 9 (8.5+0.5 → 9), 8], remaining columns q = 8.
    expect(p.data[0]).toBe(0x89f89a0c);
    expect(p.data.subarray(1, 4)).toEqual(new Uint32Array([0x88888888, 0x88888888, 0x88888888]));
    expect(p.data[p.scaleWordOffset] & 0xffff).toBe(0x3400); // f16(0.25)
    expect([...dequantize(p).subarray(0, 8)]).toEqual([1, -2, 0.5, 0.25, 0, 1.75, 0.25, 0]);
  });

  it('q8 follows Q8_0: d = absmax/127, q = round half away from zero, f16 scale', () => {
    const w = new Float32Array(32);
    w.set([1.27, -0.5, 0.013, -0.027, -1.0]);
    const p = packMatrix(w, 1, 32, 'q8');
    const d = f16BitsToF32(f32ToF16Bits(1.27 / 127));
    expect(p.data[p.scaleWordOffset] & 0xffff).toBe(f32ToF16Bits(Math.fround(1.27) / 127));
    const q = [127, -50, 1, -3, -100];
    expect([...dequantize(p).subarray(0, 5)]).toEqual(q.map((v) => Math.fround(v * d)));
    expect(p.data[0]).toBe(((127 & 0xff) | ((-50 & 0xff) << 8) | (1 << 16) | ((-3 & 0xff) << 24)) >>> 0);
  });

  it('an all-zero group quantizes to zeros (no division by zero)', () => {
    for (const f of ['q8', 'q4'] as const) expect([...dequantize(packMatrix(new Float32Array(40), 1, 40, f))].every((v) => v === 0)).toBe(true);
  });
});

describe('layout', () => {
  it('pads columns to 32 and rows to 16 bytes; sizes agree', () => {
    // cols 33 → 64 padded columns (2 groups).
    const want: Record<WeightFormat, number> = { f32: 64, f16: 32, bf16: 32, q8: 20, q4: 12 };
    for (const f of WEIGHT_FORMATS) {
      const p = packMatrix(randomF32(3 * 33, 1), 3, 33, f);
      expect(p.colsPadded).toBe(64);
      expect(p.rowWords, f).toBe(want[f]);
      expect(p.data.length * 4).toBe(packedByteLength(3, 33, f));
    }
    expect(packedByteLength(128256, 2048, 'q4')).toBe(128256 * (256 + 32) * 4); // LM head: 0.5625 B/weight
  });

  it('is deterministic and padding columns never change values', () => {
    for (const f of WEIGHT_FORMATS) {
      const w = randomF32(7 * 45, 3);
      const a = packMatrix(w, 7, 45, f);
      expect(packMatrix(w, 7, 45, f).data).toEqual(a.data);
      const dq = dequantize(a);
      expect(dq.length).toBe(7 * 45);
      // Row 2 alone packs to the same values: rows are independent.
      expect(dequantize(packMatrix(w.slice(2 * 45, 3 * 45), 1, 45, f))).toEqual(dq.slice(2 * 45, 3 * 45));
    }
  });

  it('bad input is a QuantizeError', () => {
    expect(() => packMatrix(new Float32Array(5), 2, 3, 'q4')).toThrow(QuantizeError);
    expect(() => packMatrix(new Float32Array(0), 0, 3, 'q4')).toThrow(QuantizeError);
    expect(() => packMatrix(new Float32Array(6), 2, 3, 'q3' as WeightFormat)).toThrow(QuantizeError);
  });
});

// Quantization error of uniform(-a, a) weights, NMSE = E[err²] / E[w²] with E[w²] = a²/3:
//   q8: step Δ = absmax/127 ≈ (32/33)a/127, E[err²] = Δ²/12 → 1.46e-5; bound 3e-5 (2×).
//   q4: Δ = absmax/8, Δ²/12 → 3.67e-3, plus clipping of the top half-step when the extreme
//       weight is negative (measured 4.2e-3); bound 8e-3.
//   f16: relative error ≤ 2^-11 → measured 4.3e-8; bound 1e-7. bf16: ≤ 2^-8 → 2.8e-6; bound 5e-6.
// The matmul output error is of the same size (errors are independent across k).
const QUANT_BOUND: Record<WeightFormat, number> = { f32: 0, f16: 1e-7, bf16: 5e-6, q8: 3e-5, q4: 8e-3 };

describe('quantization error vs f32 weights', () => {
  for (const f of WEIGHT_FORMATS) {
    it(`${f}: weight NMSE ≤ ${QUANT_BOUND[f]} for uniform weights`, () => {
      const w = randomF32(128 * 1024, 17, 0.05);
      const e = nmse(dequantize(packMatrix(w, 128, 1024, f)), w);
      console.log(`quantization NMSE ${f}: ${e.toExponential(3)} (bound ${QUANT_BOUND[f]})`);
      expect(e).toBeLessThanOrEqual(QUANT_BOUND[f]);
      if (f === 'q4') expect(e).toBeGreaterThan(1e-3); // the bound is not vacuous: q4 really is this coarse
    });
  }
});

describe('packMatrix → GPU matmul', () => {
  let ctx: GpuContext;
  beforeAll(async () => {
    ctx = await requestDevice();
  });
  afterAll(() => ctx?.device.destroy());

  for (const f of WEIGHT_FORMATS) {
    it(`${f}: GPU = CPU reference over dequantize (≤ 1e-7); vs f32 weights within the quantization bound`, async () => {
      for (const [rows, cols, m] of [[37, 65, 1], [257, 96, 5], [1, 1, 2]]) {
        const w = randomF32(rows * cols, rows + cols, 0.05);
        const x = randomF32(m * cols, 7);
        const packed = packMatrix(w, rows, cols, f);
        const dq = dequantize(packed);
        const out = sentinelBuffer(ctx, m * rows);
        const op = await createMatmul(ctx, { out: out.binding, x: upload(ctx, x), w: uploadMatrix(ctx, packed, f) });
        await runPass(ctx, (pass) => op.encode(pass, m));
        const { words, broken } = await out.read();
        const got = new Float32Array(words.buffer);
        const want = new Float32Array(m * rows);
        const exact = new Float32Array(m * rows);
        for (let t = 0; t < m; t++) {
          matmul(want, x, dq, cols, rows, t * cols, t * rows);
          matmul(exact, x, w, cols, rows, t * cols, t * rows);
        }
        const c = compare(got, want, 1e-7, `${f} ${rows}x${cols} m=${m}`);
        expect(broken).toBe(0);
        expect(c.ok, c.summary).toBe(true);
        // One output of a 1×1 matrix is too few samples for a statistical bound.
        if (rows * cols > 1) expect(nmse(got, exact)).toBeLessThanOrEqual(QUANT_BOUND[f] * 2 + 1e-7);
      }
    });
  }
});
