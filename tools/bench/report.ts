// Renders `duet bench all` results (results.json) into report.md + SVG figures, and the README's
// headline table between <!-- results:start --> / <!-- results:end -->. Every number comes from
// results.json, except the reference report's claims (REFERENCE, quoted from
// ../shared/reference/seed-benchmark.md and checked against it by the test) and the published
// device speeds of the projection (PUBLISHED), each labelled as such where it is shown.

import type { AllResults, Section } from './schema.ts';
import type { CapacityReport } from './capacity.ts';
import type { KernelBenchResult } from './kernels.ts';
import type { VerifyBenchResult } from './verify.ts';
import type { LoadTimeResult } from './loadtime.ts';
import type { RttRow, SlowDraftRow, SweepRow } from './spec.ts';
import type { SidecarBenchResult } from '../../server/verifiers/sidecar-bench.ts';
import { barChart, lineChart, type ChartSpec } from './plots.ts';

/** The reference report's claimed figures (Llama-3.2-1B → 3B on Wormhole), quoted verbatim. */
export const REFERENCE = {
  acceptanceRate: 0.888,
  tokensPerTargetStep: 3.55,
  speedup: 3.55,
  specTokPerSec: 21.05,
  baselineTokPerSec: 5.92,
  specTtftMs: 483,
  baselineTtftMs: 5038.8,
  specInitS: 123,
  baselineInitS: 7.09,
};

/**
 * Published single-user device speeds used by the projection (see ../shared/reference/README.md):
 * tt-metal models/tt_transformers/PERF.md (Wormhole n150, batch 1) and llama.cpp's WebGPU
 * backend on an Apple M3 in Chrome (4-bit Llama-3.2-1B).
 */
export const PUBLISHED = {
  n150Target3BTokPerSec: 54,
  browserDraft1BTokPerSec: 51,
};

export interface SpecData {
  model: { target: string; draft: string; vocab: number };
  prompts: number;
  maxTokens: number;
  baselineTokPerSec: number;
  kSweep: SweepRow[];
  rtt: RttRow[];
  /** The k = 0 arm with a slowed draft (absent in runs before it was recorded). */
  slowDraft?: { draftDelayMs: number; targetMsPerToken: number; rows: SlowDraftRow[] };
  /** The CPU engine of both models (absent in runs before it was recorded: those ran the reference). */
  engine?: 'batch' | 'reference';
}

export interface Figure {
  file: string;
  title: string;
  svg: string;
}

const ok = <T>(s: Section | undefined): T | null => (s && s.status === 'ok' ? (s.data as T) : null);
const why = (s: Section | undefined): string => (!s ? 'not run' : s.status === 'error' ? `failed: ${s.error}` : s.status === 'skipped' ? `skipped (${s.reason})` : '');
const n2 = (v: number | null | undefined, d = 2): string => (v === null || v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(d));
const pct = (v: number | null | undefined): string => (v === null || v === undefined || !Number.isFinite(v) ? '–' : `${(v * 100).toFixed(1)}%`);
const mib = (b: number | null | undefined): string => (b ? `${(b / 2 ** 20).toFixed(0)} MiB` : '–');

export function machineLine(r: AllResults): string {
  const m = r.machine;
  return `${m.cpu} ×${m.cores}, node ${m.node}, load ${m.loadavgStart.toFixed(1)}→${m.loadavgEnd.toFixed(1)}`;
}

/** Smallest x (in order) where speedup crosses 1, as text. */
export function crossover(rows: { rttMs: number; speedup: number }[]): string {
  if (!rows.length) return 'not measured';
  const above = rows.filter((r) => r.speedup >= 1);
  if (above.length === rows.length) return `speculative ≥ baseline at every RTT measured (up to ${rows[rows.length - 1].rttMs} ms)`;
  if (!above.length) return `speculative < baseline at every RTT measured (${rows.map((r) => r.rttMs).join(', ')} ms)`;
  const first = rows.findIndex((r, i) => i > 0 && (r.speedup >= 1) !== (rows[i - 1].speedup >= 1));
  return `crossover between ${rows[first - 1].rttMs} and ${rows[first].rttMs} ms (speedup ${n2(rows[first - 1].speedup)} → ${n2(rows[first].speedup)})`;
}

/** Expected tokens per target pass for i.i.d. acceptance α and block k (Leviathan et al. 2023). */
export const expectedTokensPerPass = (alpha: number, k: number): number => (alpha >= 1 ? k + 1 : (1 - alpha ** (k + 1)) / (1 - alpha));

