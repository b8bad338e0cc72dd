// `duet bench spec`: speculative decoding on the bundled tiny pair, in one run.
//  - kSweep: tokens per target pass, acceptance and tok/s at k = 1..8 (--quick: 1, 2, 4, 8) and adaptive, greedy and
//    T = 0.7 (in-process LocalTarget on CpuBatchLlama, the cpu verifier's engine, or with
//    engine 'reference' on the plain CpuLlama; no injected latency). Greedy runs are
//    also checked token-for-token against target-only output (mismatches must be 0).
//  - rtt: speedup vs target-only baseline at injected RTT 0, 20, 50 ms, with and without
//    pipelining (adaptive k, greedy). The baseline streams, so it pays the RTT once per
//    generation; speculation pays it once per round.
//  - slowDraft: the k = 0 arm ("never slower than the target alone"): every draft forward slowed
//    by an injected delay (default: one target decode step, a draft as slow per step as the
//    target), adaptive k with and without the k = 0 arm vs the target-only baseline, RTT 0 and
//    20 ms, greedy (texts checked); spec and baseline runs alternate per prompt.
//  - capacity: H6's gateway capacity benchmark (64 sessions × 60 s; --quick shrinks it).
//  - sidecar: H7's batched-verify benchmark when server/verifiers/sidecar-bench.ts exists.
// Speed is measured here, never asserted. Everything shares this machine's CPU cores.

import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { CpuLlama } from '../../src/engine/reference.ts';
import { CpuBatchLlama, CpuBatchSession } from '../../src/engine/cpu-batch.ts';
import type { CausalLM } from '../../src/engine/model.ts';
import type { LlamaConfig } from '../../src/engine/config.ts';
import type { LlamaWeights } from '../../src/engine/weights.ts';
import { LocalTarget } from '../../src/engine/local-target.ts';
import { DelayedLink, DelayedModel, baseline, speculate, type DraftPrior } from '../../src/engine/speculative.ts';
import { SpecTally } from '../../src/engine/tally.ts';
import type { SamplingParams } from '../../src/engine/sampling.ts';
import { type CapacityPair, loadTinyPair, runCapacity } from './capacity.ts';
import { median } from './median.ts';

export interface SpecBenchOptions {
  quick?: boolean;
  targetDir?: string;
  draftDir?: string;
  /** Skip the capacity / sidecar sections (e.g. a smoke test). */
  skipCapacity?: boolean;
  skipSidecar?: boolean;
  /** Injected RTTs of the speedup sweep (default 0, 20, 50 ms; `duet bench all` passes its own). */
  rttMs?: number[];
  /** slowDraft section: injected ms per draft forward (default: the target's measured ms per decode step). */
  draftDelayMs?: number;
  /** Run only the slowDraft section (with the baselines it needs). */
  onlySlowDraft?: boolean;
  /**
   * The CPU engine of both models: 'batch' (default) is CpuBatchLlama, the engine `duet serve
   * --backend cpu` verifies on (a k+1 block in one pass, WebAssembly SIMD); 'reference' is the
   * plain CpuLlama oracle, which pays k+1 sequential steps per verify.
   */
  engine?: 'batch' | 'reference';
  /** Prompts and tokens per generation of the k sweep (default 8 × 64; quick 1 × 16). */
  prompts?: number;
  maxTokens?: number;
  log?: (line: string) => void;
}

export interface SweepRow {
  sampling: 'greedy' | 't0.7';
  k: number | 'adaptive';
  prompts: number;
  tokens: number;
  targetPasses: number;
  tokensPerTargetPass: number;
  acceptanceRate: number;
  meanAcceptedPerRound: number;
  meanK: number;
  tokPerSec: number;
  draftMsPerToken: number;
  verifyMsPerPass: number;
  /** Target-only tok/s on the same prompts, each run beside its speculative run (absent in results from before 2026-12-02). */
  baselineTokPerSec?: number;
  /** tokPerSec / baselineTokPerSec. */
  speedup?: number;
  /** Greedy: prompts whose output differs from target-only greedy (the exactness promise: 0). */
  mismatches?: number;
}

