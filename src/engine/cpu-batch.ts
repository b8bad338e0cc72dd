// The fast CPU forward pass: one pass over the rows of many sessions at once. A row is one
// session's block of tokens (1 for a decode step, k + 1 for a verify, the prompt for a
// prefill); it attends over its own session's KV cache from its own start position. The
// weights are read once per pass for all rows (matmulRows), so a 5-token verify costs little
// more than a decode step, and B sessions' decode steps cost little more than one.
//
// Batch-invariant by construction: every output element of every primitive is computed by
// one fixed sequence of operations whatever rows sit beside it, so a session's text cannot
// depend on who shares its pass. The matmuls (nearly all the time) run on WebAssembly SIMD
// (cpu-matmul.wat: f32x4 lanes, a fixed lane reduction; 4 weight rows × 2 input rows per inner
// loop), or, where a runtime lacks SIMD, on matmulRows below (f64 sums in reference.ts's
// order: bit-equal to CpuLlama). CpuLlama stays the independent oracle: the tests compare the
// two by NMSE with a stated bound and equal argmax.
//
// Beyond the matmuls: RoPE angles computed once per position for every head and layer, and no
// allocation in the forward except the returned logits.

import { type LlamaConfig, kvDim, qDim, ropeInvFreq } from './config.ts';
import type { LlamaWeights } from './weights.ts';
import type { CausalLM } from './model.ts';
import { rmsnorm } from './reference.ts';
import { WasmMatmul, wasmSimdAvailable, type WasmMatrix } from './cpu-matmul.ts';

// ---- primitives (output first) ----

/**
 * o(m, d) = x(m, n) @ W(d, n)^T, W row-major as in HF checkpoints. Each block of 4 weight rows
 * is streamed once for all m input rows (it stays in L1 while they pass). Every output
 * element is one f64 sum over j in order: the same value whatever m is or which row it is.
 */
export function matmulRows(o: Float32Array, x: Float32Array, w: Float32Array, n: number, d: number, m: number): void {
  let i = 0;
  for (; i + 4 <= d; i += 4) {
    const w0 = i * n;
    const w1 = w0 + n;
    const w2 = w1 + n;
    const w3 = w2 + n;
    let r = 0;
    for (; r + 2 <= m; r += 2) {
      const x0 = r * n;
      const x1 = x0 + n;
      let s00 = 0, s10 = 0, s20 = 0, s30 = 0, s01 = 0, s11 = 0, s21 = 0, s31 = 0;
      for (let j = 0; j < n; j++) {
        const a = x[x0 + j];
        const b = x[x1 + j];
        const p0 = w[w0 + j];
        const p1 = w[w1 + j];
        const p2 = w[w2 + j];
        const p3 = w[w3 + j];
        s00 += p0 * a; s10 += p1 * a; s20 += p2 * a; s30 += p3 * a;
        s01 += p0 * b; s11 += p1 * b; s21 += p2 * b; s31 += p3 * b;
      }
      const o0 = r * d + i;
      const o1 = o0 + d;
      o[o0] = s00; o[o0 + 1] = s10; o[o0 + 2] = s20; o[o0 + 3] = s30;
      o[o1] = s01; o[o1 + 1] = s11; o[o1 + 2] = s21; o[o1 + 3] = s31;
    }
    if (r < m) {
      const x0 = r * n;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let j = 0; j < n; j++) {
        const a = x[x0 + j];
        s0 += w[w0 + j] * a; s1 += w[w1 + j] * a; s2 += w[w2 + j] * a; s3 += w[w3 + j] * a;
      }
      const o0 = r * d + i;
      o[o0] = s0; o[o0 + 1] = s1; o[o0 + 2] = s2; o[o0 + 3] = s3;
    }
  }
  // the last d % 4 weight rows, one at a time (the same sum, so the same values)
  for (; i < d; i++) {
    const w0 = i * n;
    for (let r = 0; r < m; r++) {
      const x0 = r * n;
      let s = 0;
      for (let j = 0; j < n; j++) s += w[w0 + j] * x[x0 + j];
      o[r * d + i] = s;
    }
  }
}