/**
 * Projected single-user tok/s, no pipelining: tokens per round / (k draft steps + one verify
 * pass + RTT), with a (k+1)-token verify costed as one decode step of the target (decode is
 * memory-bound at batch 1: an optimistic assumption, stated in the README).
 */
export function projectTokPerSec(tokensPerPass: number, k: number, rttMs: number, p = PUBLISHED): number {
  return tokensPerPass / (k / p.browserDraft1BTokPerSec + 1 / p.n150Target3BTokPerSec + rttMs / 1000);
}

function kFigures(r: AllResults, cap: string): Figure[] {
  const spec = ok<SpecData>(r.sections.spec);
  const ks = [1, 2, 3, 4, 5, 6, 7, 8, 'adaptive'] as const;
  const series = (field: 'tokensPerTargetPass' | 'acceptanceRate') => (['greedy', 't0.7'] as const).map((s) => ({
    name: s === 'greedy' ? 'greedy (T = 0)' : 'T = 0.7',
    values: ks.map((k) => spec?.kSweep.find((row) => row.sampling === s && row.k === k)?.[field] ?? null),
  }));
  const base = { xLabel: 'draft block k', categories: ks.map(String), breakBefore: [ks.length - 1], caption: `${cap} · ${r.adapters.spec}` };
  const t1 = `Tokens per target pass vs k${spec ? '' : ` (${why(r.sections.spec)})`}`;
  const t2 = `Acceptance rate vs k${spec ? '' : ` (${why(r.sections.spec)})`}`;
  return [
    { file: 'k-tokens-per-pass.svg', title: t1, svg: lineChart({ ...base, title: t1, yLabel: 'generated tokens / target pass', series: spec ? series('tokensPerTargetPass') : [], refLine: { y: 1, label: 'target-only = 1' } }) },
    { file: 'k-acceptance.svg', title: t2, svg: lineChart({ ...base, title: t2, yLabel: 'accepted / drafted', series: spec ? series('acceptanceRate') : [] }) },
  ];
}

function rttFigure(r: AllResults, cap: string): Figure {
  const spec = ok<SpecData>(r.sections.spec);
  const rtts = [...new Set(spec?.rtt.map((x) => x.rttMs) ?? r.config.rttMs)];
  const row = (ms: number, pipe: boolean) => spec?.rtt.find((x) => x.rttMs === ms && x.pipeline === pipe);
  const title = `Speculative vs baseline tok/s vs injected RTT${spec ? '' : ` (${why(r.sections.spec)})`}`;
  const c: ChartSpec = {
    title, caption: `${cap} · ${r.adapters.spec}`, xLabel: 'injected round trip (ms)', yLabel: 'tokens / s (one session)', categories: rtts.map(String),
    series: spec ? [
      { name: 'speculative, pipelined', values: rtts.map((ms) => row(ms, true)?.specTokPerSec ?? null) },
      { name: 'speculative, not pipelined', values: rtts.map((ms) => row(ms, false)?.specTokPerSec ?? null) },
      { name: 'baseline (target only)', values: rtts.map((ms) => row(ms, false)?.baselineTokPerSec ?? null), dashed: true },
    ] : [],
  };
  return { file: 'rtt-tokps.svg', title, svg: lineChart(c) };
}

function capacityFigures(r: AllResults, cap: string): Figure[] {
  const runs = ok<CapacityReport[]>(r.sections.capacity) ?? [];
  const cats = runs.map((x) => String(x.results[0]?.sessions ?? '?'));
  const get = (mode: 'speculative' | 'baseline', f: (m: CapacityReport['results'][number]) => number) => runs.map((x) => {
    const m = x.results.find((y) => y.mode === mode);
    return m ? f(m) : null;
  });
  const suffix = runs.length ? '' : ` (${why(r.sections.capacity)})`;
  const caption = `${cap} · ${r.adapters.capacity ?? 'cpu verifier'}, all on this box`;
  const base = { caption, xLabel: 'concurrent sessions', categories: cats };
  const t1 = `Gateway throughput vs concurrent sessions${suffix}`;
  const t2 = `Target passes per generated token${suffix}`;
  const t3 = `Verify latency p50 / p99 (ms)${suffix}`;
  return [
    { file: 'capacity-tokps.svg', title: t1, svg: lineChart({ ...base, title: t1, yLabel: 'tokens / s', series: [
      { name: 'speculative, total', values: get('speculative', (m) => m.tokPerSecTotal) },
      { name: 'baseline, total', values: get('baseline', (m) => m.tokPerSecTotal), dashed: true },
      { name: 'speculative, per session', values: get('speculative', (m) => m.tokPerSecPerSession.mean) },
      { name: 'baseline, per session', values: get('baseline', (m) => m.tokPerSecPerSession.mean), dashed: true },
    ] }) },
    { file: 'capacity-passes.svg', title: t2, svg: lineChart({ ...base, title: t2, yLabel: 'target passes / token', refLine: { y: 1, label: 'one pass per token' }, series: [
      { name: 'speculative', values: get('speculative', (m) => m.targetPassesPerToken) },
      { name: 'baseline', values: get('baseline', (m) => m.targetPassesPerToken), dashed: true },
    ] }) },
    { file: 'capacity-latency.svg', title: t3, svg: lineChart({ ...base, title: t3, yLabel: 'ms', series: [
      { name: 'speculative verify p50', values: get('speculative', (m) => m.latencyMs.p50) },
      { name: 'speculative verify p99', values: get('speculative', (m) => m.latencyMs.p99) },
      { name: 'baseline token gap p50', values: get('baseline', (m) => m.latencyMs.p50), dashed: true },
      { name: 'baseline token gap p99', values: get('baseline', (m) => m.latencyMs.p99), dashed: true },
    ] }) },
  ];
}

