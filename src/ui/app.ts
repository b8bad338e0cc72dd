// The UI's actions on the library (src/lib, the app is its first user): one DuetEngine for
// the page; load the draft, connect to the gateway, run and stop generations through its
// OpenAI-shaped chat.completions.create. Views call these; results land in state (state.ts).

import { DuetEngine, DuetError, type ChatMessage, type DuetErrorInfo, type DuetNotice, type DraftSource } from '../lib/index.ts';
import { newRunView, notify, dismiss, state, update, type DraftChoice, type RunSettings, type RunView } from './state.ts';

let duet: DuetEngine | null = null;

export function engine(): DuetEngine {
  duet ??= new DuetEngine({ onNotice });
  return duet;
}

export function reportError(err: DuetErrorInfo, actions: { label: string; run: () => void }[] = []): void {
  update((s) => s.errors.push(err));
  notify({ id: `err-${err.code}`, level: 'error', title: titleOf(err), text: err.message, hint: err.hint, actions });
}

function titleOf(err: DuetErrorInfo): string {
  switch (err.code) {
    case 'no-webgpu': return 'WebGPU is not available';
    case 'device-lost': return 'The GPU device was lost';
    case 'gateway-unreachable': return 'Cannot reach the gateway';
    case 'auth-refused': return 'The gateway refused the access token';
    case 'tokenizer-mismatch': return 'Draft and target use different tokenizers';
    case 'load-failed': return 'The draft model did not load';
    case 'not-ready': return 'Not ready yet';
    default: return 'Something went wrong';
  }
}

/** Whatever a library call threw, as the plain data the state and the notices keep. */
export function asErrorInfo(err: unknown): DuetErrorInfo {
  return DuetError.from(err).toJSON();
}

/** An async step whose attempt under way can be awaited (a run started meanwhile waits for it instead of failing). */
function tracked(run: () => Promise<void>): { start: () => Promise<void>; pending: () => Promise<void> | null } {
  let current: Promise<void> | null = null;
  return {
    start() {
      const p = run().finally(() => {
        if (current === p) current = null;
      });
      current = p;
      return p;
    },
    pending: () => current,
  };
}

const draftLoad = tracked(loadDraftOnce);
const gatewayConnect = tracked(connectGatewayOnce);

/** Loads (or reloads) the draft; resolves when it is ready or has failed (state.draft says which). */
export function loadDraft(): Promise<void> {
  return draftLoad.start();
}

async function loadDraftOnce(): Promise<void> {
  const { source, quant, device } = state.draft;
  update((s) => {
    s.draft.status = 'loading';
    s.draft.progress = {};
    s.draft.error = null;
  });
  dismiss('err-load-failed');
  try {
    const info = await engine().load(draftSource(source), { quant, device, onProgress: (p) => update((s) => { s.draft.progress[p.phase] = p; }) });
    update((s) => {
      s.draft.status = 'ready';
      s.draft.info = info;
    });
    if (info.backend === 'cpu' && info.fallbackReason && device === 'auto') {
      notify({
        id: 'cpu-fallback',
        level: 'warn',
        title: 'WebGPU is not available — the draft runs on the CPU',
        text: `${info.fallbackReason} Everything still works, only the draft is slower. For GPU speed use a recent Chrome or Edge with WebGPU enabled.`,
        actions: [],
      });
    } else dismiss('cpu-fallback');
  } catch (err) {
    const e = asErrorInfo(err);
    update((s) => {
      s.draft.status = 'error';
      s.draft.error = e;
    });
    reportError(e, [{ label: 'Retry', run: () => void loadDraft() }]);
  }
}

/** The bundled tiny draft is served by the gateway beside the app. */
function draftSource(c: DraftChoice): DraftSource {
  return c.kind === 'bundled' ? '/models/tiny-draft/' : c.kind === 'url' ? c.base : c.files;
}

function onNotice(n: DuetNotice): void {
  if (n.kind === 'gateway') {
    update((s) => {
      s.gateway.status = n.state === 'connected' ? 'connected' : n.state === 'reconnecting' ? 'reconnecting' : 'error';
      s.gateway.detail = n.detail;
    });
    if (n.state === 'reconnecting') notify({ id: 'gw-reconnect', level: 'warn', title: 'Gateway connection lost — reconnecting', text: n.detail, actions: [] });
    else dismiss('gw-reconnect');
  } else if (n.kind === 'draft-lost') {
    update((s) => {
      s.draft.status = 'error';
      s.draft.error = n.error;
    });
    reportError(n.error, [{ label: 'Reload the draft', run: () => void loadDraft() }]);
  } else reportError(n.error);
}

/** Connects to the gateway; resolves when connected or failed (state.gateway says which). */
export function connectGateway(): Promise<void> {
  return gatewayConnect.start();
}