/** RoPE (HF rotate_half) on nHeads heads at v[off..], with the position's cos/sin (headDim/2 each) precomputed. */
function ropeRow(v: Float32Array, off: number, nHeads: number, headDim: number, cos: Float64Array, sin: Float64Array, csOff: number): void {
  const half = headDim / 2;
  for (let h = 0; h < nHeads; h++) {
    const base = off + h * headDim;
    for (let i = 0; i < half; i++) {
      const c = cos[csOff + i];
      const s = sin[csOff + i];
      const a = v[base + i];
      const b = v[base + i + half];
      v[base + i] = a * c - b * s;
      v[base + i + half] = b * c + a * s;
    }
  }
}

/**
 * Causal GQA attention of one row over its session's first n cached positions: xb[qOff..] (the
 * row's qDim outputs) from its queries q[qOff..] and the cache's keys and values at cacheOff
 * (position stride kv). Each score and each output element is one f64 sum in position order,
 * whatever else is in the pass; att holds one head's weights.
 */
function attendRow(
  xb: Float32Array, q: Float32Array, qOff: number, keys: Float32Array, values: Float32Array, cacheOff: number, kv: number, n: number,
  numHeads: number, groupSize: number, hd: number, scale: number, att: Float32Array,
): void {
  for (let h = 0; h < numHeads; h++) {
    const qo = qOff + h * hd;
    const kvOff = cacheOff + Math.floor(h / groupSize) * hd;
    for (let p = 0, kOff = kvOff; p < n; p++, kOff += kv) {
      let s = 0;
      for (let i = 0; i < hd; i++) s += q[qo + i] * keys[kOff + i];
      att[p] = s * scale;
    }
    softmaxFast(att, n);
    // four output elements at a time, each summed over the positions in order
    for (let i0 = 0; i0 < hd; i0 += 4) {
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let p = 0, vOff = kvOff + i0; p < n; p++, vOff += kv) {
        const a = att[p];
        s0 += a * values[vOff]; s1 += a * values[vOff + 1]; s2 += a * values[vOff + 2]; s3 += a * values[vOff + 3];
      }
      xb[qo + i0] = s0; xb[qo + i0 + 1] = s1; xb[qo + i0 + 2] = s2; xb[qo + i0 + 3] = s3;
    }
  }
}

const LOG2E = Math.LOG2E;
const LN2_HI = 0.6931471803691238; // ln 2 split so k · LN2_HI is exact for |k| < 2^20
const LN2_LO = 1.9082149292705877e-10;
/** 2^k for k in [-1074, 1023], at POW2[k + 1074]. */
const POW2 = Float64Array.from({ length: 1074 + 1024 }, (_, i) => 2 ** (i - 1074));

/**
 * e^x to within 1e-8 relative (f32 rounding is 6e-8), without Math.exp's call: x = k ln 2 + r
 * with |r| <= ln 2 / 2, e^r by its degree-7 Taylor polynomial (error <= r^8 / 8! < 6e-9).
 * Deterministic, so the batch invariance of its callers holds; the tests bound the engine
 * against CpuLlama (Math.exp) by NMSE.
 */
export function expFast(x: number): number {
  if (!(x > -745)) return x !== x ? x : 0; // NaN stays NaN; underflow to 0
  if (x > 709) return Math.exp(x); // the last sliver before overflow, and Infinity
  const k = Math.round(x * LOG2E);
  const r = x - k * LN2_HI - k * LN2_LO;
  const p = 1 + r * (1 + r * (0.5 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120 + r * (1 / 720 + r * (1 / 5040)))))));
  // k is in [-1075, 1023] here; -1075 takes two factors (the result is subnormal)
  return k < -1074 ? p * POW2[0] * 0.5 : p * POW2[k + 1074];
}

/** h[i] = silu(h[i]) · u[i] for i < n (the SwiGLU gate). */
function siluMul(h: Float32Array, u: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) {
    const g = h[i];
    h[i] = (g / (1 + expFast(-g))) * u[i];
  }
}

/** In-place softmax over x[0, n), as reference.ts's softmax with expFast. */
function softmaxFast(x: Float32Array, n: number): void {
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (x[i] > max) max = x[i];
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const e = expFast(x[i] - max);
    x[i] = e;
    sum += e;
  }
  const inv = 1 / sum;
  for (let i = 0; i < n; i++) x[i] *= inv;
}

// ---- per-session state and the batch ----

