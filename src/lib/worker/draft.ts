// The worker's draft: loads a model (download → prepare/quantize → IndexedDB cache → GPU
// upload) onto the WebGPU engine or, where WebGPU is missing or fails, the CPU reference;
// watches the GPU device and reports its loss. One DraftSlot per worker holds the state.

import type { DraftInfo, DuetNotice, LoadProgress } from '../types.ts';
import type { LoadRequest } from './protocol.ts';
import type { CausalLM } from '../../engine/model.ts';
import type { DraftPrior } from '../../engine/speculative.ts';
import { CpuBatchLlama, CpuBatchSession } from '../../engine/cpu-batch.ts';
import { FolderSource, UrlSource, openModel, collectWeights, resolveWeightFormat, type ModelSource, type OpenedModel } from '../../engine/loader/index.ts';
import { WeightsCache, cacheKey, idbStore, type CachedTensor, type Prepared } from '../../engine/cache.ts';
import { PackedWeightsError, createEngine, type StreamItem } from '../../engine/gpu/index.ts';
import type { WeightFormat } from '../../engine/quantize.ts';
import { f32Tensor, isPackedEntry, prepareWeights, streamItem } from '../../engine/prepared.ts';
import { expectedShapes } from '../../engine/weights.ts';
import { Tokenizer, tokenizerHash } from '../../engine/tokenizer.ts';
import { requestDevice, DeviceLostError, WebGPUUnavailableError, type GpuContext } from '../../kernels/gpu.ts';
import { errorText, fail } from './errors.ts';

export interface Draft {
  model: CausalLM;
  tokenizer: Tokenizer;
  eosTokenIds: number[];
  info: DraftInfo;
  /** The draft's costs as the last adaptive generation measured them (speculate's `prior`). */
  prior?: DraftPrior;
}

const now = (): number => performance.now();
const mib = (n: number): string => `${(n / 2 ** 20).toFixed(2)} MiB`;
const fractionOf = (done: number, total: number): number | null => (Number.isFinite(total) && total > 0 ? Math.min(1, done / total) : null);

/** Elements of every tensor the forward uses (the draft's parameter count). */
const paramCount = (c: OpenedModel['config']): number => [...expectedShapes(c).values()].reduce((a, sh) => a + sh.reduce((x, y) => x * y, 1), 0);

/** The IndexedDB cache, or null where IndexedDB is missing or blocked (loading works uncached). */
export function openWeightsCache(): WeightsCache | null {
  return typeof indexedDB === 'undefined' ? null : new WeightsCache(idbStore());
}

export async function startGpu(): Promise<{ ctx: GpuContext } | { error: string }> {
  if (!('gpu' in navigator) || !navigator.gpu) return { error: 'This browser has no WebGPU (navigator.gpu is missing).' };
  try {
    return { ctx: await requestDevice() };
  } catch (err) {
    return { error: err instanceof WebGPUUnavailableError ? err.message : `WebGPU failed to start: ${errorText(err)}.` };
  }
}

function sourceOf(req: LoadRequest): { source: ModelSource; name: string } {
  const s = req.source;
  if (s.kind === 'url') {
    let url: URL;
    try {
      url = new URL(s.base, self.location.origin);
    } catch {
      fail('load-failed', `"${s.base}" is not a URL.`, 'Enter the http(s) URL of a model folder.');
    }
    return { source: new UrlSource(url.href), name: url.pathname.split('/').filter(Boolean).pop() ?? url.host };
  }
  const src = new FolderSource(s.files);
  return { source: src, name: src.id.replace(/^folder:/, '') };
}

/** The prepared tensors as f32 for the CPU reference (only f32 entries reach it). */
async function* listStream(tensors: CachedTensor[]): AsyncIterable<{ name: string; shape: number[]; data: Float32Array }> {
  for (const t of tensors) yield f32Tensor(t);
}

/**
 * The prepared tensors as the engine's upload stream (pre-packed matrices go up as they
 * are; f32 ones are packed by the engine), reporting upload progress per tensor.
 */
