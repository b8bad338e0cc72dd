// `duet speculate`: a headless speculative run. The draft runs here (cpu reference or the WGSL
// engine on Dawn); the target is either local (--target DIR, a LocalTarget in this process) or
// a gateway (--gateway ws://host:port/ws, through the protocol client). --rtt-ms injects link
// latency (half each way); --baseline also runs target-only decoding on the same link for a
// speedup. --draft-delay-ms slows every draft forward (a slow draft device), where adaptive k
// must fall back to its k = 0 arm (the target streaming alone). JSON keys follow issue 4 item 6.

import { parseArgs } from 'node:util';
import { validateSampling, type SamplingParams } from '../engine/sampling.ts';
import type { TargetLink } from '../engine/target-link.ts';
import { LocalTarget } from '../engine/local-target.ts';
import { DelayedLink, DelayedModel, baseline, speculate, type DraftPrior, type Provenance, type SpecStats } from '../engine/speculative.ts';
import { Tokenizer, tokenizerHash } from '../engine/tokenizer.ts';
import { type Backend, UsageError, num, openBackend, parseBackend, parseQuant } from './generate.ts';
import { withLoadBar } from '../../server/progress.ts';

const HELP = `usage: duet speculate --draft DIR (--target DIR | --gateway URL) (--prompt TEXT | --tokens 1,2,3) [options]
  --draft DIR          draft model folder (HF safetensors or .gguf), run in this process
  --target DIR         target model folder, verified in this process (LocalTarget)
  --gateway URL        or a gateway: ws://host:port/ws (duet serve); --token SECRET if it wants one
  --prompt TEXT        prompt, encoded with the draft's tokenizer (--chat: as one user message)
  --tokens 1,2,3       prompt as token ids
  --k N                fixed draft block size (default 4)
  --adaptive           choose k per round in [0, --k-max] (default k-max 8); k = 0: the target streams
                       alone for a stretch when the cost model says drafting loses (--no-k0: k >= 1 only)
  --pipeline           draft the next block while a verdict is in flight
  --temperature T      default 0 (greedy); --top-k K, --top-p P (default off), --seed S
  --max-tokens N       default 64
  --rtt-ms MS          injected draft↔target round-trip latency, half each way (default 0)
  --draft-delay-ms MS  injected extra time per draft forward call (a slow draft device; default 0)
  --baseline           also run target-only decoding on the same link; adds "baseline" and "speedup"
  --repeats N          with --baseline: warm both modes up, then N runs of each in alternating order;
                       adds "repeats" (every run, medians, speedup and TTFT ratio of the medians)
  --backend cpu|webgpu draft (and local target) backend, default cpu; --quant none|auto|f16|bf16|q8|q4
  --json               print one JSON object (otherwise text, then a stats line on stderr)`;

/** The stats fields come from the controller's SpecStats, so the two cannot drift apart. */
type ReportedStats = Pick<SpecStats, 'acceptanceRate' | 'meanAcceptedPerRound' | 'tokensPerTargetPass' | 'targetPasses' |
  'draftMsPerToken' | 'verifyMsPerPass' | 'roundMs' | 'wallMs' | 'tokPerSec' | 'ttftMs' | 'rounds' | 'pipelineHits' | 'wastedDraftTokens' |
  'stretches' | 'streamedTokens' | 'streamMsPerToken' | 'meanQueueMs' | 'meanBatch'>;

export interface SpeculateReport extends ReportedStats {
  text: string | null;
  tokens: number[];
  promptTokens: number;
  stopReason: string;
  meanK: number;
  kHistory: number[];
  provenance: Record<Provenance, number>;
  settings: Record<string, unknown>;
  baseline?: { text: string | null; tokens: number[]; tokPerSec: number; targetPasses: number; wallMs: number; ttftMs: number };
  speedup?: number;
  /** --repeats N: every run's figures and their medians (speedup and TTFT ratio from the medians). */
  repeats?: {
    n: number; order: string;
    speculative: { tokPerSec: number[]; ttftMs: number[] }; baseline: { tokPerSec: number[]; ttftMs: number[] };
    median: { specTokPerSec: number; baseTokPerSec: number; specTtftMs: number; baseTtftMs: number };
    speedup: number; ttftRatio: number; acceptanceRate: number[]; tokensPerTargetPass: number[];
  };
  /** Greedy only: speculative tokens equal the baseline's (the exactness promise). */
  identical?: boolean;
}

