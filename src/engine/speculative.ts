// The draft-side speculative controller: drafts k tokens with the draft model (sampling from q
// with its own seeded stream), sends them to the target through a TargetLink, applies the
// verdict, rolls the draft KV back, and emits tokens with their provenance. k is chosen each
// round by a small cost model (KController); with pipelining the next block is drafted while
// a verdict is in flight. Runs in the browser worker and in Node (CLI, bench, tests).

import type { CausalLM } from './model.ts';
import type { SamplingParams, SparseDist } from './sampling.ts';
import type { TargetLink, Verdict } from './target-link.ts';
import { Rng, STREAM_DRAFT, argmax, pointMass, processedDist, sample, validateSampling } from './sampler.ts';

export type Provenance = 'first' | 'draft' | 'correction' | 'bonus';

export interface TokenEvent {
  token: number;
  provenance: Provenance;
  /** 0-based index among generated tokens. */
  index: number;
  /** Verify round that produced it (0 = the prefill's first token). */
  round: number;
}

export interface SpeculateOptions {
  params: SamplingParams;
  /** Stop after this many generated tokens (the first token included). */
  maxTokens: number;
  /** Fixed draft block size (default 4); ignored when adaptive. */
  k?: number;
  adaptive?: boolean;
  /** Upper bound of adaptive k (default 8). */
  kMax?: number;
  /** Draft the next block while a verdict is in flight. */
  pipeline?: boolean;
  eosTokenIds?: readonly number[];
  signal?: AbortSignal;
  onToken?: (e: TokenEvent) => void;
}

export type StopReason = 'eos' | 'max-tokens' | 'abort' | 'context';

export interface SpecStats {
  rounds: number;
  /** Draft tokens sent for verification / accepted by the target. */
  draftedTokens: number;
  acceptedTokens: number;
  acceptanceRate: number;
  meanAcceptedPerRound: number;
  /** Generated tokens / target passes (prefill included, so target-only decoding gives 1). */
  tokensPerTargetPass: number;
  targetPasses: number;
  /** Draft forward time per drafted token (pipelined and discarded ones included), ms. */
  draftMsPerToken: number;
  /** Mean target forward time per verify as reported by the target, ms. */
  verifyMsPerPass: number;
  /** Mean time from sending a block to its verdict, ms. */
  roundMs: number;
  wallMs: number;
  tokPerSec: number;
  ttftMs: number;
  /** Pipelining: rounds that reused pre-drafted tokens, and drafted tokens thrown away. */
  pipelineHits: number;
  wastedDraftTokens: number;
  meanK: number;
}

export interface SpecResult {
  tokens: number[];
  provenance: Provenance[];
  stopReason: StopReason;
  stats: SpecStats;
  /** k used in each round. */
  kHistory: number[];
}

const now = (): number => globalThis.performance.now();

/** Let timers and I/O run between draft steps (a resolved promise would only drain microtasks). */
function macrotask(): Promise<void> {
  const si = (globalThis as { setImmediate?: (f: () => void) => unknown }).setImmediate;
  return new Promise((resolve) => (si ? si(resolve) : setTimeout(resolve, 0)));
}

// ---- adaptive k ----

/**
 * Chooses k to maximize expected generated tokens per unit time.
 *
 * Acceptance: each draft token stands with probability α (i.i.d.), so a round of k yields
 *   E(k) = 1 + α + … + α^k = (1 − α^{k+1}) / (1 − α)   tokens (accepted + correction/bonus).
 * α is the censored-geometric MLE over recent rounds (a round of k with n accepted adds n
 * successes and, if n < k, one failure), decayed by 0.9 per round, with a prior of weight 4 at
 * α0 = 0.7.
 * Time of a round: T(k) = k·d + R + V(k), with d the measured draft ms per token (EMA), R the
 * round overhead (round latency minus the target's verify time: RTT, queueing, codec; EMA) and
 * V(k) the verify time of a k-block: an EMA per k that was used, and for a k never used a
 * least-squares line a + b·(k + 1) (a, b >= 0) through the per-k values (a CPU target is ~linear
 * in positions, a GPU or batched one ~flat). With one k seen, V is taken as half fixed, half
 * proportional to positions. A per-k table (not one global fit) keeps noisy or stale rounds at
 * one k from dragging the estimate for every other k.
 * With pipelining the next block's drafting overlaps the round when the block is fully
 * confirmed (probability h ≈ α^{k+1}):
 *   T(k) = R + V(k) + (1 − h)·k·d + h·max(0, k·d − R − V(k)).
 * Probes: the first two rounds use kInit and kInit / 2; every 8th round tries a neighbour of the
 * optimum (alternating above and below) so the table stays current near it.
 */