async function* uploadStream(tensors: CachedTensor[], format: WeightFormat, onProgress: (p: LoadProgress) => void): AsyncIterable<StreamItem> {
  const total = tensors.reduce((a, t) => a + t.data.byteLength, 0);
  const packed = isPackedEntry(tensors);
  let done = 0;
  for (const t of tensors) {
    yield streamItem(t);
    done += t.data.byteLength;
    const fraction = done / total;
    if (format !== 'f32' && !packed) onProgress({ phase: 'quantize', fraction, detail: `${format}: packed ${mib(done)} of ${mib(total)} (f32)` });
    onProgress({ phase: 'upload', fraction, detail: `${mib(done)} of ${mib(total)} (${packed ? `pre-packed ${format}` : 'f32 source'})` });
  }
}

/** The loaded draft and its GPU device, if any; replaced as a whole by each load. */
export class DraftSlot {
  draft: Draft | null = null;
  private ctx: GpuContext | null = null;
  private onNotice: (n: DuetNotice) => void = () => undefined;

  constructor(private readonly cache: WeightsCache | null) {}

  load(req: LoadRequest, onProgress: (p: LoadProgress) => void, onNotice: (n: DuetNotice) => void): Promise<DraftInfo> {
    this.onNotice = onNotice;
    return this.loadOnce(req, onProgress, true);
  }

  dispose(): void {
    this.draft?.model.dispose();
    this.draft = null;
    const ctx = this.ctx;
    this.ctx = null;
    ctx?.device.destroy();
  }

  /** Tests: destroy the device as a driver reset would (the watcher then reports a real loss). */
  simulateDeviceLoss(): boolean {
    if (!this.ctx) return false;
    this.ctx.device.destroy();
    return true;
  }

  /** Device loss: the draft is gone; the app is told and offers a reload (GPU again or CPU). */
  private watchDevice(ctx: GpuContext): void {
    this.ctx = ctx;
    // Loss itself is reported once, below; other uncaptured GPU errors make the draft suspect.
    ctx.onError = (err) => {
      if (err instanceof DeviceLostError) return;
      this.onNotice({ kind: 'draft-lost', error: { code: 'device-lost', message: `The GPU reported an error: ${errorText(err)}`, hint: 'Reload the draft; if it happens again, pick the CPU or a smaller format.' } });
    };
    void ctx.lost.then((info) => {
      if (this.ctx !== ctx) return; // destroyed on purpose (a new draft replaced it)
      this.ctx = null;
      this.draft = null;
      this.onNotice({ kind: 'draft-lost', error: { code: 'device-lost', message: `The GPU device was lost (${info.reason}${info.message ? `: ${info.message}` : ''}).`, hint: 'Reload the draft: it comes back from the cache in a moment, on a new device or on the CPU.' } });
    });
  }

