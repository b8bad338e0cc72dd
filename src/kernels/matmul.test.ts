// matmul_{gemv,gemv_rows,tiled}.wgsl vs an f64 CPU matmul, for every weight format and
// every kernel variant (coop GEMV core / subgroups, rows kernel core / subgroups for m = 1 and
// m > 1, tiled; x scalar / vec4). The weights are
// random *packed bits* decoded here by a plain bit-level decoder written from the layout in
// src/engine/quantize.ts (kernels may not import engine; the engine-side quantize.test.ts
// runs packMatrix → GPU against dequantize). Bound: NMSE ≤ 1e-7 (the oracle sees exactly the
// weights the GPU sees; only f32 summation order differs). Shapes include 1, primes and
// non-multiples of 4 / 32 / 64; outputs sit between sentinels; x gaps hold NaN.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GpuContext, requestDevice } from './gpu.ts';
import { MatmulShapeError, type WeightFormat, allocateMatrix, createMatmul, quantizeActivationQ8, uploadMatrix, writeMatrixRows } from './matmul.ts';
import { type PackedMatrix, WEIGHT_FORMATS, rowLayout } from './matmul-layout.ts';
import { compare, randomF32, runPass, sentinelBuffer, upload } from './testing.ts';
import { mulberry32Bits } from './random.ts';

/** Deterministic u32 stream (mulberry32). */
const rng = mulberry32Bits;

const f32v = new Float32Array(1);
const u32v = new Uint32Array(f32v.buffer);
const bitsToF32 = (u: number): number => ((u32v[0] = u), f32v[0]);
const halfToF32 = (h: number): number => {
  const e = (h >>> 10) & 31;
  const m = h & 1023;
  const v = e === 0 ? m * 2 ** -24 : (1 + m / 1024) * 2 ** (e - 15);
  return h & 0x8000 ? -v : v;
};
/** A random normal f16 in about ±[2^-6, 2^2) (no subnormals, inf or NaN). */
const randHalf = (r: () => number): number => (r() & 0x8000) | ((9 + (r() % 8)) << 10) | (r() & 1023);
/** A random bf16 / f32 exponent in the same range. */
const randBf16 = (r: () => number): number => (r() & 0x8000) | ((121 + (r() % 8)) << 7) | (r() & 127);

/** Random packed rows × cols matrix (padding columns zero, as the packer writes them) and its f64 decode. */
function randomPacked(rows: number, cols: number, format: WeightFormat, seed: number): { packed: PackedMatrix; w: Float64Array } {
  const { colsPadded, rowWords, scaleWordOffset } = rowLayout(cols, format);
  const r = rng(seed);
  const data = new Uint32Array(rows * rowWords);
  const w = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    const base = i * rowWords;
    const scales: number[] = [];
    if (format === 'q8' || format === 'q4') {
      for (let g = 0; g < colsPadded / 32; g++) {
        const h = randHalf(r);
        scales.push(halfToF32(h));
        data[base + scaleWordOffset + (g >> 1)] |= h << (16 * (g & 1));
      }
    }
    for (let c = 0; c < cols; c++) {
      let v: number;
      switch (format) {
        case 'f32': {
          const bits = ((r() & 0x80000000) | ((121 + (r() % 8)) << 23) | (r() & 0x7fffff)) >>> 0;
          data[base + c] = bits;
          v = bitsToF32(bits);
          break;
        }
        case 'f16':
        case 'bf16': {
          const h = format === 'f16' ? randHalf(r) : randBf16(r);
          data[base + (c >> 1)] |= h << (16 * (c & 1));
          v = format === 'f16' ? halfToF32(h) : bitsToF32(h << 16);
          break;
        }
        case 'q8': {
          const q = (r() % 255) - 127;
          data[base + (c >> 2)] |= (q & 0xff) << (8 * (c & 3));
          v = q * scales[c >> 5];
          break;
        }
        case 'q4': {
          const q = r() & 15;
          data[base + (c >> 3)] |= q << (4 * (c & 7));
          v = (q - 8) * scales[c >> 5];
          break;
        }
      }
      w[i * cols + c] = v;
    }
  }
  return { packed: { rows, cols, format, colsPadded, rowWords, scaleWordOffset, data }, w };
}

