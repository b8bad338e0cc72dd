// DuetEngine: the library's main-thread side. It owns the worker (the draft runs there),
// turns OpenAI-shaped chat completion requests into worker runs, and turns the worker's run
// events back into OpenAI-shaped completions and stream chunks, with duet's detail under the
// one extra field `duet`. Shaped after WebLLM's CreateWebWorkerMLCEngine / MLCEngine.

import * as Comlink from 'comlink';
import type {
  CacheEntry, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, CreateOptions, DraftInfo, DraftSource, DuetErrorInfo, DuetExtra, DuetNotice,
  FinishReason, GatewayInfo, GatewayOptions, LoadProgress, Quant, RoundTiming, RunStats,
} from './types.ts';
import type { DuetWorkerApi, EngineCheckResult, EngineCheckSpec, RunEvent, RunRequest, RunSettings, StopReason, WireDraftSource } from './worker/protocol.ts';
import { DuetError } from './errors.ts';
import { precheckGateway } from './worker/gateway.ts';

export interface CreateDuetOptions {
  /** The gateway to verify with; `create()` connects to it on first use. Default: the page's origin. */
  gateway?: GatewayOptions;
  /** A Worker you made that imports 'duet/worker' (default: the library starts its own). */
  worker?: Worker;
  /** The GPU device was lost, the gateway link dropped or came back, the worker failed. */
  onNotice?: (n: DuetNotice) => void;
}

export interface LoadOptions {
  /** Weight format of the draft on the GPU (default 'none' = f32). */
  quant?: Quant;
  /** 'auto' (default): WebGPU where it works, else the CPU reference; 'cpu': always the CPU. */
  device?: 'auto' | 'cpu';
  onProgress?: (p: LoadProgress) => void;
}

export interface Completions {
  create(req: ChatCompletionRequest & { stream: true }, opts?: CreateOptions): Promise<AsyncIterable<ChatCompletionChunk>>;
  create(req: ChatCompletionRequest & { stream?: false }, opts?: CreateOptions): Promise<ChatCompletion>;
  create(req: ChatCompletionRequest, opts?: CreateOptions): Promise<ChatCompletion | AsyncIterable<ChatCompletionChunk>>;
}

const FINISH: Record<StopReason, FinishReason> = { eos: 'stop', 'max-tokens': 'length', stopped: 'abort' };

const ZERO_STATS: RunStats = { promptTokens: 0, tokens: 0, ttftMs: null, wallMs: 0, tokPerSec: 0, targetPasses: 0, tokensPerTargetPass: 0, acceptanceRate: null, rounds: 0 };

/** Run events in arrival order, as an async iterable that ends after the terminal event. */
class EventQueue {
  private items: RunEvent[] = [];
  private wake: (() => void) | null = null;

  push(e: RunEvent): void {
    this.items.push(e);
    this.wake?.();
    this.wake = null;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<RunEvent> {
    for (;;) {
      const e = this.items.shift();
      if (!e) {
        await new Promise<void>((r) => { this.wake = r; });
        continue;
      }
      yield e;
      if (e.kind === 'done' || e.kind === 'error') return;
    }
  }
}

function invalid(message: string): never {
  throw new DuetError({ code: 'invalid-request', message, hint: 'Fix the request (see the ChatCompletionRequest type).' });
}

function num(v: number | undefined, name: string, dflt: number, ok: (x: number) => boolean, rule: string): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) invalid(`${name} must be ${rule}, got ${String(v)}`);
  return v;
}

