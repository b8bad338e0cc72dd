// The chat view: conversation with streaming, provenance-coloured tokens and per-message
// stats; a composer with send/stop; the legend and the sampling settings at the side.

import { h, fmt } from './dom.ts';
import { settingsForm } from './settings.ts';
import { state, update, subscribe, newRunView, type ChatEntry, type RunView } from './state.ts';
import { ensureReady, newRunId, startRun, stopRun } from './app.ts';
import type { ChatMessage, Provenance, RunStats, TokenPiece } from '../lib/index.ts';

// The bundled pair learned three kinds of chat turn (tools/train/train.py): "<Book> <chapter>" →
// the chapter, "<Book> <chapter>:<verse>" → the passage from that verse, and a verse's opening
// words → the verse and those after it.
const EXAMPLES = ['Psalms 23', 'John 3:16', 'In the beginning God'];

export const PROVENANCE_LABEL: Record<Provenance, string> = {
  draft: 'Drafted in your browser, accepted by the target',
  correction: 'Target correction (the draft was rejected here)',
  bonus: 'Bonus token (the whole draft block stood)',
  target: 'From the target alone (the first token, baseline, or a stretch where drafting would not pay: k = 0)',
};

/** Renders token pieces as spans, appending only the new ones (streaming). */
export function renderPieces(container: HTMLElement, pieces: TokenPiece[]): void {
  for (let i = container.childElementCount; i < pieces.length; i++) {
    const p = pieces[i];
    // id < 0: leftover text of an incomplete character at the end of a stream, not a token.
    if (p.id < 0) {
      container.append(h('span', { class: 'tail' }, p.text));
      continue;
    }
    // A newline token would be invisible (and so would its colour): mark it with ↵.
    const nl = p.text.includes('\n') ? ' nl' : '';
    container.append(h('span', { class: `tok ${p.prov}${nl}`, title: `${PROVENANCE_LABEL[p.prov]} · id ${p.id}`, 'data-prov': p.prov }, p.text));
  }
}

export function statsChips(stats: RunStats | null, mode: 'speculative' | 'baseline'): HTMLElement[] {
  if (!stats) return [];
  const chip = (label: string, value: string, hint: string): HTMLElement => h('span', { class: 'stat', title: hint }, `${label} `, h('b', {}, value));
  const chips = [
    chip('TTFT', fmt(stats.ttftMs, 0, ' ms'), 'time to first token'),
    chip('speed', fmt(stats.tokPerSec, 1, ' tok/s'), 'generated tokens per second of wall time'),
    chip('tokens', String(stats.tokens), 'tokens generated'),
  ];
  if (mode === 'speculative') {
    chips.push(chip('acceptance', stats.acceptanceRate == null ? '–' : `${Math.round(stats.acceptanceRate * 100)}%`, 'share of drafted tokens the target accepted'));
    chips.push(chip('tokens/target pass', fmt(stats.tokensPerTargetPass, 2), 'generated tokens per target forward pass (baseline: 1.00)'));
  }
  chips.push(chip('target passes', String(stats.targetPasses), 'target forward passes used, prefill included'));
  return chips;
}

