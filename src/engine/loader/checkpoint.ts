// What every checkpoint format shares: the OpenedModel contract that model.ts (safetensors)
// and gguf.ts (GGUF) both return, generation_config parsing and the tensor-set check. In a
// module of its own so that both readers import it and neither imports the other.

import type { LlamaConfig } from '../config.ts';
import { expectedShapes } from '../weights.ts';
import type { WeightFormat } from '../quantize.ts';
import { WeightsFormatError } from './errors.ts';
import { type TensorInfo, checkDtype } from './safetensors.ts';
import type { ModelSource, ProgressFn } from './source.ts';

export interface GenerationConfig {
  bosTokenId: number | null;
  eosTokenIds: number[];
  temperature?: number;
  topP?: number;
  topK?: number;
  doSample?: boolean;
  raw: Record<string, unknown>;
}

export interface LoadedTensor {
  /** HF name, e.g. model.layers.0.self_attn.q_proj.weight */
  name: string;
  shape: number[];
  data: Float32Array;
}

export interface WeightFile {
  name: string;
  byteLength: number;
  version?: string;
}

export interface OpenedModel {
  readonly source: ModelSource;
  readonly format: 'safetensors' | 'gguf';
  readonly config: LlamaConfig;
  /** config.json as parsed JSON (for GGUF: synthesised from metadata) */
  readonly configJson: Record<string, unknown>;
  readonly generationConfig: GenerationConfig | null;
  /** tokenizer.json parsed; null when the model ships none */
  readonly tokenizerJson: Record<string, unknown> | null;
  readonly tokenizerConfig: Record<string, unknown> | null;
  readonly weightFiles: WeightFile[];
  /** Every tensor that tensors() yields, in yield order, with HF names and shapes. */
  readonly tensorInfos: TensorInfo[];
  /**
   * The engine weight format that keeps the file's own precision (`--quant auto`): 'q4' for
   * a GGUF whose matrices are mostly 2- to 4-bit (Q4_K_M, Q4_0, ...), 'q8' for 5- to 8-bit
   * (Q8_0, Q6_K, Q5_K_M, ...), else 'f32' — what loading without --quant gives today.
   */
  readonly autoFormat: WeightFormat;
  /** Stream the tensors as f32, one at a time, in file order. */
  tensors(): AsyncIterable<LoadedTensor>;
  /**
   * Rows [rowStart, rowStart + rowCount) of a 2-D tensor (a 1-D tensor counts as one row)
   * as f32 — for quantizing a large matrix (the embedding) in slabs with bounded memory.
   */
  readRows(name: string, rowStart: number, rowCount: number): Promise<Float32Array>;
  close(): Promise<void>;
}

export interface OpenModelOptions {
  onProgress?: ProgressFn;
  /**
   * Weights file to use; default: model.safetensors.index.json, else model.safetensors.
   * A name ending in .gguf loads GGUF (config from its metadata).
   */
  weights?: string;
}

/** Tensors some checkpoints carry that the forward pass does not use. */
const IGNORED = /(^|\.)rotary_emb\.inv_freq$/;

export function parseGenerationConfig(raw: Record<string, unknown>, config: LlamaConfig): GenerationConfig {
  const eos = raw.eos_token_id;
  const num = (k: string): number | undefined => (typeof raw[k] === 'number' ? (raw[k] as number) : undefined);
  return {
    bosTokenId: typeof raw.bos_token_id === 'number' ? raw.bos_token_id : config.bosTokenId,
    eosTokenIds: eos === undefined || eos === null ? config.eosTokenIds : Array.isArray(eos) ? eos.map(Number) : [Number(eos)],
    temperature: num('temperature'),
    topP: num('top_p'),
    topK: num('top_k'),
    doSample: typeof raw.do_sample === 'boolean' ? raw.do_sample : undefined,
    raw,
  };
}

/**
 * Check names, shapes and dtypes of a checkpoint against the config before any data is
 * read. Returns the tensors to load (ignorable extras dropped) in file order.
 */
export function checkTensorSet(config: LlamaConfig, infos: TensorInfo[]): TensorInfo[] {
  const expected = expectedShapes(config);
  const seen = new Set<string>();
  const usable: TensorInfo[] = [];
  for (const t of infos) {
    const want = expected.get(t.name);
    if (!want) {
      if (IGNORED.test(t.name) || (t.name === 'lm_head.weight' && config.tieWordEmbeddings)) continue;
      throw new WeightsFormatError(t.file, t.name, `unexpected tensor (shape [${t.shape}]); the config (${config.numLayers} layers, tie_word_embeddings=${config.tieWordEmbeddings}) has no such weight — wrong config.json for these weights?`);
    }
    if (seen.has(t.name)) throw new WeightsFormatError(t.file, t.name, 'tensor appears twice across the weight files');
    seen.add(t.name);
    checkDtype(t);
    if (want.length !== t.shape.length || want.some((d, i) => d !== t.shape[i])) {
      throw new WeightsFormatError(t.file, t.name, `shape [${t.shape}] but config.json implies [${want}]`);
    }
    usable.push(t);
  }
  const missing = [...expected.keys()].filter((n) => !seen.has(n));
  if (missing.length) {
    const files = [...new Set(infos.map((t) => t.file))].join(', ') || '(no weight files)';
    throw new WeightsFormatError(files, missing[0], `missing tensor (expected shape [${expected.get(missing[0])}])${missing.length > 1 ? ` and ${missing.length - 1} more: ${missing.slice(1, 4).join(', ')}${missing.length > 4 ? ', ...' : ''}` : ''}`);
  }
  return usable;
}
