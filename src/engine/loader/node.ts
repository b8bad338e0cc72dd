// Node conveniences: open or fully load a model from a local path. The path is a HF model
// directory, or a .gguf file (its directory may hold tokenizer.json / tokenizer_config.json).

import { basename, dirname } from 'node:path';
import { statSync } from 'node:fs';
import type { LlamaConfig } from '../config.ts';
import type { LlamaWeights } from '../weights.ts';
import { ModelSourceError } from './errors.ts';
import { type GenerationConfig, type OpenModelOptions, type OpenedModel, loadWeightsF32, openModel } from './model.ts';
import { DirSource } from './node-source.ts';

export { DirSource };

export async function openModelDir(path: string, opts: OpenModelOptions = {}): Promise<OpenedModel> {
  let isFile = false;
  try {
    isFile = statSync(path).isFile();
  } catch {
    throw new ModelSourceError(path, 'no such file or directory; pass a HF model folder (config.json + *.safetensors) or a .gguf file');
  }
  if (isFile) {
    if (!path.endsWith('.gguf')) throw new ModelSourceError(path, 'is a file; pass the model folder, or a .gguf file');
    return openModel(new DirSource(dirname(path)), { ...opts, weights: basename(path) });
  }
  return openModel(new DirSource(path), opts);
}

export interface LoadedModel {
  config: LlamaConfig;
  weights: LlamaWeights;
  generationConfig: GenerationConfig | null;
  tokenizerJson: Record<string, unknown> | null;
  tokenizerConfig: Record<string, unknown> | null;
  /** the source id, e.g. dir:/abs/path */
  id: string;
}

/** Load a whole model as f32 (CPU reference / tests). For big models stream openModelDir().tensors() instead. */
export async function loadModelDir(path: string, opts: OpenModelOptions = {}): Promise<LoadedModel> {
  const m = await openModelDir(path, opts);
  try {
    const weights = await loadWeightsF32(m);
    return { config: m.config, weights, generationConfig: m.generationConfig, tokenizerJson: m.tokenizerJson, tokenizerConfig: m.tokenizerConfig, id: m.source.id };
  } finally {
    await m.close();
  }
}
