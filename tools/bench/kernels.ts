// `duet bench kernels`: effective bandwidth of the decode (m = 1) matmul for every weight
// format at Llama-3.2-1B and -3B layer shapes, against a plain copy kernel moving the same
// number of bytes on the same adapter in the same run; plus decode tok/s and the buffer total
// of the engine on a 1B-shaped random model when the GPU engine is available.
//
// Bytes of a matmul = packed weight bytes + x (cols·4) + out (rows·4). Bytes of a copy = read +
// written (it copies half of them). Each measurement rotates over enough distinct weight
// matrices (or copy buffers) that one pass touches at least `workingSetBytes`, so caches do
// not flatter small shapes; buffers hold benign random words (every format decodes them to
// normal floats: no NaN or denormal slow paths). Time: timestamp-query around each pass
// where the adapter has it, else wall clock per submission; warm-up, then the median of reps.

import copySrc from '../../src/kernels/copy.wgsl?raw';
import { type GpuContext, ceilDiv, createComputePipeline, requestDevice } from '../../src/kernels/gpu.ts';
import { type GpuMatrix, type MatmulArgs, type MatmulOp, type WeightFormat, WEIGHT_FORMATS, allocateMatrix, createMatmul, isCpuAdapter } from '../../src/kernels/matmul.ts';
import { median } from './median.ts';

/**
 * Decode-GEMV variants measured for q4 beside the default (exact) kernel, each against the
 * copy kernel in the same run. The best 1B ratio becomes the q4 headline (summary.q4Headline).
 */
export const Q4_VARIANTS: { name: string; quantizesActivations: boolean; args: Partial<MatmulArgs> }[] = [
  { name: 'q4 exact (default)', quantizesActivations: false, args: {} },
  { name: 'q4 x q8-activation SWAR int (xQuant q8)', quantizesActivations: true, args: { xQuant: 'q8' } },
];

export interface KernelBenchOptions {
  quick?: boolean;
  formats?: WeightFormat[];
  /** Minimum bytes one timed pass touches (default 256 MiB on GPUs, 32 MiB on CPU adapters, quick 16 MiB). */
  workingSetBytes?: number;
  reps?: number;
  /** Override the shape list (smoke tests). */
  shapes?: Shape[];
  /** Skip the engine tok/s part. */
  skipEngine?: boolean;
  /** Engine model layers (default 16, quick 2) and vocabulary (default 128256); smoke tests shrink them. */
  engineLayers?: number;
  engineVocab?: number;
  log?: (line: string) => void;
}

export interface Shape {
  model: '1B' | '3B';
  name: string;
  rows: number;
  cols: number;
}

export interface MatmulResult extends Shape {
  format: WeightFormat;
  /** q4 only: which Q4_VARIANTS entry. */
  variant?: string;
  bytes: number;
  ms: number;
  gbps: number;
  copyGbps: number;
  ratio: number;
  /** Fastest pass instead of the median, for matmul and copy, and their ratio. */
  msMin: number;
  copyMsMin: number;
  ratioBest: number;
}

export interface FormatSummary {
  /** Over the 1B shapes: total bytes / total time. */
  gbps1B: number;
  copyGbps1B: number;
  ratio1B: number;
  gbps3B: number | null;
  copyGbps3B: number | null;
  ratio3B: number | null;
  /** Same as ratio1B/3B from the fastest passes. */
  ratioBest1B: number;
  ratioBest3B: number | null;
}

export interface KernelBenchResult {
  suite: 'kernels';
  adapter: string;
  subgroups: boolean;
  timing: 'timestamp-query' | 'wall-clock';
  quick: boolean;
  workingSetBytes: number;
  reps: number;
  date: string;
  copy: { model: string; name: string; bytes: number; ms: number; gbps: number; msMin: number }[];
  matmul: MatmulResult[];
  /** Per format; for q4, of the headline variant (see q4Headline). */
  summary: Partial<Record<WeightFormat, FormatSummary>>;
  /** q4: every variant's summary, and which one is the headline (best 1B ratio). */
  q4Variants?: Record<string, FormatSummary & { quantizesActivations: boolean }>;
  q4Headline?: { variant: string; quantizesActivations: boolean; ratio1B: number };
  engine?: { config: string; format: WeightFormat; tokPerS: number; msPerToken: number; bufferBytes: number; memory: unknown };
  notes: string[];
}

