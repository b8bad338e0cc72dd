// The web app's test API contract (window.__duet in ?test mode, window.__duetEngineCheck on
// the engine check page), shared by src/ui and the Playwright specs. Not part of the
// library's public entry; it lives here because e2e may import the library, not the ui.

import type { Backend, DuetErrorInfo, Provenance, RoundTiming, RunStats } from './types.ts';

/** What the page's test API (window.__duet, in ?test mode) reports; Playwright waits on it. */
export interface DuetTestSnapshot {
  view: string;
  draft: { status: string; backend: Backend | null; fromCache: boolean | null; loadMs: number | null; fallbackReason: string | null };
  /** attempts: full connects finished (a precheck before the draft is loaded is not one). */
  gateway: { status: string; model: string | null; detail: string; attempts: number };
  chat: { messages: number; running: boolean; lastText: string; lastStats: RunStats | null; lastError: DuetErrorInfo | null; lastDone: string | null; provenance: Record<Provenance, number> };
  compare: Record<'spec' | 'base', { running: boolean; text: string; tokens: number[]; stats: RunStats | null; rounds: number; error: DuetErrorInfo | null; doneReason: string | null } | null>;
  errors: DuetErrorInfo[];
  notices: { level: string; title: string }[];
}

/** One generation run alone through the library (chat.completions.create), for timing one mode at a time. */
export interface DuetTestRun {
  tokens: number[];
  /** Provenance of each token (draft, correction, bonus, target). */
  provenance: Provenance[];
  /** The verify rounds (none in baseline; a k = 0 stretch is not a round). */
  rounds: RoundTiming[];
  stats: RunStats | null;
  finish: string | null;
}

export interface DuetTestApi {
  snapshot(): DuetTestSnapshot;
  /** Run one generation in `mode` (greedy unless told), outside the chat and compare views; resolves when it ends. */
  runOnce(mode: 'speculative' | 'baseline', prompt: string, o?: { maxTokens?: number; temperature?: number; rttMs?: number }): Promise<DuetTestRun>;
  /** Destroy the draft's GPU device (as a driver reset would); false when the draft is not on a GPU. */
  loseDevice(): Promise<boolean>;
}

/** The engine check page's result (window.__duetEngineCheck). */
export interface EngineCheckReport {
  done: boolean;
  error: string | null;
  adapter: string;
  positions: number;
  vocabSize: number;
  nmse: number;
  maxAbsErr: number;
  argmaxAgree: number;
  nonFinite: number;
}