/** out[t, r] = sum_k x[xOff + t*xStride + k] * w[r, k], in f64. */
function cpuMatmul(x: Float32Array, w: Float64Array, m: number, rows: number, cols: number, xOff: number, xStride: number): Float64Array {
  const out = new Float64Array(m * rows);
  for (let t = 0; t < m; t++) {
    for (let r = 0; r < rows; r++) {
      let s = 0;
      for (let k = 0; k < cols; k++) s += x[xOff + t * xStride + k] * w[r * cols + k];
      out[t * rows + r] = s;
    }
  }
  return out;
}

/** x for m tokens at offset xOff with stride xStride; everything outside the live slices is NaN. */
function nanPaddedX(m: number, cols: number, xOff: number, xStride: number, seed: number): Float32Array {
  const x = new Float32Array(Math.ceil((xOff + m * xStride + 7) / 4) * 4).fill(NaN);
  const live = randomF32(m * cols, seed);
  for (let t = 0; t < m; t++) x.set(live.subarray(t * cols, (t + 1) * cols), xOff + t * xStride);
  return x;
}

let ctx: GpuContext;
beforeAll(async () => {
  ctx = await requestDevice();
});
afterAll(() => ctx?.device.destroy());

interface Case {
  rows: number;
  cols: number;
  m: number;
  gemv?: 'rows' | 'coop';
  multi?: 'rows' | 'tiled';
  subgroups?: boolean;
  maxChunkBytes?: number;
  /** x 16-byte aligned (offset and stride multiples of 4: the vec4 x path) or not (scalar x). */
  aligned?: boolean;
}

async function check(format: WeightFormat, c: Case, seed: number): Promise<number> {
  const { rows, cols, m } = c;
  const { packed, w } = randomPacked(rows, cols, format, seed);
  const xOff = c.aligned ? 4 : 3;
  const xStride = c.aligned ? Math.ceil(cols / 4) * 4 + 4 : cols + 5;
  const x = nanPaddedX(m, cols, xOff, xStride, seed + 1);
  const out = sentinelBuffer(ctx, m * rows);
  const gw = uploadMatrix(ctx, packed, `w_${format}`, { maxChunkBytes: c.maxChunkBytes });
  const op = await createMatmul(ctx, { out: out.binding, x: upload(ctx, x), w: gw, xOffset: xOff, xStride, gemv: c.gemv, multi: c.multi, subgroups: c.subgroups ?? false });
  await runPass(ctx, (pass) => op.encode(pass, m));
  const { words, broken } = await out.read();
  const got = new Float32Array(words.buffer);
  const cmp = compare(got, cpuMatmul(x, w, m, rows, cols, xOff, xStride), 1e-7, `${format} ${rows}x${cols} m=${m}`);
  expect(broken, 'overwritten sentinels').toBe(0);
  expect(cmp.ok, cmp.summary).toBe(true);
  op.destroy();
  gw.destroy();
  return gw.chunks.length;
}

const SHAPES: [number, number][] = [[1, 1], [37, 65], [257, 96], [3, 300], [130, 33]];
const MS = [1, 2, 5, 17];