function kernelFigure(r: AllResults, cap: string): Figure {
  const k = ok<KernelBenchResult>(r.sections.kernels);
  const shapes = [...new Set(k?.matmul.map((m) => `${m.model} ${m.name}`) ?? [])];
  // q4 may be measured in several kernel variants: one series each
  const key = (m: KernelBenchResult['matmul'][number]): string => m.variant ?? m.format;
  const formats = [...new Set(k?.matmul.map(key) ?? [])];
  const title = `Decode matmul bandwidth / copy-kernel bandwidth${k ? '' : ` (${why(r.sections.kernels)})`}`;
  return {
    file: 'kernels-ratio.svg', title,
    svg: barChart({
      title, caption: `${cap} · ${k?.adapter ?? 'no adapter'}`, width: 1000, xLabel: 'layer shape (m = 1)', yLabel: 'matmul GB/s ÷ copy GB/s',
      categories: shapes.map((s) => s.replace(/_proj/g, '').replace(' (tied)', '')), refLine: { y: 1, label: 'copy kernel' },
      series: formats.map((f) => ({ name: f, values: shapes.map((s) => k?.matmul.find((m) => `${m.model} ${m.name}` === s && key(m) === f)?.ratio ?? null) })),
    }),
  };
}

function loadFigures(r: AllResults, cap: string): Figure[] {
  const l = ok<LoadTimeResult>(r.sections.loadtime);
  const suffix = l ? '' : ` (${why(r.sections.loadtime)})`;
  const caption = `${cap} · ${l ? `${l.browser}, ${l.adapter ?? 'no WebGPU adapter'}, draft on ${l.draftBackend}` : 'browser'}`;
  const t1 = `Draft init in the browser: cold vs cached (s)${suffix}`;
  const t2 = `Peak memory during load + one run (MiB)${suffix}`;
  return [
    { file: 'init-time.svg', title: t1, svg: barChart({ title: t1, caption, xLabel: '', yLabel: 'seconds', categories: ['cold (empty IndexedDB)', 'cached (reload)'], series: l ? [
      { name: 'navigation → ready (harness)', values: [l.coldMs / 1000, l.cachedMs / 1000] },
      { name: 'worker loadMs', values: [l.coldWorkerMs === null ? null : l.coldWorkerMs / 1000, l.cachedWorkerMs === null ? null : l.cachedWorkerMs / 1000] },
    ] : [] }) },
    { file: 'memory.svg', title: t2, svg: barChart({ title: t2, caption, xLabel: '', yLabel: 'MiB', categories: ['Chromium process tree RSS', 'page JS heap'], series: l ? [
      { name: 'peak', values: [l.peakRssBytes / 2 ** 20, l.peakJsHeapBytes === null ? null : l.peakJsHeapBytes / 2 ** 20] },
    ] : [] }) },
  ];
}

function sidecarFigure(r: AllResults, cap: string): Figure {
  const s = ok<SidecarBenchResult>(r.sections.sidecar);
  const title = `Sidecar: ${s?.sessions ?? 16} verifies as one batch vs one at a time (ms)${s ? '' : ` (${why(r.sections.sidecar)})`}`;
  return {
    file: 'sidecar-batch.svg', title,
    svg: barChart({ title, caption: `${cap} · sidecar ${s ? `torch on ${s.device}` : ''}`, xLabel: '', yLabel: 'ms per round', categories: ['round wall time', 'sidecar forward time'], series: s ? [
      { name: 'one verify_batch', values: [s.batchedMs, s.batchedForwardMs] },
      { name: 'one session at a time', values: [s.sequentialMs, s.sequentialForwardMs] },
    ] : [] }),
  };
}

