// The library's worker (a module Web Worker): exposes DuetWorkerApi through comlink. Vite
// bundles it from `new Worker(new URL('./worker/entry.ts', import.meta.url))` in
// src/lib/engine.ts; an app that makes its own Worker imports 'duet/worker' in it instead.
// All state lives in the one WorkerHost made here and is passed to each job explicitly.

import * as Comlink from 'comlink';
import type { CacheEntry, DraftInfo, DuetNotice, GatewayInfo, GatewayOptions, LoadProgress } from '../types.ts';
import type { DuetWorkerApi, EngineCheckResult, EngineCheckSpec, LoadRequest, RunEvent, RunRequest } from './protocol.ts';
import { createEngine } from '../../engine/gpu/index.ts';
import { randomWeights } from '../../engine/weights.ts';
import { syntheticConfig } from '../../engine/config.ts';
import { DraftSlot, openWeightsCache, startGpu } from './draft.ts';
import { closeStandby, probeGateway, warmLink, type Gateway } from './gateway.ts';
import { runGeneration } from './run.ts';
import { fail, toErrorInfo } from './errors.ts';

class WorkerHost implements DuetWorkerApi {
  private readonly cache = openWeightsCache();
  private readonly slot = new DraftSlot(this.cache);
  private gateway: Gateway | null = null;
  private readonly runs = new Map<string, AbortController>();

  loadDraft(req: LoadRequest, onProgress: (p: LoadProgress) => void, onNotice: (n: DuetNotice) => void): Promise<DraftInfo> {
    return this.slot.load(req, onProgress, onNotice);
  }

  async connect(opts: GatewayOptions, onNotice: (n: DuetNotice) => void): Promise<GatewayInfo> {
    const d = this.slot.draft;
    if (!d) fail('not-ready', 'Load a draft model before connecting.', 'The draft\'s tokenizer is checked against the target\'s on connect.');
    const old = this.gateway;
    this.gateway = null;
    void closeStandby(old);
    const g = await probeGateway(opts, d.info.tokenizerHash, onNotice);
    this.gateway = g;
    // a stream pace measured on another gateway says nothing of this one's
    if (g.wsUrl !== old?.wsUrl && d.prior?.streamMs !== undefined) d.prior = { ...d.prior, streamMs: undefined };
    // the first chat message then finds a link connected and greeted
    void warmLink(g, d.info.tokenizerHash, 'speculative', 0);
    return g.info;
  }

  async run(req: RunRequest, onEvent: (e: RunEvent) => void): Promise<void> {
    const d = this.slot.draft;
    const g = this.gateway;
    const abort = new AbortController();
    this.runs.set(req.runId, abort);
    try {
      if (!d) fail('not-ready', 'No draft model is loaded.', 'Load one in the Models view.');
      if (!g) fail('not-ready', 'Not connected to a gateway.', 'Connect in the Models view.');
      await runGeneration(req.mode, d, g, req, abort.signal, onEvent);
    } catch (err) {
      onEvent({ kind: 'error', runId: req.runId, error: toErrorInfo(err, g?.wsUrl ?? '(none)') });
    } finally {
      this.runs.delete(req.runId);
    }
  }

  async stop(runId: string): Promise<void> {
    this.runs.get(runId)?.abort();
  }

  async listCache(): Promise<CacheEntry[]> {
    if (!this.cache) return [];
    return (await this.cache.list()).map((e) => ({ key: e.key, name: e.name, format: e.format, byteLength: e.byteLength, savedAt: e.savedAt }));
  }

  async deleteCache(key: string): Promise<void> {
    await this.cache?.delete(key);
  }

  async simulateDeviceLoss(): Promise<boolean> {
    return this.slot.simulateDeviceLoss();
  }

  async engineCheck(spec: EngineCheckSpec): Promise<EngineCheckResult> {
    const gpu = await startGpu();
    if (!('ctx' in gpu)) fail('no-webgpu', gpu.error, 'Run Chromium with WebGPU enabled.');
    const config = syntheticConfig('tiny', spec.config);
    // f32 weights and an f32 KV cache: the comparison with the f32 CPU reference then
    // measures the engine's arithmetic only.
    const engine = await createEngine(gpu.ctx, config, randomWeights(config, spec.seed), { format: 'f32', kvFormat: 'f32', maxContext: 64 });
    try {
      const logits = await engine.forward(spec.tokens, 0);
      return { adapter: gpu.ctx.adapterName, positions: spec.tokens.length, vocabSize: config.vocabSize, logits: logits.slice() };
    } finally {
      engine.dispose();
      gpu.ctx.device.destroy();
    }
  }
}

Comlink.expose(new WorkerHost());