export interface SlowDraftRow {
  draftDelayMs: number;
  rttMs: number;
  /** adaptive: k in [0, 8] (k = 0: the target streams alone); adaptive-no-k0: k in [1, 8]. */
  mode: 'adaptive' | 'adaptive-no-k0';
  specTokPerSec: number;
  baselineTokPerSec: number;
  /** spec / baseline tok/s: the claim is >= 0.9 for 'adaptive'. */
  ratio: number;
  /** Share of tokens the target streamed alone. */
  streamedShare: number;
  tokensPerTargetPass: number;
  /** Runs (over every repeat) whose greedy text differs from the target alone's. */
  mismatches: number;
  /** Runs per prompt and mode; the row's times are the per-prompt medians. */
  repeats: number;
}

export interface RttRow {
  rttMs: number;
  pipeline: boolean;
  k: 'adaptive';
  specTokPerSec: number;
  baselineTokPerSec: number;
  speedup: number;
  tokensPerTargetPass: number;
  meanK: number;
  roundMs: number;
  pipelineHits: number;
  /** Runs (over every repeat) whose greedy text differs from the target alone's. */
  mismatches: number;
  /** Runs per prompt and mode; the row's times are the per-prompt medians. */
  repeats: number;
}

/** Repeats per prompt and mode in the RTT rows (alternating order, medians). */
export const RTT_REPS = 3;
/** The slowDraft rows' repeats: a 64-token run at RTT 0 takes ~70 ms here, where one pause moves a median of 3. */
export const SLOW_DRAFT_REPS = 7;

const r3 = (x: number): number => (Number.isFinite(x) ? Math.round(x * 1000) / 1000 : 0);
const GREEDY: SamplingParams = { temperature: 0, topK: 0, topP: 1, seed: 0 };
const T07: SamplingParams = { temperature: 0.7, topK: 0, topP: 1, seed: 0 };