const D1 = 2048;
const D3 = 3072;
export const SHAPES: Shape[] = [
  { model: '1B', name: 'q_proj, o_proj', rows: D1, cols: D1 },
  { model: '1B', name: 'k_proj, v_proj', rows: 512, cols: D1 },
  { model: '1B', name: 'gate_proj, up_proj', rows: 8192, cols: D1 },
  { model: '1B', name: 'down_proj', rows: D1, cols: 8192 },
  { model: '1B', name: 'lm_head (tied)', rows: 128256, cols: D1 },
  { model: '3B', name: 'q_proj, o_proj', rows: D3, cols: D3 },
  { model: '3B', name: 'k_proj, v_proj', rows: 1024, cols: D3 },
  { model: '3B', name: 'gate_proj, up_proj', rows: 8192, cols: D3 },
  { model: '3B', name: 'down_proj', rows: D3, cols: 8192 },
];
/** --quick: the 1B layer shapes without the LM head (a smoke run). */
const QUICK_SHAPES = SHAPES.filter((s) => s.model === '1B' && s.rows !== 128256);

/** Words that decode to normal numbers in every format (f32 ≈ 2^-7, f16/bf16 halves normal, q scales ≈ 1). */
function benignWords(n: number, seed: number): Uint32Array<ArrayBuffer> {
  const out = new Uint32Array(n);
  let a = seed >>> 0;
  for (let i = 0; i < n; i++) {
    a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
    out[i] = (0x3c003c00 | (a & 0x03ff03ff)) >>> 0;
  }
  return out;
}

class Timer {
  readonly timing: KernelBenchResult['timing'];
  private querySet: GPUQuerySet | null = null;
  private resolve: GPUBuffer | null = null;
  private read: GPUBuffer | null = null;

  constructor(private ctx: GpuContext) {
    this.timing = ctx.device.features.has('timestamp-query') ? 'timestamp-query' : 'wall-clock';
    if (this.timing === 'timestamp-query') {
      this.querySet = ctx.device.createQuerySet({ type: 'timestamp', count: 2 });
      this.resolve = ctx.device.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
      this.read = ctx.device.createBuffer({ size: 16, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ });
    }
  }

  /** Milliseconds of one compute pass recorded by `record`. */
  async time(record: (pass: GPUComputePassEncoder) => void): Promise<number> {
    const { device } = this.ctx;
    const enc = device.createCommandEncoder();
    const qs = this.querySet;
    const pass = enc.beginComputePass(qs ? { timestampWrites: { querySet: qs, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } } : {});
    record(pass);
    pass.end();
    if (qs && this.resolve && this.read) {
      enc.resolveQuerySet(qs, 0, 2, this.resolve, 0);
      enc.copyBufferToBuffer(this.resolve, 0, this.read, 0, 16);
      device.queue.submit([enc.finish()]);
      await this.read.mapAsync(GPUMapMode.READ);
      const [t0, t1] = new BigUint64Array(this.read.getMappedRange().slice(0));
      this.read.unmap();
      return Number(t1 - t0) / 1e6;
    }
    const t0 = performance.now();
    device.queue.submit([enc.finish()]);
    await device.queue.onSubmittedWorkDone();
    return performance.now() - t0;
  }

  destroy(): void {
    this.querySet?.destroy();
    this.resolve?.destroy();
    this.read?.destroy();
  }
}

/** Fill buffers with benign words by GPU copies from one pattern buffer (no per-buffer CPU upload). */
function fill(ctx: GpuContext, pattern: GPUBuffer, targets: GPUBuffer[]): void {
  const enc = ctx.device.createCommandEncoder();
  for (const t of targets) {
    for (let off = 0; off < t.size; off += pattern.size) enc.copyBufferToBuffer(pattern, 0, t, off, Math.min(pattern.size, t.size - off));
  }
  ctx.device.queue.submit([enc.finish()]);
}

/** Rotation count and dispatches per pass so one pass touches ≥ workingSet bytes. */
function plan(bytes: number, workingSet: number): { copies: number; iters: number } {
  const copies = Math.max(1, Math.min(64, Math.ceil(workingSet / bytes)));
  const iters = Math.max(copies, Math.min(512, Math.ceil(workingSet / bytes)));
  return { copies, iters };
}