export class KController {
  private succ = 0;
  private trials = 0;
  private draftMs = NaN;
  private overheadMs = NaN;
  /** EMA of verify ms per block size k (index k). */
  private readonly verifyMsAt: number[] = [];
  private round = 0;

  constructor(readonly kMax: number, readonly kInit = Math.min(4, kMax), readonly pipeline = false) {}

  get alpha(): number {
    const w0 = 4;
    const a0 = 0.7;
    return (this.succ + a0 * w0) / (this.trials + w0);
  }

  observeRound(k: number, accepted: number, roundMs: number, verifyMs: number): void {
    this.succ = 0.9 * this.succ + accepted;
    this.trials = 0.9 * this.trials + accepted + (accepted < k ? 1 : 0);
    const overhead = Math.max(0, roundMs - verifyMs);
    this.overheadMs = Number.isNaN(this.overheadMs) ? overhead : 0.8 * this.overheadMs + 0.2 * overhead;
    const prev = this.verifyMsAt[k];
    this.verifyMsAt[k] = prev === undefined ? verifyMs : 0.7 * prev + 0.3 * verifyMs;
  }

  observeDraft(msPerToken: number): void {
    this.draftMs = Number.isNaN(this.draftMs) ? msPerToken : 0.8 * this.draftMs + 0.2 * msPerToken;
  }

  /** Line a + b·(k + 1), a, b >= 0, through the per-k verify times (each k weighted once). */
  verifyLine(): { a: number; b: number } {
    const pts: [number, number][] = [];
    this.verifyMsAt.forEach((y, k) => y !== undefined && pts.push([k + 1, y]));
    if (pts.length === 0) return { a: 0, b: 0 };
    const n = pts.length;
    const mx = pts.reduce((s, p) => s + p[0], 0) / n;
    const my = pts.reduce((s, p) => s + p[1], 0) / n;
    if (n === 1) return { a: my / 2, b: my / 2 / mx };
    let sxx = 0;
    let sxy = 0;
    for (const [x, y] of pts) {
      sxx += (x - mx) ** 2;
      sxy += (x - mx) * (y - my);
    }
    let b = sxy / sxx;
    let a = my - b * mx;
    if (b < 0) {
      b = 0;
      a = my;
    } else if (a < 0) {
      a = 0;
      b = pts.reduce((s, p) => s + p[0] * p[1], 0) / pts.reduce((s, p) => s + p[0] * p[0], 0);
    }
    return { a, b };
  }

  /** Expected verify ms of a k-block. */
  verifyTime(k: number): number {
    const seen = this.verifyMsAt[k];
    if (seen !== undefined) return seen;
    const { a, b } = this.verifyLine();
    return a + b * (k + 1);
  }

  expectedTokens(k: number, alpha = this.alpha): number {
    return alpha >= 1 - 1e-9 ? k + 1 : (1 - alpha ** (k + 1)) / (1 - alpha);
  }

  roundTime(k: number): number {
    const d = Number.isNaN(this.draftMs) ? 0 : this.draftMs;
    const r = (Number.isNaN(this.overheadMs) ? 0 : this.overheadMs) + this.verifyTime(k);
    if (!this.pipeline) return k * d + r;
    const h = this.alpha ** (k + 1);
    return r + (1 - h) * k * d + h * Math.max(0, k * d - r);
  }

  /** The k with the most expected tokens per ms (ties → smaller k). */
  best(): number {
    let bestK = 1;
    let bestRate = -Infinity;
    for (let k = 1; k <= this.kMax; k++) {
      const rate = this.expectedTokens(k) / Math.max(this.roundTime(k), 1e-6);
      if (rate > bestRate * (1 + 1e-9)) {
        bestRate = rate;
        bestK = k;
      }
    }
    return bestK;
  }