export async function runSpecBench(o: SpecBenchOptions = {}) {
  const log = o.log ?? (() => {});
  const quick = !!o.quick;
  const t0 = performance.now();
  const pair = await loadTinyPair(o.targetDir, o.draftDir);
  const draftDir = o.draftDir ?? 'public/models/tiny-draft';
  if (pair.draftConfig.vocabSize !== pair.config.vocabSize) throw new Error(`draft vocab ${pair.draftConfig.vocabSize} != target vocab ${pair.config.vocabSize}`);
  const nPrompts = Math.min(pair.prompts.length, o.prompts ?? (quick ? 1 : 8));
  const prompts = pair.prompts.slice(0, nPrompts);
  const maxTokens = o.maxTokens ?? (quick ? 16 : 64);
  const ctx = Math.min(pair.config.maxPositionEmbeddings, 256);
  const engine = o.engine ?? 'batch';
  const cpuModel = (config: LlamaConfig, weights: LlamaWeights): CausalLM => engine === 'reference'
    ? new CpuLlama(config, weights, ctx)
    : new CpuBatchSession(new CpuBatchLlama(config, weights, ctx));
  const target = cpuModel(pair.config, pair.target);
  const draft = cpuModel(pair.draftConfig, pair.draft);
  const eos = pair.eosTokenIds;
  // warm the JIT on both models before anything is timed
  await target.forward(prompts[0], 0);
  await draft.forward(prompts[0], 0);

  log(`spec: baselines for ${nPrompts} prompts × ${maxTokens} tokens`);
  const greedyWant: number[][] = [];
  let baseTokens = 0;
  let baseMs = 0;
  for (const p of prompts) {
    const b = await baseline(new LocalTarget(target), p, { params: GREEDY, maxTokens, eosTokenIds: eos });
    greedyWant.push(b.tokens);
    baseTokens += b.tokens.length;
    baseMs += b.wallMs;
  }
  const baselineTokPerSec = (baseTokens * 1000) / baseMs;

  const slowDraft = await slowDraftSection(draft, target, prompts.slice(0, quick ? 1 : 3), maxTokens, eos, (baseMs / baseTokens), o.draftDelayMs, quick ? 1 : SLOW_DRAFT_REPS, log);
  if (o.onlySlowDraft) return { model: { target: pair.name, draft: draftDir, vocab: pair.config.vocabSize }, backend: 'cpu', engine, quick, slowDraft, wallMs: r3(performance.now() - t0) };

  const kSweep: SweepRow[] = [];
  for (const [name, params] of [['greedy', GREEDY], ['t0.7', T07]] as const) {
    for (const k of quick ? ([1, 2, 4, 8, 'adaptive'] as const) : ([1, 2, 3, 4, 5, 6, 7, 8, 'adaptive'] as const)) {
      const tally = new SpecTally();
      let mismatches = 0;
      // each prompt's target-only run sits beside its speculative one (order alternating by
      // prompt), so the row's speedup compares runs seconds apart on a box whose speed drifts
      let rowBaseTokens = 0;
      let rowBaseMs = 0;
      for (const [i, p] of prompts.entries()) {
        const runBase = async (): Promise<void> => {
          const b = await baseline(new LocalTarget(target), p, { params: { ...params, seed: i }, maxTokens, eosTokenIds: eos });
          rowBaseTokens += b.tokens.length;
          rowBaseMs += b.wallMs;
        };
        if (i % 2 === 0) await runBase();
        const r = await speculate(draft, new LocalTarget(target), p, {
          params: { ...params, seed: i }, maxTokens, k: k === 'adaptive' ? undefined : k, adaptive: k === 'adaptive', eosTokenIds: eos,
        });
        if (i % 2 === 1) await runBase();
        const s = r.stats;
        tally.add({
          tokens: r.tokens.length, targetPasses: s.targetPasses, drafted: s.draftedTokens, accepted: s.acceptedTokens, rounds: s.rounds,
          // k summed over verify rounds (kHistory's zeros are k = 0 stretches, not rounds)
          kSum: r.kHistory.reduce((a, b) => a + b, 0),
          wallMs: s.wallMs, draftMs: s.draftMsPerToken * s.draftedTokens, draftTokens: s.draftedTokens, verifyMs: s.verifyMsPerPass * s.rounds,
        });
        if (name === 'greedy' && JSON.stringify(r.tokens) !== JSON.stringify(greedyWant[i])) mismatches++;
      }
      const rowBaseTokPerSec = (rowBaseTokens * 1000) / rowBaseMs;
      const out: SweepRow = {
        sampling: name, k, prompts: nPrompts, tokens: tally.tokens, targetPasses: tally.targetPasses,
        tokensPerTargetPass: r3(tally.tokensPerTargetPass), acceptanceRate: r3(tally.acceptanceRate),
        meanAcceptedPerRound: r3(tally.meanAcceptedPerRound), meanK: r3(tally.meanKPerRound),
        tokPerSec: r3(tally.tokPerSec), draftMsPerToken: r3(tally.draftMsPerToken), verifyMsPerPass: r3(tally.verifyMsPerPass),
        baselineTokPerSec: r3(rowBaseTokPerSec), speedup: r3(tally.tokPerSec / rowBaseTokPerSec),
        ...(name === 'greedy' ? { mismatches } : {}),
      };
      kSweep.push(out);
      log(`spec: ${name} k=${k}: ${out.tokensPerTargetPass} tokens/pass, acceptance ${out.acceptanceRate}, ${out.tokPerSec} tok/s`);
    }
  }

  // Each prompt runs baseline and both speculative modes RTT_REPS times, in an order that
  // alternates by prompt and repeat (a mode run first pays for whatever ran before it); a
  // prompt's time in a mode is its median, and a row sums tokens over the sum of the medians.
  const rtt: RttRow[] = [];
  const rttPrompts = prompts.slice(0, quick ? 1 : 4);
  const reps = quick ? 1 : RTT_REPS;
  for (const rttMs of o.rttMs ?? [0, 20, 50]) {
    type Acc = { tok: number; ms: number[][]; passes: number; kSum: number; rounds: number; roundMs: number; hits: number; mismatches: number };
    const acc = (): Acc => ({ tok: 0, ms: rttPrompts.map(() => []), passes: 0, kSum: 0, rounds: 0, roundMs: 0, hits: 0, mismatches: 0 });
    const modes = { base: acc(), plain: acc(), pipelined: acc() };
    // each mode carries the draft's measured costs from run to run, as the app's worker and the
    // CLI do (the first run of each mode at each RTT starts without them)
    const priors: Partial<Record<keyof typeof modes, DraftPrior>> = {};
    for (const [i, p] of rttPrompts.entries()) {
      for (let rep = 0; rep < reps; rep++) {
        const order = (i + rep) % 2 === 0 ? (['base', 'plain', 'pipelined'] as const) : (['pipelined', 'plain', 'base'] as const);
        for (const mode of order) {
          const a = modes[mode];
          const link = new DelayedLink(new LocalTarget(target), rttMs);
          if (mode === 'base') {
            const b = await baseline(link, p, { params: GREEDY, maxTokens, eosTokenIds: eos });
            if (rep === 0) a.tok += b.tokens.length;
            a.ms[i].push(b.wallMs);
            continue;
          }
          const r = await speculate(draft, link, p, { params: GREEDY, maxTokens, adaptive: true, pipeline: mode === 'pipelined', eosTokenIds: eos, prior: priors[mode] });
          priors[mode] = r.prior ?? priors[mode];
          if (rep === 0) a.tok += r.tokens.length;
          a.ms[i].push(r.stats.wallMs);
          a.passes += r.stats.targetPasses;
          a.kSum += r.kHistory.reduce((x, y) => x + y, 0);
          a.rounds += r.stats.rounds;
          a.roundMs += r.stats.roundMs * r.stats.rounds;
          a.hits += r.stats.pipelineHits;
          if (JSON.stringify(r.tokens) !== JSON.stringify(greedyWant[i])) a.mismatches++;
        }
      }
    }
    const rate = (a: Acc): number => (a.tok * 1000) / a.ms.reduce((sum, xs) => sum + median(xs), 0);
    const base = rate(modes.base);
    for (const pipeline of [false, true]) {
      const a = pipeline ? modes.pipelined : modes.plain;
      const spec = rate(a);
      const row: RttRow = {
        rttMs, pipeline, k: 'adaptive', specTokPerSec: r3(spec), baselineTokPerSec: r3(base), speedup: r3(spec / base),
        // per run, over every repeat; k = 0 when every round was a stretch (no draft round at all)
        tokensPerTargetPass: r3((a.tok * reps) / a.passes), meanK: a.rounds ? r3(a.kSum / a.rounds) : 0, roundMs: a.rounds ? r3(a.roundMs / a.rounds) : 0,
        pipelineHits: a.hits, mismatches: a.mismatches, repeats: reps,
      };
      rtt.push(row);
      log(`spec: rtt ${rttMs} ms, pipeline ${pipeline}: ${row.specTokPerSec} vs ${row.baselineTokPerSec} tok/s (×${row.speedup}), mean k ${row.meanK}, median of ${reps}`);
    }
  }

  const k4 = kSweep.find((r) => r.sampling === 'greedy' && r.k === 4)!;
  const report: Record<string, unknown> = {
    model: { target: pair.name, draft: draftDir, vocab: pair.config.vocabSize },
    backend: 'cpu', engine,
    quick,
    prompts: nPrompts,
    maxTokens,
    baselineTokPerSec: r3(baselineTokPerSec),
    goal: { metric: 'tokensPerTargetPass at k = 4, greedy', target: 2.5, reached: k4.tokensPerTargetPass, met: k4.tokensPerTargetPass >= 2.5 },
    kSweep,
    rtt,
    slowDraft,
  };

  if (!o.skipCapacity) report.capacity = await capacity(pair, quick, log);
  if (!o.skipSidecar) report.sidecar = await sidecar(quick, log);
  report.wallMs = r3(performance.now() - t0);
  return report;
}

