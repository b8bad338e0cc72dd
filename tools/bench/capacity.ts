// Gateway capacity benchmark: N concurrent headless sessions (target behind an in-process
// gateway reached over real loopback WebSockets) generate for a fixed time, speculative and
// baseline. Reports errors, verify latency p50/p99 as the client sees it (queue + batch forward
// + loopback), mean batch size, target passes per generated token and tok/s per session and in
// total, as JSON.
// Drafts: in a deployment each browser runs its own; here N drafts on one core would bound the
// run by the drafting, not by the server. By default (`draft: 'memo'`) the sessions share one
// memo of tiny-draft's logits per token sequence (tools/bench/memo-draft.ts), filled before the
// timed window by one greedy pass per prompt against a local copy of the target: proposals are
// the real draft's, only its compute is shared, and each mode reports its memo misses (a miss
// runs the real draft). `draft: 'live'` runs one draft per session (batched CPU engine) instead.

import { basename, resolve } from 'node:path';
import { Worker } from 'node:worker_threads';
import { readFileSync, existsSync } from 'node:fs';
import type { LlamaConfig } from '../../src/engine/config.ts';
import type { LlamaWeights } from '../../src/engine/weights.ts';
import { CpuBatchLlama, CpuBatchSession } from '../../src/engine/cpu-batch.ts';
import { speculate, baseline } from '../../src/engine/speculative.ts';
import { SpecTally } from '../../src/engine/tally.ts';
import { GREEDY, type SamplingParams, type SparseDist } from '../../src/engine/sampling.ts';
import type { TargetLink, Verdict } from '../../src/engine/target-link.ts';
import { RemoteTarget } from '../../src/protocol/client.ts';
import { LocalTarget } from '../../src/engine/local-target.ts';
import { DraftMemo } from './memo-draft.ts';
import { startGateway, type GatewayStats } from '../../server/gateway.ts';
import { NO_RATE_LIMITS } from '../../server/limits.ts';
import { createCpuVerifier } from '../../server/verifiers/cpu.ts';
import type { Verifier } from '../../server/verifiers/types.ts';

export interface CapacityPair {
  name: string;
  config: LlamaConfig;
  target: LlamaWeights;
  /** The draft's own config (layers/width differ from the target's; vocabulary is shared). */
  draftConfig: LlamaConfig;
  draft: LlamaWeights;
  tokenizerHash: string;
  prompts: number[][];
  eosTokenIds: number[];
}

export interface CapacityOptions {
  sessions?: number;
  seconds?: number;
  /** Fixed draft block (default 4), or adaptive k. */
  k?: number;
  adaptive?: boolean;
  /** Tokens per generation; a session starts a new generation until time is up. */
  maxTokens?: number;
  modes?: ('speculative' | 'baseline')[];
  maxBatch?: number;
  batchWindowMs?: number;
  targetDir?: string;
  draftDir?: string;
  /** A ready pair instead of loading targetDir/draftDir (tests). */
  pair?: CapacityPair;
  /** A verifier to put behind the gateway (default: cpu over the pair's target). */
  verifier?: Verifier;
  /**
   * Run the gateway + cpu verifier on a worker thread (default true unless `verifier` is
   * given): on one thread, the in-process drafts would starve the verifier's event loop.
   */
  gatewayThread?: boolean;
  params?: SamplingParams;
  /** 'memo' (default): drafts share a memo of the real draft's logits; 'live': a real draft per session. */
  draft?: 'memo' | 'live';
  log?: (line: string) => void;
}

export interface Quantiles {
  n: number;
  mean: number;
  p50: number;
  p99: number;
  max: number;
}

export interface CapacityModeReport {
  mode: 'speculative' | 'baseline';
  sessions: number;
  seconds: number;
  wallMs: number;
  errors: number;
  errorSamples: string[];
  gatewayErrors: Record<string, number>;
  generations: number;
  generatedTokens: number;
  targetPasses: number;
  targetPassesPerToken: number;
  /** Speculative: client-observed verify round (send → verdict). Baseline: gap between streamed tokens. */
  latencyMs: Quantiles;
  meanBatch: number;
  maxBatch: number;
  verifierCalls: number;
  acceptanceRate: number | null;
  /** Speculative with memo drafts: draft positions served from the memo vs run on the real draft. */
  draftMemo: { hits: number; misses: number } | null;
  tokPerSecTotal: number;
  tokPerSecPerSession: { mean: number; min: number; max: number };
}

