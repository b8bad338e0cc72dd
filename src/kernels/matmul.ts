// Host side of the matmul kernels: out(m, rows) = x(m, cols) · Wᵀ for packed weights W in
// every format (f32, f16, bf16, q8, q4; layout in src/engine/quantize.ts). For m = 1 (decode,
// bandwidth-bound) a GEMV: matmul_gemv.wgsl ('coop': threads split a row's blocks, coalesced,
// one barrier; optional subgroup reduction) on GPUs, matmul_gemv_rows.wgsl ('rows': 16 rows
// per thread, no barrier, no vector shifts; optional subgroup-shared x loads) on CPU adapters
// such as SwiftShader, where barriers, per-lane loads and shifts are what costs. For m > 1
// (prefill, k+1 verify) matmul_tiled.wgsl on GPUs and the rows kernel over the tokens on CPU
// adapters (the tiled kernel's barriers make it ~25x slower there per token). Every kernel
// file includes one decoder section of matmul_decode.wgsl and one x-access section of
// matmul_x.wgsl (vec4 loads when x is 16-byte aligned); matmul-wgsl.ts assembles them
// (`duet kernels --dump-wgsl DIR` writes every variant). Matrices larger than one storage
// binding are split into row chunks, each its own buffer and its own dispatch. Activations
// are f32; offsets and strides are in f32 elements (uniforms: no 256-byte alignment needed).

import { type GpuContext, GpuOutOfMemoryError, ceilDiv } from './gpu.ts';
import { type PackedMatrix, type WeightFormat, rowLayout } from './matmul-layout.ts';
import { type MatmulShader, type XAccess, matmulShaderName, matmulWgsl } from './matmul-wgsl.ts';
import { type Buf, asBinding, bindingBytes, cachedPipeline } from './op.ts';

export { GROUP_SIZE, WEIGHT_FORMATS, packedByteLength, rowLayout } from './matmul-layout.ts';
export type { PackedMatrix, WeightFormat } from './matmul-layout.ts';

export class MatmulShapeError extends Error {
  override name = 'MatmulShapeError';
}

/** Rows [rowStart, rowStart + rows) of a matrix, in one GPU buffer. */
export interface WeightChunk {
  buffer: GPUBuffer;
  rowStart: number;
  rows: number;
}

/** A packed matrix on the GPU (same layout as PackedMatrix.data, split by row ranges). */
export interface GpuMatrix {
  rows: number;
  cols: number;
  format: WeightFormat;
  colsPadded: number;
  rowWords: number;
  scaleWordOffset: number;
  chunks: WeightChunk[];
  /** Total bytes of the weight buffers. */
  byteLength: number;
  destroy(): void;
}

export interface UploadOptions {
  /** Split into chunks of at most this many bytes (default: the device's binding/buffer limits). Tests force tiny values. */
  maxChunkBytes?: number;
}

/**
 * Allocate the GPU buffers of a rows × cols matrix in `format`, unfilled; fill with
 * writeMatrixRows. Lets a loader quantize and upload slab by slab without a full packed copy.
 */
export function allocateMatrix(ctx: GpuContext, rows: number, cols: number, format: WeightFormat, label: string, opts: UploadOptions = {}): GpuMatrix {
  const { colsPadded, rowWords, scaleWordOffset } = rowLayout(cols, format);
  const limit = Math.min(ctx.limits.maxStorageBufferBindingSize, ctx.limits.maxBufferSize, opts.maxChunkBytes ?? Infinity);
  const rowBytes = rowWords * 4;
  const rowsPerChunk = Math.floor(limit / rowBytes);
  if (rowsPerChunk < 1) throw new GpuOutOfMemoryError(rowBytes, limit, `one row of ${label}`);
  const chunks: WeightChunk[] = [];
  for (let r0 = 0; r0 < rows; r0 += rowsPerChunk) {
    const n = Math.min(rowsPerChunk, rows - r0);
    const buffer = ctx.device.createBuffer({
      label: chunks.length || n < rows ? `${label}[${r0}:${r0 + n}]` : label,
      size: n * rowBytes,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC,
    });
    chunks.push({ buffer, rowStart: r0, rows: n });
  }
  return {
    rows, cols, format, colsPadded, rowWords, scaleWordOffset, chunks,
    byteLength: rows * rowBytes,
    destroy: () => chunks.forEach((c) => c.buffer.destroy()),
  };
}

