// The engine worker (a module Web Worker, exposed through comlink; API in worker-types.ts):
// loads the draft onto WebGPU or, failing that, the CPU reference; talks to the gateway
// through the protocol client (one RemoteTarget per run); runs the speculative controller
// (or the target-only baseline) and streams tokens with their provenance, live stats and
// per-round timings back to the UI thread.

import * as Comlink from 'comlink';
import type {
  CacheEntry, DraftInfo, DuetWorkerApi, EngineCheckResult, EngineCheckSpec, GatewayInfo, GatewayOptions, LoadOptions,
  LoadProgress, Provenance, RoundTiming, RunEvent, RunRequest, RunStats, TokenPiece, UiError, UiErrorCode, WorkerNotice,
} from './worker-types.ts';
import type { CausalLM } from './model.ts';
import type { SamplingParams, SparseDist } from './sampling.ts';
import type { TargetLink, Verdict } from './target-link.ts';
import { CpuLlama } from './reference.ts';
import { FolderSource, UrlSource, openModel, collectWeights, type ModelSource, type OpenedModel } from './loader/index.ts';
import { WeightsCache, cacheKey, idbStore, type CachedTensor, type Prepared } from './cache.ts';
import { PackedWeightsError, createEngine, type StreamItem } from './gpu/index.ts';
import type { WeightFormat } from './quantize.ts';
import { f32Tensor, isPackedEntry, prepareWeights, streamItem } from './prepared.ts';
import { expectedShapes, randomWeights } from './weights.ts';
import { syntheticConfig } from './config.ts';
import { Tokenizer, tokenizerHash } from './tokenizer.ts';
import { speculate, type Provenance as SpecProvenance } from './speculative.ts';
import { RemoteTarget, type ClientEvent } from '../protocol/client.ts';
import { ProtocolError } from '../protocol/errors.ts';
import { requestDevice, DeviceLostError, WebGPUUnavailableError, type GpuContext } from '../kernels/gpu.ts';

const now = (): number => performance.now();

// ---- errors: UiError crosses comlink as the JSON message of a plain Error ----

class UiFailure extends Error {
  constructor(readonly ui: UiError) {
    super(JSON.stringify(ui));
  }
}

function fail(code: UiErrorCode, message: string, hint: string): never {
  throw new UiFailure({ code, message, hint });
}

function errorText(err: unknown): string {
  return err instanceof Error ? `${err.name && err.name !== 'Error' ? `${err.name}: ` : ''}${err.message}` : String(err);
}

/** Map anything thrown by the client, the controller or the engine to what the UI shows. */
function toUiError(err: unknown, gatewayUrl: string): UiError {
  if (err instanceof UiFailure) return err.ui;
  if (err instanceof ProtocolError) {
    switch (err.code) {
      case 'TOKENIZER_MISMATCH':
        return { code: 'tokenizer-mismatch', message: `The gateway's target model uses a different tokenizer than the draft (${err.message}).`, hint: 'Choose a draft made for the same tokenizer as the target (Models view), or start the gateway with a matching target.' };
      case 'UNAUTHORIZED':
        return { code: 'auth-refused', message: `The gateway at ${gatewayUrl} refused the access token.`, hint: 'Enter the token the gateway was started with (--token) in the Models view and connect again.' };
      case 'ORIGIN_REFUSED':
        return { code: 'auth-refused', message: `The gateway at ${gatewayUrl} does not accept connections from this page's origin (${self.location.origin}).`, hint: 'Start the gateway with --allow-origin for this origin, or open the app from the gateway itself.' };
      case 'CONNECTION_LOST':
      case 'TIMEOUT':
      case 'SHUTTING_DOWN':
        return { code: 'gateway-unreachable', message: `Lost the gateway at ${gatewayUrl}: ${err.message}`, hint: 'Check that `duet serve` is running, then retry.' };
      default:
        return { code: 'internal', message: `The gateway answered ${err.code}: ${err.message}`, hint: 'Retry; if it keeps happening, see the gateway log.' };
    }
  }
  if (err instanceof Error && err.name === 'Disconnected') {
    return { code: 'gateway-unreachable', message: `Cannot connect to the gateway at ${gatewayUrl}.`, hint: 'Check that `duet serve` is running and the URL is right (Models view), then retry.' };
  }
  return { code: 'internal', message: errorText(err), hint: 'Retry; if it keeps happening, reload the page.' };
}