  choose(): number {
    const r = this.round++;
    if (r === 0) return this.kInit;
    if (r === 1) return Math.max(1, Math.floor(this.kInit / 2));
    const k = this.best();
    if (r % 8 === 0) {
      const up = (r / 8) % 2 === 1;
      const probe = up ? k + 1 : k - 1;
      return probe >= 1 && probe <= this.kMax ? probe : up ? k - 1 || 1 : Math.min(k + 1, this.kMax);
    }
    return k;
  }
}

// ---- the draft model's side ----

/**
 * The draft model plus the tokens whose KV it holds; proposes one token at a time.
 * Randomness is keyed by position (Rng.forPosition): the draw for the token at transcript
 * index i is the same whichever block, k or pipelining path drafts it, so a seeded run is
 * reproducible regardless of timing. This stays exact: a draw whose draft was discarded
 * never influenced anything emitted, so reusing it at the same position is still independent
 * of the transcript and of the target's draws.
 */
class Drafter {
  private kv: number[] = [];
  msTotal = 0;
  tokensDrafted = 0;

  constructor(readonly model: CausalLM, readonly params: SamplingParams) {}

  /** Run tokens into the KV cache without proposing (overlaps the target's prefill). */
  async prefill(tokens: readonly number[]): Promise<void> {
    await this.model.forward(tokens, 0);
    this.kv = [...tokens];
  }

  /** Forget KV beyond the longest prefix shared with `context` (leaving its last token un-run). */
  syncTo(context: readonly number[]): number {
    let c = 0;
    const lim = Math.min(this.kv.length, context.length - 1);
    while (c < lim && this.kv[c] === context[c]) c++;
    if (this.model.length > c) this.model.rollback(c);
    this.kv.length = c;
    return c;
  }

  /** Propose the token after `context`, with the q it was drawn from. */
  async next(context: readonly number[]): Promise<{ token: number; q: SparseDist }> {
    const c = this.syncTo(context);
    const t0 = now();
    const logits = await this.model.forward(context.slice(c), c);
    this.msTotal += now() - t0;
    this.tokensDrafted++;
    this.kv = context.slice();
    const vocab = this.model.config.vocabSize;
    const off = logits.length - vocab;
    if (this.params.temperature === 0) {
      const token = argmax(logits, off, vocab);
      return { token, q: pointMass(token) };
    }
    const q = processedDist(logits, this.params, off, vocab);
    return { token: sample(q, Rng.forPosition(this.params.seed, STREAM_DRAFT, context.length)), q };
  }
}

// ---- the controller ----

/** Pipelining drafts ahead only when the estimated chance that the block stands and the bonus guess holds is at least this. */
export const PIPELINE_MIN_HIT = 0.2;