export function figures(r: AllResults): Figure[] {
  const cap = machineLine(r);
  return [...kFigures(r, cap), rttFigure(r, cap), ...capacityFigures(r, cap), kernelFigure(r, cap), ...loadFigures(r, cap), sidecarFigure(r, cap)];
}

const img = (f: Figure): string => `![${f.title}](${f.file})`;

export function renderReport(r: AllResults): { markdown: string; figures: Figure[] } {
  const figs = figures(r);
  const by = (file: string): Figure => figs.find((f) => f.file === file)!;
  const spec = ok<SpecData>(r.sections.spec);
  const kern = ok<KernelBenchResult>(r.sections.kernels);
  const runs = ok<CapacityReport[]>(r.sections.capacity) ?? [];
  const load = ok<LoadTimeResult>(r.sections.loadtime);
  const side = ok<SidecarBenchResult>(r.sections.sidecar);
  const L: string[] = [
    `# duet benchmark report${r.quick ? ' (--quick: a smoke run, not a measurement)' : ''}`, '',
    `Generated by \`duet bench all\` on ${r.date}${r.machine.commit ? ` at commit ${r.machine.commit}` : ''} in ${(r.wallMs / 1000).toFixed(0)} s.`, '',
    `- Machine: ${r.machine.cpu}, ${r.machine.cores} cores, ${(r.machine.memBytes / 2 ** 30).toFixed(1)} GiB, ${r.machine.platform}, node ${r.machine.node}; 1-minute load average ${r.machine.loadavgStart.toFixed(1)} at the start, ${r.machine.loadavgEnd.toFixed(1)} at the end (other work on the box slows every number here).`,
    `- WebGPU adapter (kernels): ${r.adapters.webgpu ?? '–'}; speculative runs: ${r.adapters.spec}; capacity: ${r.adapters.capacity ?? 'cpu verifier'}; browser: ${load ? `${load.browser}, ${load.adapter ?? 'no adapter'}` : '–'}.`,
    `- Sections: ${Object.entries(r.sections).map(([n, s]) => `${n} ${s.status}${s.status !== 'skipped' ? ` (${(s.wallMs / 1000).toFixed(0)} s)` : ''}`).join(', ')}.`,
    ...Object.entries(r.sections).filter(([, s]) => s.status === 'error').map(([n, s]) => `- **${n} failed**: ${(s as { error: string }).error}`),
    ...(r.machine.models && JSON.stringify(r.machine.models.start) !== JSON.stringify(r.machine.models.end) ? [`- **The bundled model files changed during the run** (${JSON.stringify(r.machine.models.start)} → ${JSON.stringify(r.machine.models.end)}): sections before and after measured different models.`] : []),
    ...(r.unhandledRejections.length ? [`- Unhandled rejections during the run: ${r.unhandledRejections.length} (first: ${r.unhandledRejections[0]})`] : []),
    '',
    '## Speculative decoding vs k', '',
    spec ? `Tiny pair (${spec.model.target} / ${spec.model.draft}), ${spec.prompts} prompts × ${spec.maxTokens} tokens, in process, no injected latency. Target-only, timed once before the sweep: ${n2(spec.baselineTokPerSec)} tok/s; each row's own target-only runs sit beside its speculative ones, and its speedup is against those.` : why(r.sections.spec), '',
    img(by('k-tokens-per-pass.svg')), '', img(by('k-acceptance.svg')), '',
  ];
  if (spec) {
    L.push('| sampling | k | tokens / target pass | acceptance | mean k | tok/s | target-only tok/s | speedup | greedy mismatches |', '|---|---|---|---|---|---|---|---|---|');
    for (const x of spec.kSweep) L.push(`| ${x.sampling} | ${x.k} | ${n2(x.tokensPerTargetPass)} | ${pct(x.acceptanceRate)} | ${n2(x.meanK)} | ${n2(x.tokPerSec)} | ${x.baselineTokPerSec === undefined ? '–' : n2(x.baselineTokPerSec)} | ${x.speedup === undefined ? '–' : `×${n2(x.speedup)}`} | ${x.mismatches ?? '–'} |`);
    L.push('');
  }
  L.push('## Speculative vs baseline under network round trip', '', img(by('rtt-tokps.svg')), '');
  if (spec) {
    const reps = spec.rtt[0]?.repeats;
    L.push(`Adaptive k, greedy, in process behind an injected RTT (DelayedLink); ${reps ? `each prompt ${reps} times per mode in alternating order, per-prompt medians` : 'one run per prompt and mode'}. Each mode carries the draft's measured costs from one run to the next (speculate's prior), as the app's worker and the CLI do; the first run of each mode at each RTT has none. Mean k 0: every round was a stretch (the target streamed alone from round 0). Pipelined: ${crossover(spec.rtt.filter((x) => x.pipeline))}. Not pipelined: ${crossover(spec.rtt.filter((x) => !x.pipeline))}.`, '',
      '| RTT ms | pipelined | spec tok/s | baseline tok/s | speedup | tokens / pass | mean k | round ms | mismatches |', '|---|---|---|---|---|---|---|---|---|');
    for (const x of spec.rtt) L.push(`| ${x.rttMs} | ${x.pipeline} | ${n2(x.specTokPerSec)} | ${n2(x.baselineTokPerSec)} | ${n2(x.speedup)} | ${n2(x.tokensPerTargetPass)} | ${n2(x.meanK)} | ${n2(x.roundMs, 1)} | ${x.mismatches} |`);
    L.push('');
  }
  if (spec?.slowDraft) {
    const sd = spec.slowDraft;
    const reps = sd.rows[0]?.repeats;
    L.push('## Never slower: a slowed draft and the k = 0 arm', '',
      `The draft slowed by ${n2(sd.draftDelayMs, 3)} ms per forward (one target decode step here, ${n2(sd.targetMsPerToken, 3)} ms/token): drafting cannot pay, and the adaptive controller's k = 0 arm (the target streams alone) must keep speculation near the target alone; without the arm it drafts every round. Adaptive k, greedy, in process; ${reps ? `each prompt ${reps} times per mode in alternating order, per-prompt medians` : 'one run per prompt and mode'}. Each mode carries the draft's measured costs from one run to the next (speculate's prior), as the app's worker and the CLI do.`, '',
      '| RTT ms | mode | spec tok/s | baseline tok/s | ratio | streamed share | tokens / pass | mismatches |', '|---|---|---|---|---|---|---|---|');
    for (const x of sd.rows) L.push(`| ${x.rttMs} | ${x.mode} | ${n2(x.specTokPerSec)} | ${n2(x.baselineTokPerSec)} | ×${n2(x.ratio)} | ${pct(x.streamedShare)} | ${n2(x.tokensPerTargetPass)} | ${x.mismatches} |`);
    L.push('');
  }
  L.push('## Gateway capacity', '', `Each point: N concurrent headless sessions for ${r.config.capacitySeconds} s per mode through an in-process gateway over loopback WebSockets (k = 4, greedy, ${r.config.capacityMaxTokens} tokens per generation). Speculative latency is the client-observed verify round; baseline latency is the gap between streamed tokens. ${runs[0]?.draft === 'memo' ? `Drafts: in a deployment each browser drafts for itself, so here the sessions share one memo of tiny-draft's logits per token sequence, filled before the window (${n2((runs[0].memoWarmupMs ?? 0) / 1000, 1)} s) by one greedy pass per prompt against a local copy of the target; proposals are the real draft's, and a miss runs the real draft (misses per run in the table). Gateway and verifier share this machine's cores with the harness.` : 'Drafts (one per session), gateway and verifier share this machine\'s cores.'}`, '',
    img(by('capacity-tokps.svg')), '', img(by('capacity-passes.svg')), '', img(by('capacity-latency.svg')), '');
  if (runs.length) {
    L.push('| sessions | mode | tok/s total | tok/s per session | passes / token | p50 ms | p99 ms | mean batch | errors | draft memo misses |', '|---|---|---|---|---|---|---|---|---|---|');
    for (const c of runs) for (const m of c.results) L.push(`| ${m.sessions} | ${m.mode} | ${n2(m.tokPerSecTotal)} | ${n2(m.tokPerSecPerSession.mean)} | ${n2(m.targetPassesPerToken, 3)} | ${n2(m.latencyMs.p50, 1)} | ${n2(m.latencyMs.p99, 1)} | ${n2(m.meanBatch)} | ${m.errors} | ${m.draftMemo ? `${m.draftMemo.misses} of ${m.draftMemo.hits + m.draftMemo.misses}` : '–'} |`);
    L.push('');
  } else L.push(why(r.sections.capacity), '');
  L.push('## Kernel bandwidth', '', img(by('kernels-ratio.svg')), '');
  if (kern) {
    L.push(`Adapter ${kern.adapter}, timing ${kern.timing}, working set ${mib(kern.workingSetBytes)}, median of ${kern.reps}.`, '', '| format | 1B GB/s | copy GB/s | ratio 1B | ratio 3B |', '|---|---|---|---|---|');
    const rows = { ...kern.summary, ...(kern.q4Variants ?? {}) };
    delete (rows as Record<string, unknown>).q4; // shown per variant
    if (!kern.q4Variants && kern.summary.q4) (rows as Record<string, unknown>).q4 = kern.summary.q4;
    for (const [f, s] of Object.entries(rows)) L.push(`| ${f}${kern.q4Headline?.variant === f ? ' (q4 headline)' : ''} | ${n2(s!.gbps1B, 3)} | ${n2(s!.copyGbps1B, 3)} | ${n2(s!.ratio1B)} | ${n2(s!.ratio3B)} |`);
    if (kern.engine) L.push('', `Engine decode on ${kern.engine.config}, ${kern.engine.format}: ${n2(kern.engine.tokPerS)} tok/s, ${mib(kern.engine.bufferBytes)} of GPU buffers.`);
    L.push('');
  } else L.push(why(r.sections.kernels), '');
  L.push('## Browser: cold vs cached init, memory, TTFT', '', img(by('init-time.svg')), '', img(by('memory.svg')), '');
  if (load) {
    const c = load.compare;
    L.push(`Cold: ${n2(load.coldMs / 1000)} s to a ready draft (worker ${n2((load.coldWorkerMs ?? NaN) / 1000)} s); cached reload: ${n2(load.cachedMs / 1000)} s (worker ${n2((load.cachedWorkerMs ?? NaN) / 1000)} s, from cache: ${load.cachedFromCache}). Peak RSS of Chromium's process tree ${mib(load.peakRssBytes)}, page JS heap ${mib(load.peakJsHeapBytes)}.`,
      `Side-by-side run (${c.maxTokens} tokens, greedy): speculative ${n2(c.spec?.tokPerSec)} tok/s, TTFT ${n2(c.spec?.ttftMs, 0)} ms, ${n2(c.spec?.tokensPerTargetPass)} tokens/pass; baseline ${n2(c.base?.tokPerSec)} tok/s, TTFT ${n2(c.base?.ttftMs, 0)} ms; identical text: ${c.identical}. Both modes run at once there, so these TTFTs include each other's contention.`, '');
    const so = load.solo;
    if (so) L.push(`Solo runs (each mode alone, ${so.reps} per mode in alternating order, ${so.maxTokens} tokens, medians): TTFT ${n2(so.spec.medianTtftMs, 1)} ms speculative / ${n2(so.base.medianTtftMs, 1)} ms baseline (×${n2(so.ttftRatio)}); ${n2(so.spec.medianTokPerSec)} / ${n2(so.base.medianTokPerSec)} tok/s; identical texts: ${so.identical}.`, '');
  } else L.push(why(r.sections.loadtime), '');
  L.push(...verifySection(r));
  L.push('## Sidecar batch', '', img(by('sidecar-batch.svg')), '');
  if (side) L.push(`${side.sessions} sessions × k = ${side.k} on ${side.model} (${side.device}): one verify_batch ${n2(side.batchedMs, 1)} ms vs one at a time ${n2(side.sequentialMs, 1)} ms (×${n2(side.speedup)}); forward only ×${n2(side.forwardSpeedup)}.`, '');
  else L.push(why(r.sections.sidecar), '');
  return { markdown: L.join('\n'), figures: figs };
}

