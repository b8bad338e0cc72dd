// The WGSL Llama engine (browser worker or Node + Dawn): weights packed in one format and
// uploaded once, activations and a KV cache allocated once (plan.ts lists every buffer), and a
// flat per-layer schedule recorded into ONE command buffer per forward (chunks of maxBatch
// tokens for long prefills). Outputs: all logits, per-row argmax, or per-row top-k; the last
// two read back only a few words. Node-free: this file must bundle for the browser.

import { type LlamaConfig, kvDim, qDim, ropeInvFreq } from '../config.ts';
import type { CausalLM } from '../model.ts';
import { type PackedMatrix, packMatrix, packedByteLength } from '../quantize.ts';
import { type LayerWeights, type LlamaWeights, expectedShapes, layerTensorNames } from '../weights.ts';
import { type GpuContext, GpuOutOfMemoryError, createBufferFrom } from '../../kernels/gpu.ts';
import { type GpuMatrix, MATMUL_PARAMS_BYTES, allocateMatrix, createMatmul, writeMatrixRows } from '../../kernels/matmul.ts';
import type { Op } from '../../kernels/op.ts';
import { RMSNORM_PARAMS_BYTES, createRmsnorm } from '../../kernels/rmsnorm.ts';
import { ROPE_PARAMS_BYTES, createRope, ropeTable } from '../../kernels/rope.ts';
import { KVWRITE_PARAMS_BYTES, createKvWrite } from '../../kernels/kvwrite.ts';
import { ATTENTION_PARAMS_BYTES, createAttention } from '../../kernels/attention.ts';
import { ADD_PARAMS_BYTES, createAdd } from '../../kernels/add.ts';
import { SWIGLU_PARAMS_BYTES, createSwiglu } from '../../kernels/swiglu.ts';
import { EMBEDDING_PARAMS_BYTES, createEmbedding } from '../../kernels/embedding.ts';
import { ARGMAX_PARAMS_BYTES, createArgmax } from '../../kernels/argmax.ts';
import { MAX_TOPK, TOPK_PARAMS_BYTES, type TopkRow, createTopk, decodeTopk } from '../../kernels/topk.ts';
import { type GpuEngineOptions, type MemoryPlan, type ResolvedOptions, planBuffers, resolveOptions } from './plan.ts';

/** One tensor of a streamed checkpoint (the loader's LoadedTensor). */
export interface StreamedTensor {
  name: string;
  shape: number[];
  data: Float32Array;
}

/**
 * A matrix already packed in the engine's format (the prepared-weights cache): uploaded as
 * is, so a cached load skips packMatrix. Norms and other 1-D tensors always come as f32.
 */
export interface StreamedPacked {
  name: string;
  packed: PackedMatrix;
}

export type StreamItem = StreamedTensor | StreamedPacked;

export type WeightsInput = LlamaWeights | AsyncIterable<StreamItem>;

/** A pre-packed tensor that does not fit the engine (other format, shape or layout). */
export class PackedWeightsError extends Error {
  override name = 'PackedWeightsError';
  constructor(readonly tensor: string, message: string) {
    super(`${tensor}: ${message}; drop the cached weights (Models view) so they are prepared again from the source`);
  }
}

export interface MemoryReport {
  weights: number;
  kv: number;
  activations: number;
  uniforms: number;
  total: number;
}

type Matrices = Omit<LayerWeights, 'attnNorm' | 'ffnNorm'>;
const MATRIX_KEYS = ['wq', 'wk', 'wv', 'wo', 'wGate', 'wUp', 'wDown'] as const;

interface LayerBuffers {
  attnNorm: GPUBuffer;
  ffnNorm: GPUBuffer;
  m: Record<keyof Matrices, GpuMatrix>;
  kCache: GPUBuffer;
  vCache: GPUBuffer;
}

interface LayerOps {
  attnNorm: Op<number>;
  wq: Op<number>;
  wk: Op<number>;
  wv: Op<number>;
  ropeQ: Op<{ m: number; startPos: number }>;
  ropeK: Op<{ m: number; startPos: number }>;
  kvWrite: Op<{ m: number; startPos: number }>;
  attention: Op<{ m: number; startPos: number }>;
  wo: Op<number>;
  addAttn: Op<number>;
  ffnNorm: Op<number>;
  wGate: Op<number>;
  wUp: Op<number>;
  swiglu: Op<number>;
  wDown: Op<number>;
  addFfn: Op<number>;
}