export async function speculate(draftModel: CausalLM, target: TargetLink, prompt: number[], opts: SpeculateOptions): Promise<SpecResult> {
  validateSampling(opts.params);
  const kMax = opts.kMax ?? 8;
  const fixedK = opts.k ?? 4;
  if (!Number.isInteger(kMax) || kMax < 1) throw new RangeError(`kMax must be an integer >= 1, got ${kMax}`);
  if (!opts.adaptive && (!Number.isInteger(fixedK) || fixedK < 1)) throw new RangeError(`k must be an integer >= 1, got ${fixedK}`);
  if (!Number.isInteger(opts.maxTokens) || opts.maxTokens < 1) throw new RangeError(`maxTokens must be an integer >= 1, got ${opts.maxTokens}`);
  if (prompt.length === 0) throw new RangeError('speculate: the prompt needs at least one token');
  const greedy = opts.params.temperature === 0;
  const eos = new Set(opts.eosTokenIds ?? []);
  const ctl = new KController(opts.adaptive ? kMax : fixedK, opts.adaptive ? Math.min(4, kMax) : fixedK, !!opts.pipeline);
  const drafter = new Drafter(draftModel, opts.params);

  const t0 = now();
  const passes0 = target.targetPasses;
  const tokens: number[] = [];
  const provenance: Provenance[] = [];
  const kHistory: number[] = [];
  let stopReason: StopReason | null = null;
  let ttftMs = 0;
  let rounds = 0;
  let drafted = 0;
  let acceptedTotal = 0;
  let verifyMsSum = 0;
  let roundMsSum = 0;
  let pipelineHits = 0;
  let wasted = 0;

  const emit = (token: number, prov: Provenance): void => {
    if (stopReason) return;
    if (tokens.length === 0) ttftMs = now() - t0;
    tokens.push(token);
    provenance.push(prov);
    opts.onToken?.({ token, provenance: prov, index: tokens.length - 1, round: rounds });
    if (eos.has(token)) stopReason = 'eos';
    else if (tokens.length >= opts.maxTokens) stopReason = 'max-tokens';
  };

  // target prefill and draft prefill overlap when the target is remote
  const opening = target.open(prompt, opts.params);
  // a refusal may arrive while the draft prefill is still awaiting its backend: mark it handled
  // here (it is still thrown by the await below) so Node does not treat it as unhandled
  opening.catch(() => {});
  if (prompt.length > 1) await drafter.prefill(prompt);
  const { firstToken } = await opening;
  emit(firstToken, 'first');

  const transcript = [...prompt, firstToken];
  // drafted ahead of the transcript: tokens with their q's, valid while the transcript is unchanged
  let pending: { token: number; q: SparseDist }[] = [];
  const room = (): number => draftModel.maxContext - transcript.length;

  while (!stopReason) {
    if (opts.signal?.aborted) {
      stopReason = 'abort';
      break;
    }
    const remaining = opts.maxTokens - tokens.length;
    let k = Math.min(opts.adaptive ? ctl.choose() : fixedK, Math.max(1, remaining - 1), room() - 1);
    if (k < 1) {
      stopReason = 'context';
      break;
    }
    // the block: reuse what pipelining drafted, then draft the rest
    const block = pending.slice(0, k);
    if (pending.length > 0) pipelineHits++;
    wasted += Math.max(0, pending.length - k);
    pending = [];
    const d0 = drafter.tokensDrafted;
    const m0 = drafter.msTotal;
    while (block.length < k) block.push(await drafter.next([...transcript, ...block.map((b) => b.token)]));
    k = block.length;
    kHistory.push(k);
    const draftTokens = block.map((b) => b.token);

    const sent = now();
    let settled = false;
    const inFlight = target.verify(draftTokens, greedy ? undefined : block.map((b) => b.q));
    inFlight.then(() => (settled = true), () => (settled = true));
    // pipelining: keep drafting past the block, assuming it all stands; ext[0] guesses the bonus.
    // Only worth it when that is likely (≈ α^{k+1}); otherwise the drafts are thrown away and the
    // draft step in progress when the verdict lands only delays the next round.
    const ext: { token: number; q: SparseDist }[] = [];
    if (opts.pipeline && ctl.alpha ** (k + 1) >= PIPELINE_MIN_HIT) {
      await macrotask();
      while (!settled && !opts.signal?.aborted && ext.length < kMax + 1 && transcript.length + k + ext.length + 1 < draftModel.maxContext) {
        ext.push(await drafter.next([...transcript, ...draftTokens, ...ext.map((e) => e.token)]));
        await macrotask();
      }
    }
    const verdict: Verdict = await inFlight;
    const roundMs = now() - sent;
    if (drafter.tokensDrafted > d0) ctl.observeDraft((drafter.msTotal - m0) / (drafter.tokensDrafted - d0));
    if (!Number.isInteger(verdict.accepted) || verdict.accepted < 0 || verdict.accepted > k) {
      throw new RangeError(`verdict accepted ${verdict.accepted} of a ${k}-token block`);
    }
    rounds++;
    drafted += k;
    acceptedTotal += verdict.accepted;
    verifyMsSum += verdict.verifyMs;
    roundMsSum += roundMs;
    ctl.observeRound(k, verdict.accepted, roundMs, verdict.verifyMs);

    for (let i = 0; i < verdict.accepted; i++) emit(draftTokens[i], 'draft');
    emit(verdict.token, verdict.accepted === k ? 'bonus' : 'correction');
    transcript.push(...draftTokens.slice(0, verdict.accepted), verdict.token);
    // keep the pre-drafted tokens only if the whole block stood and the bonus matched the guess
    if (verdict.accepted === k && ext.length > 0 && ext[0].token === verdict.token) pending = ext.slice(1);
    else wasted += ext.length;
    if (pending.length === 0) drafter.syncTo(transcript);
    if (opts.signal?.aborted && !stopReason) stopReason = 'abort';
  }
  wasted += pending.length;

  const wallMs = now() - t0;
  const targetPasses = target.targetPasses - passes0;
  return {
    tokens,
    provenance,
    stopReason: stopReason as StopReason,
    kHistory,
    stats: {
      rounds,
      draftedTokens: drafted,
      acceptedTokens: acceptedTotal,
      acceptanceRate: drafted ? acceptedTotal / drafted : 0,
      meanAcceptedPerRound: rounds ? acceptedTotal / rounds : 0,
      tokensPerTargetPass: targetPasses ? tokens.length / targetPasses : 0,
      targetPasses,
      draftMsPerToken: drafter.tokensDrafted ? drafter.msTotal / drafter.tokensDrafted : 0,
      verifyMsPerPass: rounds ? verifyMsSum / rounds : 0,
      roundMs: rounds ? roundMsSum / rounds : 0,
      wallMs,
      tokPerSec: wallMs > 0 ? (tokens.length * 1000) / wallMs : 0,
      ttftMs,
      pipelineHits,
      wastedDraftTokens: wasted,
      meanK: kHistory.length ? kHistory.reduce((a, b) => a + b, 0) / kHistory.length : 0,
    },
  };
}

