// Llama weights in f32, HF layout (every matrix row-major [out, in], as in the checkpoint).
// This is what the CPU reference runs on and what the GPU engine quantizes/uploads from.

import { type LlamaConfig, kvDim, qDim } from './config.ts';
import { mulberry32 } from '../kernels/random.ts';

export interface LayerWeights {
  attnNorm: Float32Array; // (dim)           input_layernorm.weight
  wq: Float32Array;       // (qDim, dim)     self_attn.q_proj.weight
  wk: Float32Array;       // (kvDim, dim)    self_attn.k_proj.weight
  wv: Float32Array;       // (kvDim, dim)    self_attn.v_proj.weight
  wo: Float32Array;       // (dim, qDim)     self_attn.o_proj.weight
  ffnNorm: Float32Array;  // (dim)           post_attention_layernorm.weight
  wGate: Float32Array;    // (hidden, dim)   mlp.gate_proj.weight
  wUp: Float32Array;      // (hidden, dim)   mlp.up_proj.weight
  wDown: Float32Array;    // (dim, hidden)   mlp.down_proj.weight
}

export interface LlamaWeights {
  embed: Float32Array;           // (vocab, dim)  model.embed_tokens.weight
  layers: LayerWeights[];
  finalNorm: Float32Array;       // (dim)         model.norm.weight
  lmHead: Float32Array | null;   // (vocab, dim)  lm_head.weight; null when tied to embed
}

/** HF tensor names of layer l, keyed as in LayerWeights. */
export function layerTensorNames(l: number): Record<keyof LayerWeights, string> {
  const p = `model.layers.${l}.`;
  return {
    attnNorm: p + 'input_layernorm.weight',
    wq: p + 'self_attn.q_proj.weight',
    wk: p + 'self_attn.k_proj.weight',
    wv: p + 'self_attn.v_proj.weight',
    wo: p + 'self_attn.o_proj.weight',
    ffnNorm: p + 'post_attention_layernorm.weight',
    wGate: p + 'mlp.gate_proj.weight',
    wUp: p + 'mlp.up_proj.weight',
    wDown: p + 'mlp.down_proj.weight',
  };
}

/** Expected [rows, cols] (or [n]) of every HF tensor of the model. */
export function expectedShapes(c: LlamaConfig): Map<string, number[]> {
  const m = new Map<string, number[]>();
  const dim = c.hiddenSize;
  m.set('model.embed_tokens.weight', [c.vocabSize, dim]);
  for (let l = 0; l < c.numLayers; l++) {
    const n = layerTensorNames(l);
    m.set(n.attnNorm, [dim]);
    m.set(n.wq, [qDim(c), dim]);
    m.set(n.wk, [kvDim(c), dim]);
    m.set(n.wv, [kvDim(c), dim]);
    m.set(n.wo, [dim, qDim(c)]);
    m.set(n.ffnNorm, [dim]);
    m.set(n.wGate, [c.intermediateSize, dim]);
    m.set(n.wUp, [c.intermediateSize, dim]);
    m.set(n.wDown, [dim, c.intermediateSize]);
  }
  m.set('model.norm.weight', [dim]);
  if (!c.tieWordEmbeddings) m.set('lm_head.weight', [c.vocabSize, dim]);
  return m;
}

/** Deterministic PRNG (mulberry32) so fixtures are reproducible from a seed; it lives in src/kernels/random.ts. */
export { mulberry32 };

/**
 * Random weights with the statistics of a trained Llama (matrices ~ U(-a, a) with
 * a = sqrt(3/in) so activations keep unit scale; norms near 1), for tests and benchmarks.
 */
export function randomWeights(c: LlamaConfig, seed = 1): LlamaWeights {
  const rand = mulberry32(seed);
  const mat = (rows: number, cols: number, gain = 1): Float32Array => {
    const a = gain * Math.sqrt(3 / cols);
    const w = new Float32Array(rows * cols);
    for (let i = 0; i < w.length; i++) w[i] = (rand() * 2 - 1) * a;
    return w;
  };
  const norm = (n: number): Float32Array => {
    const w = new Float32Array(n);
    for (let i = 0; i < n; i++) w[i] = 0.8 + 0.4 * rand();
    return w;
  };
  const dim = c.hiddenSize;
  const layers: LayerWeights[] = [];
  for (let l = 0; l < c.numLayers; l++) {
    layers.push({
      attnNorm: norm(dim),
      wq: mat(qDim(c), dim),
      wk: mat(kvDim(c), dim),
      wv: mat(kvDim(c), dim),
      wo: mat(dim, qDim(c), 0.5),
      ffnNorm: norm(dim),
      wGate: mat(c.intermediateSize, dim),
      wUp: mat(c.intermediateSize, dim),
      wDown: mat(dim, c.intermediateSize, 0.5),
    });
  }
  // Embedding entries with std 0.05: as the tied LM head this gives logits of a few units.
  const embed = mat(c.vocabSize, dim, 0.05 * Math.sqrt(dim));
  return { embed, layers, finalNorm: norm(dim), lmHead: c.tieWordEmbeddings ? null : mat(c.vocabSize, dim) };
}