/** Where one HF tensor goes: its expected shape, its f32 writer, and its matrix if it is one. */
interface Target {
  shape: number[];
  write: (data: Float32Array) => void;
  matrix?: GpuMatrix;
}

type Output = { kind: 'logits' } | { kind: 'argmax' } | { kind: 'topk'; k: number };

/** Rows of packed matrix data written per writeBuffer, bounding the transient CPU copy. */
const SLAB_ELEMENTS = 1 << 22;

export class WebGpuLlama implements CausalLM {
  readonly config: LlamaConfig;
  readonly maxContext: number;
  readonly options: ResolvedOptions;
  readonly plan: MemoryPlan;
  private len = 0;
  private tail: Promise<unknown> = Promise.resolve();
  private disposed = false;
  private readonly owned: GPUBuffer[] = [];
  private readonly matrices: GpuMatrix[] = [];
  private uniformBytes = 0;
  /** Per allocation: its bytes and the out-of-memory error scope around it. */
  private readonly allocations: { label: string; bytes: number; error: Promise<GPUError | null> }[] = [];

  // activations, (maxBatch, ...) row-major
  private ids!: GPUBuffer;     // (M) u32 token ids
  private x!: GPUBuffer;       // (M, dim) residual stream
  private xb!: GPUBuffer;      // (M, max(dim, qDim)) normed input / projection output
  private q!: GPUBuffer;       // (M, qDim)
  private k!: GPUBuffer;       // (M, kvDim)
  private v!: GPUBuffer;       // (M, kvDim)
  private att!: GPUBuffer;     // (M, qDim) attention output
  private hb!: GPUBuffer;      // (M, hidden) gate, then silu(gate) * up
  private hb2!: GPUBuffer;     // (M, hidden) up
  private logits!: GPUBuffer;  // (M, vocab)
  private picks!: GPUBuffer;   // (M, 2, MAX_TOPK) u32: argmax ids or top-k ids + logit bits
  private picksStaging!: GPUBuffer;
  private rope!: GPUBuffer;    // (maxContext, headDim/2, 2) cos, sin
  private embed!: GpuMatrix;   // (vocab, dim)
  private lmHead!: GpuMatrix;  // (vocab, dim), the embedding when tied
  private finalNorm!: GPUBuffer;
  private layers: LayerBuffers[] = [];

  private embedOp!: Op<number>;
  private layerOps: LayerOps[] = [];
  private finalNormOp!: Op<number>;
  private lmHeadOp!: Op<number>;
  private argmaxOp!: Op<number>;
  private topkOp!: Op<{ m: number; k: number }>;

  private maxChunkBytes: number | undefined;

  private constructor(private readonly ctx: GpuContext, config: LlamaConfig, opts: ResolvedOptions) {
    this.config = config;
    this.options = opts;
    this.maxContext = opts.maxContext;
    this.plan = planBuffers(config, opts);
  }

  /** Plan, check the budget, allocate, upload (from f32 weights or a tensor stream), build the ops. */
  static async create(ctx: GpuContext, config: LlamaConfig, weights: WeightsInput, options: GpuEngineOptions = {}): Promise<WebGpuLlama> {
    const e = new WebGpuLlama(ctx, config, resolveOptions(config, options));
    e.maxChunkBytes = options.maxChunkBytes;
    const budget = options.memoryBudgetBytes;
    if (budget !== undefined && e.plan.total > budget) {
      throw new GpuOutOfMemoryError(e.plan.total, budget, `the ${config.numLayers}-layer model in ${e.options.format} with a ${e.maxContext}-token KV cache`);
    }
    try {
      e.allocate();
      await e.checkAllocations();
    } catch (err) {
      e.dispose();
      throw err;
    }
    try {
      await e.upload(weights);
      await e.buildOps();
    } catch (err) {
      e.dispose();
      throw err;
    }
    return e;
  }

  get length(): number {
    return this.len;
  }