// ---- target-only baseline ----

export interface BaselineResult {
  tokens: number[];
  stopReason: StopReason;
  targetPasses: number;
  wallMs: number;
  tokPerSec: number;
  ttftMs: number;
}

/** Target-only decoding through the same link, for the side-by-side view and speedups. */
export async function baseline(
  target: TargetLink,
  prompt: number[],
  opts: { params: SamplingParams; maxTokens: number; eosTokenIds?: readonly number[] },
): Promise<BaselineResult> {
  validateSampling(opts.params);
  const t0 = now();
  const passes0 = target.targetPasses;
  const { firstToken } = await target.open(prompt, opts.params);
  const ttftMs = now() - t0;
  const rest = opts.maxTokens > 1 ? await target.generate(opts.maxTokens - 1) : [];
  const eos = new Set(opts.eosTokenIds ?? []);
  const all = [firstToken, ...rest];
  const stop = all.findIndex((t) => eos.has(t));
  const tokens = stop >= 0 ? all.slice(0, stop + 1) : all;
  const wallMs = now() - t0;
  return {
    tokens,
    stopReason: stop >= 0 ? 'eos' : 'max-tokens',
    targetPasses: target.targetPasses - passes0,
    wallMs,
    tokPerSec: wallMs > 0 ? (tokens.length * 1000) / wallMs : 0,
    ttftMs,
  };
}

// ---- injected link latency ----

const sleep = (ms: number): Promise<void> => (ms > 0 ? new Promise((r) => setTimeout(r, ms)) : Promise.resolve());

/**
 * A TargetLink with rttMs of extra round-trip delay, half on the way out and half on the way
 * back (what `--rtt-ms` injects). Baseline generation pays it once per call: the target streams
 * its tokens without waiting for the client.
 */
export class DelayedLink implements TargetLink {
  constructor(readonly inner: TargetLink, readonly rttMs: number) {}

  get targetPasses(): number {
    return this.inner.targetPasses;
  }

  private async around<T>(f: () => Promise<T>): Promise<T> {
    await sleep(this.rttMs / 2);
    const out = await f();
    await sleep(this.rttMs / 2);
    return out;
  }

  open(promptTokens: number[], sampling: SamplingParams): Promise<{ firstToken: number }> {
    return this.around(() => this.inner.open(promptTokens, sampling));
  }

  verify(draft: number[], draftDists?: SparseDist[]): Promise<Verdict> {
    return this.around(() => this.inner.verify(draft, draftDists));
  }

  generate(n: number, onToken?: (token: number) => void): Promise<number[]> {
    return this.around(() => this.inner.generate(n, onToken));
  }

  close(): Promise<void> {
    return this.around(() => this.inner.close());
  }
}
