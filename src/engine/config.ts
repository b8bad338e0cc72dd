// Llama-3.2 model configuration, parsed from a Hugging Face `config.json`, and the llama3
// RoPE frequency table that both the CPU reference and the WGSL engine use.

export class ConfigError extends Error {
  override name = 'ConfigError';
  constructor(readonly file: string, readonly field: string, message: string) {
    super(`${file}: field "${field}": ${message}`);
  }
}

export interface RopeScaling {
  /** rope_scaling.factor: how far the context was stretched (32 for Llama-3.2). */
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositionEmbeddings: number;
}

export interface LlamaConfig {
  /** dim: width of the residual stream */
  hiddenSize: number;
  /** hidden dim of the SwiGLU MLP */
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  /** null: plain RoPE (rope_scaling absent) */
  ropeScaling: RopeScaling | null;
  tieWordEmbeddings: boolean;
  vocabSize: number;
  maxPositionEmbeddings: number;
  bosTokenId: number | null;
  eosTokenIds: number[];
}

/** numKvHeads * headDim: width of one K or V row. */
export const kvDim = (c: LlamaConfig): number => c.numKvHeads * c.headDim;
/** numHeads * headDim: width of the Q row (equals hiddenSize for the Llama-3.2 family). */
export const qDim = (c: LlamaConfig): number => c.numHeads * c.headDim;

function positiveInt(json: Record<string, unknown>, file: string, key: string): number {
  const v = json[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
    throw new ConfigError(file, key, `expected a positive integer, got ${JSON.stringify(v)}`);
  }
  return v;
}

function positiveNumber(json: Record<string, unknown>, file: string, key: string, fallback?: number): number {
  const v = json[key] ?? fallback;
  if (typeof v !== 'number' || !(v > 0)) {
    throw new ConfigError(file, key, `expected a positive number, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** Parse a HF `config.json` of a Llama-family model; errors name the file and the field. */
export function parseConfig(raw: unknown, file = 'config.json'): LlamaConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigError(file, '(root)', 'expected a JSON object');
  }
  const json = raw as Record<string, unknown>;
  const modelType = json.model_type;
  if (modelType !== undefined && modelType !== 'llama') {
    throw new ConfigError(file, 'model_type', `unsupported model_type ${JSON.stringify(modelType)}; duet runs "llama" models`);
  }
  const act = json.hidden_act;
  if (act !== undefined && act !== 'silu') {
    throw new ConfigError(file, 'hidden_act', `unsupported activation ${JSON.stringify(act)}; expected "silu"`);
  }
  const hiddenSize = positiveInt(json, file, 'hidden_size');
  const numHeads = positiveInt(json, file, 'num_attention_heads');
  const numKvHeads = json.num_key_value_heads === undefined ? numHeads : positiveInt(json, file, 'num_key_value_heads');
  if (numHeads % numKvHeads !== 0) {
    throw new ConfigError(file, 'num_key_value_heads', `${numKvHeads} does not divide num_attention_heads ${numHeads}`);
  }
  const headDim = json.head_dim === undefined || json.head_dim === null ? hiddenSize / numHeads : positiveInt(json, file, 'head_dim');
  if (!Number.isInteger(headDim) || headDim % 2 !== 0) {
    throw new ConfigError(file, 'head_dim', `head_dim ${headDim} must be an even integer`);
  }
  let ropeScaling: RopeScaling | null = null;
  const rs = json.rope_scaling;
  if (rs !== undefined && rs !== null) {
    if (typeof rs !== 'object') throw new ConfigError(file, 'rope_scaling', 'expected an object or null');
    const r = rs as Record<string, unknown>;
    const type = r.rope_type ?? r.type;
    if (type !== 'llama3') {
      throw new ConfigError(file, 'rope_scaling.rope_type', `unsupported ${JSON.stringify(type)}; only "llama3" is implemented`);
    }
    ropeScaling = {
      factor: positiveNumber(r, file, 'factor'),
      lowFreqFactor: positiveNumber(r, file, 'low_freq_factor'),
      highFreqFactor: positiveNumber(r, file, 'high_freq_factor'),
      originalMaxPositionEmbeddings: positiveInt(r, file, 'original_max_position_embeddings'),
    };
    if (!(ropeScaling.highFreqFactor > ropeScaling.lowFreqFactor)) {
      throw new ConfigError(file, 'rope_scaling.high_freq_factor', 'must exceed low_freq_factor');
    }
  }
  const eos = json.eos_token_id;
  const eosTokenIds = eos === undefined || eos === null ? [] : Array.isArray(eos) ? eos.map(Number) : [Number(eos)];
  const bos = json.bos_token_id;
  return {
    hiddenSize,
    intermediateSize: positiveInt(json, file, 'intermediate_size'),
    numLayers: positiveInt(json, file, 'num_hidden_layers'),
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: positiveNumber(json, file, 'rms_norm_eps', 1e-5),
    ropeTheta: positiveNumber(json, file, 'rope_theta', 10000),
    ropeScaling,
    tieWordEmbeddings: json.tie_word_embeddings === undefined ? false : Boolean(json.tie_word_embeddings),
    vocabSize: positiveInt(json, file, 'vocab_size'),
    maxPositionEmbeddings: positiveInt(json, file, 'max_position_embeddings'),
    bosTokenId: typeof bos === 'number' ? bos : null,
    eosTokenIds,
  };
}

/**
 * Inverse RoPE frequencies, headDim/2 of them, with Llama-3 scaling applied exactly as HF's
 * `_compute_llama3_parameters`: low frequencies divided by `factor`, high kept, a smooth
 * blend between. Computed in f64, returned as f32.
 */
export function ropeInvFreq(c: LlamaConfig): Float32Array {
  const half = c.headDim / 2;
  const out = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    let f = 1 / Math.pow(c.ropeTheta, (2 * i) / c.headDim);
    const s = c.ropeScaling;
    if (s) {
      const lowFreqWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
      const highFreqWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
      const wavelen = (2 * Math.PI) / f;
      if (wavelen > lowFreqWavelen) {
        f = f / s.factor;
      } else if (wavelen >= highFreqWavelen) {
        const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
        f = (1 - smooth) * (f / s.factor) + smooth * f;
      }
    }
    out[i] = f;
  }
  return out;
}

/** A Llama-3.2-shaped config for tests and benchmarks (random weights). */
export function syntheticConfig(shape: '1b' | '3b' | 'tiny', overrides: Partial<LlamaConfig> = {}): LlamaConfig {
  const base: LlamaConfig = {
    hiddenSize: 2048, intermediateSize: 8192, numLayers: 16, numHeads: 32, numKvHeads: 8, headDim: 64,
    rmsNormEps: 1e-5, ropeTheta: 500000,
    ropeScaling: { factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 },
    tieWordEmbeddings: true, vocabSize: 128256, maxPositionEmbeddings: 131072, bosTokenId: 128000, eosTokenIds: [128001],
  };
  if (shape === '3b') Object.assign(base, { hiddenSize: 3072, numLayers: 28, numHeads: 24, headDim: 128 });
  if (shape === 'tiny') Object.assign(base, { hiddenSize: 96, intermediateSize: 257, numLayers: 2, numHeads: 6, numKvHeads: 2, headDim: 16, vocabSize: 1031, maxPositionEmbeddings: 512, bosTokenId: 1, eosTokenIds: [2] });
  return { ...base, ...overrides };
}