  /** Bytes of every GPU buffer this engine holds, by group. */
  get memory(): MemoryReport {
    const p = this.plan;
    return { weights: p.weights, kv: p.kv, activations: p.activations, uniforms: this.uniformBytes, total: p.total + this.uniformBytes };
  }

  get bufferBytes(): number {
    return this.memory.total;
  }

  /** Storage bytes actually allocated (tests compare it with the plan). */
  get allocatedStorageBytes(): number {
    return this.owned.reduce((s, b) => s + b.size, 0) + this.matrices.reduce((s, m) => s + m.byteLength, 0);
  }

  rollback(length: number): void {
    if (!Number.isInteger(length) || length < 0 || length > this.len) {
      throw new RangeError(`rollback(${length}): cache holds ${this.len} tokens`);
    }
    this.len = length;
  }

  /** Logits of every position, (N, vocab) row-major. */
  async forward(tokens: ArrayLike<number>, startPos: number): Promise<Float32Array> {
    const words = await this.run(tokens, startPos, { kind: 'logits' });
    return new Float32Array(words.buffer, words.byteOffset, words.length);
  }

  /** Greedy token of every position (reads back N words). */
  async forwardArgmax(tokens: ArrayLike<number>, startPos: number): Promise<Uint32Array> {
    return this.run(tokens, startPos, { kind: 'argmax' });
  }