/** One session's KV cache, (layer, maxContext, kvDim) each, and how many positions it holds. */
export interface CpuKv {
  readonly key: Float32Array;
  readonly value: Float32Array;
  readonly maxContext: number;
  length: number;
}

/** One session's part of a pass. */
export interface CpuRow {
  kv: CpuKv;
  tokens: ArrayLike<number>;
  /** Position of tokens[0]; the cache is truncated to it first (startPos <= kv.length). */
  startPos: number;
  /** Only the last position's logits (a prefill); default every position's (a verify). */
  lastOnly?: boolean;
  /** No logits at all (a prefill chunk that does not end its prompt): the row only fills its cache. */
  noLogits?: boolean;
}

/** One weight matrix (d, n) and, on the SIMD path, its copy in the module's memory. */
interface Mat {
  w: Float32Array;
  n: number;
  d: number;
  wasm: WasmMatrix | null;
}

interface LayerMats {
  wq: Mat;
  wk: Mat;
  wv: Mat;
  wo: Mat;
  wGate: Mat;
  wUp: Mat;
  wDown: Mat;
}

export interface CpuBatchOptions {
  /** 'auto' (default): WebAssembly SIMD where the runtime has it, else JavaScript. */
  matmul?: 'auto' | 'wasm' | 'js';
}

export class CpuBatchLlama {
  readonly config: LlamaConfig;
  readonly maxContext: number;
  /** Which matmul this engine runs: 'wasm' (SIMD, f32 lanes) or 'js' (f64 sums). */
  readonly matmulPath: 'wasm' | 'js';
  private readonly w: LlamaWeights;
  private readonly wasm: WasmMatmul | null;
  private readonly mats: LayerMats[];
  private readonly head: Mat;
  private readonly invFreq: Float32Array;
  // run state for up to `rows` token rows; grown (never shrunk) when a pass needs more
  private rows = 0;
  private x = new Float32Array(0);   // (rows, dim) residual stream
  private xb = new Float32Array(0);  // (rows, max(dim, qDim)) normed input / attention output
  private xb2 = new Float32Array(0); // (rows, dim)
  private hb = new Float32Array(0);  // (rows, hidden)
  private hb2 = new Float32Array(0); // (rows, hidden)
  private q = new Float32Array(0);   // (rows, qDim)
  private k = new Float32Array(0);   // (rows, kvDim)
  private v = new Float32Array(0);   // (rows, kvDim)
  private cos = new Float64Array(0); // (rows, headDim / 2) RoPE at each row's position
  private sin = new Float64Array(0); // (rows, headDim / 2)
  private readonly att: Float32Array; // (maxContext)

  constructor(config: LlamaConfig, weights: LlamaWeights, maxContext = Math.min(config.maxPositionEmbeddings, 2048), opts: CpuBatchOptions = {}) {
    this.config = config;
    this.w = weights;
    this.maxContext = maxContext;
    this.invFreq = ropeInvFreq(config);
    this.att = new Float32Array(maxContext);
    const want = opts.matmul ?? 'auto';
    if (want === 'wasm' && !wasmSimdAvailable()) throw new Error('matmul: "wasm" asked for, but this runtime has no WebAssembly SIMD');
    this.matmulPath = want === 'js' || !wasmSimdAvailable() ? 'js' : 'wasm';
    const wasm = this.matmulPath === 'wasm' ? new WasmMatmul() : null;
    this.wasm = wasm;
    const mat = (w: Float32Array, n: number, d: number): Mat => ({ w, n, d, wasm: wasm ? wasm.upload(w, n, d) : null });
    const dim = config.hiddenSize;
    const kv = kvDim(config);
    const qd = qDim(config);
    const hid = config.intermediateSize;
    this.mats = weights.layers.map((l) => ({
      wq: mat(l.wq, dim, qd), wk: mat(l.wk, dim, kv), wv: mat(l.wv, dim, kv), wo: mat(l.wo, qd, dim),
      wGate: mat(l.wGate, dim, hid), wUp: mat(l.wUp, dim, hid), wDown: mat(l.wDown, hid, dim),
    }));
    this.head = mat(weights.lmHead ?? weights.embed, dim, config.vocabSize);
  }