/** Write packed rows [rowStart, rowStart + data.length / rowWords) into the matrix's chunks. */
export function writeMatrixRows(ctx: GpuContext, m: GpuMatrix, rowStart: number, data: Uint32Array): void {
  if (data.length % m.rowWords !== 0) throw new MatmulShapeError(`writeMatrixRows: ${data.length} words is not a whole number of ${m.rowWords}-word rows`);
  const rowEnd = rowStart + data.length / m.rowWords;
  if (rowStart < 0 || rowEnd > m.rows) throw new MatmulShapeError(`writeMatrixRows: rows ${rowStart}..${rowEnd} outside a ${m.rows}-row matrix`);
  for (const c of m.chunks) {
    const a = Math.max(rowStart, c.rowStart);
    const b = Math.min(rowEnd, c.rowStart + c.rows);
    if (a >= b) continue;
    const src = data.subarray((a - rowStart) * m.rowWords, (b - rowStart) * m.rowWords);
    ctx.device.queue.writeBuffer(c.buffer, (a - c.rowStart) * m.rowWords * 4, src.buffer, src.byteOffset, src.byteLength);
  }
}

/** Upload a packed matrix (see src/engine/quantize.ts packMatrix). */
export function uploadMatrix(ctx: GpuContext, packed: PackedMatrix, label: string, opts: UploadOptions = {}): GpuMatrix {
  const m = allocateMatrix(ctx, packed.rows, packed.cols, packed.format, label, opts);
  if (packed.rowWords !== m.rowWords || packed.data.length !== packed.rows * packed.rowWords) {
    m.destroy();
    throw new MatmulShapeError(`uploadMatrix(${label}): packed data does not match the ${packed.format} layout of ${packed.rows}×${packed.cols}; pack it with packMatrix`);
  }
  writeMatrixRows(ctx, m, 0, packed.data);
  return m;
}

export interface MatmulArgs {
  /** f32 output, token t, row r at out[outOffset + t * outStride + r] (indices within the binding). */
  out: Buf;
  /** f32 input, token t, column k at x[xOffset + t * xStride + k] (indices within the binding). */
  x: Buf;
  w: GpuMatrix;
  outOffset?: number;
  xOffset?: number;
  /** Default w.rows. */
  outStride?: number;
  /** Default w.cols. */
  xStride?: number;
  /** GEMV form for m = 1: 'rows' (barrier-free; default on CPU adapters) or 'coop' (default elsewhere). */
  gemv?: 'rows' | 'coop';
  /**
   * Kernel for m > 1 (prefill, verify): 'rows' (matmul_gemv_rows.wgsl over the tokens one after
   * another; default on CPU adapters, where the tiled kernel's barriers cost ~25x a GEMV per
   * token, measured) or 'tiled' (default elsewhere).
   */
  multi?: 'rows' | 'tiled';
  /** Use the GEMV's subgroup variant (coop: subgroup reduction; rows: x quads loaded once per subgroup and broadcast). Default: when the device has `subgroups`. */
  subgroups?: boolean;
  /** Threads per GEMV workgroup (tuning; default 64 coop, 16 rows). */
  gemvWorkgroupSize?: number;
  /** Rows per coop-GEMV workgroup (tuning; default 16; at most gemvWorkgroupSize). */
  gemvRows?: number;
  /**
   * Opt-in for q4 weights: quantize x to int8 per 32 columns (Q8_1 style, see
   * quantizeActivationQ8) for the m = 1 GEMV and use exact integer dot products, two MACs per
   * u32 multiply (matmul_gemv_q4_q8x.wgsl). Changes numerics; m > 1 stays exact.
   */
  xQuant?: 'none' | 'q8';
  /** out += x · Wᵀ instead of out = x · Wᵀ (the residual add folded into the matmul; matmul_out.wgsl). */
  accumulate?: boolean;
  /**
   * Batch-invariant: m = 1 runs the m > 1 kernel too, so a token's output is summed in the
   * same order whatever the number of tokens in the pass (on CPU adapters both are the rows
   * kernel already; on GPUs the coop GEMV and the tiled kernel sum in different orders).
   */
  invariant?: boolean;
  /**
   * x holds gate | up per token, up `xGlu` floats after gate (the fused gate/up projection),
   * and the matmul multiplies silu(gate) * up (the SwiGLU folded into the down projection's x
   * loads; matmul_x.wgsl glu sections). xStride must cover both halves.
   */
  xGlu?: number;
}