// ---- draft ----

interface Draft {
  model: CausalLM;
  tokenizer: Tokenizer;
  eosTokenIds: number[];
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
      fail('load-failed', `"${s.base}" is not a URL.`, 'Enter the http(s) URL of a model folder.');
    }
    return { source: new UrlSource(url.href), name: url.pathname.split('/').filter(Boolean).pop() ?? url.host };
  }
  const src = new FolderSource(s.files);
  return { source: src, name: src.id.replace(/^folder:/, '') };
}

const mib = (n: number): string => `${(n / 2 ** 20).toFixed(2)} MiB`;
const fractionOf = (done: number, total: number): number | null => (Number.isFinite(total) && total > 0 ? Math.min(1, done / total) : null);

let cache: WeightsCache | null | undefined;
/** The IndexedDB cache, or null where IndexedDB is missing or blocked (loading works uncached). */
function weightsCache(): WeightsCache | null {
  if (cache === undefined) cache = typeof indexedDB === 'undefined' ? null : new WeightsCache(idbStore());
  return cache;
}

async function startGpu(): Promise<{ ctx: GpuContext } | { error: string }> {
  if (!('gpu' in navigator) || !navigator.gpu) return { error: 'This browser has no WebGPU (navigator.gpu is missing).' };
  try {
    return { ctx: await requestDevice() };
  } catch (err) {
    return { error: err instanceof WebGPUUnavailableError ? err.message : `WebGPU failed to start: ${errorText(err)}.` };
  }
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

let liveCtx: GpuContext | null = null;
let draftNotice: ((n: WorkerNotice) => void) | null = null;

/** Device loss: the draft is gone; tell the UI, which offers to reload it (GPU again or CPU). */
function watchDevice(ctx: GpuContext): void {
  liveCtx = ctx;
  // Loss itself is reported once, below; other uncaptured GPU errors make the draft suspect.
  ctx.onError = (err) => {
    if (err instanceof DeviceLostError) return;
    draftNotice?.({ kind: 'draft-lost', error: { code: 'device-lost', message: `The GPU reported an error: ${errorText(err)}`, hint: 'Reload the draft; if it happens again, pick the CPU or a smaller format.' } });
  };
  void ctx.lost.then((info) => {
    if (liveCtx !== ctx) return; // destroyed on purpose (a new draft replaced it)
    liveCtx = null;
    draft = null;
    draftNotice?.({ kind: 'draft-lost', error: { code: 'device-lost', message: `The GPU device was lost (${info.reason}${info.message ? `: ${info.message}` : ''}).`, hint: 'Reload the draft: it comes back from the cache in a moment, on a new device or on the CPU.' } });
  });
}

function disposeDraft(): void {
  draft?.model.dispose();
  draft = null;
  const ctx = liveCtx;
  liveCtx = null;
  ctx?.device.destroy();
}

// ---- gateway ----

interface Gateway {
  url: string;
  token: string;
  info: GatewayInfo;
  onNotice: (n: WorkerNotice) => void;
}

let gateway: Gateway | null = null;

/** '' → this page's gateway; http(s)://host → ws(s)://host/ws; a bare ws(s)://host/ gets /ws. */
function wsUrlOf(url: string): string {
  let u: URL;
  try {
    u = new URL(url || '/ws', self.location.origin);
  } catch {
    fail('gateway-unreachable', `"${url}" is not a URL.`, 'Enter the gateway as ws://host:port or http://host:port (Models view).');
  }
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') fail('gateway-unreachable', `"${url}" is not a ws:// or http:// URL.`, 'Enter the gateway as ws://host:port (Models view).');
  if (u.pathname === '/' || u.pathname === '') u.pathname = '/ws';
  return u.href;
}

function clientEventToNotice(e: ClientEvent, url: string): WorkerNotice | null {
  switch (e.type) {
    case 'connected':
      return { kind: 'gateway', state: 'connected', detail: '' };
    case 'resumed':
      return { kind: 'gateway', state: 'connected', detail: `resumed the session after a reconnect (${e.transcriptLength} tokens replayed)` };
    case 'reconnecting':
      return { kind: 'gateway', state: 'reconnecting', detail: `${url}: attempt ${e.attempt}, next in ${Math.round(e.delayMs)} ms` };
    default:
      return null;
  }
}

// ---- runs ----

/** Per-round timing, measured around each verify on the draft's side. */
class TimedLink implements TargetLink {
  private mark: number;
  drafted = 0;
  accepted = 0;
  rounds = 0;

  constructor(readonly inner: RemoteTarget, private readonly t0: number, private readonly onRound: (r: RoundTiming) => void) {
    this.mark = t0;
  }

  get targetPasses(): number {
    return this.inner.targetPasses;
  }

  async open(promptTokens: number[], sampling: SamplingParams): Promise<{ firstToken: number }> {
    const r = await this.inner.open(promptTokens, sampling);
    this.mark = now();
    return r;
  }

  async verify(draftTokens: number[], draftDists?: SparseDist[]): Promise<Verdict> {
    const sent = now();
    const v = await this.inner.verify(draftTokens, draftDists);
    const back = now();
    this.drafted += draftTokens.length;
    this.accepted += v.accepted;
    this.rounds++;
    // Drafting overlapped with the previous round (pipelining) does not count: only the
    // time between the last verdict and this send is on the critical path.
    this.onRound({ k: draftTokens.length, accepted: v.accepted, draftMs: sent - this.mark, networkMs: Math.max(0, back - sent - v.verifyMs), verifyMs: v.verifyMs, startMs: this.mark - this.t0 });
    this.mark = back;
    return v;
  }

  generate(n: number, onToken?: (token: number) => void): Promise<number[]> {
    return this.inner.generate(n, onToken);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

interface ActiveRun {
  abort: AbortController;
  link: RemoteTarget;
}

const runs = new Map<string, ActiveRun>();

const PROVENANCE: Record<SpecProvenance, Provenance> = { first: 'target', draft: 'draft', correction: 'correction', bonus: 'bonus' };

function promptTokens(d: Draft, req: RunRequest): number[] {
  const tok = d.tokenizer;
  let ids: number[];
  if (tok.hasChatTemplate && !req.prompt) ids = tok.encodeChat(req.messages);
  else {
    // No template: a plain continuation of the conversation's text.
    const text = req.prompt ?? req.messages.map((m) => m.content).join('\n');
    ids = tok.encode(text, { addSpecialTokens: true });
  }
  if (ids.length === 0) fail('not-ready', 'The prompt is empty after tokenization.', 'Type some text.');
  return ids;
}

/** Collects token pieces and posts them in batches (one message per macrotask, not per token). */
class Streamer {
  private pieces: TokenPiece[] = [];
  private scheduled = false;
  readonly t0 = now();
  firstAt: number | null = null;
  tokens = 0;

  constructor(
    private readonly runId: string,
    private readonly onEvent: (e: RunEvent) => void,
    private readonly stats: () => RunStats,
  ) {}

  /** p.id < 0 marks trailing text that is not a token (an incomplete character at the end). */
  push(p: TokenPiece): void {
    if (p.id >= 0) {
      this.firstAt ??= now();
      this.tokens++;
    }
    this.pieces.push(p);
    if (!this.scheduled) {
      this.scheduled = true;
      setTimeout(() => this.flush(), 0);
    }
  }

  flush(): void {
    this.scheduled = false;
    if (this.pieces.length === 0) return;
    const pieces = this.pieces;
    this.pieces = [];
    this.onEvent({ kind: 'tokens', runId: this.runId, pieces, stats: this.stats() });
  }

  base(targetPasses: number): Omit<RunStats, 'acceptanceRate' | 'rounds'> {
    const wallMs = now() - this.t0;
    return {
      tokens: this.tokens,
      ttftMs: this.firstAt === null ? null : this.firstAt - this.t0,
      wallMs,
      tokPerSec: wallMs > 0 ? (this.tokens * 1000) / wallMs : 0,
      targetPasses,
      tokensPerTargetPass: targetPasses > 0 ? this.tokens / targetPasses : 0,
    };
  }
}

async function runSpeculative(d: Draft, g: Gateway, req: RunRequest, onEvent: (e: RunEvent) => void): Promise<void> {
  const s = req.settings;
  const params: SamplingParams = { temperature: s.temperature, topK: s.topK, topP: s.topP, seed: s.seed };
  const prompt = promptTokens(d, req);
  const url = wsUrlOf(g.url);
  const remote = new RemoteTarget({
    url, tokenizerHash: d.info.tokenizerHash, token: g.token || undefined, mode: 'speculative', rttMs: s.rttMs,
    reconnect: { attempts: 40, baseDelayMs: 100, maxDelayMs: 1500 }, clientName: 'duet web',
    onEvent: (e) => {
      const n = clientEventToNotice(e, url);
      if (n) g.onNotice(n);
      if (e.type === 'reconnecting') onEvent({ kind: 'status', runId: req.runId, text: 'reconnecting to the gateway…' });
    },
  });
  const abort = new AbortController();
  runs.set(req.runId, { abort, link: remote });
  let link!: TimedLink;
  const stream: Streamer = new Streamer(req.runId, onEvent, (): RunStats => ({
    ...stream.base(link.targetPasses),
    acceptanceRate: link.drafted > 0 ? link.accepted / link.drafted : null,
    rounds: link.rounds,
  }));
  link = new TimedLink(remote, stream.t0, (round) => onEvent({ kind: 'round', runId: req.runId, round }));
  const decoder = d.tokenizer.streamDecoder({ skipSpecialTokens: true });
  try {
    const result = await speculate(d.model, link, prompt, {
      params, maxTokens: s.maxTokens, k: s.k, adaptive: s.adaptive, kMax: s.k, pipeline: true,
      eosTokenIds: d.eosTokenIds, signal: abort.signal,
      onToken: (e) => stream.push({ id: e.token, text: decoder.push(e.token), prov: PROVENANCE[e.provenance] }),
    });
    const tail = decoder.flush();
    if (tail) stream.push({ id: -1, text: tail, prov: 'target' });
    stream.flush();
    const reason = result.stopReason === 'abort' ? 'stopped' : result.stopReason === 'eos' ? 'eos' : 'max-tokens';
    onEvent({ kind: 'done', runId: req.runId, reason, stats: { ...stream.base(link.targetPasses), acceptanceRate: link.drafted > 0 ? link.accepted / link.drafted : null, rounds: link.rounds } });
  } finally {
    runs.delete(req.runId);
    await remote.close();
  }
}

async function runBaseline(d: Draft, g: Gateway, req: RunRequest, onEvent: (e: RunEvent) => void): Promise<void> {
  const s = req.settings;
  const params: SamplingParams = { temperature: s.temperature, topK: s.topK, topP: s.topP, seed: s.seed };
  const prompt = promptTokens(d, req);
  const url = wsUrlOf(g.url);
  const remote = new RemoteTarget({
    url, tokenizerHash: d.info.tokenizerHash, token: g.token || undefined, mode: 'baseline', rttMs: s.rttMs,
    reconnect: { attempts: 40, baseDelayMs: 100, maxDelayMs: 1500 }, clientName: 'duet web (baseline)',
    onEvent: (e) => {
      const n = clientEventToNotice(e, url);
      if (n) g.onNotice(n);
    },
  });
  const abort = new AbortController();
  runs.set(req.runId, { abort, link: remote });
  const stream: Streamer = new Streamer(req.runId, onEvent, (): RunStats => ({ ...stream.base(remote.targetPasses), acceptanceRate: null, rounds: 0 }));
  const decoder = d.tokenizer.streamDecoder({ skipSpecialTokens: true });
  const eos = new Set(d.eosTokenIds);
  let reason: 'eos' | 'max-tokens' | 'stopped' = 'max-tokens';
  // Tokens after EOS or after Stop are not shown; closing the link ends the stream early.
  const take = (id: number): void => {
    if (reason !== 'max-tokens' || abort.signal.aborted) return;
    stream.push({ id, text: decoder.push(id), prov: 'target' });
    if (eos.has(id)) {
      reason = 'eos';
      void remote.close();
    }
  };
  abort.signal.addEventListener('abort', () => {
    if (reason === 'max-tokens') reason = 'stopped';
    void remote.close();
  });
  try {
    const { firstToken } = await remote.open(prompt, params);
    take(firstToken);
    if (s.maxTokens > 1 && reason === 'max-tokens') await remote.generate(s.maxTokens - 1, take);
  } catch (err) {
    // Closing the link on EOS or Stop fails the pending generate: that is the normal end.
    if (reason === 'max-tokens') throw err;
  } finally {
    runs.delete(req.runId);
    await remote.close();
  }
  const tail = decoder.flush();
  if (tail) stream.push({ id: -1, text: tail, prov: 'target' });
  stream.flush();
  onEvent({ kind: 'done', runId: req.runId, reason, stats: { ...stream.base(remote.targetPasses), acceptanceRate: null, rounds: 0 } });
}

// ---- the API ----

/** Elements of every tensor the forward uses (the draft's parameter count). */
const paramCount = (c: OpenedModel['config']): number => [...expectedShapes(c).values()].reduce((a, sh) => a + sh.reduce((x, y) => x * y, 1), 0);

async function loadDraftOnce(opts: LoadOptions, onProgress: (p: LoadProgress) => void, mayRetry: boolean): Promise<DraftInfo> {
  const t0 = now();
  disposeDraft();
  const { source, name } = sourceOf(opts);
  const format: WeightFormat = opts.quant === 'q4' ? 'q4' : opts.quant === 'q8' ? 'q8' : 'f32';
  const gpu = opts.forceCpu ? { error: 'CPU chosen in the settings.' } : await startGpu();
  // On WebGPU the cache holds the matrices packed in the engine's format, so a hit skips the
  // download and the packing; the CPU reference runs f32, so it caches the decoded tensors.
  const cacheFormat: WeightFormat = 'ctx' in gpu ? format : 'f32';
  let opened: OpenedModel;
  let prepared: Prepared;
  let key: string;
  try {
    opened = await openModel(source, { onProgress: (p) => onProgress({ phase: 'download', fraction: fractionOf(p.loadedBytes, p.totalBytes), detail: `${p.file} · ${mib(p.loadedBytes)}${Number.isFinite(p.totalBytes) ? ` of ${mib(p.totalBytes)}` : ''}` }) });
    key = await cacheKey({ sourceId: source.id, configJson: opened.configJson, files: opened.weightFiles }, cacheFormat);
    prepared = await prepareWeights(weightsCache(), key, name, cacheFormat, () => opened.tensors(), paramCount(opened.config) * 4, onProgress);
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
  let model: CausalLM;
  let fallbackReason: string | null = null;
  let adapter: string | null = null;
  let gpuBytes = 0;
  if ('ctx' in gpu) {
    try {
      const engine = await createEngine(gpu.ctx, config, uploadStream(prepared.tensors, format, onProgress), { format, maxContext });
      watchDevice(gpu.ctx);
      model = engine;
      adapter = gpu.ctx.adapterName;
      gpuBytes = engine.bufferBytes;
    } catch (err) {
      gpu.ctx.device.destroy();
      // A cached entry that no longer fits the engine (layout changed without a version
      // bump, corrupted storage): drop it and prepare once more from the source.
      if (err instanceof PackedWeightsError && prepared.fromCache && mayRetry) {
        await weightsCache()?.delete(key);
        return loadDraftOnce(opts, onProgress, false);
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
      prepared = await prepareWeights(weightsCache(), f32Key, name, 'f32', () => again.tensors(), paramCount(config) * 4);
      await again.close();
    } catch (err) {
      fail('load-failed', `${fallbackReason} Loading the f32 weights for the CPU fallback failed too: ${errorText(err)}`, 'Check the model source and retry.');
    }
  }
  model ??= new CpuLlama(config, await collectWeights(config, listStream(prepared.tensors)), maxContext);
  const eos = opened.generationConfig?.eosTokenIds ?? config.eosTokenIds;
  const info: DraftInfo = {
    name, backend: model instanceof CpuLlama ? 'cpu' : 'webgpu', format: model instanceof CpuLlama ? 'f32' : format, gpuBytes, cacheNotice: prepared.notice,
    fallbackReason, adapter, fromCache: prepared.fromCache, loadMs: now() - t0,
    params: paramCount(config), vocabSize: config.vocabSize, tokenizerHash: await tokenizerHash(opened.tokenizerJson), hasChatTemplate: tokenizer.hasChatTemplate,
  };
  draft = { model, tokenizer, eosTokenIds: [...eos, ...(tokenizer.eosId !== null && !eos.includes(tokenizer.eosId) ? [tokenizer.eosId] : [])], info };
  return info;
}

const api: DuetWorkerApi = {
  loadDraft(opts: LoadOptions, onProgress: (p: LoadProgress) => void): Promise<DraftInfo> {
    return loadDraftOnce(opts, onProgress, true);
  },

  async connect(opts: GatewayOptions, onNotice: (n: WorkerNotice) => void): Promise<GatewayInfo> {
    draftNotice = onNotice;
    if (!draft) fail('not-ready', 'Load a draft model before connecting.', 'The draft\'s tokenizer is checked against the target\'s on connect.');
    const url = wsUrlOf(opts.url);
    const probe = new RemoteTarget({ url, tokenizerHash: draft.info.tokenizerHash, token: opts.token || undefined, reconnect: false, clientName: 'duet web (probe)', timeoutMs: 15_000 });
    try {
      const info = await probe.connect();
      const out: GatewayInfo = { url, backend: info.backend, model: info.model, device: info.device, tokenizerHash: info.tokenizerHash, vocabSize: info.vocabSize, maxContext: info.maxContext };
      gateway = { url: opts.url, token: opts.token, info: out, onNotice };
      return out;
    } catch (err) {
      gateway = null;
      throw new UiFailure(toUiError(err, url));
    } finally {
      await probe.close();
    }
  },

  async run(req: RunRequest, onEvent: (e: RunEvent) => void): Promise<void> {
    const d = draft;
    const g = gateway;
    try {
      if (!d) fail('not-ready', 'No draft model is loaded.', 'Load one in the Models view.');
      if (!g) fail('not-ready', 'Not connected to a gateway.', 'Connect in the Models view.');
      if (req.mode === 'baseline') await runBaseline(d, g, req, onEvent);
      else await runSpeculative(d, g, req, onEvent);
    } catch (err) {
      onEvent({ kind: 'error', runId: req.runId, error: toUiError(err, g ? wsUrlOf(g.url) : '(none)') });
    }
  },

  async stop(runId: string): Promise<void> {
    runs.get(runId)?.abort.abort();
  },

  async listCache(): Promise<CacheEntry[]> {
    const c = weightsCache();
    if (!c) return [];
    return (await c.list()).map((e) => ({ key: e.key, name: e.name, format: e.format, byteLength: e.byteLength, savedAt: e.savedAt }));
  },

  async deleteCache(key: string): Promise<void> {
    await weightsCache()?.delete(key);
  },

  async simulateDeviceLoss(): Promise<boolean> {
    if (!liveCtx) return false;
    liveCtx.device.destroy(); // liveCtx stays set, so watchDevice treats it as a real loss
    return true;
  },

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
  },
};

Comlink.expose(api);