  /** o(m, d) = x(m, n) @ W^T on this engine's matmul path. */
  private mm(o: Float32Array, x: Float32Array, w: Mat, m: number): void {
    if (w.wasm && this.wasm) this.wasm.run(o, x, w.wasm, m);
    else matmulRows(o, x, w.w, w.n, w.d, m);
  }

  /** A fresh, empty KV cache for one session over these weights. */
  newKv(maxContext = this.maxContext): CpuKv {
    if (maxContext > this.maxContext) throw new RangeError(`KV of ${maxContext} positions > the model's maxContext ${this.maxContext}`);
    const n = this.config.numLayers * maxContext * kvDim(this.config);
    return { key: new Float32Array(n), value: new Float32Array(n), maxContext, length: 0 };
  }

  private ensureRows(m: number): void {
    if (m <= this.rows) return;
    const c = this.config;
    const rows = Math.max(m, 2 * this.rows);
    this.rows = rows;
    this.x = new Float32Array(rows * c.hiddenSize);
    this.xb = new Float32Array(rows * Math.max(c.hiddenSize, qDim(c)));
    this.xb2 = new Float32Array(rows * c.hiddenSize);
    this.hb = new Float32Array(rows * c.intermediateSize);
    this.hb2 = new Float32Array(rows * c.intermediateSize);
    this.q = new Float32Array(rows * qDim(c));
    this.k = new Float32Array(rows * kvDim(c));
    this.v = new Float32Array(rows * kvDim(c));
    this.cos = new Float64Array(rows * (c.headDim / 2));
    this.sin = new Float64Array(rows * (c.headDim / 2));
  }