async function capacity(pair: CapacityPair, quick: boolean, log: (l: string) => void): Promise<unknown> {
  // A rejection nobody awaits inside the gateway/client stack would end the process and lose
  // the sections already measured; record such rejections in the report instead.
  const unhandled: string[] = [];
  const onUnhandled = (e: unknown): void => {
    unhandled.push(`${(e as Error)?.name}: ${(e as Error)?.message}`);
  };
  process.on('unhandledRejection', onUnhandled);
  try {
    const r = await runCapacity({ pair, sessions: quick ? 8 : 64, seconds: quick ? 5 : 60, maxTokens: quick ? 16 : 48, log });
    return unhandled.length ? { ...r, unhandledRejections: unhandled.length, unhandledSamples: unhandled.slice(0, 5) } : r;
  } catch (e) {
    log(`spec: capacity failed: ${(e as Error).message}`);
    return { error: `${(e as Error).name}: ${(e as Error).message}`, unhandledRejections: unhandled.length, unhandledSamples: unhandled.slice(0, 5) };
  } finally {
    process.off('unhandledRejection', onUnhandled);
  }
}

/** H7's sidecar batch benchmark, if that module exists (it needs Python + torch). */
async function sidecar(quick: boolean, log: (l: string) => void): Promise<unknown> {
  const path = resolve('server/verifiers/sidecar-bench.ts');
  if (!existsSync(path)) return { skipped: 'server/verifiers/sidecar-bench.ts not present' };
  try {
    const mod = (await import(/* @vite-ignore */ path)) as Record<string, unknown>;
    const fn = (mod.benchSidecarBatch ?? mod.runSidecarBench) as ((o: { quick: boolean; log: (l: string) => void }) => Promise<unknown>) | undefined;
    if (typeof fn !== 'function') return { skipped: 'sidecar-bench.ts exports no benchSidecarBatch()' };
    return await fn({ quick, log });
  } catch (e) {
    log(`spec: sidecar bench failed: ${(e as Error).message}`);
    return { error: `${(e as Error).name}: ${(e as Error).message}` };
  }
}