export function chatView(root: HTMLElement): void {
  const messages = h('div', { class: 'messages', role: 'log', 'aria-label': 'Conversation', 'aria-live': 'polite', 'data-testid': 'messages' });
  const input = h('textarea', {
    id: 'chat-input', rows: 3, placeholder: 'Write a prompt… (Enter to send, Shift+Enter for a new line)', 'aria-label': 'Prompt',
    onkeydown: (e: Event) => {
      const k = e as KeyboardEvent;
      if (k.key === 'Enter' && !k.shiftKey && !k.isComposing) {
        k.preventDefault();
        void send();
      } else if (k.key === 'Escape') stop();
    },
  });
  const sendBtn = h('button', { class: 'btn primary', type: 'submit', 'data-testid': 'send' }, 'Send');
  const stopBtn = h('button', { class: 'btn danger', type: 'button', disabled: true, onclick: () => stop(), 'data-testid': 'stop', 'aria-keyshortcuts': 'Escape' }, 'Stop');
  const clearBtn = h('button', { class: 'btn', type: 'button', onclick: () => { update((s) => { s.chat = []; }); } }, 'Clear');
  const showColours = h('input', { type: 'checkbox', id: 'chat-colours', checked: true, onchange: () => messages.classList.toggle('plain', !showColours.checked) });
  const form = h('form', { class: 'composer', onsubmit: (e: Event) => { e.preventDefault(); void send(); } },
    input,
    h('div', { class: 'row' }, sendBtn, stopBtn, clearBtn, h('span', { class: 'muted small', style: 'margin-left:auto' }, 'Esc stops')),
  );

  const legend = h('ul', { class: 'legend', 'aria-label': 'Token colours' },
    ...(['draft', 'correction', 'bonus', 'target'] as Provenance[]).map((p) => h('li', {}, h('span', { class: `swatch ${p}`, 'aria-hidden': 'true' }), PROVENANCE_LABEL[p])));

  root.append(h('div', { class: 'grid-chat' },
    h('div', { class: 'card chat' }, h('h2', { class: 'visually-hidden' }, 'Chat'), messages, form),
    h('aside', { class: 'side', 'aria-label': 'Chat options' },
      h('div', { class: 'card' }, h('h2', {}, 'What the colours mean'), legend,
        h('label', { class: 'check', for: 'chat-colours' }, showColours, 'Colour tokens by where they came from'),
        h('p', { class: 'muted small' }, 'Every token shown is one the target stands behind: the draft proposes, the target verifies in one pass per block.')),
      h('details', { class: 'card settings', open: true }, h('summary', {}, 'Sampling settings'), settingsForm('chat')),
    ),
  ));

  let current: RunView | null = null;
  const rendered = new Map<ChatEntry, { el: HTMLElement; body: HTMLElement; stats: HTMLElement; err: HTMLElement }>();

  function stop(): void {
    if (current?.running) stopRun(current.runId);
  }

  async function send(): Promise<void> {
    const text = input.value.trim();
    if (!text || current?.running) return;
    input.value = '';
    const runId = newRunId('chat');
    const run = newRunView(runId);
    run.status = 'Preparing…';
    const history: ChatMessage[] = state.chat.filter((m) => m.content || m.run?.text).map((m) => ({ role: m.role, content: m.run ? m.run.text : m.content }));
    update((s) => {
      s.chat.push({ role: 'user', content: text, run: null });
      s.chat.push({ role: 'assistant', content: '', run });
    });
    current = run;
    if (!(await ensureReady())) {
      update(() => {
        run.running = false;
        run.error = state.draft.error ?? state.gateway.error ?? { code: 'not-ready', message: 'The draft or the gateway is not ready.', hint: 'See the notice above.' };
      });
      return;
    }
    await startRun({ runId, mode: 'speculative', messages: [...history, { role: 'user', content: text }], settings: { ...state.settings } }, run);
    input.focus();
  }

  function renderEntry(entry: ChatEntry): void {
    let r = rendered.get(entry);
    if (!r) {
      const body = h('div', { class: 'bubble' });
      const stats = h('div', { class: 'stats', 'aria-label': 'Message statistics' });
      const err = h('div', { class: 'error-text', role: 'alert' });
      const el = h('div', { class: `msg ${entry.role}`, 'data-testid': entry.role === 'assistant' ? 'assistant-message' : 'user-message' },
        h('div', { class: 'who' }, entry.role === 'user' ? 'You' : 'duet'), body, stats, err);
      if (entry.role === 'user') body.textContent = entry.content;
      r = { el, body, stats, err };
      rendered.set(entry, r);
    }
    const run = entry.run;
    if (!run) return;
    renderPieces(r.body, run.pieces);
    r.body.classList.toggle('cursor', run.running);
    r.el.dataset.state = run.running ? 'running' : run.error ? 'error' : 'done';
    r.stats.replaceChildren(...statsChips(run.stats, 'speculative'),
      ...(run.status ? [h('span', { class: 'stat muted' }, run.status)] : []),
      ...(run.doneReason === 'stopped' ? [h('span', { class: 'stat muted' }, 'stopped')] : []));
    r.err.textContent = run.error ? `${run.error.message} ${run.error.hint}` : '';
  }

  let wasRunning = false;
  function render(): void {
    if (state.chat.length === 0) {
      rendered.clear();
      messages.replaceChildren(h('div', { class: 'empty' },
        h('p', {}, 'The draft model runs here in your browser and proposes a few tokens at a time; the target model on the gateway checks them all in one pass.'),
        h('p', {}, 'The bundled tiny pair was trained on the King James Bible: ask it for a chapter, a verse, or give it the opening words of a verse, for example'),
        h('div', { class: 'examples' }, ...EXAMPLES.map((ex) => h('button', { class: 'btn', type: 'button', onclick: () => { input.value = ex; input.focus(); } }, ex)))));
    } else {
      if (messages.querySelector('.empty')) messages.replaceChildren();
      for (const entry of state.chat) {
        renderEntry(entry);
        const el = rendered.get(entry)!.el;
        if (el.parentElement !== messages) messages.append(el);
      }
    }
    const running = Boolean(current?.running);
    stopBtn.disabled = !running;
    sendBtn.disabled = running;
    // Follow the stream, and show the end of the reply (with its stats) once it is done.
    if (running || wasRunning) messages.lastElementChild?.scrollIntoView({ block: 'end' });
    wasRunning = running;
  }
  subscribe(render);
  render();
}