  /**
   * One pass over every row's tokens. Returns, per row, its logits (positions, vocab) row-major:
   * every position, the last only with lastOnly, or none (empty) with noLogits. Each kv ends
   * holding startPos + tokens.length.
   * A row's bad input throws before anything is computed or any cache changes.
   */
  forwardBatch(batch: readonly CpuRow[]): Float32Array[] {
    const c = this.config;
    const dim = c.hiddenSize;
    const kv = kvDim(c);
    const hidden = c.intermediateSize;
    const qd = qDim(c);
    const hd = c.headDim;
    const half = hd / 2;
    const groupSize = c.numHeads / c.numKvHeads;
    const scale = 1 / Math.sqrt(hd);
    const seen = new Set<CpuKv>();
    let m = 0;
    for (const r of batch) {
      if (seen.has(r.kv)) throw new RangeError('one KV cache appears twice in a batch; give each session one row');
      seen.add(r.kv);
      if (r.tokens.length === 0) throw new RangeError('a row of the batch has no tokens');
      if (!Number.isInteger(r.startPos) || r.startPos < 0 || r.startPos > r.kv.length) throw new RangeError(`forward at ${r.startPos}: cache holds ${r.kv.length} tokens`);
      if (r.startPos + r.tokens.length > r.kv.maxContext) throw new RangeError(`context full: ${r.startPos + r.tokens.length} tokens > maxContext ${r.kv.maxContext}`);
      for (let t = 0; t < r.tokens.length; t++) {
        const tok = r.tokens[t];
        if (!Number.isInteger(tok) || tok < 0 || tok >= c.vocabSize) throw new RangeError(`token id ${tok} outside the vocabulary [0, ${c.vocabSize})`);
      }
      m += r.tokens.length;
    }
    this.ensureRows(m);
    const { x, xb, xb2, hb, hb2, q, k, v, cos, sin, att, w } = this;

    // embeddings and each row's RoPE angles (shared by every head and layer)
    let row = 0;
    for (const r of batch) {
      for (let t = 0; t < r.tokens.length; t++, row++) {
        const tok = r.tokens[t];
        x.set(w.embed.subarray(tok * dim, (tok + 1) * dim), row * dim);
        const pos = r.startPos + t;
        for (let i = 0; i < half; i++) {
          const angle = pos * this.invFreq[i];
          cos[row * half + i] = Math.cos(angle);
          sin[row * half + i] = Math.sin(angle);
        }
      }
    }

    for (let l = 0; l < c.numLayers; l++) {
      const lw = w.layers[l];
      const lm = this.mats[l];
      // attention: xb = rmsnorm(x); q, k, v for every row at once
      for (let i = 0; i < m; i++) rmsnorm(xb, x, lw.attnNorm, dim, c.rmsNormEps, i * dim, i * dim);
      this.mm(q, xb, lm.wq, m);
      this.mm(k, xb, lm.wk, m);
      this.mm(v, xb, lm.wv, m);
      // RoPE, then each row's k and v into its own session's cache at its position
      row = 0;
      for (const r of batch) {
        const cacheOff = l * r.kv.maxContext * kv;
        for (let t = 0; t < r.tokens.length; t++, row++) {
          ropeRow(q, row * qd, c.numHeads, hd, cos, sin, row * half);
          ropeRow(k, row * kv, c.numKvHeads, hd, cos, sin, row * half);
          const at = cacheOff + (r.startPos + t) * kv;
          r.kv.key.set(k.subarray(row * kv, (row + 1) * kv), at);
          r.kv.value.set(v.subarray(row * kv, (row + 1) * kv), at);
        }
      }
      // causal GQA attention: row at position pos reads its session's positions 0..pos
      row = 0;
      for (const r of batch) {
        const cacheOff = l * r.kv.maxContext * kv;
        for (let t = 0; t < r.tokens.length; t++, row++) {
          attendRow(xb, q, row * qd, r.kv.key, r.kv.value, cacheOff, kv, r.startPos + t + 1, c.numHeads, groupSize, hd, scale, att);
        }
      }
      // xb is (rows, qDim) here; wo maps it back to dim
      this.mm(xb2, xb, lm.wo, m);
      for (let i = 0; i < m * dim; i++) x[i] += xb2[i];

      // MLP: x += down(silu(gate(xb)) * up(xb)), xb = rmsnorm(x)
      for (let i = 0; i < m; i++) rmsnorm(xb, x, lw.ffnNorm, dim, c.rmsNormEps, i * dim, i * dim);
      this.mm(hb, xb, lm.wGate, m);
      this.mm(hb2, xb, lm.wUp, m);
      siluMul(hb, hb2, m * hidden);
      this.mm(xb2, hb, lm.wDown, m);
      for (let i = 0; i < m * dim; i++) x[i] += xb2[i];
    }

    // final norm of the rows whose logits are wanted, gathered densely into xb, then the head
    let outRows = 0;
    row = 0;
    for (const r of batch) {
      const first = r.noLogits ? r.tokens.length : r.lastOnly ? r.tokens.length - 1 : 0;
      for (let t = first; t < r.tokens.length; t++, outRows++) rmsnorm(xb, x, w.finalNorm, dim, c.rmsNormEps, (row + t) * dim, outRows * dim);
      row += r.tokens.length;
      r.kv.length = r.startPos + r.tokens.length;
    }
    const logits = new Float32Array(outRows * c.vocabSize);
    if (outRows > 0) this.mm(logits, xb, this.head, outRows);
    const out: Float32Array[] = [];
    let at = 0;
    for (const r of batch) {
      const n = (r.noLogits ? 0 : r.lastOnly ? 1 : r.tokens.length) * c.vocabSize;
      out.push(logits.subarray(at, at + n));
      at += n;
    }
    return out;
  }
}

/** One session over a CpuBatchLlama, as a CausalLM (the LocalTarget / draft-fallback interface). */
export class CpuBatchSession implements CausalLM {
  readonly kv: CpuKv;
  constructor(readonly engine: CpuBatchLlama, maxContext = engine.maxContext) {
    this.kv = engine.newKv(maxContext);
  }

  get config(): LlamaConfig {
    return this.engine.config;
  }

  get maxContext(): number {
    return this.kv.maxContext;
  }

  get length(): number {
    return this.kv.length;
  }

  rollback(length: number): void {
    if (!Number.isInteger(length) || length < 0 || length > this.kv.length) {
      throw new RangeError(`rollback(${length}): cache holds ${this.kv.length} tokens`);
    }
    this.kv.length = length;
  }

  async forward(tokens: ArrayLike<number>, startPos: number): Promise<Float32Array> {
    return this.engine.forwardBatch([{ kv: this.kv, tokens, startPos }])[0];
  }

  async forwardLast(tokens: ArrayLike<number>, startPos: number): Promise<Float32Array> {
    return this.engine.forwardBatch([{ kv: this.kv, tokens, startPos, lastOnly: true }])[0];
  }

  dispose(): void {}
}
