// The WGSL Llama engine (browser worker or Node + Dawn). GpuModel holds what exists once per
// device: the weights (packed in one format, uploaded once, read-only), the activations of
// one pass and the whole-batch ops. GpuSession holds what exists once per user: a KV cache
// and its length. One forward (GpuModel.forwardBatch) runs the rows of several sessions in
// one submission: B sessions × T_b tokens (T_b = 1 decode, k + 1 verify, any mix), each
// session's rows attending causally over its own cache from its own start position; passes
// longer than maxBatch rows go out as several submissions with ONE readback at the end.
// Per layer the schedule is: rmsnorm, one fused q|k|v matmul, per session rope_kv (RoPE +
// cache write) and attention, wo with the residual add in its epilogue, rmsnorm, one fused
// gate|up matmul, down reading silu(gate) * up as it loads x (the SwiGLU) with the residual
// add in its epilogue: 6 + 2B dispatches per layer for B sessions (16 before the fusions).
// Measured on SwiftShader (tools/bench/webgpu-overhead.mjs, tiny target): halving the
// dispatches (99 → 51 per token) left the GPU time per token unchanged (~47 ms); submit + wait
// (0.07 ms), mapping (0.01 ms) and JS encoding (0.6 ms) are small: the time is the kernels'
// arithmetic on the emulated GPU, not per-pass overhead. The fusions stay for real GPUs, where
// a dispatch and a round trip through memory do cost. Every row is computed by the same
// kernels in the same order whatever else shares its pass (options.invariant picks the same
// matmul kernel for m = 1 as for m > 1), so a session's greedy text does not depend on its
// batch-mates. WebGpuLlama is the one-session form (browser worker, CLI): a GpuModel and
// one GpuSession behind the CausalLM interface. Node-free: this file must bundle for the browser.

import { type LlamaConfig, kvDim, qDim, ropeInvFreq } from '../config.ts';
import type { CausalLM } from '../model.ts';
import { type PackedMatrix, packMatrix, packedByteLength } from '../quantize.ts';
import { type LayerWeights, type LlamaWeights, expectedShapes, layerTensorNames } from '../weights.ts';
import { type GpuContext, GpuOutOfMemoryError, createBufferFrom } from '../../kernels/gpu.ts';
import { type GpuMatrix, MATMUL_PARAMS_BYTES, allocateMatrix, createMatmul, writeMatrixRows } from '../../kernels/matmul.ts';
import type { Op } from '../../kernels/op.ts';
import { RMSNORM_PARAMS_BYTES, createRmsnorm } from '../../kernels/rmsnorm.ts';
import { ropeTable } from '../../kernels/rope.ts';
import { ROPE_KV_PARAMS_BYTES, type RopeKvDims, createRopeKv, writeRopeKvParams } from '../../kernels/rope_kv.ts';
import { ATTENTION_PARAMS_BYTES, type AttentionDims, createAttention, writeAttentionParams } from '../../kernels/attention.ts';
import { uniformBuffer } from '../../kernels/op.ts';
import { EMBEDDING_PARAMS_BYTES, createEmbedding } from '../../kernels/embedding.ts';
import { ARGMAX_PARAMS_BYTES, createArgmax } from '../../kernels/argmax.ts';
import { MAX_TOPK, TOPK_PARAMS_BYTES, type TopkRow, createTopk, decodeTopk } from '../../kernels/topk.ts';
import { type GpuEngineOptions, type MemoryPlan, type ResolvedOptions, planBuffers, resolveOptions, sessionKvBytes } from './plan.ts';

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

type Matrices = { wqkv: GpuMatrix; wo: GpuMatrix; wGateUp: GpuMatrix; wDown: GpuMatrix };

interface LayerBuffers {
  attnNorm: GPUBuffer;
  ffnNorm: GPUBuffer;
  m: Matrices;
}

/** The whole-batch ops of one layer (every row of the pass at once). */
interface LayerOps {
  attnNorm: Op<number>;
  wqkv: Op<number>;
  woAdd: Op<number>;
  ffnNorm: Op<number>;
  wGateUp: Op<number>;
  wDownAdd: Op<number>;
}