/** The request's sampling and duet options with OpenAI's defaults, validated. */
export function settingsOf(req: ChatCompletionRequest): RunSettings {
  const o = req.duet ?? {};
  const int = Number.isInteger;
  return {
    temperature: num(req.temperature, 'temperature', 1, (x) => x >= 0, 'a number >= 0'),
    topP: num(req.top_p, 'top_p', 1, (x) => x > 0 && x <= 1, 'in (0, 1]'),
    topK: num(req.top_k, 'top_k', 0, (x) => int(x) && x >= 0, 'an integer >= 0'),
    seed: num(req.seed, 'seed', 0, int, 'an integer'),
    maxTokens: num(req.max_tokens, 'max_tokens', 256, (x) => int(x) && x >= 1, 'an integer >= 1'),
    k: num(o.k, 'duet.k', 4, (x) => int(x) && x >= 1, 'an integer >= 1'),
    adaptive: o.adaptive ?? true,
    rttMs: num(o.rttMs, 'duet.rttMs', 0, (x) => x >= 0, 'a number >= 0'),
  };
}

function checkMessages(req: ChatCompletionRequest): void {
  if (!Array.isArray(req.messages)) invalid('messages must be an array of { role, content }');
  for (const m of req.messages) {
    if (!m || !['system', 'user', 'assistant'].includes(m.role) || typeof m.content !== 'string') invalid(`each message needs role system|user|assistant and a string content, got ${JSON.stringify(m)}`);
  }
  if (req.messages.length === 0 && !req.duet?.prompt) invalid('messages is empty (and no duet.prompt is set)');
}

/** A source as the worker takes it: URLs made absolute here, against the page. */
function wireSource(source: DraftSource): WireDraftSource {
  if (typeof source === 'string' || source instanceof URL) {
    let base: string;
    try {
      base = new URL(String(source), globalThis.location?.href).href;
    } catch {
      throw new DuetError({ code: 'load-failed', message: `"${String(source)}" is not a URL.`, hint: 'Pass the http(s) URL of a model folder, or the files of a folder.' });
    }
    return { kind: 'url', base };
  }
  return { kind: 'folder', files: Array.from(source) };
}

let runCounter = 0;

export class DuetEngine {
  /** OpenAI's `client.chat.completions.create`. */
  readonly chat: { completions: Completions };
  /** Cached prepared draft weights in this origin's IndexedDB. */
  readonly cache: { list(): Promise<CacheEntry[]>; delete(key: string): Promise<void> };
  /** Test aids of the web app (its engine check page and device-loss spec). */
  readonly diagnostics: { engineCheck(spec: EngineCheckSpec): Promise<EngineCheckResult>; loseDevice(): Promise<boolean> };
  /** The loaded draft, or null. */
  draft: DraftInfo | null = null;
  /** The connected gateway, or null. */
  gateway: GatewayInfo | null = null;

  private readonly worker: Worker;
  private readonly api: Comlink.Remote<DuetWorkerApi>;
  private gatewayOptions: GatewayOptions;
  private readonly active = new Set<string>();
  private readonly onNotice: (n: DuetNotice) => void;

  constructor(opts: CreateDuetOptions = {}) {
    this.gatewayOptions = opts.gateway ?? { url: '' };
    this.onNotice = opts.onNotice ?? (() => undefined);
    this.worker = opts.worker ?? new Worker(new URL('./worker/entry.ts', import.meta.url), { type: 'module', name: 'duet-engine' });
    this.worker.addEventListener('error', (e) => this.notice({ kind: 'worker-failed', error: { code: 'internal', message: `The engine worker failed: ${e.message}`, hint: 'Reload the page.' } }));
    this.api = Comlink.wrap<DuetWorkerApi>(this.worker);
    this.chat = { completions: { create: ((req: ChatCompletionRequest, o?: CreateOptions) => this.create(req, o)) as Completions['create'] } };
    const call = <T>(p: () => Promise<T>): Promise<T> => p().catch((err: unknown) => { throw DuetError.from(err); });
    this.cache = { list: () => call(() => this.api.listCache()), delete: (key) => call(() => this.api.deleteCache(key)) };
    this.diagnostics = { engineCheck: (spec) => call(() => this.api.engineCheck(spec)), loseDevice: () => call(() => this.api.simulateDeviceLoss()) };
  }