export interface CapacityReport {
  model: string;
  verifier: string;
  k: number | 'adaptive';
  maxTokens: number;
  draft: 'memo' | 'live';
  /** memo drafts: how long filling the memo took (one greedy pass per prompt, local target). */
  memoWarmupMs: number | null;
  results: CapacityModeReport[];
}

const now = (): number => performance.now();

export function quantiles(xs: number[]): Quantiles {
  if (xs.length === 0) return { n: 0, mean: 0, p50: 0, p99: 0, max: 0 };
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return { n: s.length, mean: s.reduce((a, b) => a + b, 0) / s.length, p50: q(0.5), p99: q(0.99), max: s[s.length - 1] };
}

/** A TargetLink that records how long each verify takes from the caller's side. */
class TimedLink implements TargetLink {
  constructor(private readonly inner: TargetLink, private readonly verifyMs: number[]) {}
  get targetPasses(): number {
    return this.inner.targetPasses;
  }
  open(p: number[], s: SamplingParams) {
    return this.inner.open(p, s);
  }
  async verify(draft: number[], dists?: SparseDist[]): Promise<Verdict> {
    const t0 = now();
    const v = await this.inner.verify(draft, dists);
    this.verifyMs.push(now() - t0);
    return v;
  }
  generate(n: number, onToken?: (t: number) => void) {
    return this.inner.generate(n, onToken);
  }
  close() {
    return this.inner.close();
  }
}

/** The bundled tiny pair, with the held-out prompts encoded by its tokenizer. */
export async function loadTinyPair(targetDir = 'public/models/tiny-target', draftDir = 'public/models/tiny-draft'): Promise<CapacityPair> {
  const { loadModelDir } = await import('../../src/engine/loader/node.ts');
  const { Tokenizer, tokenizerHash } = await import('../../src/engine/tokenizer.ts');
  const [t, d] = await Promise.all([loadModelDir(resolve(targetDir)), loadModelDir(resolve(draftDir))]);
  if (!t.tokenizerJson) throw new Error(`${targetDir} has no tokenizer.json`);
  const tok = new Tokenizer(t.tokenizerJson, t.tokenizerConfig);
  const promptsFile = resolve(targetDir, '..', 'heldout-prompts.json');
  const texts: string[] = existsSync(promptsFile)
    ? (JSON.parse(readFileSync(promptsFile, 'utf8')) as { prompts: { text: string }[] }).prompts.map((p) => p.text)
    : ['In the beginning', 'And it came to pass', 'The Lord is my shepherd'];
  const prompts = texts.map((s) => tok.encode(s.split(/\s+/).slice(0, 8).join(' '))).filter((p) => p.length > 0);
  return {
    name: basename(resolve(targetDir)),
    config: t.config,
    target: t.weights,
    draftConfig: d.config,
    draft: d.weights,
    tokenizerHash: await tokenizerHash(t.tokenizerJson),
    prompts,
    eosTokenIds: t.generationConfig?.eosTokenIds ?? t.config.eosTokenIds,
  };
}

