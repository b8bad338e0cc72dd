// Model assembly: open a HF model (config.json, generation_config.json, tokenizer files,
// model.safetensors or shards listed in model.safetensors.index.json) from any ModelSource,
// check every tensor's name, dtype and shape before reading data, then stream the tensors
// one at a time as f32. GGUF files take the same road through gguf.ts.
//
//   const m = await openModel(new UrlSource('/models/tiny-draft/'), { onProgress });
//   for await (const t of m.tensors()) upload(t.name, t.data);   // streaming, bounded memory
//   const w = await loadWeightsF32(m);                            // or all at once (CPU reference)

import { type LlamaConfig, ConfigError, parseConfig } from '../config.ts';
import { type LlamaWeights, type LayerWeights, layerTensorNames } from '../weights.ts';
import { ModelSourceError, WeightsFormatError } from './errors.ts';
import { type TensorInfo, readSafetensorsHeader, readTensorF32 } from './safetensors.ts';
import { type ModelSource, type SourceFile, ProgressTracker } from './source.ts';
import type { WeightFormat } from '../quantize.ts';
import { type GenerationConfig, type LoadedTensor, type OpenModelOptions, type OpenedModel, type WeightFile, checkTensorSet, parseGenerationConfig } from './checkpoint.ts';

export type { GenerationConfig, LoadedTensor, OpenModelOptions, OpenedModel, WeightFile };
export { checkTensorSet, parseGenerationConfig };

/** A requested weight format: 'none' (f32), 'auto' (the file's own precision) or a format. */
export type QuantChoice = 'none' | 'auto' | WeightFormat;

/** The engine format a QuantChoice means for this model. */
export function resolveWeightFormat(quant: QuantChoice, model: Pick<OpenedModel, 'autoFormat'>): WeightFormat {
  return quant === 'auto' ? model.autoFormat : quant === 'none' ? 'f32' : quant;
}

async function readJson(source: ModelSource, name: string, required: true): Promise<Record<string, unknown>>;
async function readJson(source: ModelSource, name: string, required: false): Promise<Record<string, unknown> | null>;
async function readJson(source: ModelSource, name: string, required: boolean): Promise<Record<string, unknown> | null>;
async function readJson(source: ModelSource, name: string, required: boolean): Promise<Record<string, unknown> | null> {
  const text = await source.readText(name);
  if (text === null) {
    if (required) throw new ModelSourceError(name, `missing from ${source.id}; a HF model folder needs config.json, tokenizer.json and *.safetensors`);
    return null;
  }
  try {
    const v = JSON.parse(text);
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not a JSON object');
    return v;
  } catch (err) {
    throw new ConfigError(name, '(root)', `invalid JSON: ${(err as Error).message}`);
  }
}

/**
 * Tokens that end a reply: generation_config's, config.json's and the tokenizer's eos. One set
 * for `duet generate` and the gateway's /v1 API, so both stop at the same token.
 */
export function stopTokenIds(generationConfig: GenerationConfig | null, config: LlamaConfig, tokenizer: { eosId: number | null } | null): number[] {
  return [...new Set([...(generationConfig?.eosTokenIds ?? []), ...config.eosTokenIds, ...(tokenizer?.eosId != null ? [tokenizer.eosId] : [])])];
}

