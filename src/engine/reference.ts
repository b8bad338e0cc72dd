// The CPU reference forward pass: plain f32 TypeScript, written independently of the GPU
// path. It is the test oracle, the engine of the `cpu` verifier, and the draft fallback
// where a browser has no WebGPU. Mirrors llama2.c's run.c: config, read-only weights,
// state allocated once, a flat forward.

import { type LlamaConfig, kvDim, qDim, ropeInvFreq } from './config.ts';
import type { LlamaWeights } from './weights.ts';
import type { CausalLM } from './model.ts';

// ---- primitives (output first) ----

/** o = x / rms(x) * w */
export function rmsnorm(o: Float32Array, x: Float32Array, w: Float32Array, n: number, eps: number, xOff = 0, oOff = 0): void {
  let ss = 0;
  for (let i = 0; i < n; i++) ss += x[xOff + i] * x[xOff + i];
  const scale = 1 / Math.sqrt(ss / n + eps);
  for (let i = 0; i < n; i++) o[oOff + i] = x[xOff + i] * scale * w[i];
}

/** o(d) = W(d, n) @ x(n); W row-major as in HF checkpoints. Accumulates in f64. */
export function matmul(o: Float32Array, x: Float32Array, w: Float32Array, n: number, d: number, xOff = 0, oOff = 0): void {
  for (let i = 0; i < d; i++) {
    let s = 0;
    const row = i * n;
    for (let j = 0; j < n; j++) s += w[row + j] * x[xOff + j];
    o[oOff + i] = s;
  }
}

/** In-place softmax over x[off, off+n). */
export function softmax(x: Float32Array, n: number, off = 0): void {
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, x[off + i]);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const e = Math.exp(x[off + i] - max);
    x[off + i] = e;
    sum += e;
  }
  for (let i = 0; i < n; i++) x[off + i] /= sum;
}

/**
 * RoPE in the HF convention (rotate_half): within each head, element i pairs with
 * i + headDim/2, rotated by angle pos * invFreq[i].
 */
export function rope(v: Float32Array, off: number, nHeads: number, headDim: number, pos: number, invFreq: Float32Array): void {
  const half = headDim / 2;
  for (let h = 0; h < nHeads; h++) {
    const base = off + h * headDim;
    for (let i = 0; i < half; i++) {
      const angle = pos * invFreq[i];
      const cos = Math.cos(angle);
      const sin = Math.sin(angle);
      const a = v[base + i];
      const b = v[base + i + half];
      v[base + i] = a * cos - b * sin;
      v[base + i + half] = b * cos + a * sin;
    }
  }
}

// ---- the model ----

export class CpuLlama implements CausalLM {
  readonly config: LlamaConfig;
  readonly maxContext: number;
  private readonly w: LlamaWeights;
  private readonly invFreq: Float32Array;
  // KV cache, (layer, maxContext, kvDim)
  private readonly keyCache: Float32Array;
  private readonly valueCache: Float32Array;
  private len = 0;
  // run state, allocated once
  private readonly x: Float32Array;   // (dim) residual stream
  private readonly xb: Float32Array;  // (max(dim, qDim)) normed input / attention output
  private readonly xb2: Float32Array; // (dim)
  private readonly hb: Float32Array;  // (hidden)
  private readonly hb2: Float32Array; // (hidden)
  private readonly q: Float32Array;   // (qDim)
  private readonly att: Float32Array; // (maxContext)

  constructor(config: LlamaConfig, weights: LlamaWeights, maxContext = Math.min(config.maxPositionEmbeddings, 2048)) {
    this.config = config;
    this.w = weights;
    this.maxContext = maxContext;
    this.invFreq = ropeInvFreq(config);
    const kv = kvDim(config);
    this.keyCache = new Float32Array(config.numLayers * maxContext * kv);
    this.valueCache = new Float32Array(config.numLayers * maxContext * kv);
    const dim = config.hiddenSize;
    this.x = new Float32Array(dim);
    this.xb = new Float32Array(Math.max(dim, qDim(config)));
    this.xb2 = new Float32Array(dim);
    this.hb = new Float32Array(config.intermediateSize);
    this.hb2 = new Float32Array(config.intermediateSize);
    this.q = new Float32Array(qDim(config));
    this.att = new Float32Array(maxContext);
  }

  get length(): number {
    return this.len;
  }

  rollback(length: number): void {
    if (!Number.isInteger(length) || length < 0 || length > this.len) {
      throw new RangeError(`rollback(${length}): cache holds ${this.len} tokens`);
    }
    this.len = length;
  }