/** `duet bench verify`: ms of one pass per backend × shape × (B, T), and the ratio to (1, 1). */
function verifySection(r: AllResults): string[] {
  const s = r.sections.verify;
  if (!s) return [];
  const v = ok<VerifyBenchResult>(s);
  const L = ['## One target pass vs batch shape', ''];
  if (!v) return [...L, why(s), ''];
  const m = v.summary;
  L.push(`Median ms of one verifyBatch for B sessions × T tokens each (T = 1: a decode step), and × its (B = 1, T = 1) time. cpu = CpuBatchLlama (one pass per batch, WebAssembly SIMD matmuls); cpu-reference = the plain CpuLlama path it replaced, one session after the other; sidecar = the torch sidecar in its CPU default float32, sidecar-bf16 = the same in bfloat16 (\`--dtype bfloat16\`). cpu numbers below are from process CPU time (the machine may be loaded).`, '',
    `cpu, tiny target: decode ${n2(m.cpuDecodeTokPerS, 0)} tok/s vs ${n2(m.cpuReferenceDecodeTokPerS, 0)} on the reference (×${n2(m.decodeSpeedup)}); a 5-token pass = ${n2(m.cpuPass5OverDecode)} decode steps, 9 tokens = ${n2(m.cpuPass9OverDecode)}.`, '');
  for (const run of v.runs) {
    if (run.status !== 'ok') {
      L.push(`- ${run.backend} on ${run.shape}: failed (${run.error})`);
      continue;
    }
    L.push(`**${run.backend}** on ${run.shape} (${run.device}):`, '', `| B \ T | ${v.tokens.join(' | ')} |`, `|---|${v.tokens.map(() => '---').join('|')}|`);
    for (const B of v.batches) {
      L.push(`| ${B} | ${v.tokens.map((T) => {
        const c = run.cells.find((x) => x.B === B && x.T === T);
        return c ? `${n2(c.ms, 1)} ms (×${n2(c.ratio)})` : '–';
      }).join(' | ')} |`);
    }
    L.push('');
  }
  return L;
}