  /** Loads the draft (download, quantize, cache, GPU upload; the CPU where WebGPU fails); replaces any loaded one. */
  async load(source: DraftSource, opts: LoadOptions = {}): Promise<DraftInfo> {
    const wire = wireSource(source);
    this.draft = null;
    const onProgress = opts.onProgress ?? (() => undefined);
    try {
      this.draft = await this.api.loadDraft({ source: wire, quant: opts.quant ?? 'none', forceCpu: opts.device === 'cpu' }, Comlink.proxy(onProgress), Comlink.proxy((n: DuetNotice) => this.notice(n)));
      return this.draft;
    } catch (err) {
      throw DuetError.from(err);
    }
  }

  /** Connects to the gateway (default: the one given to createDuet) and checks its tokenizer against the draft's. */
  async connect(gateway?: GatewayOptions): Promise<GatewayInfo> {
    if (gateway) this.gatewayOptions = gateway;
    const g = this.gatewayOptions;
    this.gateway = null;
    try {
      this.gateway = await this.api.connect({ url: g.url, token: g.token ?? '' }, Comlink.proxy((n: DuetNotice) => this.notice(n)));
      return this.gateway;
    } catch (err) {
      throw DuetError.from(err);
    }
  }

  /**
   * Without a draft (connect() needs one, for the tokenizer check): is the gateway there, and
   * would it let this page in? The problem to show (a bad URL, no answer, a refused token or
   * origin), or null. Runs on this thread, so it answers while the worker is busy loading.
   */
  async checkGateway(gateway?: GatewayOptions): Promise<DuetErrorInfo | null> {
    const g = gateway ?? this.gatewayOptions;
    return precheckGateway({ url: g.url, token: g.token ?? '' });
  }

  /** Stops every request under way (each ends with finish_reason 'abort'). */
  interrupt(): void {
    for (const id of this.active) void this.stop(id);
  }

  /** Ends the worker; the engine cannot be used afterwards. */
  terminate(): void {
    this.interrupt();
    this.api[Comlink.releaseProxy]();
    this.worker.terminate();
  }

  private notice(n: DuetNotice): void {
    if (n.kind === 'draft-lost') this.draft = null;
    this.onNotice(n);
  }

  private async stop(runId: string): Promise<void> {
    try {
      await this.api.stop(runId);
    } catch (err) {
      // Stopping a run of a dead worker: the run itself reports the failure.
      console.warn('duet: could not stop', runId, err);
    }
  }

  private async create(req: ChatCompletionRequest, opts: CreateOptions = {}): Promise<ChatCompletion | AsyncIterable<ChatCompletionChunk>> {
    if (typeof req !== 'object' || req === null) invalid('the request must be an object');
    checkMessages(req);
    const settings = settingsOf(req);
    if (!this.draft) throw new DuetError({ code: 'not-ready', message: 'No draft model is loaded.', hint: 'Call engine.load(source) first.' });
    if (!this.gateway) await this.connect();
    const run: RunRequest = { runId: `chatcmpl-${++runCounter}-${Date.now().toString(36)}`, mode: req.duet?.mode ?? 'speculative', messages: req.messages, prompt: req.duet?.prompt, settings };
    const chunks = this.stream(run, opts.signal);
    return req.stream ? chunks : collect(chunks);
  }