/** Where one HF tensor goes: its expected shape, its f32 writer, and its matrix rows if it is one. */
interface Target {
  shape: number[];
  write: (data: Float32Array) => void;
  matrix?: GpuMatrix;
  /** First row of this tensor inside `matrix` (q, k and v share one fused matrix). */
  rowStart?: number;
}

export type Output = { kind: 'logits' } | { kind: 'argmax' } | { kind: 'topk'; k: number };

/** One session's rows of a batched forward: `tokens` at positions startPos.. of its cache. */
export interface BatchItem {
  session: GpuSession;
  tokens: ArrayLike<number>;
  startPos: number;
}

/** Counters of what the forwards cost (the overhead breakdown in the bench reads them). */
export interface ForwardStats {
  forwards: number;
  submits: number;
  dispatches: number;
  queueWrites: number;
  readbacks: number;
  rows: number;
}

/** Rows of packed matrix data written per writeBuffer, bounding the transient CPU copy. */
const SLAB_ELEMENTS = 1 << 22;

/**
 * A KV cache and its length: one user's state on a GpuModel. Created by model.openSession,
 * freed by dispose(). As a CausalLM it runs alone (one-item forwardBatch); a batched caller
 * puts many sessions into one model.forwardBatch.
 */
export class GpuSession implements CausalLM {
  /** Tokens currently in the cache. */
  len = 0;
  disposed = false;
  readonly ropeKvParams: GPUBuffer;
  readonly attnParams: GPUBuffer;
  readonly caches: { k: GPUBuffer; v: GPUBuffer }[] = [];
  readonly ops: { ropeKv: Op<number>; attention: Op<{ m: number; startPos: number }> }[] = [];

  constructor(readonly model: GpuModel, readonly maxContext: number, readonly kvBytes: number) {
    const ctx = model.ctx;
    this.ropeKvParams = uniformBuffer(ctx, ROPE_KV_PARAMS_BYTES, 'session.ropeKv.params');
    this.attnParams = uniformBuffer(ctx, ATTENTION_PARAMS_BYTES, 'session.attention.params');
  }

  get length(): number {
    return this.len;
  }

  get config(): LlamaConfig {
    return this.model.config;
  }

  /** Logits of every position, (N, vocab) row-major. */
  async forward(tokens: ArrayLike<number>, startPos: number): Promise<Float32Array> {
    const [words] = await this.model.forwardBatch([{ session: this, tokens, startPos }], { kind: 'logits' });
    return new Float32Array(words.buffer, words.byteOffset, words.length);
  }

  rollback(length: number): void {
    if (!Number.isInteger(length) || length < 0 || length > this.len) {
      throw new RangeError(`rollback(${length}): cache holds ${this.len} tokens`);
    }
    this.len = length;
  }

  /** Storage bytes of this session's buffers (the KV cache). */
  get allocatedStorageBytes(): number {
    return this.caches.reduce((s, c) => s + c.k.size + c.v.size, 0);
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const c of this.caches) {
      c.k.destroy();
      c.v.destroy();
    }
    this.ropeKvParams.destroy();
    this.attnParams.destroy();
    this.model.sessionClosed(this);
  }
}

/** The weights, activations and whole-batch ops of one model on one device; sessions share them. */
export class GpuModel {
  readonly config: LlamaConfig;
  readonly options: ResolvedOptions;
  /** The single-session plan at options.maxContext (what WebGpuLlama reports). */
  readonly plan: MemoryPlan;
  /** Weights + activations: what the model holds whatever the sessions. */
  readonly baseBytes: number;
  readonly stats: ForwardStats = { forwards: 0, submits: 0, dispatches: 0, queueWrites: 0, readbacks: 0, rows: 0 };
  private tail: Promise<unknown> = Promise.resolve();
  private disposed = false;
  private readonly owned: GPUBuffer[] = [];
  private readonly matrices: GpuMatrix[] = [];
  private readonly live = new Set<GpuSession>();
  private uniformBytes = 0;
  private budget: number | undefined;
  /** Per allocation: its bytes and the out-of-memory error scope around it. */
  private allocations: { label: string; bytes: number; error: Promise<GPUError | null> }[] = [];