describe('matmul', () => {
  // The uniform packer and the shader assembly: matmul-wgsl.test.ts.
  for (const format of WEIGHT_FORMATS) {
    it(`${format}: every shape × m ∈ {${MS}} × m > 1 kernel (tiled, rows), x aligned and not`, async () => {
      let seed = 100;
      for (const multi of ['tiled', 'rows'] as const) {
        for (const [rows, cols] of SHAPES) for (const m of MS) await check(format, { rows, cols, m, multi, aligned: seed % 2 === 0 }, seed++);
      }
    });

    it(`${format}: the rows kernel over m > 1 tokens with its subgroup variant (where the adapter has 4-lane subgroups)`, async () => {
      const sg4 = ctx.hasSubgroups && ctx.subgroupSizes?.min === 4 && ctx.subgroupSizes.max === 4;
      if (/swiftshader/i.test(ctx.adapterName)) expect(sg4).toBe(true); // the CI adapter must run it
      if (!sg4) return;
      let seed = 200;
      for (const [rows, cols] of [[37, 65], [130, 33], [257, 96]]) {
        for (const m of [2, 5]) await check(format, { rows, cols, m, multi: 'rows', subgroups: true, aligned: seed % 2 === 0 }, seed++);
      }
    });

    it(`${format}: every GEMV variant (rows and coop, core and subgroups where present) × x aligned and not`, async () => {
      let seed = 300;
      const sg4 = ctx.hasSubgroups && ctx.subgroupSizes?.min === 4 && ctx.subgroupSizes.max === 4;
      const variants: Partial<Case>[] = [
        { gemv: 'rows', subgroups: false }, { gemv: 'coop', subgroups: false },
        ...(ctx.hasSubgroups ? [{ gemv: 'coop' as const, subgroups: true }] : []),
        ...(sg4 ? [{ gemv: 'rows' as const, subgroups: true }] : []),
      ];
      // SwiftShader (the CI adapter) has 4-lane subgroups: the rows subgroup variant must be exercised there.
      if (/swiftshader/i.test(ctx.adapterName)) expect(sg4).toBe(true);
      for (const v of variants) {
        for (const [rows, cols] of [[1, 1], [37, 65], [130, 33]]) {
          for (const aligned of [false, true]) await check(format, { rows, cols, m: 1, aligned, ...v }, seed++);
        }
        await check(format, { rows: 64, cols: 2048, m: 1, aligned: true, ...v }, seed++);
      }
    });

    it(`${format}: a matrix split into row chunks (forced tiny binding limit)`, async () => {
      const rowBytes = rowLayout(200, format).rowWords * 4;
      for (const m of [1, 5]) {
        for (const multi of ['tiled', 'rows'] as const) {
          const chunks = await check(format, { rows: 61, cols: 200, m, multi, maxChunkBytes: rowBytes * 13, aligned: m === 1 }, 500 + m);
          expect(chunks).toBe(5); // 13 + 13 + 13 + 13 + 9 rows
        }
      }
    });
  }

  it('Llama-shaped q4 block: 512 × 2048, m = 1 and 5, no gaps in x', async () => {
    for (const m of [1, 5]) {
      for (const gemv of ['rows', 'coop'] as const) await check('q4', { rows: 512, cols: 2048, m, gemv, multi: gemv === 'rows' ? 'rows' : 'tiled', aligned: true }, 700 + m);
    }
  });

  // Opt-in q4 × q8-activation GEMV. Oracle: the f64 matmul of the same q4 weights with x
  // replaced by quantizeActivationQ8(x) (the CPU mirror of matmul_q8x.wgsl): NMSE ≤ 1e-7 (only
  // summation order, and a rare f32 tie in x·(127/absmax), differ). Against the exact f32
  // product the error is the activation quantization's: per column uniform in ±d/2 with
  // d = absmax/127, i.e. NMSE ≈ (absmax/127)²/12/var(x) ≈ 1.6e-5 for x uniform in ±1 (the
  // weights here are random, so it passes through unchanged): bound 1e-4, measured ~1.5e-5.
  it('q4 with xQuant q8: vs the same-quantization oracle (1e-7) and the exact product (1e-4)', async () => {
    let seed = 900;
    for (const [rows, cols, chunkRows] of [[1, 1, 0], [37, 65, 0], [130, 33, 0], [257, 96, 0], [61, 200, 13], [512, 2048, 0]]) {
      for (const aligned of [false, true]) {
        const { packed, w } = randomPacked(rows, cols, 'q4', seed++);
        const xOff = aligned ? 4 : 3;
        const x = nanPaddedX(1, cols, xOff, cols, seed++);
        const xq = new Float32Array(x);
        xq.set(quantizeActivationQ8(x.subarray(xOff, xOff + cols)), xOff);
        const out = sentinelBuffer(ctx, rows);
        const gw = uploadMatrix(ctx, packed, 'w_q4', chunkRows ? { maxChunkBytes: packed.rowWords * 4 * chunkRows } : {});
        const op = await createMatmul(ctx, { out: out.binding, x: upload(ctx, x), w: gw, xOffset: xOff, xQuant: 'q8' });
        await runPass(ctx, (pass) => op.encode(pass, 1));
        const { words, broken } = await out.read();
        const got = new Float32Array(words.buffer);
        const what = `q4·q8x ${rows}x${cols}${chunkRows ? ' chunked' : ''}`;
        const same = compare(got, cpuMatmul(xq, w, 1, rows, cols, xOff, cols), 1e-7, `${what} vs quantized-x oracle`);
        const exact = compare(got, cpuMatmul(x, w, 1, rows, cols, xOff, cols), 1e-4, `${what} vs exact`);
        expect(broken, 'overwritten sentinels').toBe(0);
        expect(same.ok, same.summary).toBe(true);
        expect(exact.ok, exact.summary).toBe(true);
        op.destroy();
        gw.destroy();
      }
    }
  });

  it('xQuant q8 on a non-q4 matrix is a typed error', async () => {
    const { packed } = randomPacked(8, 16, 'q8', 1);
    const gw = uploadMatrix(ctx, packed, 'w');
    await expect(createMatmul(ctx, { out: upload(ctx, new Float32Array(8)), x: upload(ctx, new Float32Array(16)), w: gw, xQuant: 'q8' })).rejects.toThrow(MatmulShapeError);
  });

  it('the same op re-encoded with a different m uses the new m', async () => {
    const rows = 37;
    const cols = 65;
    const { packed, w } = randomPacked(rows, cols, 'q8', 9);
    const x = randomF32(5 * cols, 10);
    const out = sentinelBuffer(ctx, 5 * rows);
    const op = await createMatmul(ctx, { out: out.binding, x: upload(ctx, x), w: uploadMatrix(ctx, packed, 'w') });
    for (const m of [5, 1, 2]) {
      await runPass(ctx, (pass) => op.encode(pass, m));
      const got = new Float32Array((await out.read()).words.buffer).subarray(0, m * rows);
      const cmp = compare(got, cpuMatmul(x, w, m, rows, cols, 0, cols), 1e-7, `m=${m}`);
      expect(cmp.ok, cmp.summary).toBe(true);
    }
  });

  it('writeMatrixRows fills a matrix slab by slab across chunk borders', async () => {
    const { packed, w } = randomPacked(29, 70, 'q4', 21);
    const gw = allocateMatrix(ctx, 29, 70, 'q4', 'w', { maxChunkBytes: packed.rowWords * 4 * 8 });
    for (let r = 0; r < 29; r += 6) writeMatrixRows(ctx, gw, r, packed.data.subarray(r * packed.rowWords, Math.min(29, r + 6) * packed.rowWords));
    const x = randomF32(70, 22);
    const out = sentinelBuffer(ctx, 29);
    const op = await createMatmul(ctx, { out: out.binding, x: upload(ctx, x), w: gw });
    await runPass(ctx, (pass) => op.encode(pass, 1));
    const cmp = compare(new Float32Array((await out.read()).words.buffer), cpuMatmul(x, w, 1, 29, 70, 0, 70), 1e-7);
    expect(cmp.ok, cmp.summary).toBe(true);
  });

  it('bad shapes are typed errors before dispatch', async () => {
    const { packed } = randomPacked(8, 16, 'f16', 1);
    const gw = uploadMatrix(ctx, packed, 'w');
    const x = upload(ctx, new Float32Array(16 * 3));
    const out = upload(ctx, new Float32Array(8 * 2));
    const op = await createMatmul(ctx, { out, x, w: gw });
    expect(op.maxM).toBe(2);
    expect(() => op.encode({} as GPUComputePassEncoder, 3)).toThrow(MatmulShapeError);
    expect(() => op.encode({} as GPUComputePassEncoder, 0)).toThrow(MatmulShapeError);
    await expect(createMatmul(ctx, { out, x, w: gw, outOffset: 9 })).rejects.toThrow(MatmulShapeError);
    await expect(createMatmul(ctx, { out, x, w: gw, xStride: 15 })).rejects.toThrow(MatmulShapeError);
    expect(() => uploadMatrix(ctx, { ...packed, rowWords: 4 }, 'bad')).toThrow(MatmulShapeError);
    expect(() => writeMatrixRows(ctx, gw, 7, packed.data.subarray(0, 2 * packed.rowWords))).toThrow(MatmulShapeError);
  });
});