  /** Starts the run in the worker now; its events become chunks as they arrive. */
  private stream(run: RunRequest, signal?: AbortSignal): AsyncIterable<ChatCompletionChunk> {
    const q = new EventQueue();
    const onAbort = (): void => void this.stop(run.runId);
    this.active.add(run.runId);
    // The run's events arrive on the callback's own port, so the call's settling carries no
    // ordering: only a terminal event ends the queue; a rejected call (a dead worker) is one.
    this.api.run(run, Comlink.proxy((e: RunEvent) => q.push(e))).catch((err: unknown) => q.push({ kind: 'error', runId: run.runId, error: DuetError.from(err).toJSON() }));
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) onAbort();
    const created = Math.floor(Date.now() / 1000);
    const model = this.gateway?.model ?? 'duet';
    const chunk = (delta: ChatCompletionChunk['choices'][0]['delta'], finish: FinishReason | null, duet: DuetExtra): ChatCompletionChunk =>
      ({ id: run.runId, object: 'chat.completion.chunk', created, model, choices: [{ index: 0, delta, finish_reason: finish, logprobs: null }], duet });
    const release = (): void => {
      this.active.delete(run.runId);
      signal?.removeEventListener('abort', onAbort);
    };
    return {
      [Symbol.asyncIterator]: async function* (this: void): AsyncGenerator<ChatCompletionChunk> {
        let rounds: RoundTiming[] = [];
        let stats = ZERO_STATS;
        let role = true;
        let ended = false;
        const took = (): RoundTiming[] => {
          const r = rounds;
          rounds = [];
          return r;
        };
        try {
          for await (const e of q) {
            if (e.kind === 'round') rounds.push(e.round);
            else if (e.kind === 'status') yield chunk({}, null, { tokens: [], rounds: took(), stats, status: e.text });
            else if (e.kind === 'tokens') {
              stats = e.stats;
              const content = e.pieces.map((p) => p.text).join('');
              yield chunk(role ? { role: 'assistant', content } : { content }, null, { tokens: e.pieces, rounds: took(), stats });
              role = false;
            } else if (e.kind === 'done') {
              ended = true;
              const usage = { prompt_tokens: e.stats.promptTokens, completion_tokens: e.stats.tokens, total_tokens: e.stats.promptTokens + e.stats.tokens };
              yield { ...chunk({}, FINISH[e.reason], { tokens: [], rounds: took(), stats: e.stats }), usage };
            } else {
              ended = true;
              throw new DuetError(e.error);
            }
          }
        } finally {
          // A consumer that stops reading early (break) stops the generation too.
          if (!ended) onAbort();
          release();
        }
      },
    };
  }
}

/** A whole completion from its chunks. */
async function collect(chunks: AsyncIterable<ChatCompletionChunk>): Promise<ChatCompletion> {
  let content = '';
  const duet: DuetExtra = { tokens: [], rounds: [], stats: ZERO_STATS };
  let last: ChatCompletionChunk | null = null;
  for await (const c of chunks) {
    content += c.choices[0]?.delta.content ?? '';
    duet.tokens.push(...c.duet.tokens);
    duet.rounds.push(...c.duet.rounds);
    duet.stats = c.duet.stats;
    last = c;
  }
  if (!last?.usage || !last.choices[0]?.finish_reason) throw new DuetError({ code: 'internal', message: 'The run ended without a final chunk.', hint: 'Retry; if it keeps happening, see the browser console.' });
  return {
    id: last.id, object: 'chat.completion', created: last.created, model: last.model,
    choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: last.choices[0].finish_reason, logprobs: null }],
    usage: last.usage, duet,
  };
}

/** A new engine (its worker starts now); then `await engine.load(draft)`. */
export async function createDuet(opts: CreateDuetOptions = {}): Promise<DuetEngine> {
  return new DuetEngine(opts);
}

/**
 * WebLLM's shape: `CreateWebWorkerMLCEngine(worker, modelId, config)` → a loaded engine. Here
 * the worker is yours (it imports 'duet/worker'), the draft is loaded before this resolves.
 */
export async function CreateWebWorkerDuetEngine(worker: Worker, draft: DraftSource, opts: Omit<CreateDuetOptions, 'worker'> & LoadOptions = {}): Promise<DuetEngine> {
  const engine = new DuetEngine({ ...opts, worker });
  await engine.load(draft, opts);
  return engine;
}
