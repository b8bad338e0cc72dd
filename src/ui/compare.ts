// The side-by-side view: one prompt run at the same time as the target alone (baseline) and
// as speculative decoding; live text panes, counters, charts, an RTT slider, JSON/PNG export.

import { h, fmt, download } from './dom.ts';
import { settingsForm } from './settings.ts';
import { state, update, subscribe, newRunView, type RunView } from './state.ts';
import { ensureReady, newRunId, startRun, stopRun } from './app.ts';
import { renderPieces } from './chat.ts';
import { acceptanceChart, histogramChart, timelineChart, drawSvg, COLORS } from './charts.ts';
import type { RunStats } from '../lib/index.ts';

function counter(label: string, testid: string): { el: HTMLElement; set: (v: string) => void } {
  const v = h('span', { class: 'v', 'data-testid': testid }, '–');
  return { el: h('div', { class: 'counter' }, v, h('span', { class: 'l' }, label)), set: (x) => { v.textContent = x; } };
}

function pane(title: string, subtitle: string, key: 'base' | 'spec') {
  const text = h('div', { class: 'text', 'data-testid': `${key}-text`, 'aria-live': 'off', tabindex: 0, 'aria-label': `${title} output` });
  const c = {
    tokps: counter('tok/s', `${key}-tokps`),
    ttft: counter('TTFT', `${key}-ttft`),
    tokens: counter('tokens', `${key}-tokens`),
    passes: counter('target passes', `${key}-passes`),
  };
  const status = h('span', { class: 'muted small', 'data-testid': `${key}-status` });
  const el = h('section', { class: 'card pane', 'aria-label': title, 'data-testid': `${key}-pane` },
    h('header', {}, h('div', {}, h('h2', {}, title), h('p', { class: 'muted small' }, subtitle)), status),
    h('div', { class: 'counters' }, c.tokps.el, c.ttft.el, c.tokens.el, c.passes.el),
    text);
  return { el, text, status, show(run: RunView | null): void {
    if (!run) {
      text.replaceChildren();
      for (const x of Object.values(c)) x.set('–');
      status.textContent = '';
      return;
    }
    if (text.childElementCount > run.pieces.length) text.replaceChildren();
    renderPieces(text, run.pieces);
    const st = run.stats;
    c.tokps.set(fmt(st?.tokPerSec, 1));
    c.ttft.set(fmt(st?.ttftMs, 0, ' ms'));
    c.tokens.set(st ? String(st.tokens) : '–');
    c.passes.set(st ? String(st.targetPasses) : '–');
    status.textContent = run.error ? `error: ${run.error.message}` : run.running ? (run.status || 'running…') : run.doneReason === 'stopped' ? 'stopped' : 'done';
    el.dataset.state = run.running ? 'running' : run.error ? 'error' : 'done';
  } };
}