export interface MatmulOp {
  /**
   * Record out = x · Wᵀ for m tokens into the caller's pass. m goes to this op's uniform
   * buffers through queue.writeBuffer, so encode each op at most once per submission.
   */
  encode(pass: GPUComputePassEncoder, m: number): void;
  /** Largest m the bound buffers can hold. */
  maxM: number;
  destroy(): void;
}

/**
 * The Params uniform of the matmul shaders (matmul_params.wgsl) for one weight chunk and m
 * tokens; offsets and strides in f32 elements within the bindings.
 */
export interface MatmulParams {
  /** Rows of this chunk. */
  rows: number;
  /** K, unpadded. */
  cols: number;
  /** u32 words per packed row (multiple of 4). */
  rowWords: number;
  /** Word offset of the scales inside a row (q8, q4). */
  scaleOffset: number;
  /** Tokens. */
  m: number;
  xOffset: number;
  xStride: number;
  /** Index of out[token 0, first row of this chunk]. */
  outOffset: number;
  outStride: number;
  /** floor(cols / 32): blocks without padding. */
  fullBlocks: number;
  /** ceil(cols / 32). */
  nBlocks: number;
}

/** The WGSL struct's fields in memory order, one u32 each (then one u32 of padding). */
export const MATMUL_PARAM_FIELDS = [
  'rows', 'cols', 'rowWords', 'scaleOffset', 'm', 'xOffset', 'xStride', 'outOffset', 'outStride', 'fullBlocks', 'nBlocks',
] as const satisfies readonly (keyof MatmulParams)[];

/** Byte size of the Params uniform (12 u32). */
export const MATMUL_PARAMS_BYTES = 48;

/** The uniform's bytes, laid out as the WGSL struct; every field must be a u32. */
export function packMatmulParams(p: MatmulParams): ArrayBuffer {
  const buf = new ArrayBuffer(MATMUL_PARAMS_BYTES);
  const v = new DataView(buf);
  MATMUL_PARAM_FIELDS.forEach((k, i) => {
    const x = p[k];
    if (!Number.isInteger(x) || x < 0 || x > 0xffffffff) throw new MatmulShapeError(`matmul params: ${k} = ${x} is not a u32`);
    v.setUint32(4 * i, x, true);
  });
  return buf;
}

/** The Params of one chunk of w for m tokens. */
export function chunkParams(w: GpuMatrix, c: WeightChunk, m: number, xOffset: number, xStride: number, outOffset: number, outStride: number): MatmulParams {
  return {
    rows: c.rows, cols: w.cols, rowWords: w.rowWords, scaleOffset: w.scaleWordOffset,
    m, xOffset, xStride, outOffset: outOffset + c.rowStart,
    outStride, fullBlocks: Math.floor(w.cols / 32), nBlocks: Math.ceil(w.cols / 32),
  };
}

/** Kernel variants: `coop` GEMV (GPU-shaped), `rows` GEMV (barrier-free, for CPU adapters), `tiled` (m > 1). */
export type MatmulKernel = 'coop' | 'rows' | 'tiled';

/** True for adapters that emulate the GPU on CPU cores, where the barrier-free GEMV wins. */
export function isCpuAdapter(ctx: GpuContext): boolean {
  return /swiftshader|llvmpipe|lavapipe|warp|cpu/i.test(ctx.adapterName);
}