  /** The k ≤ 64 largest logits of every position with their ids, sorted descending. */
  async forwardTopK(tokens: ArrayLike<number>, startPos: number, k: number): Promise<TopkRow[]> {
    if (!Number.isInteger(k) || k < 1 || k > Math.min(MAX_TOPK, this.config.vocabSize)) {
      throw new RangeError(`forwardTopK: k = ${k}; use 1..${Math.min(MAX_TOPK, this.config.vocabSize)}`);
    }
    const words = await this.run(tokens, startPos, { kind: 'topk', k });
    return decodeTopk(words, tokens.length, k);
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const b of this.owned) b.destroy();
    for (const m of this.matrices) m.destroy();
  }

  // ---- forward ----

  /** Serialize forwards: each records against the same activation buffers and uniforms. */
  private run(tokens: ArrayLike<number>, startPos: number, out: Output): Promise<Uint32Array> {
    const p = this.tail.then(() => this.runNow(tokens, startPos, out));
    this.tail = p.catch(() => undefined);
    return p;
  }

  private async runNow(tokens: ArrayLike<number>, startPos: number, out: Output): Promise<Uint32Array> {
    if (this.disposed) throw new Error('WebGpuLlama: used after dispose()');
    const c = this.config;
    const n = tokens.length;
    if (!Number.isInteger(startPos) || startPos < 0 || startPos > this.len) throw new RangeError(`forward at ${startPos}: cache holds ${this.len} tokens`);
    if (n < 1) throw new RangeError('forward: no tokens');
    if (startPos + n > this.maxContext) throw new RangeError(`context full: ${startPos + n} tokens > maxContext ${this.maxContext}`);
    const ids = new Uint32Array(n);
    for (let i = 0; i < n; i++) {
      const t = tokens[i];
      if (!Number.isInteger(t) || t < 0 || t >= c.vocabSize) throw new RangeError(`token id ${t} outside the vocabulary [0, ${c.vocabSize})`);
      ids[i] = t;
    }
    this.len = startPos;
    const rowWords = out.kind === 'logits' ? c.vocabSize : out.kind === 'argmax' ? 1 : 2 * out.k;
    const device = this.ctx.device;
    // Full logits need a staging buffer of N rows; argmax/top-k use the persistent small one per chunk.
    const staging = out.kind === 'logits' ? device.createBuffer({ label: 'logitsStaging', size: n * rowWords * 4, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ }) : null;
    const result = new Uint32Array(n * rowWords);
    try {
      for (let s = 0; s < n; s += this.options.maxBatch) {
        const m = Math.min(this.options.maxBatch, n - s);
        device.queue.writeBuffer(this.ids, 0, ids, s, m);
        const enc = device.createCommandEncoder({ label: 'forward' });
        const pass = enc.beginComputePass();
        this.encodeForward(pass, m, startPos + s, out);
        pass.end();
        if (staging) enc.copyBufferToBuffer(this.logits, 0, staging, s * rowWords * 4, m * rowWords * 4);
        else enc.copyBufferToBuffer(this.picks, 0, this.picksStaging, 0, m * rowWords * 4);
        device.queue.submit([enc.finish()]);
        if (!staging) result.set(await this.readPicks(m * rowWords), s * rowWords);
      }
      if (staging) {
        await staging.mapAsync(GPUMapMode.READ);
        result.set(new Uint32Array(staging.getMappedRange()));
        staging.unmap();
      }
    } catch (err) {
      // The cache may hold part of this block; what was there before startPos is intact.
      this.len = startPos;
      throw err;
    } finally {
      staging?.destroy();
    }
    this.len = startPos + n;
    return result;
  }

  private async readPicks(words: number): Promise<Uint32Array> {
    await this.picksStaging.mapAsync(GPUMapMode.READ, 0, words * 4);
    const r = new Uint32Array(this.picksStaging.getMappedRange(0, words * 4).slice(0));
    this.picksStaging.unmap();
    return r;
  }

  /** The flat schedule of one chunk of m tokens at positions startPos.. */
  private encodeForward(pass: GPUComputePassEncoder, m: number, startPos: number, out: Output): void {
    const at = { m, startPos };
    this.embedOp.encode(pass, m);                  // x = embed[ids]
    for (const L of this.layerOps) {
      L.attnNorm.encode(pass, m);                  // xb = rmsnorm(x) * attnNorm
      L.wq.encode(pass, m);                        // q = xb · Wqᵀ
      L.wk.encode(pass, m);                        // k = xb · Wkᵀ
      L.wv.encode(pass, m);                        // v = xb · Wvᵀ
      L.ropeQ.encode(pass, at);                    // rotate q at positions startPos..
      L.ropeK.encode(pass, at);                    // rotate k
      L.kvWrite.encode(pass, at);                  // cache[startPos..] = k, v
      L.attention.encode(pass, at);                // att = causal GQA attention over the cache
      L.wo.encode(pass, m);                        // xb = att · Woᵀ
      L.addAttn.encode(pass, m);                   // x += xb
      L.ffnNorm.encode(pass, m);                   // xb = rmsnorm(x) * ffnNorm
      L.wGate.encode(pass, m);                     // hb = xb · Wgateᵀ
      L.wUp.encode(pass, m);                       // hb2 = xb · Wupᵀ
      L.swiglu.encode(pass, m);                    // hb = silu(hb) * hb2
      L.wDown.encode(pass, m);                     // xb = hb · Wdownᵀ
      L.addFfn.encode(pass, m);                    // x += xb
    }
    this.finalNormOp.encode(pass, m);              // xb = rmsnorm(x) * finalNorm
    this.lmHeadOp.encode(pass, m);                 // logits = xb · Eᵀ (tied) or LM headᵀ
    if (out.kind === 'argmax') this.argmaxOp.encode(pass, m);             // picks = argmax per row
    else if (out.kind === 'topk') this.topkOp.encode(pass, { m, k: out.k }); // picks = top-k per row
  }

  // ---- construction ----

  /** Run one allocation inside its own out-of-memory error scope. */
  private scoped<T>(label: string, bytes: number, make: () => T): T {
    const device = this.ctx.device;
    device.pushErrorScope('out-of-memory');
    try {
      return make();
    } finally {
      this.allocations.push({ label, bytes, error: device.popErrorScope() });
    }
  }

  /** After allocate(): the first refused buffer turns into a GpuOutOfMemoryError with what did fit. */
  private async checkAllocations(): Promise<void> {
    let fitted = 0;
    for (const a of this.allocations) {
      const err = await a.error;
      if (err) {
        throw new GpuOutOfMemoryError(this.plan.total, fitted, `the model in ${this.options.format} with a ${this.maxContext}-token KV cache (the device refused buffer "${a.label}": ${err.message})`);
      }
      fitted += a.bytes;
    }
  }

  private buffer(label: string, bytes: number, usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC): GPUBuffer {
    const size = Math.max(16, Math.ceil(bytes / 4) * 4);
    const b = this.scoped(label, size, () => this.ctx.device.createBuffer({ label, size, usage }));
    this.owned.push(b);
    return b;
  }

  private matrix(label: string, rows: number, cols: number): GpuMatrix {
    const m = this.scoped(label, packedByteLength(rows, cols, this.options.format), () => allocateMatrix(this.ctx, rows, cols, this.options.format, label, { maxChunkBytes: this.maxChunkBytes }));
    this.matrices.push(m);
    return m;
  }

  private allocate(): void {
    const c = this.config;
    const M = this.options.maxBatch;
    const dim = c.hiddenSize;
    const kv = kvDim(c);
    const qd = qDim(c);
    const hidden = c.intermediateSize;
    const limit = this.ctx.limits.maxStorageBufferBindingSize;
    if (M * c.vocabSize * 4 > limit) {
      throw new GpuOutOfMemoryError(M * c.vocabSize * 4, limit, `a logits buffer of ${M} rows (lower maxBatch)`);
    }
    this.embed = this.matrix('embed', c.vocabSize, dim);
    for (let l = 0; l < c.numLayers; l++) {
      const cacheBytes = this.plan.buffers.find((b) => b.label === `l${l}.kCache`)!.bytes;
      this.layers.push({
        attnNorm: this.buffer(`l${l}.attnNorm`, dim * 4),
        ffnNorm: this.buffer(`l${l}.ffnNorm`, dim * 4),
        m: {
          wq: this.matrix(`l${l}.wq`, qd, dim),
          wk: this.matrix(`l${l}.wk`, kv, dim),
          wv: this.matrix(`l${l}.wv`, kv, dim),
          wo: this.matrix(`l${l}.wo`, dim, qd),
          wGate: this.matrix(`l${l}.wGate`, hidden, dim),
          wUp: this.matrix(`l${l}.wUp`, hidden, dim),
          wDown: this.matrix(`l${l}.wDown`, dim, hidden),
        },
        kCache: this.buffer(`l${l}.kCache`, cacheBytes),
        vCache: this.buffer(`l${l}.vCache`, cacheBytes),
      });
    }
    this.finalNorm = this.buffer('finalNorm', dim * 4);
    this.lmHead = c.tieWordEmbeddings ? this.embed : this.matrix('lmHead', c.vocabSize, dim);
    const table = ropeTable(ropeInvFreq(c), this.maxContext);
    this.rope = this.scoped('ropeTable', table.byteLength, () => createBufferFrom(this.ctx, table, GPUBufferUsage.STORAGE, 'ropeTable'));
    this.owned.push(this.rope);
    this.ids = this.buffer('ids', M * 4);
    this.x = this.buffer('x', M * dim * 4);
    this.xb = this.buffer('xb', M * Math.max(dim, qd) * 4);
    this.q = this.buffer('q', M * qd * 4);
    this.k = this.buffer('k', M * kv * 4);
    this.v = this.buffer('v', M * kv * 4);
    this.att = this.buffer('att', M * qd * 4);
    this.hb = this.buffer('hb', M * hidden * 4);
    this.hb2 = this.buffer('hb2', M * hidden * 4);
    this.logits = this.buffer('logits', M * c.vocabSize * 4);
    this.picks = this.buffer('picks', M * 2 * MAX_TOPK * 4);
    this.picksStaging = this.buffer('picksStaging', M * 2 * MAX_TOPK * 4, GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ);
  }

  /** Pack and write a rows × cols f32 matrix slab by slab (bounded transient CPU memory). */
  private writeMatrix(m: GpuMatrix, w: Float32Array): void {
    const slabRows = Math.max(1, Math.floor(SLAB_ELEMENTS / m.cols));
    for (let r0 = 0; r0 < m.rows; r0 += slabRows) {
      const r1 = Math.min(m.rows, r0 + slabRows);
      const packed = packMatrix(w.subarray(r0 * m.cols, r1 * m.cols), r1 - r0, m.cols, m.format);
      writeMatrixRows(this.ctx, m, r0, packed.data);
    }
  }

  private writeVector(b: GPUBuffer, w: Float32Array): void {
    this.ctx.device.queue.writeBuffer(b, 0, w.buffer, w.byteOffset, w.byteLength);
  }

  /** Destination of every HF tensor name, with the shape it must have. */
  private targets(): Map<string, Target> {
    const shapes = expectedShapes(this.config);
    const t = new Map<string, Target>();
    const vector = (name: string, b: GPUBuffer) => t.set(name, { shape: shapes.get(name)!, write: (d) => this.writeVector(b, d) });
    const matrix = (name: string, m: GpuMatrix) => t.set(name, { shape: shapes.get(name)!, write: (d) => this.writeMatrix(m, d), matrix: m });
    matrix('model.embed_tokens.weight', this.embed);
    vector('model.norm.weight', this.finalNorm);
    if (!this.config.tieWordEmbeddings) matrix('lm_head.weight', this.lmHead);
    this.layers.forEach((L, l) => {
      const names = layerTensorNames(l);
      vector(names.attnNorm, L.attnNorm);
      vector(names.ffnNorm, L.ffnNorm);
      for (const k of MATRIX_KEYS) matrix(names[k], L.m[k]);
    });
    return t;
  }

  /** Upload a pre-packed matrix after checking it is exactly what writeMatrix would produce. */
  private writePacked(name: string, t: Target, p: PackedMatrix): void {
    const m = t.matrix;
    if (!m) throw new PackedWeightsError(name, `a ${t.shape.length}-D tensor must come as f32, not packed (${p.format})`);
    if (p.format !== m.format) throw new PackedWeightsError(name, `packed as ${p.format}, but the engine runs ${m.format}`);
    if (p.rows !== m.rows || p.cols !== m.cols) throw new PackedWeightsError(name, `packed shape [${p.rows}, ${p.cols}] does not match the config's [${m.rows}, ${m.cols}]`);
    if (p.rowWords !== m.rowWords || p.scaleWordOffset !== m.scaleWordOffset || p.colsPadded !== m.colsPadded) {
      throw new PackedWeightsError(name, `packed row layout (${p.rowWords} words, scales at ${p.scaleWordOffset}) is not the ${m.format} layout (${m.rowWords} words, scales at ${m.scaleWordOffset})`);
    }
    if (!(p.data instanceof Uint32Array) || p.data.length !== m.rows * m.rowWords) {
      throw new PackedWeightsError(name, `packed data holds ${p.data?.byteLength ?? 0} bytes, the ${m.format} layout needs ${m.rows * m.rowWords * 4}`);
    }
    writeMatrixRows(this.ctx, m, 0, p.data);
  }

  private async upload(weights: WeightsInput): Promise<void> {
    const targets = this.targets();
    const seen = new Set<string>();
    const take = (name: string, data: Float32Array, shape?: number[]) => {
      const t = targets.get(name);
      if (!t) return; // tensors the forward does not use (rotary_emb.inv_freq, ...)
      const n = t.shape.reduce((a, b) => a * b, 1);
      if (data.length !== n || (shape && shape.join() !== t.shape.join())) {
        throw new RangeError(`${name}: shape [${shape ?? data.length}] does not match the config's [${t.shape}]`);
      }
      t.write(data);
      seen.add(name);
    };
    if (Symbol.asyncIterator in weights) {
      for await (const t of weights) {
        if (!('packed' in t)) {
          take(t.name, t.data, t.shape);
          continue;
        }
        const target = targets.get(t.name);
        if (!target) continue;
        this.writePacked(t.name, target, t.packed);
        seen.add(t.name);
      }
    } else {
      const w = weights;
      take('model.embed_tokens.weight', w.embed);
      take('model.norm.weight', w.finalNorm);
      if (w.lmHead) take('lm_head.weight', w.lmHead);
      w.layers.forEach((L, l) => {
        const names = layerTensorNames(l);
        for (const k of Object.keys(names) as (keyof LayerWeights)[]) take(names[k], L[k]);
      });
    }
    const missing = [...targets.keys()].filter((n) => !seen.has(n));
    if (missing.length) throw new RangeError(`weights are missing ${missing.length} tensor(s): ${missing.slice(0, 3).join(', ')}`);
    await this.ctx.device.queue.onSubmittedWorkDone();
  }

  private async buildOps(): Promise<void> {
    const ctx = this.ctx;
    const c = this.config;
    const dim = c.hiddenSize;
    const kv = kvDim(c);
    const hidden = c.intermediateSize;
    const eps = c.rmsNormEps;
    const kvFmt = this.options.kvFormat;
    const u = (bytes: number) => (this.uniformBytes += bytes);
    const mm = async (w: GpuMatrix, x: GPUBuffer, out: GPUBuffer) => {
      u(MATMUL_PARAMS_BYTES * w.chunks.length);
      return createMatmul(ctx, { w, x, out });
    };
    this.embedOp = await createEmbedding(ctx, { ids: this.ids, table: this.embed, out: this.x });
    u(EMBEDDING_PARAMS_BYTES * this.embed.chunks.length);
    const ropeDims = (nHeads: number) => ({ nHeads, headDim: c.headDim, maxPositions: this.maxContext });
    this.layerOps = await Promise.all(
      this.layers.map(async (L, l) => {
        u(2 * RMSNORM_PARAMS_BYTES + 2 * ROPE_PARAMS_BYTES + KVWRITE_PARAMS_BYTES + ATTENTION_PARAMS_BYTES + 2 * ADD_PARAMS_BYTES + SWIGLU_PARAMS_BYTES);
        return {
          attnNorm: await createRmsnorm(ctx, { out: this.xb, x: this.x, weight: L.attnNorm }, { n: dim, eps }, `l${l}.attnNorm`),
          wq: await mm(L.m.wq, this.xb, this.q),
          wk: await mm(L.m.wk, this.xb, this.k),
          wv: await mm(L.m.wv, this.xb, this.v),
          ropeQ: await createRope(ctx, { table: this.rope, x: this.q }, ropeDims(c.numHeads), `l${l}.ropeQ`),
          ropeK: await createRope(ctx, { table: this.rope, x: this.k }, ropeDims(c.numKvHeads), `l${l}.ropeK`),
          kvWrite: await createKvWrite(ctx, { k: this.k, v: this.v, kCache: L.kCache, vCache: L.vCache }, { kvDim: kv, maxContext: this.maxContext, format: kvFmt }, `l${l}.kvWrite`),
          attention: await createAttention(
            ctx,
            { q: this.q, kCache: L.kCache, vCache: L.vCache, out: this.att },
            { nHeads: c.numHeads, nKvHeads: c.numKvHeads, headDim: c.headDim, maxContext: this.maxContext, format: kvFmt },
            `l${l}.attention`,
          ),
          wo: await mm(L.m.wo, this.att, this.xb),
          addAttn: await createAdd(ctx, { x: this.x, y: this.xb }, dim, `l${l}.addAttn`),
          ffnNorm: await createRmsnorm(ctx, { out: this.xb, x: this.x, weight: L.ffnNorm }, { n: dim, eps }, `l${l}.ffnNorm`),
          wGate: await mm(L.m.wGate, this.xb, this.hb),
          wUp: await mm(L.m.wUp, this.xb, this.hb2),
          swiglu: await createSwiglu(ctx, { gate: this.hb, up: this.hb2 }, hidden, `l${l}.swiglu`),
          wDown: await mm(L.m.wDown, this.hb, this.xb),
          addFfn: await createAdd(ctx, { x: this.x, y: this.xb }, dim, `l${l}.addFfn`),
        };
      }),
    );
    this.finalNormOp = await createRmsnorm(ctx, { out: this.xb, x: this.x, weight: this.finalNorm }, { n: dim, eps }, 'finalNorm');
    this.lmHeadOp = await mm(this.lmHead, this.xb, this.logits);
    this.argmaxOp = await createArgmax(ctx, { logits: this.logits, ids: this.picks }, c.vocabSize);
    this.topkOp = await createTopk(ctx, { logits: this.logits, out: this.picks }, c.vocabSize);
    u(RMSNORM_PARAMS_BYTES + ARGMAX_PARAMS_BYTES + TOPK_PARAMS_BYTES);
  }
}

/** The entry point for the browser worker and the Node verifier. */
export function createEngine(ctx: GpuContext, config: LlamaConfig, weights: WeightsInput, opts: GpuEngineOptions = {}): Promise<WebGpuLlama> {
  return WebGpuLlama.create(ctx, config, weights, opts);
}

