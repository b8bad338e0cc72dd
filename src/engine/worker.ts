// The engine worker (a module Web Worker, exposed through comlink; API in worker-types.ts):
// loads the draft onto WebGPU or, failing that, the CPU reference; talks to the gateway;
// runs the speculative controller (or the target-only baseline) and streams tokens with
// their provenance and per-round timings back to the UI thread.

import * as Comlink from 'comlink';
import type {
  CacheEntry, DraftInfo, DuetWorkerApi, EngineCheckResult, EngineCheckSpec, GatewayInfo, GatewayOptions, LoadOptions,
  LoadProgress, RunEvent, RunRequest, UiError, WorkerNotice,
} from './worker-types.ts';
import type { CausalLM } from './model.ts';
import { CpuLlama } from './reference.ts';
import { FolderSource, UrlSource, openModel, loadWeightsF32, type ModelSource } from './loader/index.ts';
import { requestDevice, WebGPUUnavailableError } from '../kernels/gpu.ts';

/** Errors cross comlink as plain Errors; the message carries the UiError as JSON. */
function fail(code: UiError['code'], message: string, hint: string): never {
  throw new Error(JSON.stringify({ code, message, hint } satisfies UiError));
}

function errorText(err: unknown): string {
  return err instanceof Error ? `${err.name && err.name !== 'Error' ? `${err.name}: ` : ''}${err.message}` : String(err);
}

interface Draft {
  model: CausalLM;
  info: DraftInfo;
}

let draft: Draft | null = null;

function sourceOf(opts: LoadOptions): { source: ModelSource; name: string } {
  const s = opts.source;
  if (s.kind === 'bundled') return { source: new UrlSource(new URL('/models/tiny-draft/', self.location.origin).href), name: 'tiny-draft' };
  if (s.kind === 'url') {
    let url: URL;
    try {
      url = new URL(s.base, self.location.origin);
    } catch {
      fail('load-failed', `"${s.base}" is not a URL.`, 'Enter an http(s) URL of a model folder.');
    }
    return { source: new UrlSource(url.href), name: url.pathname.split('/').filter(Boolean).pop() ?? url.host };
  }
  const src = new FolderSource(s.files);
  return { source: src, name: src.id.replace(/^folder:/, '') };
}

const api: DuetWorkerApi = {
  async loadDraft(opts: LoadOptions, onProgress: (p: LoadProgress) => void): Promise<DraftInfo> {
    const t0 = performance.now();
    draft?.model.dispose();
    draft = null;
    const { source, name } = sourceOf(opts);
    let opened;
    try {
      opened = await openModel(source, {
        onProgress: (p) => onProgress({
          phase: 'download',
          fraction: Number.isFinite(p.totalBytes) && p.totalBytes > 0 ? p.loadedBytes / p.totalBytes : null,
          detail: `${p.file} · ${(p.loadedBytes / 2 ** 20).toFixed(1)} MiB${Number.isFinite(p.totalBytes) ? ` of ${(p.totalBytes / 2 ** 20).toFixed(1)} MiB` : ''}`,
        }),
      });
    } catch (err) {
      fail('load-failed', `Could not open the draft model "${name}": ${errorText(err)}`, 'Check the model source (config.json, tokenizer.json and *.safetensors are needed) and retry.');
    }
    const weights = await loadWeightsF32(opened);
    await opened.close();
    let fallbackReason: string | null = null;
    try {
      await requestDevice();
      fallbackReason = 'The WebGPU engine is not wired in yet.';
    } catch (err) {
      fallbackReason = err instanceof WebGPUUnavailableError ? err.message : `WebGPU failed: ${errorText(err)}.`;
    }
    const model = new CpuLlama(opened.config, weights);
    const params = weights.embed.length + weights.layers.reduce((a, l) => a + Object.values(l).reduce((b, t: Float32Array) => b + t.length, 0), 0);
    const info: DraftInfo = {
      name, backend: 'cpu', fallbackReason, adapter: null, fromCache: false, loadMs: performance.now() - t0,
      params, vocabSize: opened.config.vocabSize, tokenizerHash: '', hasChatTemplate: false,
    };
    draft = { model, info };
    return info;
  },

  async connect(opts: GatewayOptions, onNotice: (n: WorkerNotice) => void): Promise<GatewayInfo> {
    void opts;
    void onNotice;
    fail('gateway-unreachable', 'The gateway client is not wired in yet.', 'Wait for the integration.');
  },

  async run(req: RunRequest, onEvent: (e: RunEvent) => void): Promise<void> {
    void onEvent;
    if (!draft) fail('not-ready', 'No draft model is loaded.', 'Load one in the Models view.');
    fail('not-ready', `run ${req.runId}: the speculative controller is not wired in yet.`, '');
  },

  async stop(runId: string): Promise<void> {
    void runId;
  },

  async listCache(): Promise<CacheEntry[]> {
    return [];
  },

  async deleteCache(key: string): Promise<void> {
    void key;
  },

  async engineCheck(spec: EngineCheckSpec): Promise<EngineCheckResult> {
    void spec;
    fail('no-webgpu', 'The WebGPU engine is not wired in yet.', '');
  },
};

Comlink.expose(api);
