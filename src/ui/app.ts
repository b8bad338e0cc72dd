// The UI's actions: start the engine worker, load the draft, connect to the gateway, run
// and stop generations. Views call these; results land in state (state.ts) and notices.

import * as Comlink from 'comlink';
import type { DuetWorkerApi, RunEvent, RunRequest, UiError, WorkerNotice } from '../engine/worker-types.ts';
import { newRunView, notify, dismiss, state, update, type RunView } from './state.ts';

let worker: Worker | null = null;
let api: Comlink.Remote<DuetWorkerApi> | null = null;

export function engine(): Comlink.Remote<DuetWorkerApi> {
  if (!api) {
    worker = new Worker(new URL('../engine/worker.ts', import.meta.url), { type: 'module', name: 'duet-engine' });
    worker.addEventListener('error', (e) => reportError({ code: 'internal', message: `engine worker failed: ${e.message}`, hint: 'Reload the page.' }));
    api = Comlink.wrap<DuetWorkerApi>(worker);
  }
  return api;
}

export function reportError(err: UiError, actions: { label: string; run: () => void }[] = []): void {
  update((s) => s.errors.push(err));
  notify({ id: `err-${err.code}`, level: 'error', title: titleOf(err), text: err.message, hint: err.hint, actions });
}

function titleOf(err: UiError): string {
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

/** Worker methods reject with a plain Error whose message is a JSON UiError (see worker.ts). */
export function asUiError(err: unknown): UiError {
  const message = err instanceof Error ? err.message : String(err);
  try {
    const parsed = JSON.parse(message) as UiError;
    if (parsed && typeof parsed.code === 'string') return parsed;
  } catch {
    // not one of ours: fall through
  }
  return { code: 'internal', message, hint: 'Reload the page; if it persists, see the browser console.' };
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
    const info = await engine().loadDraft({ source, quant, forceCpu: device === 'cpu' }, Comlink.proxy((p) => update((s) => { s.draft.progress[p.phase] = p; })));
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
    const e = asUiError(err);
    update((s) => {
      s.draft.status = 'error';
      s.draft.error = e;
    });
    reportError(e, [{ label: 'Retry', run: () => void loadDraft() }]);
  }
}

function onGatewayNotice(n: WorkerNotice): void {
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
  }
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
    const info = await engine().connect({ url: state.gateway.url, token: state.gateway.token }, Comlink.proxy(onGatewayNotice));
    update((s) => {
      s.gateway.status = 'connected';
      s.gateway.info = info;
    });
  } catch (err) {
    const e = asUiError(err);
    update((s) => {
      s.gateway.status = 'error';
      s.gateway.error = e;
    });
    const actions = [{ label: 'Retry', run: () => void connectGateway() }];
    if (e.code !== 'tokenizer-mismatch') actions.push({ label: 'Gateway settings', run: () => { location.hash = '#models'; } });
    else actions.push({ label: 'Choose another draft', run: () => { location.hash = '#models'; } });
    reportError(e, actions);
  }
}

/**
 * Loads the draft (if needed) and connects (if needed); both are required to generate. A load
 * or connect already under way is awaited, not started again.
 */
export async function ensureReady(): Promise<boolean> {
  const loading = draftLoad.pending();
  if (state.draft.status === 'loading' && loading) await loading;
  else if (state.draft.status !== 'ready') await loadDraft();
  if (state.draft.status !== 'ready') return false;
  const connecting = gatewayConnect.pending();
  if (state.gateway.status === 'connecting' && connecting) await connecting;
  else if (state.gateway.status !== 'connected' && state.gateway.status !== 'connecting') await connectGateway();
  return state.draft.status === 'ready' && state.gateway.status === 'connected';
}

let runCounter = 0;
export function newRunId(prefix: string): string {
  return `${prefix}-${++runCounter}-${Date.now().toString(36)}`;
}

/** Starts a run; `view` is mutated as events stream in. Resolves when the run ends. */
export async function startRun(req: RunRequest, view: RunView): Promise<void> {
  const onEvent = (e: RunEvent): void => {
    update(() => {
      switch (e.kind) {
        case 'tokens':
          for (const p of e.pieces) view.pieces.push(p);
          view.text += e.pieces.map((p) => p.text).join('');
          view.stats = e.stats;
          view.status = '';
          break;
        case 'round':
          view.rounds.push(e.round);
          break;
        case 'status':
          view.status = e.text;
          break;
        case 'done':
          view.running = false;
          view.doneReason = e.reason;
          view.stats = e.stats;
          view.status = '';
          break;
        case 'error':
          view.running = false;
          view.error = e.error;
          view.status = '';
          break;
      }
    });
    if (e.kind === 'error') reportError(e.error, [{ label: 'Retry connection', run: () => void connectGateway() }]);
  };
  try {
    await engine().run(req, Comlink.proxy(onEvent));
  } catch (err) {
    onEvent({ kind: 'error', runId: req.runId, error: asUiError(err) });
  } finally {
    if (view.running) update(() => { view.running = false; });
  }
}

export function stopRun(runId: string): void {
  void engine().stop(runId);
}

export { newRunView };