export async function runCapacity(o: CapacityOptions = {}): Promise<CapacityReport> {
  const sessions = o.sessions ?? 64;
  const seconds = o.seconds ?? 60;
  const maxTokens = o.maxTokens ?? 48;
  const log = o.log ?? (() => {});
  const pair = o.pair ?? (await loadTinyPair(o.targetDir, o.draftDir));
  const ctxLen = Math.min(pair.config.maxPositionEmbeddings, 256);
  const gateway = o.verifier || o.gatewayThread === false
    ? await inProcessGateway(o.verifier ?? createCpuVerifier({ config: pair.config, weights: pair.target, model: pair.name, tokenizerHash: pair.tokenizerHash, maxContext: ctxLen, maxBatch: o.maxBatch ?? 16 }), !o.verifier, sessions, o)
    : await threadGateway(pair, ctxLen, sessions, o);
  const params = o.params ?? GREEDY;
  const draftKind = o.draft ?? 'memo';
  const modes = o.modes ?? ['speculative', 'baseline'];
  // drafts on the batched CPU engine (the library's CPU draft): one engine, a KV cache per session
  const draftEngine = new CpuBatchLlama(pair.draftConfig, pair.draft, ctxLen);
  const newDraft = () => new CpuBatchSession(draftEngine);
  const memo = draftKind === 'memo' ? new DraftMemo(pair.draftConfig, ctxLen, newDraft) : null;
  let memoWarmupMs: number | null = null;
  const results: CapacityModeReport[] = [];
  try {
    if (memo && modes.includes('speculative')) {
      // fill the memo along each prompt's trajectory against a local copy of the target (the
      // same logits as the verifier's up to rounding; where they differ the run misses and says so)
      const t0 = now();
      const local = new CpuBatchSession(new CpuBatchLlama(pair.config, pair.target, ctxLen));
      for (const prompt of pair.prompts) {
        const d = memo.session();
        await speculate(d, new LocalTarget(local), prompt, { params, maxTokens, k: o.k ?? 4, adaptive: o.adaptive, eosTokenIds: pair.eosTokenIds });
        d.dispose();
      }
      memoWarmupMs = now() - t0;
      log(`capacity: draft memo filled in ${(memoWarmupMs / 1000).toFixed(1)} s (${memo.rows.size} rows, ${(memo.bytes / 2 ** 20).toFixed(0)} MiB)`);
    }
    for (const mode of modes) {
      log(`capacity: ${mode}, ${sessions} sessions for ${seconds} s`);
      const s0 = await gateway.stats();
      memo?.resetCounts();
      const latency: number[] = [];
      const perSession: number[] = [];
      const errorSamples: string[] = [];
      let errors = 0;
      let generations = 0;
      const tally = new SpecTally();
      const t0 = now();
      const deadline = t0 + seconds * 1000;
      // at the deadline every session stops where it is (tokens so far count), so a run lasts `seconds`
      const stop = new AbortController();
      const stopTimer = setTimeout(() => stop.abort(), seconds * 1000);
      const stopped: (() => void)[] = [];
      stop.signal.addEventListener('abort', () => stopped.forEach((f) => f()));
      await Promise.all(Array.from({ length: sessions }, async (_, i) => {
        const draft = memo ? memo.session() : newDraft();
        let mine = 0;
        let g = 0;
        while (now() < deadline && !stop.signal.aborted) {
          const prompt = pair.prompts[(i + g++ * sessions) % pair.prompts.length];
          const remote = new RemoteTarget({ url: gateway.wsUrl, tokenizerHash: pair.tokenizerHash, mode, reconnect: false, clientName: `capacity-${i}` });
          try {
            if (mode === 'speculative') {
              const link = new TimedLink(remote, latency);
              const r = await speculate(draft, link, prompt, { params, maxTokens, k: o.k ?? 4, adaptive: o.adaptive, eosTokenIds: pair.eosTokenIds, signal: stop.signal });
              mine += r.tokens.length;
              tally.add({ targetPasses: r.stats.targetPasses, drafted: r.stats.draftedTokens, accepted: r.stats.acceptedTokens });
            } else {
              let last = now();
              await remote.open(prompt, params);
              // closing the link ends the stream with the tokens it has
              const end = () => void remote.close();
              stopped.push(end);
              const rest = stop.signal.aborted ? [] : await remote.generate(maxTokens - 1, () => {
                const t = now();
                latency.push(t - last);
                last = t;
              });
              stopped.splice(stopped.indexOf(end), 1);
              mine += 1 + rest.length;
              tally.add({ targetPasses: remote.targetPasses });
            }
            generations++;
          } catch (e) {
            errors++;
            if (errorSamples.length < 5) errorSamples.push(`${(e as Error).name}: ${(e as Error).message}`);
          } finally {
            await remote.close();
          }
        }
        tally.add({ tokens: mine });
        perSession.push(mine);
        draft.dispose();
      }));
      clearTimeout(stopTimer);
      const wallMs = now() - t0;
      const s1 = await gateway.stats();
      const batches = s1.batches - s0.batches;
      const gatewayErrors: Record<string, number> = {};
      for (const [k, v] of Object.entries(s1.errors)) {
        const d = (v ?? 0) - (s0.errors[k as keyof typeof s0.errors] ?? 0);
        if (d) gatewayErrors[k] = d;
      }
      const rates = perSession.map((n) => (n * 1000) / wallMs);
      results.push({
        mode, sessions, seconds, wallMs, errors, errorSamples, gatewayErrors, generations, generatedTokens: tally.tokens,
        targetPasses: tally.targetPasses, targetPassesPerToken: tally.tokens ? tally.targetPasses / tally.tokens : 0,
        latencyMs: quantiles(latency),
        meanBatch: batches ? (s1.batchedRequests - s0.batchedRequests) / batches : 0,
        maxBatch: s1.maxBatchSeen,
        verifierCalls: batches,
        acceptanceRate: mode === 'speculative' && tally.drafted ? tally.acceptanceRate : null,
        draftMemo: memo && mode === 'speculative' ? { hits: memo.hits, misses: memo.misses } : null,
        tokPerSecTotal: (tally.tokens * 1000) / wallMs,
        tokPerSecPerSession: { mean: rates.reduce((a, b) => a + b, 0) / Math.max(1, rates.length), min: Math.min(...rates), max: Math.max(...rates) },
      });
    }
  } finally {
    await gateway.close();
  }
  return { model: pair.name, verifier: gateway.backend + (gateway.thread ? ' (gateway on a worker thread)' : ''), k: o.adaptive ? 'adaptive' : o.k ?? 4, maxTokens, draft: draftKind, memoWarmupMs, results };
}