  // activations, (maxBatch, ...) row-major
  private ids!: GPUBuffer;     // (M) u32 token ids
  private x!: GPUBuffer;       // (M, dim) residual stream
  private xb!: GPUBuffer;      // (M, max(dim, qDim)) normed input
  private qkv!: GPUBuffer;     // (M, qDim + 2 kvDim) fused projection; q rotated in place
  private att!: GPUBuffer;     // (M, qDim) attention output
  private gu!: GPUBuffer;      // (M, 2 hidden) gate | up, fused projection
  private logits!: GPUBuffer;  // (M, vocab)
  private picks!: GPUBuffer;   // (M, 2, MAX_TOPK) u32: argmax ids or top-k ids + logit bits
  private picksStaging!: GPUBuffer; // (M, 2, MAX_TOPK) MAP_READ; larger readbacks get a transient one
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
  private ropeKvDims!: RopeKvDims;
  private attnDims!: AttentionDims;

  private maxChunkBytes: number | undefined;

  private constructor(readonly ctx: GpuContext, config: LlamaConfig, opts: ResolvedOptions) {
    this.config = config;
    this.options = opts;
    this.plan = planBuffers(config, opts);
    this.baseBytes = this.plan.total - this.plan.kv;
  }

  /**
   * Plan, check the budget (weights + activations, plus one session's KV when `reserveKv`),
   * allocate, upload (from f32 weights or a tensor stream), build the ops. The budget then
   * bounds every openSession: weights + activations + the KV of all live sessions.
   */
  static async create(ctx: GpuContext, config: LlamaConfig, weights: WeightsInput, options: GpuEngineOptions = {}, reserveKv = false): Promise<GpuModel> {
    const e = new GpuModel(ctx, config, resolveOptions(config, options));
    e.maxChunkBytes = options.maxChunkBytes;
    e.budget = options.memoryBudgetBytes;
    const needed = reserveKv ? e.plan.total : e.baseBytes;
    if (e.budget !== undefined && needed > e.budget) {
      throw new GpuOutOfMemoryError(needed, e.budget, `the ${config.numLayers}-layer model in ${e.options.format}${reserveKv ? ` with a ${e.options.maxContext}-token KV cache` : ''}`);
    }
    try {
      e.allocate();
      await e.checkAllocations(needed);
      await e.upload(weights);
      await e.buildOps();
    } catch (err) {
      e.dispose();
      throw err;
    }
    return e;
  }

  /** Bytes of every GPU buffer: weights and activations once, KV per live session. */
  get memory(): MemoryReport {
    const p = this.plan;
    const kv = [...this.live].reduce((s, x) => s + x.kvBytes, 0);
    const uniforms = this.uniformBytes + this.live.size * (ROPE_KV_PARAMS_BYTES + ATTENTION_PARAMS_BYTES);
    return { weights: p.weights, kv, activations: p.activations, uniforms, total: p.weights + p.activations + kv + uniforms };
  }

  /** Storage bytes the model itself allocated (weights, activations; sessions not included). */
  get allocatedStorageBytes(): number {
    return this.owned.reduce((s, b) => s + b.size, 0) + this.matrices.reduce((s, m) => s + m.byteLength, 0);
  }

  get sessions(): number {
    return this.live.size;
  }