export function compareView(root: HTMLElement): void {
  const prompt = h('input', { id: 'compare-prompt', type: 'text', value: 'And God said, Let there be light', 'aria-label': 'Prompt for both runs',
    onkeydown: (e: Event) => { if ((e as KeyboardEvent).key === 'Enter') void run(); } });
  const runBtn = h('button', { class: 'btn primary', type: 'button', onclick: () => void run(), 'data-testid': 'compare-run' }, 'Run both');
  const stopBtn = h('button', { class: 'btn danger', type: 'button', disabled: true, onclick: () => stop(), 'data-testid': 'compare-stop' }, 'Stop');
  const jsonBtn = h('button', { class: 'btn', type: 'button', disabled: true, onclick: () => exportJson(), 'data-testid': 'export-json' }, 'Export JSON');
  const pngBtn = h('button', { class: 'btn', type: 'button', disabled: true, onclick: () => void exportPng(), 'data-testid': 'export-png' }, 'Export PNG');
  const speedup = h('span', { class: 'speedup', 'data-testid': 'speedup', 'aria-live': 'polite' }, 'speedup –');
  const summary = h('p', { class: 'muted small', 'data-testid': 'compare-summary' });
  const base = pane('Target alone (baseline)', 'The gateway generates one token per target pass and streams it.', 'base');
  const spec = pane('Speculative (draft + target)', 'Your browser drafts k tokens; the target verifies each block in one pass.', 'spec');
  const charts = {
    acceptance: h('div', { class: 'chart-body' }),
    histogram: h('div', { class: 'chart-body' }),
    timeline: h('div', { class: 'chart-body' }),
  };
  const chartCard = (title: string, body: HTMLElement, caption: string, extra?: HTMLElement, wide = false): HTMLElement =>
    h('figure', { class: `card chart${wide ? ' wide' : ''}`, style: 'margin:0' }, h('h3', {}, title), extra ?? null, body, h('figcaption', { class: 'caption' }, caption));
  const timelineLegend = h('div', { class: 'chart-legend' },
    ...(['draft', 'network', 'verify'] as const).map((p) => h('span', {}, h('i', { style: `background:${COLORS[p]}` }), p === 'network' ? 'network + queue' : p === 'draft' ? 'draft (browser)' : 'verify (target)')));

  root.append(
    h('div', { class: 'card' },
      h('div', { class: 'compare-top' },
        h('label', { class: 'field', for: 'compare-prompt', style: 'margin:0' }, h('span', {}, 'Prompt (run as baseline and as speculative at the same time)'), prompt),
        h('div', { class: 'row' }, runBtn, stopBtn)),
      h('details', { class: 'settings', style: 'margin-top:0.8rem' }, h('summary', {}, 'Latency and sampling settings'),
        h('div', { class: 'compare-settings' }, settingsForm('compare', { rtt: true }))),
      h('div', { class: 'row', style: 'margin-top:0.6rem' }, speedup, summary, h('span', { style: 'flex:1' }), jsonBtn, pngBtn)),
    h('div', { class: 'panes' }, base.el, spec.el),
    h('div', { class: 'charts' },
      chartCard('Acceptance per round', charts.acceptance, 'Green: share of each round\'s drafted tokens the target accepted.'),
      chartCard('Accepted length histogram', charts.histogram, 'Rounds by number of accepted draft tokens (blue: whole block accepted, plus a bonus token).'),
      chartCard('Where the time goes', h('div', { 'data-testid': 'phase-totals', class: 'small' }), 'Total time per phase over the speculative run.'),
      chartCard('Timeline per round', charts.timeline, 'One row per round, on the run\'s clock.', timelineLegend, true)),
  );
  const totals = root.querySelector('[data-testid="phase-totals"]') as HTMLElement;

  async function run(): Promise<void> {
    if (state.compare.spec?.running || state.compare.base?.running) return;
    const text = prompt.value.trim();
    if (!text) return;
    const specRun = newRunView(newRunId('spec'));
    const baseRun = newRunView(newRunId('base'));
    specRun.status = baseRun.status = 'preparing…';
    update((s) => {
      s.compare.prompt = text;
      s.compare.spec = specRun;
      s.compare.base = baseRun;
    });
    if (!(await ensureReady())) {
      update(() => {
        for (const r of [specRun, baseRun]) {
          r.running = false;
          r.error = state.draft.error ?? state.gateway.error ?? { code: 'not-ready', message: 'not ready', hint: '' };
        }
      });
      return;
    }
    const settings = { ...state.settings };
    const messages = [{ role: 'user' as const, content: text }];
    await Promise.all([
      startRun({ runId: baseRun.runId, mode: 'baseline', messages, prompt: text, settings }, baseRun),
      startRun({ runId: specRun.runId, mode: 'speculative', messages, prompt: text, settings }, specRun),
    ]);
  }

  function stop(): void {
    for (const r of [state.compare.spec, state.compare.base]) if (r?.running) stopRun(r.runId);
  }

  function report(): object {
    const { spec: sp, base: bs, prompt: p } = state.compare;
    const pick = (r: RunView | null) => r && { text: r.text, tokens: r.pieces.filter((x) => x.id >= 0).map((x) => x.id), provenance: r.pieces.filter((x) => x.id >= 0).map((x) => x.prov), stats: r.stats, doneReason: r.doneReason };
    return {
      tool: 'duet side-by-side',
      date: new Date().toISOString(),
      prompt: p,
      settings: state.settings,
      draft: state.draft.info,
      gateway: state.gateway.info,
      speedup: speedupOf(sp?.stats ?? null, bs?.stats ?? null),
      baseline: pick(bs),
      speculative: { ...pick(sp), rounds: sp?.rounds ?? [] },
    };
  }

  function exportJson(): void {
    download(new Blob([JSON.stringify(report(), null, 2)], { type: 'application/json' }), `duet-compare-${Date.now()}.json`);
  }

  async function exportPng(): Promise<void> {
    const canvas = h('canvas', { width: 1200, height: 900 });
    const ctx = canvas.getContext('2d')!;
    ctx.fillStyle = '#ffffff';
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.fillStyle = '#1b1f24';
    ctx.font = '600 22px system-ui, sans-serif';
    ctx.fillText('duet — baseline vs speculative', 24, 40);
    ctx.font = '14px system-ui, sans-serif';
    ctx.fillStyle = '#5d6672';
    const st = state.settings;
    ctx.fillText(`prompt: "${state.compare.prompt}" · T=${st.temperature} · k=${st.adaptive ? `adaptive ≤${st.k}` : st.k} · RTT ${st.rttMs} ms · ${speedup.textContent}`, 24, 66);
    const line = (label: string, r: RunView | null, y: number): void => {
      const s2 = r?.stats;
      ctx.fillText(`${label}: ${fmt(s2?.tokPerSec, 1)} tok/s · TTFT ${fmt(s2?.ttftMs, 0, ' ms')} · ${s2?.tokens ?? 0} tokens · ${s2?.targetPasses ?? 0} target passes` +
        (s2?.acceptanceRate != null ? ` · acceptance ${Math.round(s2.acceptanceRate * 100)}% · ${fmt(s2.tokensPerTargetPass, 2)} tokens/pass` : ''), 24, y);
    };
    line('baseline', state.compare.base, 92);
    line('speculative', state.compare.spec, 114);
    const rounds = state.compare.spec?.rounds ?? [];
    await drawSvg(ctx, acceptanceChart(rounds), 24, 140, 560);
    await drawSvg(ctx, histogramChart(rounds), 616, 140, 560);
    await drawSvg(ctx, timelineChart(rounds), 24, 420, 1152);
    canvas.toBlob((blob) => { if (blob) download(blob, `duet-compare-${Date.now()}.png`); }, 'image/png');
  }

  let lastRounds = -1;
  function render(): void {
    const { spec: sp, base: bs } = state.compare;
    base.show(bs);
    spec.show(sp);
    const running = Boolean(sp?.running || bs?.running);
    runBtn.disabled = running;
    stopBtn.disabled = !running;
    jsonBtn.disabled = pngBtn.disabled = !sp || running;
    const su = speedupOf(sp?.stats ?? null, bs?.stats ?? null);
    speedup.textContent = su == null ? 'speedup –' : `speedup ×${su.toFixed(2)}`;
    speedup.className = `speedup${su == null ? '' : su >= 1 ? ' win' : ' lose'}`;
    const ss = sp?.stats;
    summary.textContent = ss && ss.acceptanceRate != null
      ? `acceptance ${Math.round(ss.acceptanceRate * 100)}% · ${ss.tokensPerTargetPass.toFixed(2)} tokens per target pass · ${ss.rounds} rounds`
      : '';
    const rounds = sp?.rounds ?? [];
    if (rounds.length !== lastRounds) {
      lastRounds = rounds.length;
      charts.acceptance.replaceChildren(acceptanceChart(rounds));
      charts.histogram.replaceChildren(histogramChart(rounds));
      charts.timeline.replaceChildren(timelineChart(rounds));
      const sum = (f: (r: typeof rounds[number]) => number) => rounds.reduce((a, r) => a + f(r), 0);
      const parts = [['draft (browser)', sum((r) => r.draftMs), COLORS.draft], ['network + queue', sum((r) => r.networkMs), COLORS.network], ['verify (target)', sum((r) => r.verifyMs), COLORS.verify]] as const;
      const total = Math.max(1e-9, parts.reduce((a, p) => a + p[1], 0));
      totals.replaceChildren(...parts.map(([label, ms, color]) => h('div', { class: 'progress' },
        h('div', { class: 'label' }, h('span', {}, h('i', { class: 'key', style: `background:${color}` }), label), h('span', { class: 'mono' }, rounds.length ? `${ms.toFixed(0)} ms · ${Math.round((ms / total) * 100)}%` : '–')),
        h('div', { class: 'bar', role: 'meter', 'aria-label': label, 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': rounds.length ? Math.round((ms / total) * 100) : 0 },
          h('span', { style: `width:${rounds.length ? (ms / total) * 100 : 0}%;background:${color}` })))));
    }
  }
  subscribe(render);
  render();
}

export function speedupOf(spec: RunStats | null, base: RunStats | null): number | null {
  if (!spec || !base || !(base.tokPerSec > 0) || !(spec.tokPerSec > 0)) return null;
  return spec.tokPerSec / base.tokPerSec;
}