interface BenchGateway {
  wsUrl: string;
  backend: string;
  thread: boolean;
  stats(): Promise<GatewayStats>;
  close(): Promise<void>;
}

async function inProcessGateway(verifier: Verifier, owns: boolean, sessions: number, o: CapacityOptions): Promise<BenchGateway> {
  const g = await startGateway({ verifier, maxSessions: sessions * 2, maxSessionsPerConnection: sessions * 2, maxBatch: o.maxBatch ?? 16, batchWindowMs: o.batchWindowMs ?? 1, ...NO_RATE_LIMITS, ownsVerifier: owns });
  return { wsUrl: g.wsUrl, backend: verifier.info().backend, thread: false, stats: async () => g.stats(), close: () => g.close() };
}

async function threadGateway(pair: CapacityPair, maxContext: number, sessions: number, o: CapacityOptions): Promise<BenchGateway> {
  // the .mjs entry registers tsx inside the worker, then loads capacity-worker.ts
  const worker = new Worker(new URL('./capacity-worker.mjs', import.meta.url), {
    workerData: { config: pair.config, weights: pair.target, name: pair.name, tokenizerHash: pair.tokenizerHash, maxContext, maxBatch: o.maxBatch ?? 16, maxSessions: sessions * 2, batchWindowMs: o.batchWindowMs ?? 1 },
  });
  const next = <T,>(type: string): Promise<T> => new Promise((res, rej) => {
    const onMsg = (m: { type: string }) => {
      if (m.type !== type) return;
      worker.off('message', onMsg);
      worker.off('error', rej);
      res(m as T);
    };
    worker.on('message', onMsg);
    worker.once('error', rej);
  });
  const ready = await next<{ wsUrl: string; backend: string }>('ready');
  return {
    wsUrl: ready.wsUrl,
    backend: ready.backend,
    thread: true,
    async stats() {
      const p = next<{ stats: GatewayStats }>('stats');
      worker.postMessage({ type: 'stats' });
      return (await p).stats;
    },
    async close() {
      const p = next('closed');
      worker.postMessage({ type: 'close' });
      await p;
      await worker.terminate();
    },
  };
}