// matmul_out.wgsl: with `accumulate` every kernel adds its product to what out holds (the
// residual add folded into the matmul): out = y + x · Wᵀ against the f64 oracle, NMSE ≤ 1e-7.
// matmul_x.wgsl glu sections: x = gate | up, the kernel multiplies silu(gate) · up (f64 oracle;
// up at a multiple of 4 takes the vec4 path, at 35 the scalar one).
// With `invariant` a token's output is bitwise the same whether it runs alone (m = 1) or as
// one of m = 5 tokens, for every kernel pairing (the verifier's batch invariance rests on it).
describe('matmul epilogue (accumulate) and batch invariance', () => {
  const kernels: { name: string; gemv: 'rows' | 'coop'; multi: 'rows' | 'tiled' }[] = [
    { name: 'coop GEMV / tiled', gemv: 'coop', multi: 'tiled' },
    { name: 'rows GEMV / rows', gemv: 'rows', multi: 'rows' },
  ];
  // f32 only: the epilogue is format-independent, and every new pipeline costs seconds to compile on SwiftShader
  for (const format of ['f32'] as const) {
    for (const k of kernels) {
      it(`${format}, ${k.name}: accumulate gives y + x · Wᵀ for m = 1 and m = 6`, async () => {
        let seed = 700;
        for (const [rows, cols] of [[130, 33]]) {
          for (const m of [1, 6]) {
            const { packed, w } = randomPacked(rows, cols, format, seed++);
            const x = nanPaddedX(m, cols, 0, cols, seed++);
            const y = randomF32(m * rows, seed++);
            const out = sentinelBuffer(ctx, m * rows, y);
            const gw = uploadMatrix(ctx, packed, 'w');
            const op = await createMatmul(ctx, { out: out.binding, x: upload(ctx, x), w: gw, gemv: k.gemv, multi: k.multi, subgroups: false, accumulate: true });
            await runPass(ctx, (pass) => op.encode(pass, m));
            const { words, broken } = await out.read();
            const want = cpuMatmul(x, w, m, rows, cols, 0, cols).map((v, i) => v + y[i]);
            const cmp = compare(new Float32Array(words.buffer), want, 1e-7, `accumulate ${rows}x${cols} m=${m}`);
            expect(broken, 'overwritten sentinels').toBe(0);
            expect(cmp.ok, cmp.summary).toBe(true);
            op.destroy();
            gw.destroy();
          }
        }
      });

      it(`${format}, ${k.name}: xGlu (SwiGLU in the x loads) + accumulate gives y + (silu(g)·u) · Wᵀ, x aligned and not`, async () => {
        let seed = 900;
        for (const [rows, cols, up] of [[130, 40, 40], [37, 33, 35]]) {
          for (const m of [1, 6]) {
            const { packed, w } = randomPacked(rows, cols, format, seed++);
            const stride = up + cols + 1;
            const gu = randomF32(m * stride, seed++, 3);
            const h = new Float32Array(m * cols);
            for (let t = 0; t < m; t++) {
              for (let j = 0; j < cols; j++) {
                const g = gu[t * stride + j];
                h[t * cols + j] = (g / (1 + Math.exp(-g))) * gu[t * stride + up + j];
              }
            }
            const y = randomF32(m * rows, seed++);
            const out = sentinelBuffer(ctx, m * rows, y);
            const gw = uploadMatrix(ctx, packed, 'w');
            const op = await createMatmul(ctx, { out: out.binding, x: upload(ctx, gu), w: gw, xStride: stride, xGlu: up, gemv: k.gemv, multi: k.multi, subgroups: false, accumulate: true });
            await runPass(ctx, (pass) => op.encode(pass, m));
            const { words, broken } = await out.read();
            const want = cpuMatmul(h, w, m, rows, cols, 0, cols).map((v, i) => v + y[i]);
            const cmp = compare(new Float32Array(words.buffer), want, 1e-7, `glu ${rows}x${cols} up@${up} m=${m}`);
            expect(broken, 'overwritten sentinels').toBe(0);
            expect(cmp.ok, cmp.summary).toBe(true);
            op.destroy();
            gw.destroy();
          }
        }
      });

      it(`${format}, ${k.name}: invariant: a token alone (m = 1) == the same token among m = 5, bit for bit`, async () => {
        const [rows, cols] = [37, 2100]; // 66 blocks > 64 threads: the coop GEMV and the tiled kernel sum them in different orders
        const { packed } = randomPacked(rows, cols, format, 800);
        const x = nanPaddedX(5, cols, 0, cols, 801);
        const gw = uploadMatrix(ctx, packed, 'w');
        const run = async (m: number, xs: Float32Array) => {
          const out = sentinelBuffer(ctx, m * rows);
          const op = await createMatmul(ctx, { out: out.binding, x: upload(ctx, xs), w: gw, gemv: k.gemv, multi: k.multi, subgroups: false, invariant: true });
          await runPass(ctx, (pass) => op.encode(pass, m));
          op.destroy();
          return (await out.read()).words;
        };
        const five = await run(5, x);
        for (const t of [0, 3]) {
          const alone = await run(1, x.slice(t * cols, (t + 1) * cols + 3));
          let differ = 0;
          for (let r = 0; r < rows; r++) if (alone[r] !== five[t * rows + r]) differ++;
          expect(differ, `token ${t}: outputs differing alone vs among 5`).toBe(0);
        }
        gw.destroy();
      });
    }
  }
});