async function connectGatewayOnce(): Promise<void> {
  update((s) => {
    s.gateway.status = 'connecting';
    s.gateway.error = null;
  });
  for (const code of ['gateway-unreachable', 'auth-refused', 'tokenizer-mismatch']) dismiss(`err-${code}`);
  try {
    const info = await engine().connect({ url: state.gateway.url, token: state.gateway.token });
    update((s) => {
      s.gateway.status = 'connected';
      s.gateway.info = info;
      s.gateway.attempts++;
    });
  } catch (err) {
    const e = asErrorInfo(err);
    update((s) => {
      s.gateway.status = 'error';
      s.gateway.error = e;
      s.gateway.attempts++;
    });
    const actions = [{ label: 'Retry', run: () => void connectGateway() }];
    if (e.code !== 'tokenizer-mismatch') actions.push({ label: 'Gateway settings', run: () => { location.hash = '#models'; } });
    else actions.push({ label: 'Choose another draft', run: () => { location.hash = '#models'; } });
    reportError(e, actions);
  }
}

/** Before the draft is loaded: shows a gateway that is not there or would refuse this page. */
export async function precheckGateway(): Promise<void> {
  const e = await engine().checkGateway({ url: state.gateway.url, token: state.gateway.token });
  // a connect that started meanwhile knows better
  if (state.gateway.status === 'connected' || state.gateway.status === 'connecting') return;
  if (!e) {
    // fixed (a new URL or token): the earlier finding no longer stands; the connect follows the draft
    if (state.gateway.status === 'error' && (state.gateway.error?.code === 'gateway-unreachable' || state.gateway.error?.code === 'auth-refused')) {
      update((s) => {
        s.gateway.status = 'idle';
        s.gateway.error = null;
      });
      for (const code of ['gateway-unreachable', 'auth-refused']) dismiss(`err-${code}`);
    }
    return;
  }
  update((s) => {
    s.gateway.status = 'error';
    s.gateway.error = e;
  });
  reportError(e, [
    { label: 'Retry', run: () => void (state.draft.status === 'ready' ? connectGateway() : precheckGateway()) },
    { label: 'Gateway settings', run: () => { location.hash = '#models'; } },
  ]);
}

/** The draft, loaded: awaits a load under way, else starts one unless it is ready; false if it failed. */
export async function draftReady(): Promise<boolean> {
  const loading = draftLoad.pending();
  if (state.draft.status === 'loading' && loading) await loading;
  else if (state.draft.status !== 'ready') await loadDraft();
  return state.draft.status === 'ready';
}

/**
 * Loads the draft (if needed) and connects (if needed); both are required to generate. A load
 * or connect already under way is awaited, not started again.
 */
export async function ensureReady(): Promise<boolean> {
  // the connect waits for the draft (tokenizer check); a wrong gateway URL is told at once
  if (state.draft.status !== 'ready' && (state.gateway.status === 'idle' || state.gateway.status === 'error')) void precheckGateway();
  if (!(await draftReady())) return false;
  const connecting = gatewayConnect.pending();
  if (state.gateway.status === 'connecting' && connecting) await connecting;
  else if (state.gateway.status !== 'connected' && state.gateway.status !== 'connecting') await connectGateway();
  return state.draft.status === 'ready' && state.gateway.status === 'connected';
}

let runCounter = 0;
export function newRunId(prefix: string): string {
  return `${prefix}-${++runCounter}-${Date.now().toString(36)}`;
}

/** One run the views ask for: the chat (speculative) or a pane of the side-by-side view. */
export interface RunPlan {
  runId: string;
  mode: 'speculative' | 'baseline';
  messages: ChatMessage[];
  /** Raw prompt text instead of the messages' template (the side-by-side view). */
  prompt?: string;
  settings: RunSettings;
}

const stops = new Map<string, AbortController>();

const DONE = { stop: 'eos', length: 'max-tokens', abort: 'stopped' } as const;

/** Starts a run; `view` is mutated as chunks stream in. Resolves when the run ends. */
export async function startRun(plan: RunPlan, view: RunView): Promise<void> {
  const abort = new AbortController();
  stops.set(plan.runId, abort);
  const s = plan.settings;
  try {
    const chunks = await engine().chat.completions.create({
      messages: plan.messages, stream: true, temperature: s.temperature, top_p: s.topP, top_k: s.topK, seed: s.seed, max_tokens: s.maxTokens,
      duet: { mode: plan.mode, k: s.k, adaptive: s.adaptive, rttMs: s.rttMs, prompt: plan.prompt },
    }, { signal: abort.signal });
    for await (const c of chunks) {
      update(() => {
        view.pieces.push(...c.duet.tokens);
        view.text += c.choices[0]?.delta.content ?? '';
        view.rounds.push(...c.duet.rounds);
        if (c.duet.tokens.length > 0 || c.usage) view.stats = c.duet.stats;
        view.status = c.duet.status ?? '';
        const finish = c.choices[0]?.finish_reason;
        if (finish) {
          view.running = false;
          view.doneReason = DONE[finish];
        }
      });
    }
  } catch (err) {
    const e = asErrorInfo(err);
    update(() => {
      view.running = false;
      view.error = e;
      view.status = '';
    });
    reportError(e, [{ label: 'Retry connection', run: () => void connectGateway() }]);
  } finally {
    stops.delete(plan.runId);
    if (view.running) update(() => { view.running = false; });
  }
}

export function stopRun(runId: string): void {
  stops.get(runId)?.abort();
}

export { newRunView };