/** Per-dispatch ms: the median of `reps` timed passes and the fastest (robust when other processes share the CPU). */
async function timeReps(timer: Timer, reps: number, iters: number, record: (pass: GPUComputePassEncoder) => void): Promise<{ ms: number; msMin: number }> {
  await timer.time(record); // warm-up (pipeline first use, lazy clears)
  const ms: number[] = [];
  for (let r = 0; r < reps; r++) ms.push(await timer.time(record));
  return { ms: median(ms) / iters, msMin: Math.min(...ms) / iters };
}

async function benchCopy(ctx: GpuContext, timer: Timer, pattern: GPUBuffer, bytes: number, ws: number, reps: number): Promise<{ ms: number; msMin: number }> {
  const half = Math.max(16, Math.floor(bytes / 2 / 16) * 16);
  const { copies, iters } = plan(2 * half, ws);
  const pipeline = await createComputePipeline(ctx, 'copy', copySrc, { WG: 256 });
  const n = half / 16;
  const groups = ceilDiv(n, 256 * 4); // about 4 vec4 per thread
  const gx = Math.min(groups, 65535);
  const gy = ceilDiv(groups, 65535);
  const params = ctx.device.createBuffer({ size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  ctx.device.queue.writeBuffer(params, 0, new Uint32Array([n, gx * gy * 256, 0, 0]));
  const bufs: GPUBuffer[] = [];
  const groupsList: GPUBindGroup[] = [];
  for (let i = 0; i < copies; i++) {
    const src = ctx.device.createBuffer({ size: half, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
    const dst = ctx.device.createBuffer({ size: half, usage: GPUBufferUsage.STORAGE });
    bufs.push(src, dst);
    groupsList.push(ctx.device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [{ binding: 0, resource: { buffer: params } }, { binding: 1, resource: { buffer: src } }, { binding: 2, resource: { buffer: dst } }],
    }));
  }
  fill(ctx, pattern, bufs.filter((_, i) => i % 2 === 0));
  const t = await timeReps(timer, reps, iters, (pass) => {
    pass.setPipeline(pipeline);
    for (let i = 0; i < iters; i++) {
      pass.setBindGroup(0, groupsList[i % copies]);
      pass.dispatchWorkgroups(gx, gy);
    }
  });
  bufs.forEach((b) => b.destroy());
  params.destroy();
  return t;
}

async function benchMatmul(ctx: GpuContext, timer: Timer, pattern: GPUBuffer, s: Shape, format: WeightFormat, ws: number, reps: number, extra: Partial<MatmulArgs> = {}): Promise<{ bytes: number; ms: number; msMin: number }> {
  const probe = allocateMatrix(ctx, 1, s.cols, format, 'probe');
  const weightBytes = probe.rowWords * 4 * s.rows;
  probe.destroy();
  const bytes = weightBytes + 4 * (s.cols + s.rows);
  const { copies, iters } = plan(bytes, ws);
  const x = ctx.device.createBuffer({ size: 4 * s.cols, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
  const out = ctx.device.createBuffer({ size: 4 * s.rows, usage: GPUBufferUsage.STORAGE });
  ctx.device.queue.writeBuffer(x, 0, new Float32Array(s.cols).fill(0.5));
  const mats: GpuMatrix[] = [];
  const ops: MatmulOp[] = [];
  for (let i = 0; i < copies; i++) {
    const w = allocateMatrix(ctx, s.rows, s.cols, format, `${s.model} ${s.name} ${format} #${i}`);
    fill(ctx, pattern, w.chunks.map((c) => c.buffer));
    mats.push(w);
    ops.push(await createMatmul(ctx, { out, x, w, ...extra }));
  }
  const t = await timeReps(timer, reps, iters, (pass) => {
    for (let i = 0; i < iters; i++) ops[i % copies].encode(pass, 1);
  });
  ops.forEach((o) => o.destroy());
  mats.forEach((m) => m.destroy());
  x.destroy();
  out.destroy();
  return { bytes, ...t };
}

const gbps = (bytes: number, ms: number): number => bytes / (ms * 1e6);

export async function runKernelBench(opts: KernelBenchOptions = {}): Promise<KernelBenchResult> {
  const log = opts.log ?? (() => {});
  const quick = opts.quick ?? false;
  const ctx = await requestDevice();
  // Past a CPU's last-level cache 32 MiB suffices, and a CPU adapter moves ~1 GB/s: keep the run short.
  const ws = opts.workingSetBytes ?? (quick ? 16 : isCpuAdapter(ctx) ? 32 : 256) * 2 ** 20;
  const reps = opts.reps ?? (quick ? 3 : 5);
  const formats = opts.formats ?? [...WEIGHT_FORMATS];
  const shapes = opts.shapes ?? (quick ? QUICK_SHAPES : SHAPES);
  const timer = new Timer(ctx);
  const notes: string[] = [];
  const q4Variants = Q4_VARIANTS;
  const pattern = ctx.device.createBuffer({ size: 4 << 20, usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
  ctx.device.queue.writeBuffer(pattern, 0, benignWords((4 << 20) / 4, 1));
  const result: KernelBenchResult = {
    suite: 'kernels', adapter: ctx.adapterName, subgroups: ctx.hasSubgroups, timing: timer.timing, quick,
    workingSetBytes: ws, reps, date: new Date().toISOString(), copy: [], matmul: [], summary: {}, notes,
  };
  log(`adapter: ${ctx.adapterName} (subgroups ${ctx.hasSubgroups}, timing ${timer.timing}, working set ${(ws / 2 ** 20).toFixed(0)} MiB)`);
  try {
    for (const s of shapes) {
      const mm: MatmulResult[] = [];
      for (const format of formats) {
        for (const v of format === 'q4' ? q4Variants : [null]) {
          const { bytes, ms, msMin } = await benchMatmul(ctx, timer, pattern, s, format, ws, reps, v?.args);
          // The copy baseline moves exactly this format's bytes, so the ratio compares like with like.
          const c = await benchCopy(ctx, timer, pattern, bytes, ws, reps);
          const copyGbps = gbps(bytes, c.ms);
          result.copy.push({ model: s.model, name: `${s.name} (${v?.name ?? format} bytes)`, bytes, ms: c.ms, gbps: copyGbps, msMin: c.msMin });
          const r: MatmulResult = {
            ...s, format, ...(v ? { variant: v.name } : {}), bytes, ms, gbps: gbps(bytes, ms), copyGbps, ratio: gbps(bytes, ms) / copyGbps,
            msMin, copyMsMin: c.msMin, ratioBest: c.msMin / msMin,
          };
          mm.push(r);
          log(`${s.model} ${s.name.padEnd(18)} ${String(s.rows).padStart(6)}x${String(s.cols).padEnd(5)} ${format.padEnd(4)} ${(bytes / 2 ** 20).toFixed(1).padStart(7)} MiB ${ms.toFixed(3).padStart(9)} ms ${r.gbps.toFixed(2).padStart(7)} GB/s  copy ${copyGbps.toFixed(2).padStart(7)} GB/s  ratio ${r.ratio.toFixed(2)} (best-of ${r.ratioBest.toFixed(2)})${v ? `  [${v.name}]` : ''}`);
        }
      }
      result.matmul.push(...mm);
    }
    const summarize = (format: WeightFormat, variant?: string): FormatSummary | null => {
      const agg = (model: '1B' | '3B') => {
        const rs = result.matmul.filter((r) => r.format === format && r.model === model && r.variant === variant);
        if (!rs.length) return null;
        const bytes = rs.reduce((a, r) => a + r.bytes, 0);
        const ms = rs.reduce((a, r) => a + r.ms, 0);
        const copyMs = rs.reduce((a, r) => a + r.bytes / (r.copyGbps * 1e6), 0);
        const best = rs.reduce((a, r) => a + r.copyMsMin, 0) / rs.reduce((a, r) => a + r.msMin, 0);
        return { gbps: gbps(bytes, ms), copy: gbps(bytes, copyMs), best };
      };
      const a = agg('1B');
      const b = agg('3B');
      if (!a) return null;
      log(`summary ${variant ?? format}: 1B ${a.gbps.toFixed(2)} GB/s = ${(a.gbps / a.copy * 100).toFixed(0)}% of copy (best-of ${(a.best * 100).toFixed(0)}%)` +
        (b ? `; 3B ${b.gbps.toFixed(2)} GB/s = ${(b.gbps / b.copy * 100).toFixed(0)}% of copy (best-of ${(b.best * 100).toFixed(0)}%)` : ''));
      return {
        gbps1B: a.gbps, copyGbps1B: a.copy, ratio1B: a.gbps / a.copy,
        gbps3B: b?.gbps ?? null, copyGbps3B: b?.copy ?? null, ratio3B: b ? b.gbps / b.copy : null,
        ratioBest1B: a.best, ratioBest3B: b?.best ?? null,
      };
    };
    for (const format of formats) {
      if (format !== 'q4') {
        const sum = summarize(format);
        if (sum) result.summary[format] = sum;
        continue;
      }
      result.q4Variants = {};
      for (const v of q4Variants) {
        const sum = summarize('q4', v.name);
        if (!sum) continue;
        result.q4Variants[v.name] = { ...sum, quantizesActivations: v.quantizesActivations };
        if (!result.q4Headline || sum.ratio1B > result.q4Headline.ratio1B) {
          result.q4Headline = { variant: v.name, quantizesActivations: v.quantizesActivations, ratio1B: sum.ratio1B };
          result.summary.q4 = sum;
        }
      }
      if (result.q4Headline) log(`q4 headline: ${result.q4Headline.variant} (${result.q4Headline.quantizesActivations ? 'quantizes activations to int8' : 'exact activations'}), ${(result.q4Headline.ratio1B * 100).toFixed(0)}% of copy at 1B`);
    }
    if (!opts.skipEngine) await benchEngine(ctx, result, opts, log);
    else notes.push('engine tok/s skipped (--no-engine)');
  } finally {
    timer.destroy();
    pattern.destroy();
    ctx.device.destroy();
  }
  return result;
}

/** Tensor data for the engine bench: a 64 Ki-value random block tiled (values do not change the speed). */
function tiledRandom(n: number, seed: number): Float32Array {
  const block = new Float32Array(1 << 16);
  let a = seed >>> 0;
  for (let i = 0; i < block.length; i++) {
    a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
    block[i] = (a / 2 ** 32 - 0.5) * 0.05;
  }
  const out = new Float32Array(n);
  for (let o = 0; o < n; o += block.length) out.set(block.subarray(0, Math.min(block.length, n - o)), o);
  return out;
}

/**
 * Decode tok/s of the GPU engine (src/engine/gpu) on a random model with Llama-3.2-1B shapes
 * in q4 (the browser draft's default) with a 4096-token KV cache: one prompt token, then
 * greedy decode steps (forwardArgmax: one submission and a few words read back per token),
 * median step time. --quick keeps 2 of the 16 layers.
 */
async function benchEngine(ctx: GpuContext, result: KernelBenchResult, opts: KernelBenchOptions, log: (l: string) => void): Promise<void> {
  const { syntheticConfig } = await import('../../src/engine/config.ts');
  const { expectedShapes } = await import('../../src/engine/weights.ts');
  const { createEngine } = await import('../../src/engine/gpu/index.ts');
  const quick = opts.quick ?? false;
  const config = syntheticConfig('1b', { numLayers: opts.engineLayers ?? (quick ? 2 : 16), ...(opts.engineVocab ? { vocabSize: opts.engineVocab } : {}) });
  const format: WeightFormat = 'q4';
  const steps = quick ? 3 : 8;
  async function* tensors() {
    let seed = 1;
    for (const [name, shape] of expectedShapes(config)) {
      const n = shape.reduce((a, b) => a * b, 1);
      yield { name, shape, data: name.endsWith('norm.weight') ? new Float32Array(n).fill(1) : tiledRandom(n, seed++) };
    }
  }
  const t0 = performance.now();
  const engine = await createEngine(ctx, config, tensors(), { format, maxContext: 4096 });
  log(`engine: ${config.numLayers} layers, vocab ${config.vocabSize}, ${format}, loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s; ${(engine.bufferBytes / 2 ** 20).toFixed(1)} MiB of GPU buffers`);
  try {
    let tok = (await engine.forwardArgmax([Math.min(config.bosTokenId ?? 0, config.vocabSize - 1)], 0))[0];
    const ms: number[] = [];
    for (let i = 0; i < steps; i++) {
      const s0 = performance.now();
      tok = (await engine.forwardArgmax([tok], engine.length))[0];
      ms.push(performance.now() - s0);
    }
    const msPerToken = median(ms);
    result.engine = {
      config: `Llama-3.2-1B shapes, ${config.numLayers} layers, vocab ${config.vocabSize}, maxContext 4096, random weights`,
      format, tokPerS: 1000 / msPerToken, msPerToken, bufferBytes: engine.bufferBytes, memory: engine.memory,
    };
    log(`engine decode: ${msPerToken.toFixed(1)} ms/token = ${(1000 / msPerToken).toFixed(2)} tok/s (median of ${steps}, wall clock incl. readback)`);
  } finally {
    engine.dispose();
  }
}