  /**
   * A new session with its own KV cache of maxContext positions (default options.maxContext).
   * Refused with GpuOutOfMemoryError (needed vs available) when the budget, or the device,
   * cannot hold it beside the weights and the other sessions' caches.
   */
  async openSession(maxContext = this.options.maxContext): Promise<GpuSession> {
    if (this.disposed) throw new Error('GpuModel: used after dispose()');
    if (!Number.isInteger(maxContext) || maxContext < 1 || maxContext > this.options.maxContext) {
      throw new RangeError(`openSession: maxContext ${maxContext} outside 1..${this.options.maxContext} (the RoPE table's positions)`);
    }
    const c = this.config;
    const kvBytes = sessionKvBytes(c, this.options.kvFormat, maxContext);
    if (this.budget !== undefined) {
      const available = this.budget - this.memory.total;
      if (kvBytes > available) {
        throw new GpuOutOfMemoryError(kvBytes, Math.max(0, available), `a session's ${maxContext}-token KV cache (${this.live.size} sessions and the ${this.options.format} weights hold the rest)`);
      }
    }
    const s = new GpuSession(this, maxContext, kvBytes);
    this.live.add(s);
    const perCache = kvBytes / (2 * c.numLayers);
    const device = this.ctx.device;
    const scopes: Promise<GPUError | null>[] = [];
    try {
      for (let l = 0; l < c.numLayers; l++) {
        const make = (label: string) => {
          device.pushErrorScope('out-of-memory');
          const b = device.createBuffer({ label, size: Math.max(16, perCache), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
          scopes.push(device.popErrorScope());
          return b;
        };
        s.caches.push({ k: make(`l${l}.kCache`), v: make(`l${l}.vCache`) });
      }
      for (const err of await Promise.all(scopes)) {
        if (err) throw new GpuOutOfMemoryError(kvBytes, Math.max(0, (this.budget ?? Infinity) - this.memory.total), `a session's ${maxContext}-token KV cache (the device refused it: ${err.message})`);
      }
      const ropeKvDims = { ...this.ropeKvDims, maxContext };
      const attnDims = { ...this.attnDims, maxContext };
      for (let l = 0; l < c.numLayers; l++) {
        const { k, v } = s.caches[l];
        s.ops.push({
          ropeKv: await createRopeKv(this.ctx, { table: this.rope, qkv: this.qkv, kCache: k, vCache: v, params: s.ropeKvParams }, ropeKvDims, `l${l}.ropeKv`),
          attention: await createAttention(this.ctx, { q: this.qkv, kCache: k, vCache: v, out: this.att, params: s.attnParams }, attnDims, `l${l}.attention`),
        });
      }
    } catch (err) {
      s.dispose();
      throw err;
    }
    return s;
  }

  /** @internal GpuSession.dispose calls it. */
  sessionClosed(s: GpuSession): void {
    this.live.delete(s);
  }

  /**
   * One forward over the rows of several sessions: item i's tokens at positions startPos..
   * of its session's cache (truncated to startPos first). Returns per item its rows of the
   * output: logits (T_i × vocab f32 bits), argmax (T_i words) or top-k (T_i × 2k words).
   * Forwards are serialized (they share the activation buffers).
   */
  forwardBatch(items: BatchItem[], out: Output): Promise<Uint32Array[]> {
    const p = this.tail.then(() => this.runNow(items, out));
    this.tail = p.catch(() => undefined);
    return p;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const s of [...this.live]) s.dispose();
    for (const b of this.owned) b.destroy();
    for (const m of this.matrices) m.destroy();
  }

  // ---- forward ----

  private validate(items: BatchItem[], out: Output): Uint32Array[] {
    const c = this.config;
    if (this.disposed) throw new Error('GpuModel: used after dispose()');
    if (items.length === 0) throw new RangeError('forwardBatch: no items');
    if (out.kind === 'topk' && (!Number.isInteger(out.k) || out.k < 1 || out.k > Math.min(MAX_TOPK, c.vocabSize))) {
      throw new RangeError(`forwardTopK: k = ${out.k}; use 1..${Math.min(MAX_TOPK, c.vocabSize)}`);
    }
    const seen = new Set<GpuSession>();
    return items.map(({ session: s, tokens, startPos }) => {
      if (s.model !== this || s.disposed) throw new Error('forwardBatch: a session that is disposed or belongs to another model');
      if (seen.has(s)) throw new RangeError('forwardBatch: one session twice in one batch; run its second block in the next batch');
      seen.add(s);
      const n = tokens.length;
      if (!Number.isInteger(startPos) || startPos < 0 || startPos > s.len) throw new RangeError(`forward at ${startPos}: cache holds ${s.len} tokens`);
      if (n < 1) throw new RangeError('forward: no tokens');
      if (startPos + n > s.maxContext) throw new RangeError(`context full: ${startPos + n} tokens > maxContext ${s.maxContext}`);
      const ids = new Uint32Array(n);
      for (let i = 0; i < n; i++) {
        const t = tokens[i];
        if (!Number.isInteger(t) || t < 0 || t >= c.vocabSize) throw new RangeError(`token id ${t} outside the vocabulary [0, ${c.vocabSize})`);
        ids[i] = t;
      }
      return ids;
    });
  }

  private async runNow(items: BatchItem[], out: Output): Promise<Uint32Array[]> {
    const all = this.validate(items, out);
    const c = this.config;
    const M = this.options.maxBatch;
    const rowWords = out.kind === 'logits' ? c.vocabSize : out.kind === 'argmax' ? 1 : 2 * out.k;
    const srcBuffer = out.kind === 'logits' ? this.logits : this.picks;
    // Where each item's rows land in the one staging buffer read back at the end.
    const resultOffset: number[] = [];
    let totalRows = 0;
    for (const ids of all) {
      resultOffset.push(totalRows);
      totalRows += ids.length;
    }
    const staging = this.stagingFor(totalRows * rowWords * 4);
    const device = this.ctx.device;
    const done = new Array<number>(items.length).fill(0); // tokens of each item already run
    for (const it of items) it.session.len = it.startPos;
    this.stats.forwards++;
    this.stats.rows += totalRows;
    try {
      // Passes: the next chunk of every unfinished item, as many as fit in M rows; a prefill
      // longer than M runs over several passes (its chunks in order, one per pass).
      while (done.some((d, i) => d < all[i].length)) {
        const segs: { i: number; from: number; m: number; row: number }[] = [];
        let rows = 0;
        for (let i = 0; i < items.length && rows < M; i++) {
          const left = all[i].length - done[i];
          if (left === 0) continue;
          const m = Math.min(left, M - rows);
          segs.push({ i, from: done[i], m, row: rows });
          rows += m;
        }
        const ids = new Uint32Array(rows);
        for (const g of segs) {
          ids.set(all[g.i].subarray(g.from, g.from + g.m), g.row);
          const s = items[g.i].session;
          const at = { m: g.m, startPos: items[g.i].startPos + g.from, rowOffset: g.row };
          writeRopeKvParams(this.ctx, s.ropeKvParams, { ...this.ropeKvDims, maxContext: s.maxContext }, { ...at, rowStride: this.qkvCols });
          writeAttentionParams(this.ctx, s.attnParams, { ...this.attnDims, maxContext: s.maxContext }, { ...at, qStride: this.qkvCols });
        }
        device.queue.writeBuffer(this.ids, 0, ids);
        this.stats.queueWrites += 1 + 2 * segs.length;
        const enc = device.createCommandEncoder({ label: 'forward' });
        const pass = enc.beginComputePass();
        this.encodeForward(pass, rows, segs.map((g) => ({ session: items[g.i].session, m: g.m, startPos: items[g.i].startPos + g.from })), out);
        pass.end();
        for (const g of segs) {
          enc.copyBufferToBuffer(srcBuffer, g.row * rowWords * 4, staging, (resultOffset[g.i] + g.from) * rowWords * 4, g.m * rowWords * 4);
          done[g.i] += g.m;
          items[g.i].session.len = items[g.i].startPos + done[g.i];
        }
        device.queue.submit([enc.finish()]);
        this.stats.submits++;
      }
      this.stats.readbacks++;
      await staging.mapAsync(GPUMapMode.READ, 0, totalRows * rowWords * 4);
      const words = new Uint32Array(staging.getMappedRange(0, totalRows * rowWords * 4).slice(0));
      staging.unmap();
      return all.map((ids, i) => words.subarray(resultOffset[i] * rowWords, (resultOffset[i] + ids.length) * rowWords));
    } catch (err) {
      // A cache may hold part of its block; what was there before startPos is intact.
      for (const it of items) it.session.len = Math.min(it.session.len, it.startPos);
      throw err;
    } finally {
      if (staging !== this.picksStaging) staging.destroy();
    }
  }

  /** The planned picks staging buffer, or (full logits, many rows) a transient one the caller destroys. */
  private stagingFor(bytes: number): GPUBuffer {
    if (bytes <= this.picksStaging.size) return this.picksStaging;
    return this.ctx.device.createBuffer({ label: 'staging', size: Math.ceil(bytes / 4) * 4, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ });
  }

  private get qkvCols(): number {
    return qDim(this.config) + 2 * kvDim(this.config);
  }

  /** The flat schedule of one pass of `rows` rows: the sessions' segments in row order. */
  private encodeForward(pass: GPUComputePassEncoder, rows: number, segs: { session: GpuSession; m: number; startPos: number }[], out: Output): void {
    // Ops use only these three methods; counting dispatches here keeps the stats exact.
    let n = 0;
    const p = {
      setPipeline: (x: GPUComputePipeline) => pass.setPipeline(x),
      setBindGroup: (i: number, g: GPUBindGroup) => pass.setBindGroup(i, g),
      dispatchWorkgroups: (x: number, y?: number, z?: number) => (n++, pass.dispatchWorkgroups(x, y, z)),
    } as unknown as GPUComputePassEncoder;
    this.embedOp.encode(p, rows);                  // x = embed[ids]
    this.layerOps.forEach((L, l) => {
      L.attnNorm.encode(p, rows);                  // xb = rmsnorm(x) * attnNorm
      L.wqkv.encode(p, rows);                      // q|k|v = xb · [Wq; Wk; Wv]ᵀ
      for (const g of segs) g.session.ops[l].ropeKv.encode(p, g.m);                // rotate q, k; cache[startPos..] = k, v
      for (const g of segs) g.session.ops[l].attention.encode(p, { m: g.m, startPos: g.startPos }); // att = causal GQA over the session's cache
      L.woAdd.encode(p, rows);                     // x += att · Woᵀ
      L.ffnNorm.encode(p, rows);                   // xb = rmsnorm(x) * ffnNorm
      L.wGateUp.encode(p, rows);                   // gate|up = xb · [Wgate; Wup]ᵀ
      L.wDownAdd.encode(p, rows);                  // x += (silu(gate) * up) · Wdownᵀ (SwiGLU in the x loads)
    });
    this.finalNormOp.encode(p, rows);              // xb = rmsnorm(x) * finalNorm
    this.lmHeadOp.encode(p, rows);                 // logits = xb · Eᵀ (tied) or LM headᵀ
    if (out.kind === 'argmax') this.argmaxOp.encode(p, rows);             // picks = argmax per row
    else if (out.kind === 'topk') this.topkOp.encode(p, { m: rows, k: out.k }); // picks = top-k per row
    this.stats.dispatches += n;
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
  private async checkAllocations(needed: number): Promise<void> {
    let fitted = 0;
    for (const a of this.allocations) {
      const err = await a.error;
      if (err) {
        throw new GpuOutOfMemoryError(needed, fitted, `the model in ${this.options.format} (the device refused buffer "${a.label}": ${err.message})`);
      }
      fitted += a.bytes;
    }
    this.allocations = [];
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
      this.layers.push({
        attnNorm: this.buffer(`l${l}.attnNorm`, dim * 4),
        ffnNorm: this.buffer(`l${l}.ffnNorm`, dim * 4),
        m: {
          wqkv: this.matrix(`l${l}.wqkv`, qd + 2 * kv, dim),
          wo: this.matrix(`l${l}.wo`, dim, qd),
          wGateUp: this.matrix(`l${l}.wGateUp`, 2 * hidden, dim),
          wDown: this.matrix(`l${l}.wDown`, dim, hidden),
        },
      });
    }
    this.finalNorm = this.buffer('finalNorm', dim * 4);
    this.lmHead = c.tieWordEmbeddings ? this.embed : this.matrix('lmHead', c.vocabSize, dim);
    const table = ropeTable(ropeInvFreq(c), this.options.maxContext);
    this.rope = this.scoped('ropeTable', table.byteLength, () => createBufferFrom(this.ctx, table, GPUBufferUsage.STORAGE, 'ropeTable'));
    this.owned.push(this.rope);
    this.ids = this.buffer('ids', M * 4);
    this.x = this.buffer('x', M * dim * 4);
    this.xb = this.buffer('xb', M * Math.max(dim, qd) * 4);
    this.qkv = this.buffer('qkv', M * (qd + 2 * kv) * 4);
    this.att = this.buffer('att', M * qd * 4);
    this.gu = this.buffer('gu', M * 2 * hidden * 4);
    this.logits = this.buffer('logits', M * c.vocabSize * 4);
    this.picks = this.buffer('picks', M * 2 * MAX_TOPK * 4);
    this.picksStaging = this.buffer('picksStaging', M * 2 * MAX_TOPK * 4, GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ);
  }

  /** Pack and write a rows × cols f32 matrix slab by slab into rows rowStart.. of m (bounded transient CPU memory). */
  private writeMatrix(m: GpuMatrix, w: Float32Array, rowStart: number, rows: number): void {
    const slabRows = Math.max(1, Math.floor(SLAB_ELEMENTS / m.cols));
    for (let r0 = 0; r0 < rows; r0 += slabRows) {
      const r1 = Math.min(rows, r0 + slabRows);
      const packed = packMatrix(w.subarray(r0 * m.cols, r1 * m.cols), r1 - r0, m.cols, m.format);
      writeMatrixRows(this.ctx, m, rowStart + r0, packed.data);
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
    const matrix = (name: string, m: GpuMatrix, rowStart = 0) => {
      const shape = shapes.get(name)!;
      t.set(name, { shape, write: (d) => this.writeMatrix(m, d, rowStart, shape[0]), matrix: m, rowStart });
    };
    const qd = qDim(this.config);
    const kv = kvDim(this.config);
    matrix('model.embed_tokens.weight', this.embed);
    vector('model.norm.weight', this.finalNorm);
    if (!this.config.tieWordEmbeddings) matrix('lm_head.weight', this.lmHead);
    this.layers.forEach((L, l) => {
      const names = layerTensorNames(l);
      vector(names.attnNorm, L.attnNorm);
      vector(names.ffnNorm, L.ffnNorm);
      matrix(names.wq, L.m.wqkv, 0);
      matrix(names.wk, L.m.wqkv, qd);
      matrix(names.wv, L.m.wqkv, qd + kv);
      matrix(names.wo, L.m.wo);
      matrix(names.wGate, L.m.wGateUp, 0);
      matrix(names.wUp, L.m.wGateUp, this.config.intermediateSize);
      matrix(names.wDown, L.m.wDown);
    });
    return t;
  }

  /** Upload a pre-packed matrix after checking it is exactly what writeMatrix would produce. */
  private writePacked(name: string, t: Target, p: PackedMatrix): void {
    const m = t.matrix;
    if (!m) throw new PackedWeightsError(name, `a ${t.shape.length}-D tensor must come as f32, not packed (${p.format})`);
    const rows = t.shape[0];
    if (p.format !== m.format) throw new PackedWeightsError(name, `packed as ${p.format}, but the engine runs ${m.format}`);
    if (p.rows !== rows || p.cols !== m.cols) throw new PackedWeightsError(name, `packed shape [${p.rows}, ${p.cols}] does not match the config's [${rows}, ${m.cols}]`);
    if (p.rowWords !== m.rowWords || p.scaleWordOffset !== m.scaleWordOffset || p.colsPadded !== m.colsPadded) {
      throw new PackedWeightsError(name, `packed row layout (${p.rowWords} words, scales at ${p.scaleWordOffset}) is not the ${m.format} layout (${m.rowWords} words, scales at ${m.scaleWordOffset})`);
    }
    if (!(p.data instanceof Uint32Array) || p.data.length !== rows * m.rowWords) {
      throw new PackedWeightsError(name, `packed data holds ${p.data?.byteLength ?? 0} bytes, the ${m.format} layout needs ${rows * m.rowWords * 4}`);
    }
    writeMatrixRows(this.ctx, m, t.rowStart ?? 0, p.data);
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
    const hidden = c.intermediateSize;
    const eps = c.rmsNormEps;
    const invariant = this.options.invariant;
    const u = (bytes: number) => (this.uniformBytes += bytes);
    const mm = async (w: GpuMatrix, x: GPUBuffer, out: GPUBuffer, more: { accumulate?: boolean; xGlu?: number; xStride?: number } = {}) => {
      u(MATMUL_PARAMS_BYTES * w.chunks.length);
      return createMatmul(ctx, { w, x, out, invariant, ...more });
    };
    this.ropeKvDims = { nHeads: c.numHeads, nKvHeads: c.numKvHeads, headDim: c.headDim, maxContext: this.options.maxContext, format: this.options.kvFormat };
    this.attnDims = { ...this.ropeKvDims };
    this.embedOp = await createEmbedding(ctx, { ids: this.ids, table: this.embed, out: this.x });
    u(EMBEDDING_PARAMS_BYTES * this.embed.chunks.length);
    this.layerOps = await Promise.all(
      this.layers.map(async (L, l) => {
        u(2 * RMSNORM_PARAMS_BYTES);
        return {
          attnNorm: await createRmsnorm(ctx, { out: this.xb, x: this.x, weight: L.attnNorm }, { n: dim, eps }, `l${l}.attnNorm`),
          wqkv: await mm(L.m.wqkv, this.xb, this.qkv),
          woAdd: await mm(L.m.wo, this.att, this.x, { accumulate: true }),
          ffnNorm: await createRmsnorm(ctx, { out: this.xb, x: this.x, weight: L.ffnNorm }, { n: dim, eps }, `l${l}.ffnNorm`),
          wGateUp: await mm(L.m.wGateUp, this.xb, this.gu),
          wDownAdd: await mm(L.m.wDown, this.gu, this.x, { accumulate: true, xGlu: hidden, xStride: 2 * hidden }),
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

/** The one-session engine (browser worker, CLI, tests): a GpuModel and one GpuSession as a CausalLM. */
export class WebGpuLlama implements CausalLM {
  readonly config: LlamaConfig;
  readonly maxContext: number;
  readonly options: ResolvedOptions;
  readonly plan: MemoryPlan;

  private constructor(readonly model: GpuModel, readonly session: GpuSession) {
    this.config = model.config;
    this.options = model.options;
    this.maxContext = session.maxContext;
    this.plan = model.plan;
  }

  /** Plan, check the budget (weights + one KV cache), allocate, upload, build the ops. */
  static async create(ctx: GpuContext, config: LlamaConfig, weights: WeightsInput, options: GpuEngineOptions = {}): Promise<WebGpuLlama> {
    const model = await GpuModel.create(ctx, config, weights, options, true);
    try {
      return new WebGpuLlama(model, await model.openSession());
    } catch (err) {
      model.dispose();
      throw err;
    }
  }

  get length(): number {
    return this.session.length;
  }

  /** Bytes of every GPU buffer this engine holds, by group. */
  get memory(): MemoryReport {
    return this.model.memory;
  }

  get bufferBytes(): number {
    return this.memory.total;
  }

  /** Storage bytes actually allocated (tests compare it with the plan). */
  get allocatedStorageBytes(): number {
    return this.model.allocatedStorageBytes + this.session.allocatedStorageBytes;
  }

  rollback(length: number): void {
    this.session.rollback(length);
  }

  /** Logits of every position, (N, vocab) row-major. */
  forward(tokens: ArrayLike<number>, startPos: number): Promise<Float32Array> {
    return this.session.forward(tokens, startPos);
  }

  /** Greedy token of every position (reads back N words). */
  async forwardArgmax(tokens: ArrayLike<number>, startPos: number): Promise<Uint32Array> {
    const [words] = await this.model.forwardBatch([{ session: this.session, tokens, startPos }], { kind: 'argmax' });
    return words;
  }

  /** The k ≤ 64 largest logits of every position with their ids, sorted descending. */
  async forwardTopK(tokens: ArrayLike<number>, startPos: number, k: number): Promise<TopkRow[]> {
    const [words] = await this.model.forwardBatch([{ session: this.session, tokens, startPos }], { kind: 'topk', k });
    return decodeTopk(words, tokens.length, k);
  }

  dispose(): void {
    this.model.dispose();
  }
}

/** The entry point for the browser worker and the Node verifier. */
export function createEngine(ctx: GpuContext, config: LlamaConfig, weights: WeightsInput, opts: GpuEngineOptions = {}): Promise<WebGpuLlama> {
  return WebGpuLlama.create(ctx, config, weights, opts);
}