const round2 = (x: number): number => (Number.isFinite(x) ? Math.round(x * 100) / 100 : 0);
const round4 = (x: number): number => (Number.isFinite(x) ? Math.round(x * 10000) / 10000 : 0);

export async function run(argv: string[]): Promise<number> {
  const { values: a } = parseArgs({
    args: argv,
    options: {
      draft: { type: 'string' }, target: { type: 'string' }, gateway: { type: 'string' }, token: { type: 'string' },
      prompt: { type: 'string' }, tokens: { type: 'string' }, chat: { type: 'boolean' },
      k: { type: 'string' }, adaptive: { type: 'boolean' }, 'k-max': { type: 'string' }, pipeline: { type: 'boolean' },
      temperature: { type: 'string' }, 'top-k': { type: 'string' }, 'top-p': { type: 'string' }, seed: { type: 'string' },
      'max-tokens': { type: 'string' }, 'rtt-ms': { type: 'string' }, baseline: { type: 'boolean' },
      'draft-delay-ms': { type: 'string' }, 'no-k0': { type: 'boolean' }, repeats: { type: 'string' },
      backend: { type: 'string' }, quant: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (a.help) {
    console.log(HELP);
    return 0;
  }
  if (!a.draft) throw new UsageError('--draft DIR is required\n' + HELP);
  if ((a.target === undefined) === (a.gateway === undefined)) throw new UsageError('give exactly one of --target DIR or --gateway URL\n' + HELP);
  if ((a.prompt === undefined) === (a.tokens === undefined)) throw new UsageError('give exactly one of --prompt TEXT or --tokens 1,2,3\n' + HELP);
  if (a.k !== undefined && a.adaptive) throw new UsageError('--k and --adaptive exclude each other (use --k-max with --adaptive)');
  const backend = parseBackend(a.backend);
  const quant = parseQuant(a.quant);
  const k = num('k', a.k, 4, { int: true, min: 1 });
  const kMax = num('k-max', a['k-max'], 8, { int: true, min: 1 });
  const maxTokens = num('max-tokens', a['max-tokens'], 64, { int: true, min: 1 });
  const rttMs = num('rtt-ms', a['rtt-ms'], 0, { min: 0 });
  const draftDelayMs = num('draft-delay-ms', a['draft-delay-ms'], 0, { min: 0 });
  const repeats = num('repeats', a.repeats, 1, { int: true, min: 1 });
  if (repeats > 1 && !a.baseline) throw new UsageError('--repeats compares the two modes: it needs --baseline');
  const params: SamplingParams = {
    temperature: num('temperature', a.temperature, 0, { min: 0 }),
    topK: num('top-k', a['top-k'], 0, { int: true, min: 0 }),
    topP: num('top-p', a['top-p'], 1),
    seed: num('seed', a.seed, 0, { int: true, min: 0 }),
  };
  validateSampling(params);

  const draft = await withLoadBar(a.draft, !!a.json, (onProgress) => openBackend(a.draft!, backend, quant, undefined, onProgress));
  let target: Backend | null = null;
  try {
    const tokenizer = draft.tokenizer;
    const c = draft.lm.config;
    if (a.target) {
      target = await withLoadBar(a.target, !!a.json, (onProgress) => openBackend(a.target!, backend, quant, undefined, onProgress));
      await checkSameTokenizer(draft, target);
    }
    const prompt = encodePrompt(a, tokenizer, c.vocabSize);
    const eos = [...new Set([...(draft.model.generationConfig?.eosTokenIds ?? []), ...c.eosTokenIds, ...(tokenizer?.eosId != null ? [tokenizer.eosId] : [])])];
    const hash = draft.model.tokenizerJson ? await tokenizerHash(draft.model.tokenizerJson) : '';

    const newLink = async (mode: 'speculative' | 'baseline'): Promise<TargetLink> => {
      if (target) {
        const local = new LocalTarget(target.lm, { maxDraft: Math.max(16, kMax, k) });
        return rttMs > 0 ? new DelayedLink(local, rttMs) : local;
      }
      const { connectGateway } = await import('../protocol/client.ts');
      const remote = await connectGateway({ url: a.gateway!, tokenizerHash: hash, token: a.token, mode, rttMs, clientName: 'duet speculate' });
      const maxBlock = remote.info?.maxBlock ?? Infinity;
      const want = a.adaptive ? kMax : k;
      if (want > maxBlock) {
        await remote.close();
        throw new UsageError(`the gateway takes at most ${maxBlock} draft tokens per verify: use ${a.adaptive ? '--k-max' : '--k'} <= ${maxBlock}`);
      }
      return remote;
    };

    // warm-up: one forward of the prompt on each local model, so neither timed run pays JIT/pipeline creation
    await draft.lm.forward(prompt, 0);
    if (target) await target.lm.forward(prompt, 0);

    const draftLm = draftDelayMs > 0 ? new DelayedModel(draft.lm, draftDelayMs) : draft.lm;
    // the draft's measured costs carry from one run to the next, as in the app's worker
    let prior: DraftPrior | undefined;
    const runSpec = async (tokens = maxTokens) => {
      const link = await newLink('speculative');
      try {
        const r = await speculate(draftLm, link, prompt, {
          params, maxTokens: tokens, k: a.adaptive ? undefined : k, adaptive: !!a.adaptive, kMax, pipeline: !!a.pipeline, eosTokenIds: eos, targetOnlyArm: !a['no-k0'], prior,
        });
        prior = r.prior ?? prior;
        return r;
      } finally {
        await link.close();
      }
    };
    const runBase = async (tokens = maxTokens) => {
      const bl = await newLink('baseline');
      try {
        return await baseline(bl, prompt, { params, maxTokens: tokens, eosTokenIds: eos });
      } finally {
        await bl.close();
      }
    };
    // --repeats N: both modes warmed up first (the first run after a load pays for cold caches),
    // then N pairs in alternating order (spec, base), (base, spec), …; the report is the first
    // speculative run's, with the medians of every run beside it.
    if (repeats > 1) {
      await runSpec(8);
      await runBase(8);
    }
    const specRuns: Awaited<ReturnType<typeof runSpec>>[] = [];
    const baseRuns: Awaited<ReturnType<typeof runBase>>[] = [];
    for (let i = 0; i < repeats; i++) {
      if (a.baseline && i % 2 === 1) baseRuns.push(await runBase());
      specRuns.push(await runSpec());
      if (a.baseline && i % 2 === 0) baseRuns.push(await runBase());
    }
    const r = specRuns[0];
    const decode = (ids: number[]): string | null => (tokenizer ? tokenizer.decode(ids, { skipSpecialTokens: true }) : null);
    const s = r.stats;
    const prov: Record<Provenance, number> = { draft: 0, correction: 0, bonus: 0, target: 0 };
    for (const p of r.provenance) prov[p]++;
    const report: SpeculateReport = {
      text: decode(r.tokens), tokens: r.tokens, promptTokens: prompt.length, stopReason: r.stopReason,
      acceptanceRate: round4(s.acceptanceRate), meanAcceptedPerRound: round2(s.meanAcceptedPerRound),
      tokensPerTargetPass: round2(s.tokensPerTargetPass), targetPasses: s.targetPasses,
      draftMsPerToken: round2(s.draftMsPerToken), verifyMsPerPass: round2(s.verifyMsPerPass), roundMs: round2(s.roundMs),
      wallMs: round2(s.wallMs), tokPerSec: round2(s.tokPerSec), ttftMs: round2(s.ttftMs), rounds: s.rounds, meanK: round2(s.meanK),
      kHistory: r.kHistory, provenance: prov, pipelineHits: s.pipelineHits, wastedDraftTokens: s.wastedDraftTokens,
      stretches: s.stretches, streamedTokens: s.streamedTokens, streamMsPerToken: round2(s.streamMsPerToken), meanQueueMs: round2(s.meanQueueMs), meanBatch: round2(s.meanBatch),
      settings: {
        draft: a.draft, target: a.target ?? null, gateway: a.gateway ?? null, backend, quant, k: a.adaptive ? 'adaptive' : k, kMax, pipeline: !!a.pipeline, rttMs, draftDelayMs,
        targetOnlyArm: !!a.adaptive && !a['no-k0'], maxTokens, sampling: params,
      },
    };
    if (a.baseline) {
      const b = baseRuns[0];
      report.baseline = { text: decode(b.tokens), tokens: b.tokens, tokPerSec: round2(b.tokPerSec), targetPasses: b.targetPasses, wallMs: round2(b.wallMs), ttftMs: round2(b.ttftMs) };
      report.speedup = b.tokPerSec > 0 ? round4(s.tokPerSec / b.tokPerSec) : 0;
      const same = (x: number[]) => JSON.stringify(x) === JSON.stringify(r.tokens);
      if (params.temperature === 0) report.identical = [...specRuns, ...baseRuns].every((x) => same(x.tokens));
      if (repeats > 1) {
        const sp = { tokPerSec: specRuns.map((x) => round2(x.stats.tokPerSec)), ttftMs: specRuns.map((x) => round2(x.stats.ttftMs)) };
        const bs = { tokPerSec: baseRuns.map((x) => round2(x.tokPerSec)), ttftMs: baseRuns.map((x) => round2(x.ttftMs)) };
        const m = { specTokPerSec: median(sp.tokPerSec), baseTokPerSec: median(bs.tokPerSec), specTtftMs: median(sp.ttftMs), baseTtftMs: median(bs.ttftMs) };
        report.repeats = {
          n: repeats, order: 'warm-up of both, then alternating pairs (spec, base), (base, spec), …', speculative: sp, baseline: bs, median: m,
          speedup: m.baseTokPerSec > 0 ? round4(m.specTokPerSec / m.baseTokPerSec) : 0,
          ttftRatio: m.baseTtftMs > 0 ? round4(m.specTtftMs / m.baseTtftMs) : 0,
          acceptanceRate: specRuns.map((x) => round4(x.stats.acceptanceRate)),
          tokensPerTargetPass: specRuns.map((x) => round2(x.stats.tokensPerTargetPass)),
        };
      }
    }
    if (a.json) console.log(JSON.stringify(report));
    else {
      console.log(report.text ?? r.tokens.join(','));
      console.error(
        `[${r.tokens.length} tokens, stop: ${r.stopReason}, ${report.tokPerSec} tok/s, acceptance ${report.acceptanceRate}, ` +
          `${report.tokensPerTargetPass} tokens/target pass, mean k ${report.meanK}, ${report.streamedTokens} tokens streamed by the target alone` +
          (report.baseline ? `; baseline ${report.baseline.tokPerSec} tok/s, speedup ${report.speedup}x${report.identical === undefined ? '' : `, identical: ${report.identical}`}` : '') + ']',
      );
    }
    return 0;
  } finally {
    await draft.close();
    await target?.close();
  }
}

function encodePrompt(a: { tokens?: string; prompt?: string; chat?: boolean; draft?: string }, tokenizer: Tokenizer | null, vocab: number): number[] {
  if (a.tokens !== undefined) {
    const ids = a.tokens.split(',').map((s) => Number(s.trim()));
    if (ids.length === 0 || ids.some((t) => !Number.isInteger(t) || t < 0 || t >= vocab)) throw new UsageError(`--tokens: ids must be integers in [0, ${vocab})`);
    return ids;
  }
  if (!tokenizer) throw new UsageError(`${a.draft} has no tokenizer.json; pass --tokens instead of --prompt`);
  const ids = a.chat ? tokenizer.encodeChat([{ role: 'user', content: a.prompt! }]) : tokenizer.encode(a.prompt!, { addSpecialTokens: true });
  if (ids.length === 0) throw new UsageError('--prompt encodes to no tokens');
  return ids;
}

export class TokenizerMismatchError extends Error {
  override name = 'TokenizerMismatchError';
}

/** Draft and target must share one tokenizer (and vocabulary), or verification is meaningless. */
async function checkSameTokenizer(draft: Backend, target: Backend): Promise<void> {
  const dv = draft.lm.config.vocabSize;
  const tv = target.lm.config.vocabSize;
  if (dv !== tv) throw new TokenizerMismatchError(`draft vocab ${dv} != target vocab ${tv}: pick a draft trained with the target's tokenizer`);
  const dj = draft.model.tokenizerJson;
  const tj = target.model.tokenizerJson;
  if (dj && tj && (await tokenizerHash(dj)) !== (await tokenizerHash(tj))) {
    throw new TokenizerMismatchError('draft and target tokenizer.json differ (hash mismatch): pick a draft that shares the target tokenizer');
  }
}

function median(xs: number[]): number {
  const v = [...xs].sort((x, y) => x - y);
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : round2((v[m - 1] + v[m]) / 2);
}