/** x access of a kernel: vec4 loads when aligned, silu(gate) · up when glu. */
const xAccess = (vec4: boolean, glu: boolean): XAccess => (glu ? (vec4 ? 'gluvec4' : 'glu') : vec4 ? 'vec4' : 'scalar');

function getPipeline(ctx: GpuContext, kind: MatmulKernel, format: WeightFormat, subgroups: boolean, xVec4: boolean, constants: Record<string, number>, xGlu = false): Promise<GPUComputePipeline> {
  if (subgroups && kind === 'tiled') throw new MatmulShapeError('the tiled matmul kernel has no subgroup variant');
  const x = xAccess(xVec4, xGlu);
  return shaderPipeline(ctx, { kernel: kind, format, x, subgroups }, constants);
}

/** One variant's pipeline for these overrides (compiled once per device). */
function shaderPipeline(ctx: GpuContext, s: MatmulShader, constants: Record<string, number>): Promise<GPUComputePipeline> {
  return cachedPipeline(ctx, matmulShaderName(s), matmulWgsl(s), constants);
}

/**
 * CPU mirror of matmul_q8x.wgsl for one token: per 32-column block b, d[b] = absmax/127 and
 * q = clamp(round(x·(127/absmax)), -127, 127) in f32 with ties to even, columns ≥ cols = 0.
 * Returns the dequantized activation (q·d per column), which is what the q8x GEMV multiplies
 * the q4 weights with (exactly, up to f32 summation order); tests use it as their oracle.
 */
export function quantizeActivationQ8(x: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  const f = Math.fround;
  const roundEven = (v: number) => {
    const r = Math.round(v);
    return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
  };
  for (let c0 = 0; c0 < x.length; c0 += 32) {
    const n = Math.min(32, x.length - c0);
    let amax = 0;
    for (let i = 0; i < n; i++) amax = Math.max(amax, Math.abs(x[c0 + i]));
    if (amax === 0) continue;
    const id = f(127 / amax);
    const d = f(amax / 127);
    for (let i = 0; i < n; i++) out[c0 + i] = f(Math.max(-127, Math.min(127, roundEven(f(x[c0 + i] * id)))) * d);
  }
  return out;
}