export const MARK_START = '<!-- results:start -->';
export const MARK_END = '<!-- results:end -->';

/** The README section: the headline table beside the reference report's, every cell labelled. */
export function readmeSection(r: AllResults, reportPath: string): string {
  const spec = ok<SpecData>(r.sections.spec);
  const load = ok<LoadTimeResult>(r.sections.loadtime);
  const runs = ok<CapacityReport[]>(r.sections.capacity) ?? [];
  const greedy = spec?.kSweep.filter((x) => x.sampling === 'greedy' && typeof x.k === 'number') ?? [];
  const adaptive = spec?.kSweep.find((x) => x.sampling === 'greedy' && x.k === 'adaptive');
  const rtt0 = spec?.rtt.find((x) => x.rttMs === 0 && x.pipeline);
  // Projection: measured tokens/pass at each fixed k, best k, at RTT 0 and 50 ms.
  const proj = (rtt: number) => greedy.map((x) => ({ k: x.k as number, tps: projectTokPerSec(x.tokensPerTargetPass, x.k as number, rtt) })).sort((a, b) => b.tps - a.tps)[0];
  const claimed = (rtt: number) => [1, 2, 3, 4, 5, 6, 7, 8].map((k) => ({ k, tps: projectTokPerSec(expectedTokensPerPass(REFERENCE.acceptanceRate, k), k, rtt) })).sort((a, b) => b.tps - a.tps)[0];
  const p0 = proj(0);
  const p50 = proj(50);
  const c0 = claimed(0);
  const biggest = runs[runs.length - 1]?.results;
  const capSpec = biggest?.find((m) => m.mode === 'speculative');
  const capBase = biggest?.find((m) => m.mode === 'baseline');
  const M = (s: string) => `${s} *(measured-here)*`;
  const P = (s: string) => `${s} *(projected)*`;
  const C = (s: string) => `${s} *(claimed-by-reference)*`;
  // browser tok/s: the solo medians (each mode alone); the side-by-side run's modes contend with each other
  const browserTps = (m: 'spec' | 'base'): string => {
    if (load?.solo) return `; ${M(`${n2(load.solo[m].medianTokPerSec)} (browser, solo median)`)}`;
    const c = load?.compare[m];
    return c ? `; ${M(`${n2(c.tokPerSec)} (browser, side by side)`)}` : '';
  };
  // an adaptive run that streamed every token (k = 0 throughout) accepted nothing because it drafted nothing: quote fixed k = 4's
  const k4 = greedy.find((x) => x.k === 4);
  const acceptance = !adaptive ? '–'
    : adaptive.meanK > 0 || !k4 ? M(`${pct(adaptive.acceptanceRate)} (greedy, adaptive k)`)
      : M(`${pct(k4.acceptanceRate)} (greedy, k = 4; adaptive k streamed every token, drafting nothing)`);
  const rows: [string, string, string, string][] = [
    ['Acceptance rate', acceptance, '–', C(pct(REFERENCE.acceptanceRate))],
    ['Tokens per target pass', adaptive ? M(`${n2(adaptive.tokensPerTargetPass)} (adaptive); best fixed k: ${n2(Math.max(...greedy.map((x) => x.tokensPerTargetPass)))}`) : '–', '–', C(`${REFERENCE.tokensPerTargetStep}`)],
    ['Speculative tok/s (one user)', rtt0 ? M(`${n2(rtt0.specTokPerSec)} (CPU, RTT 0, pipelined)`) + browserTps('spec') : '–',
      p0 ? P(`${n2(p0.tps, 1)} at RTT 0 (k = ${p0.k}), ${n2(p50!.tps, 1)} at RTT 50 ms (k = ${p50!.k})`) : '–', C(`${REFERENCE.specTokPerSec}`)],
    ['Baseline tok/s (target only)', rtt0 ? M(`${n2(rtt0.baselineTokPerSec)} (CPU)`) + browserTps('base') : '–',
      P(`${PUBLISHED.n150Target3BTokPerSec} (published n150 3B, batch 1)`), C(`${REFERENCE.baselineTokPerSec}`)],
    ['Speedup', rtt0 ? M(`×${n2(rtt0.speedup)} (CPU, RTT 0)`) : '–', p0 ? P(`×${n2(p0.tps / PUBLISHED.n150Target3BTokPerSec)}`) : '–', C(`×${REFERENCE.speedup}`)],
    ['Time to first token', load?.solo ? M(`${n2(load.solo.spec.medianTtftMs, 1)} ms speculative / ${n2(load.solo.base.medianTtftMs, 1)} ms baseline (browser, solo medians)`) : load?.compare.spec ? M(`${n2(load.compare.spec.ttftMs, 0)} ms speculative / ${n2(load.compare.base?.ttftMs, 0)} ms baseline (browser, side by side)`) : '–', '–', C(`~${REFERENCE.specTtftMs} ms / ${REFERENCE.baselineTtftMs} ms`)],
    ['Init time', load ? M(`draft cold ${n2(load.coldMs / 1000)} s / cached ${n2(load.cachedMs / 1000)} s (browser)`) : '–', '–', C(`${REFERENCE.specInitS} s speculative / ${REFERENCE.baselineInitS} s baseline`)],
    ['Target passes per token (gateway)', capSpec && capBase ? M(`${n2(capSpec.targetPassesPerToken, 3)} speculative / ${n2(capBase.targetPassesPerToken, 3)} baseline at ${capSpec.sessions} sessions`) : '–', p0 ? P(`${n2(1 / Math.max(...greedy.map((x) => x.tokensPerTargetPass)), 3)} (measured, device-independent)`) : '–', C(`${n2(1 / REFERENCE.tokensPerTargetStep, 3)} (1 / 3.55)`)],
  ];
  return [
    MARK_START,
    `<!-- generated by \`duet bench readme --from ${reportPath.replace(/\/report\.md$/, '')}\` from results.json; do not edit by hand -->`,
    '',
    `Latest run: ${r.date.slice(0, 10)}${r.machine.commit ? `, commit ${r.machine.commit}` : ''}, ${r.machine.cpu} ×${r.machine.cores} (load ${r.machine.loadavgStart.toFixed(1)}), WebGPU adapter ${r.adapters.webgpu ?? '–'}${r.quick ? ' — a --quick smoke run, not a measurement' : ''}. Full report with plots: [${reportPath}](${reportPath}).`,
    `Measured here = ${spec ? `the bundled tiny pair (${spec.model.target} / ${spec.model.draft}, vocabulary ${spec.model.vocab})` : 'the bundled tiny pair'} on the machine above, ${spec?.engine === 'batch' ? 'the cpu verifier\'s engine (CpuBatchLlama)' : 'CPU reference'} and SwiftShader; the reference report ran Llama-3.2-1B → 3B on a Wormhole card, so the columns describe different models and hardware.`,
    '',
    '| Metric | duet, measured here | duet, projected (browser GPU 1B draft + Wormhole n150 3B target) | reference report |',
    '|---|---|---|---|',
    ...rows.map((x) => `| ${x.join(' | ')} |`),
    '',
    `Projection formula (no pipelining): tok/s = τ_k / (k / D + 1 / T + RTT), where τ_k is the tokens per target pass measured here at block k (tiny pair: its acceptance, not the 1B/3B pair's), D = ${PUBLISHED.browserDraft1BTokPerSec} tok/s (published: llama.cpp WebGPU, Llama-3.2-1B 4-bit, Apple M3, Chrome), T = ${PUBLISHED.n150Target3BTokPerSec} tok/s (published: tt-metal PERF.md, Llama-3.2-3B, n150, batch 1), and a k+1-token verify is assumed to cost one target decode step (memory-bound; optimistic). The best k is shown. With the reference's claimed acceptance ${pct(REFERENCE.acceptanceRate)} instead (τ_k = (1 − α^(k+1)) / (1 − α)), the same formula gives ${n2(c0.tps, 1)} tok/s at k = ${c0.k}, RTT 0 (projected): a browser draft about as fast as the target cannot speed up one user much; the gain is target capacity (passes per token).`,
    MARK_END,
  ].join('\n');
}

/** README text with the section between the markers replaced (appended under "## Results" if absent). */
export function updateReadme(readme: string, r: AllResults, reportPath: string): string {
  const section = readmeSection(r, reportPath);
  const a = readme.indexOf(MARK_START);
  const b = readme.indexOf(MARK_END);
  if (a >= 0 && b > a) return readme.slice(0, a) + section + readme.slice(b + MARK_END.length);
  return `${readme.replace(/\s*$/, '')}\n\n## Results\n\n${section}\n`;
}