  private async loadOnce(req: LoadRequest, onProgress: (p: LoadProgress) => void, mayRetry: boolean): Promise<DraftInfo> {
    const t0 = now();
    this.dispose();
    const { source, name } = sourceOf(req);
    const gpu = req.forceCpu ? { error: 'CPU chosen in the settings.' } : await startGpu();
    let format: WeightFormat = 'f32';
    let cacheFormat: WeightFormat = 'f32';
    let opened: OpenedModel;
    let prepared: Prepared;
    let key: string;
    try {
      opened = await openModel(source, { onProgress: (p) => onProgress({ phase: 'download', fraction: fractionOf(p.loadedBytes, p.totalBytes), detail: `${p.file} · ${mib(p.loadedBytes)}${Number.isFinite(p.totalBytes) ? ` of ${mib(p.totalBytes)}` : ''}` }) });
      // 'auto' keeps a GGUF file's own precision (a 4-bit file q4, an 8-bit one q8), else f32.
      format = resolveWeightFormat(req.quant ?? 'none', opened);
      // On WebGPU the cache holds the matrices packed in the engine's format, so a hit skips the
      // download and the packing; the CPU reference runs f32, so it caches the decoded tensors.
      cacheFormat = 'ctx' in gpu ? format : 'f32';
      key = await cacheKey({ sourceId: source.id, configJson: opened.configJson, files: opened.weightFiles }, cacheFormat);
      prepared = await prepareWeights(this.cache, key, name, cacheFormat, () => opened.tensors(), paramCount(opened.config) * 4, onProgress);
      await opened.close();
    } catch (err) {
      if ('ctx' in gpu) gpu.ctx.device.destroy();
      fail('load-failed', `Could not load the draft model "${name}": ${errorText(err)}`, 'Check the model source (config.json, tokenizer.json and *.safetensors are needed) and retry.');
    }
    const cachedBytes = prepared.tensors.reduce((a, t) => a + t.data.byteLength, 0);
    if (prepared.fromCache) onProgress({ phase: 'download', fraction: 1, detail: `skipped: ${mib(cachedBytes)} (${cacheFormat}) from the browser cache` });
    onProgress({ phase: 'cache', fraction: 1, detail: prepared.fromCache ? `Loaded ${cacheFormat} weights from the browser cache (IndexedDB).` : prepared.notice ?? `Cached ${mib(cachedBytes)} (${cacheFormat}) for the next visit.` });
    if (!opened.tokenizerJson) fail('load-failed', `The draft model "${name}" has no tokenizer.json.`, 'Add the tokenizer.json of the model family to the folder.');
    let tokenizer: Tokenizer;
    try {
      tokenizer = new Tokenizer(opened.tokenizerJson, opened.tokenizerConfig);
    } catch (err) {
      fail('load-failed', `The draft's tokenizer does not load: ${errorText(err)}`, 'Check tokenizer.json and tokenizer_config.json.');
    }
    const config = opened.config;
    const maxContext = Math.min(config.maxPositionEmbeddings, 2048);
    let model: CausalLM | undefined;
    let fallbackReason: string | null = null;
    let adapter: string | null = null;
    let gpuBytes = 0;
    if ('ctx' in gpu) {
      try {
        const engine = await createEngine(gpu.ctx, config, uploadStream(prepared.tensors, format, onProgress), { format, maxContext });
        this.watchDevice(gpu.ctx);
        model = engine;
        adapter = gpu.ctx.adapterName;
        gpuBytes = engine.bufferBytes;
      } catch (err) {
        gpu.ctx.device.destroy();
        // A cached entry that no longer fits the engine (layout changed without a version
        // bump, corrupted storage): drop it and prepare once more from the source.
        if (err instanceof PackedWeightsError && prepared.fromCache && mayRetry) {
          await this.cache?.delete(key);
          return this.loadOnce(req, onProgress, false);
        }
        fallbackReason = `The WebGPU engine could not start: ${errorText(err)}.`;
      }
    } else fallbackReason = gpu.error;
    if (fallbackReason !== null && isPackedEntry(prepared.tensors)) {
      // The GPU engine failed after the packed weights were prepared: the CPU reference runs
      // f32, so read the source again (through the f32 cache entry) rather than dequantize.
      try {
        const again = await openModel(source);
        const f32Key = await cacheKey({ sourceId: source.id, configJson: again.configJson, files: again.weightFiles }, 'f32');
        prepared = await prepareWeights(this.cache, f32Key, name, 'f32', () => again.tensors(), paramCount(config) * 4);
        await again.close();
      } catch (err) {
        fail('load-failed', `${fallbackReason} Loading the f32 weights for the CPU fallback failed too: ${errorText(err)}`, 'Check the model source and retry.');
      }
    }
    // the CPU fallback is the batched engine (WebAssembly SIMD matmuls): measured in headless
    // Chromium on the tiny target's shape it decodes 1.6–19× faster than the CpuLlama reference
    model ??= new CpuBatchSession(new CpuBatchLlama(config, await collectWeights(config, listStream(prepared.tensors)), maxContext));
    const eos = opened.generationConfig?.eosTokenIds ?? config.eosTokenIds;
    const info: DraftInfo = {
      name, backend: model instanceof CpuBatchSession ? 'cpu' : 'webgpu', format: model instanceof CpuBatchSession ? 'f32' : format, gpuBytes, cacheNotice: prepared.notice,
      fallbackReason, adapter, fromCache: prepared.fromCache, loadMs: now() - t0,
      params: paramCount(config), vocabSize: config.vocabSize, tokenizerHash: await tokenizerHash(opened.tokenizerJson), hasChatTemplate: tokenizer.hasChatTemplate,
    };
    this.draft = { model, tokenizer, eosTokenIds: [...eos, ...(tokenizer.eosId !== null && !eos.includes(tokenizer.eosId) ? [tokenizer.eosId] : [])], info };
    return info;
  }
}
