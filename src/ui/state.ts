// The app's state: one plain object the views read, changed only through update(), which
// notifies subscribers. The test API (test-api.ts) exposes a snapshot of it to Playwright.

import type { DraftInfo, DuetErrorInfo, GatewayInfo, LoadProgress, RunSettings, RunStats, TokenPiece, RoundTiming, Quant } from '../lib/index.ts';

/** The draft the Models view picked; app.ts turns it into the library's DraftSource. */
export type DraftChoice =
  | { kind: 'bundled' }
  | { kind: 'url'; base: string }
  | { kind: 'folder'; files: File[] };

/** The sampling settings form (settings.ts); app.ts maps them onto a chat completion request. */
export type { RunSettings };

export type Phase = LoadProgress['phase'];

export interface DraftState {
  status: 'idle' | 'loading' | 'ready' | 'error';
  info: DraftInfo | null;
  progress: Partial<Record<Phase, LoadProgress>>;
  error: DuetErrorInfo | null;
  source: DraftChoice;
  quant: Quant;
  /** 'auto': WebGPU where it works, else the CPU; 'cpu': always the CPU reference. */
  device: 'auto' | 'cpu';
}

export interface GatewayState {
  status: 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'error';
  info: GatewayInfo | null;
  error: DuetErrorInfo | null;
  url: string;
  token: string;
  detail: string;
  /** Full connects (tokenizer check included) that have finished, either way. */
  attempts: number;
}

export interface RunView {
  runId: string;
  running: boolean;
  pieces: TokenPiece[];
  text: string;
  stats: RunStats | null;
  rounds: RoundTiming[];
  doneReason: 'eos' | 'max-tokens' | 'stopped' | null;
  error: DuetErrorInfo | null;
  status: string;
}

export interface ChatEntry {
  role: 'user' | 'assistant';
  content: string;
  run: RunView | null;
}

export interface Notice {
  id: string;
  level: 'error' | 'warn' | 'info';
  title: string;
  text: string;
  /** What to do about it, shown under the text. */
  hint?: string;
  actions: { label: string; run: () => void }[];
}

export interface AppState {
  view: 'chat' | 'compare' | 'models' | 'engine-check';
  draft: DraftState;
  gateway: GatewayState;
  settings: RunSettings;
  chat: ChatEntry[];
  compare: { prompt: string; spec: RunView | null; base: RunView | null };
  notices: Notice[];
  /** Errors seen by the UI, newest last (the test API reads them). */
  errors: DuetErrorInfo[];
}

// Sampled by default, at the setting tools/train/report.py measured to read best on held-out chat
// prompts (public/models/report.json chat_defaults; src/ui/defaults.test.ts keeps them equal).
// Greedy (temperature 0, the target's own text token for token) is one click away in the form.
export const DEFAULT_SETTINGS: RunSettings = {
  temperature: 0.8,
  topP: 1,
  topK: 0,
  seed: 42,
  maxTokens: 128,
  k: 4,
  adaptive: true,
  rttMs: 0,
};

export const state: AppState = {
  view: 'chat',
  draft: { status: 'idle', info: null, progress: {}, error: null, source: { kind: 'bundled' }, quant: 'none', device: 'auto' },
  gateway: { status: 'idle', info: null, error: null, url: '', token: '', detail: '', attempts: 0 },
  settings: { ...DEFAULT_SETTINGS },
  chat: [],
  compare: { prompt: '', spec: null, base: null },
  notices: [],
  errors: [],
};

type Listener = (s: AppState) => void;
const listeners = new Set<Listener>();

export function subscribe(fn: Listener): () => void {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

let scheduled = false;
/** Apply a change and re-render on the next frame (token bursts coalesce into one paint). */
export function update(change?: (s: AppState) => void): void {
  change?.(state);
  if (scheduled) return;
  scheduled = true;
  queueMicrotask(() => {
    scheduled = false;
    for (const fn of listeners) fn(state);
  });
}

export function newRunView(runId: string): RunView {
  return { runId, running: true, pieces: [], text: '', stats: null, rounds: [], doneReason: null, error: null, status: '' };
}

export function notify(n: Omit<Notice, 'id'> & { id?: string }): void {
  const id = n.id ?? `n${Date.now()}${Math.random().toString(36).slice(2, 6)}`;
  update((s) => {
    s.notices = s.notices.filter((x) => x.id !== id);
    s.notices.push({ ...n, id });
  });
}

export function dismiss(id: string): void {
  update((s) => {
    s.notices = s.notices.filter((x) => x.id !== id);
  });
}