/** Open a model: reads the small JSON files and every weights header, no tensor data yet. */
export async function openModel(source: ModelSource, opts: OpenModelOptions = {}): Promise<OpenedModel> {
  if (opts.weights?.endsWith('.gguf')) {
    const { openGgufModel } = await import('./gguf.ts');
    return openGgufModel(source, opts.weights, opts);
  }
  const configJson = await readJson(source, 'config.json', true);
  const config = parseConfig(configJson, 'config.json');
  const genRaw = await readJson(source, 'generation_config.json', false);
  const tokenizerJson = await readJson(source, 'tokenizer.json', false);
  const tokenizerConfig = await readJson(source, 'tokenizer_config.json', false);

  const shardNames = await weightFileNames(source, opts.weights);
  const files: SourceFile[] = [];
  const tensorInfos: TensorInfo[] = [];
  let usable: TensorInfo[];
  let weightFiles: WeightFile[];
  try {
    for (const name of shardNames.files) {
      const f = await source.open(name);
      files.push(f);
      tensorInfos.push(...(await readSafetensorsHeader(f)).tensors);
    }
    if (shardNames.weightMap) checkIndex(shardNames.weightMap, tensorInfos);
    usable = checkTensorSet(config, tensorInfos);
    weightFiles = await Promise.all(files.map(async (f) => ({ name: f.name, byteLength: f.byteLength, version: (await source.stat(f.name))?.version })));
  } catch (err) {
    await Promise.all(files.map((f) => f.close()));
    throw err;
  }
  const totalBytes = usable.reduce((a, t) => a + t.byteLength, 0);
  const byName = new Map(files.map((f) => [f.name, f]));
  return {
    source,
    format: 'safetensors',
    config,
    configJson,
    generationConfig: genRaw ? parseGenerationConfig(genRaw, config) : null,
    tokenizerJson,
    tokenizerConfig,
    weightFiles,
    tensorInfos: usable,
    autoFormat: 'f32',
    async *tensors() {
      const progress = new ProgressTracker(totalBytes, opts.onProgress);
      for (const t of usable) {
        const f = byName.get(t.file)!;
        const data = await readTensorF32(f, t, source.chunkBytes, (n) => progress.add(t.file, n));
        yield { name: t.name, shape: t.shape, data };
      }
      progress.add(usable[usable.length - 1]?.file ?? '', 0, true);
    },
    async readRows(name, rowStart, rowCount) {
      const t = usable.find((u) => u.name === name);
      if (!t) throw new WeightsFormatError(shardNames.files.join(', '), name, 'no such tensor in this model');
      const cols = t.shape.length > 1 ? t.shape[t.shape.length - 1] : t.shape[0];
      return readTensorF32(byName.get(t.file)!, t, source.chunkBytes, undefined, rowStart * cols, rowCount * cols);
    },
    async close() {
      await Promise.all(files.map((f) => f.close()));
    },
  };
}

function checkIndex(weightMap: Record<string, string>, tensorInfos: TensorInfo[]): void {
  const where = new Map(tensorInfos.map((t) => [t.name, t.file]));
  for (const [tensor, file] of Object.entries(weightMap)) {
    if (where.get(tensor) !== file) {
      throw new WeightsFormatError('model.safetensors.index.json', tensor, `listed in ${file} but ${where.has(tensor) ? `found in ${where.get(tensor)}` : 'absent from every shard'}`);
    }
  }
}

async function weightFileNames(source: ModelSource, explicit?: string): Promise<{ files: string[]; weightMap?: Record<string, string> }> {
  if (explicit && !explicit.endsWith('.index.json')) return { files: [explicit] };
  const indexName = explicit ?? 'model.safetensors.index.json';
  const index = await readJson(source, indexName, !!explicit);
  if (index) {
    const map = index.weight_map;
    if (typeof map !== 'object' || map === null) throw new ConfigError(indexName, 'weight_map', 'expected an object {tensor: shard file}');
    const weightMap = map as Record<string, string>;
    return { files: [...new Set(Object.values(weightMap))].sort(), weightMap };
  }
  if ((await source.stat('model.safetensors')) === null) {
    throw new ModelSourceError('model.safetensors', `missing from ${source.id} (and no model.safetensors.index.json); GGUF files need an explicit weights: "x.gguf"`);
  }
  return { files: ['model.safetensors'] };
}

/** Assemble a LlamaWeights from a tensor stream whose names/shapes were already checked. */
export async function collectWeights(config: LlamaConfig, tensors: AsyncIterable<LoadedTensor>): Promise<LlamaWeights> {
  const byName = new Map<string, Float32Array>();
  for await (const t of tensors) byName.set(t.name, t.data);
  const get = (n: string): Float32Array => {
    const d = byName.get(n);
    if (!d) throw new WeightsFormatError('(weights)', n, 'missing tensor');
    return d;
  };
  const layers: LayerWeights[] = [];
  for (let l = 0; l < config.numLayers; l++) {
    const names = layerTensorNames(l);
    layers.push(Object.fromEntries(Object.entries(names).map(([k, n]) => [k, get(n)])) as unknown as LayerWeights);
  }
  return {
    embed: get('model.embed_tokens.weight'),
    layers,
    finalNorm: get('model.norm.weight'),
    lmHead: config.tieWordEmbeddings ? null : get('lm_head.weight'),
  };
}

/** All weights as f32 in HF layout (what CpuLlama runs on). Holds the whole model in memory. */
export async function loadWeightsF32(model: OpenedModel): Promise<LlamaWeights> {
  return collectWeights(model.config, model.tensors());
}