/**
 * Adaptive k with a draft slowed by draftDelayMs per forward, with and without the k = 0 arm, vs
 * the baseline. Like the RTT rows: each prompt runs the three modes `reps` times in an order that
 * alternates by prompt and repeat, a prompt's time in a mode is its median, and a row sums tokens
 * over the sum of the medians.
 */
async function slowDraftSection(
  draft: CausalLM, target: CausalLM, prompts: number[][], maxTokens: number, eos: number[],
  targetMsPerToken: number, draftDelayMs: number | undefined, reps: number, log: (l: string) => void,
): Promise<{ draftDelayMs: number; targetMsPerToken: number; rows: SlowDraftRow[] }> {
  const delay = r3(draftDelayMs ?? targetMsPerToken);
  const rows: SlowDraftRow[] = [];
  const slow = new DelayedModel(draft, delay);
  for (const rttMs of [0, 20]) {
    // texts[i]: every run's tokens for prompt i (checked against the baseline's once all ran)
    type Acc = { tok: number; ms: number[][]; streamed: number; passes: number; texts: number[][][] };
    const acc = (): Acc => ({ tok: 0, ms: prompts.map(() => []), streamed: 0, passes: 0, texts: prompts.map(() => []) });
    const modes = { base: acc(), adaptive: acc(), 'adaptive-no-k0': acc() };
    // each mode carries the draft's measured costs from run to run, as the app's worker and the CLI do
    const priors: Partial<Record<keyof typeof modes, DraftPrior>> = {};
    for (const [i, p] of prompts.entries()) {
      for (let rep = 0; rep < reps; rep++) {
        const order = (i + rep) % 2 === 0 ? (['base', 'adaptive', 'adaptive-no-k0'] as const) : (['adaptive-no-k0', 'adaptive', 'base'] as const);
        for (const mode of order) {
          const a = modes[mode];
          const link = new DelayedLink(new LocalTarget(target), rttMs);
          if (mode === 'base') {
            const b = await baseline(link, p, { params: GREEDY, maxTokens, eosTokenIds: eos });
            if (rep === 0) a.tok += b.tokens.length;
            a.ms[i].push(b.wallMs);
            a.texts[i].push(b.tokens);
            continue;
          }
          const r = await speculate(slow, link, p, { params: GREEDY, maxTokens, adaptive: true, targetOnlyArm: mode === 'adaptive', eosTokenIds: eos, prior: priors[mode] });
          priors[mode] = r.prior ?? priors[mode];
          if (rep === 0) a.tok += r.tokens.length;
          a.ms[i].push(r.stats.wallMs);
          a.streamed += r.stats.streamedTokens;
          a.passes += r.stats.targetPasses;
          a.texts[i].push(r.tokens);
        }
      }
    }
    const rate = (a: Acc): number => (a.tok * 1000) / a.ms.reduce((sum, xs) => sum + median(xs), 0);
    const base = rate(modes.base);
    for (const mode of ['adaptive', 'adaptive-no-k0'] as const) {
      const a = modes[mode];
      const mismatches = a.texts.reduce((n, runs, i) => n + runs.filter((t) => JSON.stringify(t) !== JSON.stringify(modes.base.texts[i][0])).length, 0);
      const spec = rate(a);
      const row: SlowDraftRow = {
        draftDelayMs: delay, rttMs, mode, specTokPerSec: r3(spec), baselineTokPerSec: r3(base), ratio: r3(spec / base),
        streamedShare: r3(a.streamed / (a.tok * reps)), tokensPerTargetPass: r3((a.tok * reps) / a.passes), mismatches, repeats: reps,
      };
      rows.push(row);
      log(`spec: slow draft (+${delay} ms/forward), rtt ${rttMs} ms, ${mode}: ${row.specTokPerSec} vs ${row.baselineTokPerSec} tok/s (×${row.ratio}), ${Math.round(row.streamedShare * 100)}% streamed`);
    }
  }
  return { draftDelayMs: delay, targetMsPerToken: r3(targetMsPerToken), rows };
}