  async forward(tokens: ArrayLike<number>, startPos: number): Promise<Float32Array> {
    return this.forwardSync(tokens, startPos);
  }

  /** Logits for every position, (tokens.length, vocab) row-major. Truncates the cache to startPos first. */
  forwardSync(tokens: ArrayLike<number>, startPos: number): Float32Array {
    const c = this.config;
    if (startPos > this.len || startPos < 0) throw new RangeError(`forward at ${startPos}: cache holds ${this.len} tokens`);
    if (startPos + tokens.length > this.maxContext) {
      throw new RangeError(`context full: ${startPos + tokens.length} tokens > maxContext ${this.maxContext}`);
    }
    this.len = startPos;
    const logits = new Float32Array(tokens.length * c.vocabSize);
    for (let t = 0; t < tokens.length; t++) {
      this.step(tokens[t], startPos + t, logits, t * c.vocabSize);
    }
    this.len = startPos + tokens.length;
    return logits;
  }

  dispose(): void {}

  private step(token: number, pos: number, logits: Float32Array, logitsOff: number): void {
    const c = this.config;
    const w = this.w;
    const { x, xb, xb2, hb, hb2, q, att } = this;
    const dim = c.hiddenSize;
    const kv = kvDim(c);
    const hidden = c.intermediateSize;
    const qd = qDim(c);
    const hd = c.headDim;
    const groupSize = c.numHeads / c.numKvHeads;
    if (!Number.isInteger(token) || token < 0 || token >= c.vocabSize) {
      throw new RangeError(`token id ${token} outside the vocabulary [0, ${c.vocabSize})`);
    }
    x.set(w.embed.subarray(token * dim, (token + 1) * dim));

    for (let l = 0; l < c.numLayers; l++) {
      const lw = w.layers[l];
      const cacheOff = l * this.maxContext * kv;
      // attention: xb = rmsnorm(x); q, k, v projections; k and v go straight into the cache
      rmsnorm(xb, x, lw.attnNorm, dim, c.rmsNormEps);
      matmul(q, xb, lw.wq, dim, qd);
      matmul(this.keyCache, xb, lw.wk, dim, kv, 0, cacheOff + pos * kv);
      matmul(this.valueCache, xb, lw.wv, dim, kv, 0, cacheOff + pos * kv);
      rope(q, 0, c.numHeads, hd, pos, this.invFreq);
      rope(this.keyCache, cacheOff + pos * kv, c.numKvHeads, hd, pos, this.invFreq);

      // causal GQA attention over positions 0..pos; head h reads KV head h / groupSize
      const scale = 1 / Math.sqrt(hd);
      for (let h = 0; h < c.numHeads; h++) {
        const kvh = Math.floor(h / groupSize);
        for (let t = 0; t <= pos; t++) {
          const kOff = cacheOff + t * kv + kvh * hd;
          let s = 0;
          for (let i = 0; i < hd; i++) s += q[h * hd + i] * this.keyCache[kOff + i];
          att[t] = s * scale;
        }
        softmax(att, pos + 1);
        const out = h * hd;
        for (let i = 0; i < hd; i++) xb[out + i] = 0;
        for (let t = 0; t <= pos; t++) {
          const vOff = cacheOff + t * kv + kvh * hd;
          const a = att[t];
          for (let i = 0; i < hd; i++) xb[out + i] += a * this.valueCache[vOff + i];
        }
      }
      matmul(xb2, xb, lw.wo, qd, dim);
      for (let i = 0; i < dim; i++) x[i] += xb2[i];

      // MLP: x += down(silu(gate(xb)) * up(xb)), xb = rmsnorm(x)
      rmsnorm(xb, x, lw.ffnNorm, dim, c.rmsNormEps);
      matmul(hb, xb, lw.wGate, dim, hidden);
      matmul(hb2, xb, lw.wUp, dim, hidden);
      for (let i = 0; i < hidden; i++) {
        const g = hb[i];
        hb[i] = (g / (1 + Math.exp(-g))) * hb2[i];
      }
      matmul(xb2, hb, lw.wDown, hidden, dim);
      for (let i = 0; i < dim; i++) x[i] += xb2[i];
    }

    rmsnorm(x, x, w.finalNorm, dim, c.rmsNormEps);
    matmul(logits, x, w.lmHead ?? w.embed, dim, c.vocabSize, 0, logitsOff);
  }
}
