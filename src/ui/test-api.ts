// The typed test API (window.__duet) installed in ?test mode: Playwright specs read a
// snapshot of the app state and wait on it instead of sleeping.

import { state } from './state.ts';
import { engine } from './app.ts';
import type { Provenance } from '../lib/index.ts';
import type { DuetTestApi, DuetTestRun, DuetTestSnapshot } from '../lib/app-test-api.ts';

declare global {
  interface Window {
    __duet?: DuetTestApi;
  }
}

function snapshot(): DuetTestSnapshot {
  const last = [...state.chat].reverse().find((m) => m.run)?.run ?? null;
  const provenance: Record<Provenance, number> = { draft: 0, correction: 0, bonus: 0, target: 0 };
  for (const p of last?.pieces ?? []) if (p.id >= 0) provenance[p.prov]++;
  const pane = (r: typeof state.compare.spec) => r && {
    running: r.running, text: r.text, tokens: r.pieces.filter((p) => p.id >= 0).map((p) => p.id), stats: r.stats, rounds: r.rounds.length, error: r.error, doneReason: r.doneReason,
  };
  const d = state.draft.info;
  return structuredClone({
    view: state.view,
    draft: { status: state.draft.status, backend: d?.backend ?? null, fromCache: d?.fromCache ?? null, loadMs: d?.loadMs ?? null, fallbackReason: d?.fallbackReason ?? null },
    gateway: { status: state.gateway.status, model: state.gateway.info?.model ?? null, detail: state.gateway.detail, attempts: state.gateway.attempts },
    chat: { messages: state.chat.length, running: Boolean(last?.running), lastText: last?.text ?? '', lastStats: last?.stats ?? null, lastError: last?.error ?? null, lastDone: last?.doneReason ?? null, provenance },
    compare: { spec: pane(state.compare.spec), base: pane(state.compare.base) },
    errors: state.errors,
    notices: state.notices.map((n) => ({ level: n.level, title: n.title })),
  });
}

async function runOnce(mode: 'speculative' | 'baseline', prompt: string, o: { maxTokens?: number; temperature?: number; rttMs?: number } = {}): Promise<DuetTestRun> {
  const s = state.settings;
  const chunks = await engine().chat.completions.create({
    messages: [{ role: 'user', content: prompt }], stream: true, temperature: o.temperature ?? 0, top_p: s.topP, top_k: s.topK, seed: s.seed, max_tokens: o.maxTokens ?? s.maxTokens,
    duet: { mode, k: s.k, adaptive: s.adaptive, rttMs: o.rttMs ?? 0, prompt },
  });
  const out: DuetTestRun = { tokens: [], provenance: [], rounds: [], stats: null, finish: null };
  for await (const c of chunks) {
    const pieces = c.duet.tokens.filter((t) => t.id >= 0);
    out.tokens.push(...pieces.map((t) => t.id));
    out.provenance.push(...pieces.map((t) => t.prov));
    out.rounds.push(...c.duet.rounds);
    if (c.duet.tokens.length > 0 || c.usage) out.stats = c.duet.stats;
    out.finish = c.choices[0]?.finish_reason ?? out.finish;
  }
  return out;
}

export function installTestApi(): void {
  window.__duet = { snapshot, runOnce, loseDevice: () => engine().diagnostics.loseDevice() };
}