/** Compile (or fetch from cache) the pipelines and build the op's uniforms and bind groups. */
export async function createMatmul(ctx: GpuContext, args: MatmulArgs): Promise<MatmulOp> {
  const { w } = args;
  const out = asBinding(args.out);
  const x = asBinding(args.x);
  const outOffset = args.outOffset ?? 0;
  const xOffset = args.xOffset ?? 0;
  const outStride = args.outStride ?? w.rows;
  const xStride = args.xStride ?? w.cols;
  const xQuant = args.xQuant ?? 'none';
  const accumulate = args.accumulate ?? false;
  const xGlu = args.xGlu;
  if (xQuant === 'q8') {
    if (accumulate || args.invariant) throw new MatmulShapeError(`createMatmul: xQuant 'q8' has no accumulate/invariant form; drop one of the options`);
    if (w.format !== 'q4') throw new MatmulShapeError(`createMatmul: xQuant 'q8' is for q4 weights, not ${w.format}; drop the option`);
  }
  const gemvKind = args.gemv ?? (isCpuAdapter(ctx) ? 'rows' : 'coop');
  const multiKind = args.multi ?? (isCpuAdapter(ctx) ? 'rows' : 'tiled');
  // The rows kernel's subgroup part assumes 4-lane subgroups (SwiftShader's SIMD width).
  const sg4 = ctx.hasSubgroups && ctx.subgroupSizes?.min === 4 && ctx.subgroupSizes.max === 4;
  const subgroups = args.subgroups ?? (gemvKind === 'rows' ? sg4 : ctx.hasSubgroups);
  const rowsSubgroups = args.subgroups ?? sg4;
  const wg = args.gemvWorkgroupSize ?? (gemvKind === 'rows' ? 16 : 64);
  const rowsPerGroup = args.gemvRows ?? 16;
  for (const [k, v] of Object.entries({ outOffset, xOffset, outStride, xStride, wg, rowsPerGroup })) {
    if (!Number.isInteger(v) || v < 0) throw new MatmulShapeError(`createMatmul: ${k} = ${v} must be a non-negative integer`);
  }
  if (outStride < w.rows || xStride < w.cols) throw new MatmulShapeError(`createMatmul: strides (out ${outStride}, x ${xStride}) smaller than the ${w.rows}×${w.cols} matrix`);
  if (args.subgroups && !ctx.hasSubgroups) throw new MatmulShapeError('createMatmul: subgroups requested but the device has no `subgroups` feature');
  if (args.subgroups && (gemvKind === 'rows' || multiKind === 'rows') && !sg4) {
    throw new MatmulShapeError(`createMatmul: the rows GEMV's subgroup variant needs subgroups of exactly 4 lanes; this adapter reports ${ctx.subgroupSizes ? `${ctx.subgroupSizes.min}..${ctx.subgroupSizes.max}` : 'no size'}; drop the option`);
  }
  if (wg < 1 || wg > ctx.limits.maxComputeInvocationsPerWorkgroup) throw new MatmulShapeError(`createMatmul: gemvWorkgroupSize ${wg} outside 1..${ctx.limits.maxComputeInvocationsPerWorkgroup}`);
  if (rowsPerGroup < 1 || rowsPerGroup > wg || rowsPerGroup * wg * 4 > ctx.limits.maxComputeWorkgroupStorageSize) {
    throw new MatmulShapeError(`createMatmul: gemvRows ${rowsPerGroup} must be 1..gemvWorkgroupSize (${wg}) with gemvRows·WG·4 ≤ ${ctx.limits.maxComputeWorkgroupStorageSize} bytes`);
  }
  // Largest m whose last token still fits in both buffers.
  const fit = (bufFloats: number, off: number, stride: number, len: number) => Math.floor((bufFloats - off - len) / stride) + 1;
  const xBytes = bindingBytes(x);
  const outBytes = bindingBytes(out);
  const maxM = Math.min(fit(Math.floor(xBytes / 4), xOffset, xStride, w.cols), fit(Math.floor(outBytes / 4), outOffset, outStride, w.rows));
  if (maxM < 1) {
    throw new MatmulShapeError(`createMatmul(${w.chunks[0].buffer.label}): x (${xBytes} B) or out (${outBytes} B) cannot hold one token at the given offsets (x needs ${4 * (xOffset + w.cols)} B, out ${4 * (outOffset + w.rows)} B)`);
  }
  // x as array<vec4<f32>> when every quad the kernel reads is 16-byte aligned (m = 1 reads only token 0).
  const xAligned = xOffset % 4 === 0 && xBytes % 16 === 0 && (x.offset ?? 0) % 16 === 0 && (xGlu ?? 0) % 4 === 0;
  if (xGlu !== undefined && (!Number.isInteger(xGlu) || xGlu < w.cols || xStride < xGlu + w.cols || xQuant === 'q8')) {
    throw new MatmulShapeError(`createMatmul: xGlu ${xGlu} needs up at or after the gate's ${w.cols} columns, xStride ≥ xGlu + cols (${xStride}), and no xQuant`);
  }
  const acc: Record<string, number> = { ...(accumulate ? { ACCUMULATE: 1 } : {}), ...(xGlu !== undefined ? { XUP: xGlu } : {}) };
  const gemvConstants: Record<string, number> = gemvKind === 'rows' ? { WG: wg, ...acc } : { WG: wg, ROWS: rowsPerGroup, ...acc };
  const rowsWg = gemvKind === 'rows' ? wg : 16;
  const [gemv, multi] = await Promise.all([
    getPipeline(ctx, gemvKind, w.format, subgroups, xAligned, gemvConstants, xGlu !== undefined),
    multiKind === 'rows'
      ? getPipeline(ctx, 'rows', w.format, rowsSubgroups, xAligned && xStride % 4 === 0, { WG: rowsWg, ...acc }, xGlu !== undefined)
      : getPipeline(ctx, 'tiled', w.format, false, xAligned && xStride % 4 === 0, acc, xGlu !== undefined),
  ]);
  const q8x = xQuant === 'q8' ? await q8xPipelines(ctx, wg) : null;
  const xq = q8x && ctx.device.createBuffer({ label: `${w.chunks[0].buffer.label}.xq`, size: 80 * Math.ceil(w.cols / 32), usage: GPUBufferUsage.STORAGE });
  const gemvRowsPerGroup = gemvKind === 'rows' || q8x ? 16 * wg : rowsPerGroup;
  const chunks = w.chunks.map((c) => {
    const uniform = ctx.device.createBuffer({ label: `${c.buffer.label}.params`, size: MATMUL_PARAMS_BYTES, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    const entries: GPUBindGroupEntry[] = [
      { binding: 0, resource: { buffer: uniform } },
      { binding: 1, resource: { buffer: c.buffer } },
      { binding: 2, resource: x },
      { binding: 3, resource: out },
    ];
    const xqEntry: GPUBindGroupEntry = { binding: 4, resource: { buffer: xq! } };
    return {
      chunk: c,
      uniform,
      gemvGroup: q8x
        ? ctx.device.createBindGroup({ layout: q8x.gemv.getBindGroupLayout(0), entries: [entries[0], entries[1], entries[3], xqEntry] })
        : ctx.device.createBindGroup({ layout: gemv.getBindGroupLayout(0), entries }),
      quantGroup: q8x && ctx.device.createBindGroup({ layout: q8x.quant.getBindGroupLayout(0), entries: [entries[0], entries[2], xqEntry] }),
      multiGroup: ctx.device.createBindGroup({ layout: multi.getBindGroupLayout(0), entries }),
    };
  });
  let lastM = -1;
  const gemvForM1 = !args.invariant;
  return {
    maxM,
    encode(pass, m) {
      if (!Number.isInteger(m) || m < 1 || m > maxM) throw new MatmulShapeError(`matmul: m = ${m} tokens; the bound x/out buffers hold 1..${maxM}`);
      if (m !== lastM) {
        for (const c of chunks) ctx.device.queue.writeBuffer(c.uniform, 0, packMatmulParams(chunkParams(w, c.chunk, m, xOffset, xStride, outOffset, outStride)));
        lastM = m;
      }
      if (m === 1 && q8x) {
        // x is quantized once for all chunks (every chunk's uniform has the same cols/xOffset).
        pass.setPipeline(q8x.quant);
        pass.setBindGroup(0, chunks[0].quantGroup!);
        pass.dispatchWorkgroups(ceilDiv(Math.ceil(w.cols / 32), 64));
      }
      for (const c of chunks) {
        const gemvForm = m === 1 && gemvForM1;
        if (gemvForm || multiKind === 'rows') {
          // GEMV-shaped grid: one workgroup per row group, the kernel walks the m tokens.
          const n = ceilDiv(c.chunk.rows, gemvForm ? gemvRowsPerGroup : 16 * rowsWg);
          pass.setPipeline(!gemvForm ? multi : q8x ? q8x.gemv : gemv);
          pass.setBindGroup(0, !gemvForm ? c.multiGroup : c.gemvGroup);
          pass.dispatchWorkgroups(Math.min(n, 65535), ceilDiv(n, 65535));
        } else {
          pass.setPipeline(multi);
          pass.setBindGroup(0, c.multiGroup);
          pass.dispatchWorkgroups(ceilDiv(c.chunk.rows, 64), ceilDiv(m, 8));
        }
      }
    },
    destroy: () => {
      chunks.forEach((c) => c.uniform.destroy());
      xq?.destroy();
    },
  };
}

/** The two pipelines of the q4 × q8-activation GEMV (activation pre-pass, GEMV). */
async function q8xPipelines(ctx: GpuContext, wg: number): Promise<{ quant: GPUComputePipeline; gemv: GPUComputePipeline }> {
  const [quant, gemv] = await Promise.all([shaderPipeline(ctx, { kernel: 'q8x' }, { WG: 64 }), shaderPipeline(ctx, { kernel: 'gemv_q4_q8x' }, { WG: wg })]);
  return { quant, gemv };
}
