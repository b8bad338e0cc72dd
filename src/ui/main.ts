// The app's entry: renders the shell (tabs, status pills, notices), routes between the
// Chat, Side-by-side and Models views by URL hash, and starts loading the draft and
// connecting to the gateway right away so the first prompt does not wait for it.

import './styles.css';
import { h } from './dom.ts';
import { state, update, subscribe, dismiss } from './state.ts';
import { chatView } from './chat.ts';
import { compareView } from './compare.ts';
import { modelsView } from './models.ts';
import { ensureReady } from './app.ts';
import { installTestApi } from './test-api.ts';

type View = typeof state.view;
const VIEWS: View[] = ['chat', 'compare', 'models'];
const params = new URLSearchParams(location.search);

function viewFromHash(): View {
  const v = location.hash.replace(/^#/, '') as View;
  return v === 'engine-check' || VIEWS.includes(v) ? v : 'chat';
}

function renderTabs(): void {
  for (const btn of document.querySelectorAll<HTMLButtonElement>('.tabs [role="tab"]')) {
    const selected = btn.dataset.view === state.view;
    btn.setAttribute('aria-selected', String(selected));
    btn.tabIndex = selected ? 0 : -1;
  }
  for (const v of [...VIEWS, 'engine-check']) (document.getElementById(`view-${v}`) as HTMLElement).hidden = v !== state.view;
}

function wireTabs(): void {
  const tabs = [...document.querySelectorAll<HTMLButtonElement>('.tabs [role="tab"]')];
  for (const btn of tabs) {
    btn.addEventListener('click', () => { location.hash = `#${btn.dataset.view}`; });
    // Arrow keys move between tabs (WAI-ARIA tabs pattern).
    btn.addEventListener('keydown', (e) => {
      const i = tabs.indexOf(btn);
      const j = e.key === 'ArrowRight' ? (i + 1) % tabs.length : e.key === 'ArrowLeft' ? (i + tabs.length - 1) % tabs.length : e.key === 'Home' ? 0 : e.key === 'End' ? tabs.length - 1 : -1;
      if (j < 0) return;
      e.preventDefault();
      tabs[j].focus();
      tabs[j].click();
    });
  }
  window.addEventListener('hashchange', () => update((s) => { s.view = viewFromHash(); }));
}

function renderStatus(): void {
  const d = state.draft;
  const g = state.gateway;
  const dot = (cls: string) => h('span', { class: `dot ${cls}`, 'aria-hidden': 'true' });
  const draftText = d.status === 'ready' && d.info ? `draft: ${d.info.name} · ${d.info.backend === 'webgpu' ? 'WebGPU' : 'CPU'}` : `draft: ${d.status === 'loading' ? 'loading…' : d.status}`;
  const gwText = g.status === 'connected' && g.info ? `target: ${g.info.model} · ${g.info.backend}` : `gateway: ${g.status}`;
  const cls = (ok: boolean, busy: boolean, bad: boolean) => (ok ? 'ok' : busy ? 'busy' : bad ? 'bad' : '');
  document.getElementById('status')!.replaceChildren(
    h('span', { class: 'pill', 'data-testid': 'draft-pill' }, dot(cls(d.status === 'ready', d.status === 'loading', d.status === 'error')), draftText),
    h('span', { class: 'pill', 'data-testid': 'gateway-pill' }, dot(cls(g.status === 'connected', g.status === 'connecting' || g.status === 'reconnecting', g.status === 'error')), gwText),
  );
}

function renderNotices(): void {
  document.getElementById('notices')!.replaceChildren(...state.notices.map((n) =>
    h('div', { class: `notice ${n.level}`, role: n.level === 'error' ? 'alert' : 'status', 'data-testid': `notice-${n.level}` },
      h('div', { class: 'body' }, h('strong', {}, n.title), h('span', {}, n.text), n.hint ? h('span', { class: 'hint' }, n.hint) : null),
      h('div', { class: 'actions' },
        ...n.actions.map((a) => h('button', { class: 'btn', type: 'button', onclick: () => { dismiss(n.id); a.run(); } }, a.label)),
        h('button', { class: 'btn', type: 'button', 'aria-label': `Dismiss: ${n.title}`, onclick: () => dismiss(n.id) }, '✕')))));
}

async function boot(): Promise<void> {
  if (params.has('test')) installTestApi();
  const gw = params.get('gateway');
  if (gw != null) update((s) => { s.gateway.url = gw; });
  // ?draft=cpu runs the draft on the CPU reference (also settable in the Models view).
  if (params.get('draft') === 'cpu') update((s) => { s.draft.device = 'cpu'; });
  state.view = viewFromHash();
  wireTabs();
  if (state.view === 'engine-check') {
    renderTabs();
    const { engineCheckView } = await import('./engine-check.ts');
    await engineCheckView(document.getElementById('view-engine-check')!);
    return;
  }
  chatView(document.getElementById('view-chat')!);
  compareView(document.getElementById('view-compare')!);
  modelsView(document.getElementById('view-models')!);
  subscribe(() => {
    renderTabs();
    renderStatus();
    renderNotices();
  });
  update();
  await ensureReady();
}

void boot();
