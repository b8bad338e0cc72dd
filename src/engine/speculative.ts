// The draft-side speculative controller: drafts k tokens with the draft model (sampling from q
// with its own seeded stream), sends them to the target through a TargetLink, applies the
// verdict, rolls the draft KV back, and emits tokens with their provenance. k is chosen each
// round by a small cost model (KController); with pipelining the next block is drafted while
// a verdict is in flight. Adaptive k includes k = 0: the target streams alone (`generate`) for
// a stretch whenever the cost model predicts drafting would lose, so a user is never slower
// than with the target alone. Runs in the browser worker and in Node (CLI, bench, tests).
// Time comes from an injectable Clock (clock.ts), so tests can run on injected costs.

import type { CausalLM } from './model.ts';
import { Rng, STREAM_DRAFT, argmax, pointMass, processedDist, sample, validateSampling, type SamplingParams, type SparseDist } from './sampling.ts';
import type { Opened, TargetLink, Verdict } from './target-link.ts';
import { type Clock, realClock } from './clock.ts';
import { SpecTally } from './tally.ts';
import { DelayLine } from './latency.ts';

/**
 * Where a generated token came from: 'draft' an accepted draft token; 'correction' the target's
 * token after a rejection; 'bonus' the target's extra token after a fully accepted block;
 * 'target' a token from the target alone (the prefill's first token, a k = 0 stretch, baseline).
 */
export type Provenance =
  | 'draft'
  | 'correction'
  | 'bonus'
  | 'target';

export interface TokenEvent {
  token: number;
  provenance: Provenance;
  /** 0-based index among generated tokens. */
  index: number;
  /** Verify round that produced it (0 = the prefill's first token); a stretch's tokens carry the rounds done before it. */
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
  /** Adaptive only: allow the k = 0 arm (the target streams alone for a stretch). Default true. */
  targetOnlyArm?: boolean;
  /**
   * When the draft runs its prompt prefill. 'overlap': as soon as the open is sent (it overlaps
   * the round trip and the target's prefill). 'after-open': once the target's first token is in,
   * and only where it is short beside the target's steps (round 0 waits for it and drafts); else
   * not at all: round 0 streams, and a later draft round, if one comes, catches the draft up. The
   * first token then never shares a machine with the draft's prefill, and a run that never
   * drafts never pays for it. Default: 'after-open' when `prior` says the last run mostly
   * streamed (with the k = 0 arm), else 'overlap'.
   */
  draftPrefill?: 'overlap' | 'after-open';
  /**
   * What an earlier run with this draft measured of its costs (SpecResult.prior): the adaptive
   * controller starts from them instead of knowing nothing until the draft's prefill is timed.
   */
  prior?: DraftPrior;
  /** Chooses k each round (adaptive); default a KController. Tests inject scripted policies. */
  policy?: KPolicy;
  /** Time source (default the real clock); a VirtualClock runs on injected costs. */
  clock?: Clock;
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
  /** Mean k over verify rounds and stretches (a stretch counts as k = 0). */
  meanK: number;
  /** k = 0 arm: stretches the target streamed alone, and the tokens they produced. */
  stretches: number;
  streamedTokens: number;
  /** Client-observed ms per streamed token in stretches (0 if none). */
  streamMsPerToken: number;
  /** Mean queue time and batch size the verdicts reported (server load; 0 when not reported). */
  meanQueueMs: number;
  meanBatch: number;
  /** When the draft's prompt prefill ran: with the open, after it, or not at all (round 0 streamed; a draft round caught up). */
  draftPrefill: 'overlap' | 'after-open' | 'skipped';
}

export interface SpecResult {
  tokens: number[];
  provenance: Provenance[];
  stopReason: StopReason;
  stats: SpecStats;
  /** k used in each round; 0 for a stretch in which the target streamed alone. */
  kHistory: number[];
  /** The draft's costs as this run measured them (adaptive runs), for the next run's `prior`. */
  prior?: DraftPrior;
}

/** The draft's measured costs, carried from one run to the next with the same draft model. */
export interface DraftPrior {
  /** ms per drafted token (a decode step). */
  draftMs: number;
  /** The draft's forwards of tokens it did not propose: [tokens, ms], newest last. */
  catchUps: [number, number][];
  /** Share of that run's tokens the target streamed alone (k = 0 stretches). */
  streamedShare: number;
  /**
   * ms per token the target streamed to this client in that run's stretches (or an earlier
   * run's, carried on), client-observed. A hint for round 0 only, and there clamped to the bounds
   * this run's own open measured (a decode step lies in [prefill / P, prefill]): a prior from
   * another gateway cannot move round 0 outside what this one's open allows.
   */
  streamMs?: number;
}


// ---- adaptive k ----

/** What speculate() asks each round and tells after it; KController is the real one. */
export interface KPolicy {
  /**
   * Block size for the next round; 0 = the target streams alone for stretchTokens() tokens.
   * draftReady false: the draft's prompt prefill is still running (drafting would first wait for it).
   */
  choose(draftReady?: boolean): number;
  stretchTokens(): number;
  /** Current acceptance estimate (pipelining drafts ahead only when α^(k+1) is high enough). */
  readonly alpha: number;
  observeRound(k: number, accepted: number, roundMs: number, verifyMs: number, load?: { queueMs?: number; batch?: number }): void;
  observeDraft(msPerToken: number): void;
  /**
   * The draft ran `tokens` tokens it did not propose in one forward, taking ms: the prompt's
   * prefill, or a stretch's tokens before drafting resumes (the price of a probe).
   */
  observeCatchUp(ms: number, tokens: number): void;
  /** A stretch of n tokens took wallMs from request to its end; stepMs per token between tokens (NaN if unknown). */
  observeStretch(n: number, wallMs: number, stepMs: number): void;
  /** What open() learned before round 0: the link's round trip, the target's prefill ms, the prompt's length. */
  observeOpen?(o: { rttMs: number; prefillMs: number; promptTokens: number }): void;
  /** After observeOpen: round 0 would stream even with the draft ready (its prefill can wait for a draft round). */
  streamsFirst?(): boolean;
  /** After observeOpen: round 0 should wait for the draft's prompt prefill (short beside the target's steps) rather than stream meanwhile. */
  waitsForPrefill?(promptTokens: number): boolean;
  /** Start from an earlier run's draft costs. */
  seedDraft?(p: DraftPrior): void;
  /** The draft's costs as measured so far (undefined before any was). */
  draftCosts?(): Omit<DraftPrior, 'streamedShare'> | undefined;
}

/**
 * Stretch lengths of the k = 0 arm: long enough that the stretch's round trip is at most
 * STRETCH_FIXED_SHARE of it, short enough to stop promptly (abort is checked between stretches).
 */
export const STRETCH_MIN = 8;
export const STRETCH_MAX = 256;
export const STRETCH_FIXED_SHARE = 0.03;
/** Probing drafting while streaming may cost at most this fraction of the streaming time. */
export const PROBE_BUDGET = 0.05;
/** The longest stretch of streamed tokens between two probes of drafting. */
export const PROBE_MAX = 4096;
/** Switch modes only when the other is predicted this much faster (hysteresis against flapping). */
export const MODE_MARGIN = 1.05;
/** While drafting, stream STRETCH_MIN tokens once this many rounds to keep the stream's cost measured. */
export const STREAM_PROBE_EVERY = 50;
/** A stream probe runs only where streaming's estimated rate × this reaches drafting's (KController.streamCouldWin). */
export const STREAM_PROBE_MARGIN = 1.1;

/**
 * Least-squares line y = a + b·x with a, b >= 0 through pts (b < 0 → flat at the mean; a < 0 →
 * through the origin). With one point: half fixed, half proportional ('half'), or all
 * proportional ('proportional').
 */
export function fitLine(pts: readonly (readonly [number, number])[], onePoint: 'half' | 'proportional'): { a: number; b: number } {
  if (pts.length === 0) return { a: 0, b: 0 };
  const n = pts.length;
  const mx = pts.reduce((s, p) => s + p[0], 0) / n;
  const my = pts.reduce((s, p) => s + p[1], 0) / n;
  let sxx = 0;
  let sxy = 0;
  for (const [x, y] of pts) {
    sxx += (x - mx) ** 2;
    sxy += (x - mx) * (y - my);
  }
  if (n === 1 || sxx === 0) return onePoint === 'half' ? { a: my / 2, b: my / 2 / mx } : { a: 0, b: my / mx };
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
 *
 * The k = 0 arm (targetOnly): the target streams n tokens alone; a stretch costs
 *   T0(n) = S + n·s,  rate n / T0(n),
 * with s the client-observed ms per streamed token (EMA over stretches; before any, V(0) from the
 * verify line plus the queue time per pass the verdicts report — server load hits every stream
 * step, but a speculative round only once per τ tokens) and S the stretch's fixed cost (its
 * round trip: measured, or R minus the queue time before any); n is long enough that S is at
 * most STRETCH_FIXED_SHARE of the stretch. It is chosen when n / T0(n) beats the best E(k)/T(k)
 * by MODE_MARGIN (and drafting resumes when it is beaten by as much). While streaming, drafting
 * is probed with one round of min(best k, 2) after every P streamed tokens, P chosen so the
 * probe's expected loss (its time, plus the draft catching up on the P streamed tokens, plus the
 * next stretch's fixed cost, minus the time streaming would take for its E tokens) is at most
 * PROBE_BUDGET of the streaming time (a stream step not yet measured is priced at open's lower
 * bound, prefill / P, as the stretch is sized). The catch-up is priced from the draft's own forwards of n
 * tokens (a line a + b·n through its prompt prefill, its catch-ups and its steps): a GPU draft
 * pays about a step whatever n, a CPU draft per token; where b exceeds PROBE_BUDGET of a stream
 * step no P keeps a probe within budget and probes come every PROBE_MAX tokens. The other way round, the stream's cost is measured, not
 * extrapolated (a verify line fitted over k = 1..8 says little about one position on a loaded
 * or batched target): the second decision is a stretch (where the estimate says streaming could
 * win at all, within STREAM_PROBE_MARGIN of drafting; against a slow target speculation beats
 * clearly the probe would only cost a short generation), sized by the amortization rule above
 * from round 0's estimates (STRETCH_MIN where the round trip is cheap; on a fast target behind a
 * long round trip, long enough to pay the round trip back, and its tokens count toward the next
 * drafting probe), and drafting streams STRETCH_MIN tokens again every STREAM_PROBE_EVERY
 * rounds, on the same condition (never slower than the target alone; at most a few percent of a speculative gain). With the arm on, speculate()
 * starts at kInit = 2 (a slow draft should not pay for a long first block), unless what open()
 * measured — the link's round trip and the prefill's time (a decode step costs between prefill / P
 * and prefill) — shows streaming beating even the cheapest drafting (the pass at its lower bound,
 * α at its prior, a draft step as measured or at its prompt prefill's cost per token, the best k): then round 0 is already a stretch, and the first draft round comes as a
 * probe (a fast target behind a long round trip would otherwise pay one round trip to learn it).
 * Round 0 is a stretch, too, while the draft is still running its prompt prefill (speculate()
 * passes draftReady): the wait for a slow draft's prefill alone can cost more than the stretch.
 * With an earlier run's draft costs (speculate's prior) round 0 can instead wait for a prefill
 * that is short beside the target's steps (waitsForPrefill) and draft.
 * The prefill is timed in two parts (a forward of the prompt less its last token, then one step),
 * so the first probe plan knows d and a point of the catch-up line; with a prompt of one or two
 * tokens the line's slope is unknown, and a first probe after STRETCH_MIN tokens measures it when
 * a probe round costs no more than that stretch (otherwise the worst, a step per token, is
 * assumed). A probe refreshes d, α, V and R, so the controller returns to drafting when it pays
 * (a faster draft, a busier server).
 */
export class KController implements KPolicy {
  private succ = 0;
  private trials = 0;
  private draftMs = NaN;
  private overheadMs = NaN;
  /** EMA of verify ms per block size k (index k). */
  private readonly verifyMsAt: number[] = [];
  private round = 0;
  // k = 0 arm
  private streamMs = NaN;
  private stretchFixedMs = NaN;
  private queueMs = NaN;
  private streaming = false;
  private streamedSinceProbe = 0;
  private probeEvery = STRETCH_MAX;
  private probeDue = false;
  /** The draft's forwards of n tokens it did not propose (prefill, catch-ups): [n, ms], newest last. */
  private readonly catchUps: [number, number][] = [];
  private streamProbe = false;
  private sinceStreamProbe = 0;
  // from open: the link's round trip and the prefill (an upper bound on one decode step)
  private openRttMs = NaN;
  private openPassMs = NaN;
  private openPassLoMs = NaN;
  /** An earlier run's stream ms per token (DraftPrior.streamMs); round 0 only. */
  private priorStreamMs = NaN;

  constructor(readonly kMax: number, readonly kInit = Math.min(4, kMax), readonly pipeline = false, readonly targetOnly = false) {}

  get alpha(): number {
    const w0 = 4;
    const a0 = 0.7;
    return (this.succ + a0 * w0) / (this.trials + w0);
  }

  observeRound(k: number, accepted: number, roundMs: number, verifyMs: number, load: { queueMs?: number; batch?: number } = {}): void {
    this.succ = 0.9 * this.succ + accepted;
    this.trials = 0.9 * this.trials + accepted + (accepted < k ? 1 : 0);
    const overhead = Math.max(0, roundMs - verifyMs);
    this.overheadMs = Number.isNaN(this.overheadMs) ? overhead : 0.8 * this.overheadMs + 0.2 * overhead;
    const prev = this.verifyMsAt[k];
    this.verifyMsAt[k] = prev === undefined ? verifyMs : 0.7 * prev + 0.3 * verifyMs;
    const q = load.queueMs ?? 0;
    this.queueMs = Number.isNaN(this.queueMs) ? q : 0.8 * this.queueMs + 0.2 * q;
  }

  observeDraft(msPerToken: number): void {
    this.draftMs = Number.isNaN(this.draftMs) ? msPerToken : 0.8 * this.draftMs + 0.2 * msPerToken;
  }

  observeOpen(o: { rttMs: number; prefillMs: number; promptTokens: number }): void {
    if (!(o.rttMs >= 0) || !(o.prefillMs >= 0) || !(o.promptTokens >= 1)) return;
    this.openRttMs = o.rttMs;
    // a P-token prefill costs at least one decode step's weight reads (memory-bound) and at
    // most P steps' work (compute-bound): a decode step lies in [prefill / P, prefill]
    this.openPassMs = o.prefillMs;
    this.openPassLoMs = o.prefillMs / o.promptTokens;
  }

  /**
   * Round 0 with the k = 0 arm: stream from the start when streaming beats even the cheapest
   * drafting. Drafting's rate is at most max over k of E(k) / (RTT + one pass + k·d) with the
   * pass priced at its lower bound, α at its prior and d at the draft's measured step (from an
   * earlier run's prior, or this run's prefill if it is done), else its lower bound (its prompt
   * prefill per token, when that was timed; else free; pipelined: only the (1 − h) share of
   * rounds pays for drafting); streaming's at least n / (RTT + n · prefill) (a step priced at
   * the upper bound), or, with an earlier run's stream step (DraftPrior.streamMs), n / (RTT + n ·
   * that step) with the step held within [prefill / P, prefill]: a compute-bound target's step is
   * near the lower end, which the upper bound alone cannot see. The target's side is bounds or
   * measured, so no margin is added. Where the round trip
   * dominates (a fast target behind a long one) this saves the draft round that would only learn
   * it; elsewhere the first round drafts as before.
   */
  streamsFirst(): boolean {
    if (!this.targetOnly || !Number.isFinite(this.openRttMs) || !Number.isFinite(this.openPassMs)) return false;
    const O = this.openRttMs;
    // a stream step at its upper bound (the whole prefill), or as an earlier run measured it,
    // held within this open's bounds
    const hint = Number.isFinite(this.priorStreamMs) ? Math.min(this.openPassMs, Math.max(this.openPassLoMs, this.priorStreamMs)) : this.openPassMs;
    const step = Math.max(hint, 1e-6);
    const n = Math.max(STRETCH_MIN, Math.min(STRETCH_MAX, Math.ceil(O / (STRETCH_FIXED_SHARE * step))));
    const stream = n / (O + n * step);
    // a draft step as measured (an earlier run's, or this run's prefill when it is done), else
    // the prefill's cost per token, a lower bound
    const dLo = this.catchUps.reduce((m, [tokens, ms]) => Math.min(m, ms / tokens), Infinity);
    const d = !Number.isNaN(this.draftMs) ? this.draftMs : Number.isFinite(dLo) ? dLo : 0;
    let draftAtBest = 0;
    for (let k = 1; k <= this.kMax; k++) {
      const share = this.pipeline ? 1 - this.alpha ** (k + 1) : 1;
      draftAtBest = Math.max(draftAtBest, this.expectedTokens(k) / Math.max(O + this.openPassLoMs + share * k * d, 1e-6));
    }
    return stream > draftAtBest;
  }

  seedDraft(p: DraftPrior): void {
    if (p.draftMs >= 0) this.draftMs = p.draftMs;
    if (p.streamMs !== undefined && p.streamMs > 0) this.priorStreamMs = p.streamMs;
    for (const [n, ms] of p.catchUps.slice(-8)) this.observeCatchUp(ms, n);
  }

  /** Some forward of the draft has been timed (or seeded from a prior). */
  private get knowsDraft(): boolean {
    return !Number.isNaN(this.draftMs) || this.catchUps.length > 0;
  }

  draftCosts(): Omit<DraftPrior, 'streamedShare'> | undefined {
    if (!this.knowsDraft) return undefined;
    const streamMs = Number.isFinite(this.streamMs) ? this.streamMs : this.priorStreamMs;
    return { draftMs: this.draftMs, catchUps: this.catchUps.map(([n, ms]) => [n, ms]), ...(Number.isFinite(streamMs) ? { streamMs } : {}) };
  }

  /**
   * After observeOpen, with the draft's costs known (an earlier run's prior): round 0 waits for
   * the draft's prompt prefill (a forward of P − 1 tokens and one step, priced from those costs)
   * and drafts, rather than stream a stretch while it runs, when the wait is at most what that
   * stretch would lose against drafting — STRETCH_MIN stream steps (at their lower bound) times
   * ½, the share a ×2 speculation saves.
   */
  waitsForPrefill(promptTokens: number): boolean {
    if (!this.knowsDraft || !Number.isFinite(this.openPassLoMs)) return false;
    const wait = this.catchUpTime(promptTokens - 1) + this.draftStepTime();
    return wait <= 0.5 * STRETCH_MIN * this.openPassLoMs;
  }

  observeCatchUp(ms: number, tokens: number): void {
    if (!(ms >= 0) || !(tokens >= 1)) return;
    this.catchUps.push([tokens, ms]);
    if (this.catchUps.length > 8) this.catchUps.shift();
  }

  /**
   * Expected ms for the draft to run n tokens it did not propose (before a probe after n
   * streamed tokens): a line a + b·n through its forwards — the catch-ups and the prompt's
   * prefill, and a draft step as n = 1. A CPU draft pays per token (b > 0), a GPU one about a
   * step whatever n (b ≈ 0). Before any forward is timed: 0.
   */
  catchUpTime(n: number): number {
    const pts = [...this.catchUps];
    if (!Number.isNaN(this.draftMs)) pts.push([1, this.draftMs]);
    if (pts.length === 0) return 0;
    const { a, b } = fitLine(pts, 'proportional');
    return a + b * n;
  }

  observeStretch(n: number, wallMs: number, stepMs: number): void {
    const step = Number.isFinite(stepMs) ? stepMs : wallMs / n;
    const fixed = Math.max(0, wallMs - n * step);
    this.streamMs = Number.isNaN(this.streamMs) ? step : 0.7 * this.streamMs + 0.3 * step;
    this.stretchFixedMs = Number.isNaN(this.stretchFixedMs) ? fixed : 0.7 * this.stretchFixedMs + 0.3 * fixed;
    this.streamedSinceProbe += n;
    if (this.streamedSinceProbe >= this.probeEvery) this.probeDue = true;
  }

  /** Line a + b·(k + 1), a, b >= 0, through the per-k verify times (each k weighted once). */
  verifyLine(): { a: number; b: number } {
    const pts: [number, number][] = [];
    this.verifyMsAt.forEach((y, k) => y !== undefined && pts.push([k + 1, y]));
    // before any verify (round 0 streamed): a streamed token is a one-position pass, less its queueing
    if (pts.length === 0 && !Number.isNaN(this.streamMs)) pts.push([1, Math.max(0, this.streamMs - (Number.isNaN(this.queueMs) ? 0 : this.queueMs))]);
    return fitLine(pts, 'half');
  }

  /** Expected verify ms of a k-block (k = 0: one decode step, from the line). */
  verifyTime(k: number): number {
    const seen = this.verifyMsAt[k];
    if (seen !== undefined) return seen;
    const { a, b } = this.verifyLine();
    return a + b * (k + 1);
  }

  expectedTokens(k: number, alpha = this.alpha): number {
    return alpha >= 1 - 1e-9 ? k + 1 : (1 - alpha ** (k + 1)) / (1 - alpha);
  }

  /** ms per drafted token: measured, or before any draft step the prompt prefill's per-token cost (a lower bound). */
  draftStepTime(): number {
    if (!Number.isNaN(this.draftMs)) return this.draftMs;
    return this.catchUps.length > 0 ? this.catchUpTime(1) : 0;
  }

  roundTime(k: number): number {
    const d = this.draftStepTime();
    const r = (Number.isNaN(this.overheadMs) ? 0 : this.overheadMs) + this.verifyTime(k);
    if (!this.pipeline) return k * d + r;
    const h = this.alpha ** (k + 1);
    return r + (1 - h) * k * d + h * Math.max(0, k * d - r);
  }

  /** ms per streamed token in a stretch: measured, or one decode step plus the queue time per pass. */
  streamStepTime(): number {
    if (!Number.isNaN(this.streamMs)) return this.streamMs;
    // nothing drafted or streamed yet (a stream from round 0): one pass as open bounded it
    if (this.verifyMsAt.length === 0 && Number.isFinite(this.openPassMs)) return this.openPassMs;
    return this.verifyTime(0) + (Number.isNaN(this.queueMs) ? 0 : this.queueMs);
  }

  /** Fixed cost of a stretch (its round trip): measured, or the round overhead minus queueing. */
  stretchFixedTime(): number {
    if (!Number.isNaN(this.stretchFixedMs)) return this.stretchFixedMs;
    const r = Number.isNaN(this.overheadMs) ? 0 : this.overheadMs;
    return Math.max(0, r - (Number.isNaN(this.queueMs) ? 0 : this.queueMs));
  }

  /** Nothing has measured a stream step yet, but open() bounded it. */
  private unmeasuredStep(): boolean {
    return Number.isNaN(this.streamMs) && this.verifyMsAt.length === 0 && Number.isFinite(this.openPassLoMs);
  }

  /** Tokens the next stretch streams: enough to amortize its round trip, up to the next probe, within [STRETCH_MIN, STRETCH_MAX]. */
  stretchTokens(): number {
    // a re-probe while drafting wins stays short; the first probe (nothing streamed yet) is sized
    // like any stretch from the estimates of round 0: on a fast target behind a long round trip
    // it streams long enough to pay that round trip back instead of costing one more
    if (this.streamProbe && !Number.isNaN(this.streamMs)) return STRETCH_MIN;
    // before anything measured a step, open's lower bound on it (prefill / P): amortizing the
    // round trip over cheap steps takes more of them, and an extra round trip is the cost
    const step = this.unmeasuredStep() ? this.openPassLoMs : this.streamStepTime();
    const amortize = Math.ceil(this.stretchFixedTime() / (STRETCH_FIXED_SHARE * Math.max(step, 1e-6)));
    const n = this.streamProbe ? amortize : Math.min(amortize, Math.max(STRETCH_MIN, this.probeEvery - this.streamedSinceProbe));
    return Math.max(STRETCH_MIN, Math.min(STRETCH_MAX, n));
  }

  /** Expected tokens per ms: of drafting at k (k >= 1), or of streaming n tokens (k = 0). */
  rate(k: number, n = this.stretchTokens()): number {
    if (k === 0) return n / Math.max(this.stretchFixedTime() + n * this.streamStepTime(), 1e-6);
    return this.expectedTokens(k) / Math.max(this.roundTime(k), 1e-6);
  }

  /** The k >= 1 with the most expected tokens per ms (ties → smaller k). */
  best(): number {
    let bestK = 1;
    let bestRate = -Infinity;
    for (let k = 1; k <= this.kMax; k++) {
      const rate = this.rate(k);
      if (rate > bestRate * (1 + 1e-9)) {
        bestRate = rate;
        bestK = k;
      }
    }
    return bestK;
  }

  /**
   * Probe interval P: the probe's expected loss over streaming ≤ PROBE_BUDGET of the P tokens'
   * streaming time. The loss is the probe round's time, plus the draft catching up on the P
   * streamed tokens (a + b·P), plus the next stretch's fixed cost, minus what streaming gives in
   * that time: P ≥ (round + a + S − E·s) / (PROBE_BUDGET·s − b). Where catching up costs more
   * per token than the budget allows (b ≥ PROBE_BUDGET·s: a CPU draft beside a fast target),
   * no interval keeps a probe within budget and probes come every PROBE_MAX tokens; the
   * condition is measured again at each decision, so a busier server (a larger s) brings them back.
   */
  private planProbes(kProbe: number): void {
    // before anything measured a step, its lower bound (prefill / P), as stretchTokens takes it:
    // priced at the upper bound, the E tokens a probe yields look worth a whole prefill each and
    // the probe free, and a short generation on a fast target pays a second stretch's round trip
    const s = Math.max(this.unmeasuredStep() ? this.openPassLoMs : this.streamStepTime(), 1e-6);
    if (this.catchUps.length === 0 && !Number.isNaN(this.draftMs) && this.streamedSinceProbe <= STRETCH_MIN) {
      // a step is timed but no multi-token forward (a prompt of one or two tokens): the slope is
      // unknown. While few tokens are streamed and a probe round costs no more than a short
      // stretch, the first probe comes after STRETCH_MIN tokens, where its catch-up is cheap
      // whatever the slope, and measures it. Otherwise (a long first stretch, a long round trip)
      // the line below assumes the worst, a step per token.
      const loss = this.roundTime(kProbe) + this.draftMs + this.stretchFixedTime() - this.expectedTokens(kProbe) * s;
      if (loss <= STRETCH_MIN * s) {
        this.probeEvery = STRETCH_MIN;
        return;
      }
    }
    const a = this.catchUpTime(0);
    const b = this.catchUpTime(1) - a;
    const fixedLoss = Math.max(0, this.roundTime(kProbe) + a + this.stretchFixedTime() - this.expectedTokens(kProbe) * s);
    const room = PROBE_BUDGET * s - b;
    const p = room > 0 ? Math.ceil(fixedLoss / room) : PROBE_MAX;
    this.probeEvery = Math.max(STRETCH_MIN, Math.min(PROBE_MAX, p));
  }

  /**
   * A stream probe (a stretch that measures what streaming costs now) is worth its tokens only
   * where streaming could win: its estimate (from the verify line, the round overhead and the
   * queue time) within STREAM_PROBE_MARGIN of drafting's best. Against a slow target that
   * speculation beats clearly, a probe of STRETCH_MIN tokens at the target's own pace would cost
   * a short generation a large share of its time.
   */
  private streamCouldWin(): boolean {
    return this.rate(0) * STREAM_PROBE_MARGIN >= this.rate(this.best());
  }

  choose(draftReady = true): number {
    const r = this.round++;
    // round 0 with the arm: stream when the bounds say streaming wins, and rather than wait idle
    // while the draft is still prefilling (a slow draft: the wait alone can cost more than the stretch)
    if (r === 0 && (this.streamsFirst() || (this.targetOnly && !draftReady))) {
      // until a round measures it, a round's overhead is the link's round trip
      if (Number.isNaN(this.overheadMs)) this.overheadMs = this.openRttMs;
      this.streaming = true;
      this.streamedSinceProbe = 0;
      this.planProbes(Math.min(this.kInit, 2));
      return 0;
    }
    if (r === 0) {
      // the arm's short first block is for a draft that may be slow; one known (an earlier run's
      // step) to cost at most a tenth of the target's cheapest possible step starts at 4
      const cheap = this.targetOnly && this.draftMs <= 0.1 * this.openPassLoMs;
      return cheap ? Math.max(this.kInit, Math.min(4, this.kMax)) : this.kInit;
    }
    if (r === 1 && !this.targetOnly) return Math.max(1, Math.floor(this.kInit / 2));
    if (this.targetOnly && !this.streaming && (Number.isNaN(this.streamMs) || this.sinceStreamProbe >= STREAM_PROBE_EVERY)) {
      if (this.streamCouldWin()) {
        // measure what streaming costs now (one stretch), then decide on data
        this.sinceStreamProbe = 0;
        this.streamedSinceProbe = 0;
        this.streamProbe = true;
        return 0;
      }
      // one verify size measured says little of a one-position pass (memory-bound, it costs about
      // the same; compute-bound, 1/(k + 1) of it): draft at another k first, and decide on a line
      const measured = this.verifyMsAt.flatMap((y, k) => (y === undefined ? [] : [k]));
      if (measured.length === 1) return measured[0] >= 4 ? Math.floor(measured[0] / 2) : Math.min(2 * measured[0], this.kMax);
    }
    // a stream probe's tokens count as streaming time toward the next drafting probe
    const afterStreamProbe = this.streamProbe;
    this.streamProbe = false;
    this.sinceStreamProbe++;
    const k = this.best();
    if (this.targetOnly) {
      const kProbe = Math.min(k, 2);
      // a due probe is re-planned first: what was learned since it was planned (the draft's own
      // step, timed at its prefill) can put it off
      if (this.streaming && this.probeDue) {
        this.planProbes(kProbe);
        this.probeDue = this.streamedSinceProbe >= this.probeEvery;
      }
      if (this.streaming && this.probeDue) {
        // a probe round: refresh the drafting estimates, then decide again
        this.probeDue = false;
        this.streamedSinceProbe = 0;
        this.streaming = false;
        return kProbe;
      }
      const r0 = this.rate(0);
      const rk = this.rate(k);
      if (this.streaming ? r0 * MODE_MARGIN >= rk : r0 > rk * MODE_MARGIN) {
        if (!this.streaming && !afterStreamProbe) this.streamedSinceProbe = 0;
        this.streaming = true;
        this.planProbes(kProbe);
        return 0;
      }
      this.streaming = false;
    }
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
  /** Time spent running tokens the draft did not propose (after a k = 0 stretch), ms, and how many. */
  catchUpMs = 0;
  caughtUpTokens = 0;

  constructor(readonly model: CausalLM, readonly params: SamplingParams, readonly clock: Clock) {}

  /**
   * Run the prompt into the KV cache without proposing (overlaps the target's prefill): all but
   * its last token as one forward, then the last as one decode step, each timed — the controller
   * learns the draft's cost of a step before round 0, and of a forward of P − 1 tokens.
   */
  async prefill(tokens: readonly number[]): Promise<{ prefillMs: number; stepMs: number }> {
    const t0 = this.clock.now();
    await this.model.forward(tokens.slice(0, -1), 0);
    const t1 = this.clock.now();
    await this.model.forward(tokens.slice(-1), tokens.length - 1);
    const t2 = this.clock.now();
    this.kv = [...tokens];
    return { prefillMs: t1 - t0, stepMs: t2 - t1 };
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
    let c = this.syncTo(context);
    if (context.length - c > 2) {
      // tokens the target streamed alone: run them as one prefill-like pass first, timed apart,
      // so the draft's per-token cost (which the controller weighs) stays a decode step's
      const t0 = this.clock.now();
      await this.model.forward(context.slice(c, -1), c);
      this.catchUpMs += this.clock.now() - t0;
      this.caughtUpTokens += context.length - 1 - c;
      c = context.length - 1;
      this.kv = context.slice(0, c);
    }
    const t0 = this.clock.now();
    const logits = await this.model.forward(context.slice(c), c);
    this.msTotal += this.clock.now() - t0;
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
  const adaptive = !!opts.adaptive || !!opts.policy;
  if (!Number.isInteger(kMax) || kMax < 1) throw new RangeError(`kMax must be an integer >= 1, got ${kMax}`);
  if (!adaptive && (!Number.isInteger(fixedK) || fixedK < 1)) throw new RangeError(`k must be an integer >= 1, got ${fixedK}`);
  if (!Number.isInteger(opts.maxTokens) || opts.maxTokens < 1) throw new RangeError(`maxTokens must be an integer >= 1, got ${opts.maxTokens}`);
  if (prompt.length === 0) throw new RangeError('speculate: the prompt needs at least one token');
  const clock = opts.clock ?? realClock;
  const greedy = opts.params.temperature === 0;
  const eos = new Set(opts.eosTokenIds ?? []);
  const targetOnly = adaptive && opts.targetOnlyArm !== false;
  // with the k = 0 arm the first round is a short probe: a slow draft must not pay for a long block before the model knows
  const kInit = adaptive ? Math.min(targetOnly ? 2 : 4, kMax) : fixedK;
  const ctl: KPolicy = opts.policy ?? new KController(adaptive ? kMax : fixedK, kInit, !!opts.pipeline, targetOnly);
  if (adaptive && opts.prior) ctl.seedDraft?.(opts.prior);
  const drafter = new Drafter(draftModel, opts.params, clock);

  const t0 = clock.now();
  const passes0 = target.targetPasses;
  const tokens: number[] = [];
  const provenance: Provenance[] = [];
  const kHistory: number[] = [];
  let stopReason: StopReason | null = null;
  let ttftMs = 0;
  const tally = new SpecTally();
  let roundMsSum = 0;
  let pipelineHits = 0;
  let wasted = 0;
  let stretches = 0;
  let streamed = 0;
  let streamMsSum = 0;
  let queueMsSum = 0;
  let batchSum = 0;
  let loadRounds = 0;

  const emit = (token: number, prov: Provenance): void => {
    if (stopReason) return;
    if (tokens.length === 0) ttftMs = clock.now() - t0;
    tokens.push(token);
    provenance.push(prov);
    opts.onToken?.({ token, provenance: prov, index: tokens.length - 1, round: tally.rounds });
    if (eos.has(token)) stopReason = 'eos';
    else if (tokens.length >= opts.maxTokens) stopReason = 'max-tokens';
  };

  // Target prefill and draft prefill overlap when the target is remote, and the target's first
  // token is emitted the moment it arrives, draft prefill or not (speculative TTFT = target
  // prefill + RTT). allSettled waits for both, so the draft's KV is never still being written
  // when this returns, and a refusal is thrown after the prefill finished, not left unhandled.
  let firstToken = -1;
  const openedAt = clock.now();
  const opening = target.open(prompt, opts.params).then((r) => {
    firstToken = r.firstToken;
    emit(firstToken, 'target');
    if (r.rttMs !== undefined && r.prefillMs !== undefined) {
      // two samples of the round trip: the link's own (its hello) and this open's wall time less
      // the target's side; the smaller, so that one stall (a busy gateway, a busy thread here)
      // does not talk round 0 out of drafting
      const openRtt = clock.now() - openedAt - r.prefillMs;
      ctl.observeOpen?.({ rttMs: Math.max(0, Math.min(r.rttMs, openRtt)), prefillMs: r.prefillMs, promptTokens: prompt.length });
    }
  });
  // 'overlap': the draft's prefill starts one macrotask later: an open the target answers in this
  // thread (a local target) emits its token first instead of waiting behind the draft's prefill;
  // a remote open is already on the wire, so overlap is kept. 'after-open': it waits for the
  // first token (a draft on the target's machine, SwiftShader for one, would slow the target's
  // prefill), and runs only where it is short beside the target's steps (round 0 waits for it and
  // drafts); else round 0 streams and the first draft round catches the draft up on the whole
  // transcript, and a run that never drafts never waits for a slow draft at all.
  const afterOpen = (opts.draftPrefill ?? (targetOnly && (opts.prior?.streamedShare ?? 0) >= 0.5 ? 'after-open' : 'overlap')) === 'after-open';
  // a one-token prompt has nothing to prefill: the first draft step runs it
  let prefillSkipped = prompt.length < 2;
  let draftReady = prefillSkipped;
  const draftPrefill = async (): Promise<void> => {
    if (prompt.length < 2) return;
    const { prefillMs, stepMs } = await drafter.prefill(prompt);
    if (prompt.length > 2) ctl.observeCatchUp(prefillMs, prompt.length - 1);
    ctl.observeDraft(stepMs);
    draftReady = true;
  };
  // The first decision does not wait for an overlapping prefill: a stretch can run meanwhile
  // (with the k = 0 arm); a draft round awaits it. Before returning or throwing, it has settled,
  // so the draft's KV is never still being written, and its rejection is never left unhandled.
  const prefilling = afterOpen ? Promise.resolve() : clock.sleep(0).then(draftPrefill);
  const prefillSettled = prefilling.then(() => undefined, () => undefined);
  try {
    await opening;
  } catch (e) {
    await prefillSettled;
    await prefilling; // the prefill's own failure first
    throw e;
  }
  if (afterOpen && !prefillSkipped) {
    // wait for a prefill that is short beside the target's steps, and draft; else stream round 0
    // (draftReady stays false) and let the first draft round, if one comes, catch the draft up:
    // a prefill run meanwhile is wasted whenever streaming goes on, and in one thread it delays
    // the stream
    if (!ctl.streamsFirst?.() && ctl.waitsForPrefill?.(prompt.length)) await draftPrefill();
    else prefillSkipped = true;
  }

  const transcript = [...prompt, firstToken];
  // drafted ahead of the transcript: tokens with their q's, valid while the transcript is unchanged
  let pending: { token: number; q: SparseDist }[] = [];
  const room = (): number => draftModel.maxContext - transcript.length;

  /** k = 0: the target streams n tokens alone, sampling them itself exactly as baseline does. */
  const stretch = async (n: number): Promise<void> => {
    wasted += pending.length;
    pending = [];
    kHistory.push(0);
    const s0 = clock.now();
    let first = NaN;
    let last = NaN;
    let seen = 0;
    const got = await target.generate(n, (t) => {
      last = clock.now();
      if (seen++ === 0) first = last;
      // Stop shows at once: the rest of the stretch still arrives (a generate cannot be cut short) but is not emitted
      if (opts.signal?.aborted && !stopReason) stopReason = 'abort';
      emit(t, 'target');
    });
    const wallMs = clock.now() - s0;
    // a link that returns the stretch without streaming it emits it here
    for (let i = seen; i < got.length; i++) emit(got[i], 'target');
    transcript.push(...got);
    stretches++;
    streamed += got.length;
    streamMsSum += wallMs;
    ctl.observeStretch(got.length, wallMs, seen >= 2 ? (last - first) / (seen - 1) : NaN);
  };

  try {
    while (!stopReason) {
      if (opts.signal?.aborted) {
        stopReason = 'abort';
        break;
      }
      const remaining = opts.maxTokens - tokens.length;
      const chosen = adaptive ? ctl.choose(draftReady) : fixedK;
      if (chosen === 0) {
        const n = Math.min(ctl.stretchTokens(), remaining, room() - 1);
        if (n < 1) {
          stopReason = 'context';
          break;
        }
        await stretch(n);
        if (opts.signal?.aborted && !stopReason) stopReason = 'abort';
        continue;
      }
      let k = Math.min(chosen, Math.max(1, remaining - 1), room() - 1);
      if (k < 1) {
        stopReason = 'context';
        break;
      }
      if (!draftReady) await prefilling;
      // the block: reuse what pipelining drafted, then draft the rest
      const block = pending.slice(0, k);
      if (pending.length > 0) pipelineHits++;
      wasted += Math.max(0, pending.length - k);
      pending = [];
      const d0 = drafter.tokensDrafted;
      const m0 = drafter.msTotal;
      const c0 = drafter.catchUpMs;
      const u0 = drafter.caughtUpTokens;
      while (block.length < k) block.push(await drafter.next([...transcript, ...block.map((b) => b.token)]));
      if (drafter.catchUpMs > c0) ctl.observeCatchUp(drafter.catchUpMs - c0, drafter.caughtUpTokens - u0);
      k = block.length;
      kHistory.push(k);
      const draftTokens = block.map((b) => b.token);

      const sent = clock.now();
      let settled = false;
      const inFlight = target.verify(draftTokens, greedy ? undefined : block.map((b) => b.q));
      inFlight.then(() => (settled = true), () => (settled = true));
      // pipelining: keep drafting past the block, assuming it all stands; ext[0] guesses the bonus.
      // Only worth it when that is likely (≈ α^{k+1}); otherwise the drafts are thrown away and the
      // draft step in progress when the verdict lands only delays the next round.
      const ext: { token: number; q: SparseDist }[] = [];
      if (opts.pipeline && ctl.alpha ** (k + 1) >= PIPELINE_MIN_HIT) {
        await clock.sleep(0);
        while (!settled && !opts.signal?.aborted && ext.length < kMax + 1 && transcript.length + k + ext.length + 1 < draftModel.maxContext) {
          ext.push(await drafter.next([...transcript, ...draftTokens, ...ext.map((e) => e.token)]));
          await clock.sleep(0);
        }
      }
      const verdict: Verdict = await inFlight;
      const roundMs = clock.now() - sent;
      if (drafter.tokensDrafted > d0) ctl.observeDraft((drafter.msTotal - m0) / (drafter.tokensDrafted - d0));
      if (!Number.isInteger(verdict.accepted) || verdict.accepted < 0 || verdict.accepted > k) {
        throw new RangeError(`verdict accepted ${verdict.accepted} of a ${k}-token block`);
      }
      tally.round(k, verdict.accepted, verdict.verifyMs);
      roundMsSum += roundMs;
      if (verdict.queueMs !== undefined || verdict.batch !== undefined) {
        loadRounds++;
        queueMsSum += verdict.queueMs ?? 0;
        batchSum += verdict.batch ?? 0;
      }
      ctl.observeRound(k, verdict.accepted, roundMs, verdict.verifyMs, { queueMs: verdict.queueMs, batch: verdict.batch });

      for (let i = 0; i < verdict.accepted; i++) emit(draftTokens[i], 'draft');
      emit(verdict.token, verdict.accepted === k ? 'bonus' : 'correction');
      transcript.push(...draftTokens.slice(0, verdict.accepted), verdict.token);
      // keep the pre-drafted tokens only if the whole block stood and the bonus matched the guess
      if (verdict.accepted === k && ext.length > 0 && ext[0].token === verdict.token) pending = ext.slice(1);
      else wasted += ext.length;
      if (pending.length === 0) drafter.syncTo(transcript);
      if (opts.signal?.aborted && !stopReason) stopReason = 'abort';
    }
  } finally {
    await prefillSettled;
  }
  // a draft that failed its prefill fails the run, even one the target streamed alone
  await prefilling;
  wasted += pending.length;

  const wallMs = clock.now() - t0;
  tally.add({ tokens: tokens.length, targetPasses: target.targetPasses - passes0 });
  const { rounds } = tally;
  return {
    tokens,
    provenance,
    stopReason: stopReason as StopReason,
    kHistory,
    prior: adaptive ? priorOf(ctl, tokens.length ? streamed / tokens.length : 0) : undefined,
    stats: {
      rounds,
      draftedTokens: tally.drafted,
      acceptedTokens: tally.accepted,
      acceptanceRate: tally.acceptanceRate,
      meanAcceptedPerRound: tally.meanAcceptedPerRound,
      tokensPerTargetPass: tally.tokensPerTargetPass,
      targetPasses: tally.targetPasses,
      draftMsPerToken: drafter.tokensDrafted ? drafter.msTotal / drafter.tokensDrafted : 0,
      verifyMsPerPass: tally.verifyMsPerPass,
      roundMs: rounds ? roundMsSum / rounds : 0,
      wallMs,
      tokPerSec: wallMs > 0 ? (tokens.length * 1000) / wallMs : 0,
      ttftMs,
      pipelineHits,
      wastedDraftTokens: wasted,
      meanK: kHistory.length ? kHistory.reduce((a, b) => a + b, 0) / kHistory.length : 0,
      stretches,
      streamedTokens: streamed,
      streamMsPerToken: streamed ? streamMsSum / streamed : 0,
      meanQueueMs: loadRounds ? queueMsSum / loadRounds : 0,
      meanBatch: loadRounds ? batchSum / loadRounds : 0,
      draftPrefill: prefillSkipped ? 'skipped' : afterOpen ? 'after-open' : 'overlap',
    },
  };
}

function priorOf(ctl: KPolicy, streamedShare: number): DraftPrior | undefined {
  const c = ctl.draftCosts?.();
  return c && { ...c, streamedShare };
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
  opts: { params: SamplingParams; maxTokens: number; eosTokenIds?: readonly number[]; clock?: Clock },
): Promise<BaselineResult> {
  validateSampling(opts.params);
  const clock = opts.clock ?? realClock;
  const t0 = clock.now();
  const passes0 = target.targetPasses;
  const { firstToken } = await target.open(prompt, opts.params);
  const ttftMs = clock.now() - t0;
  const rest = opts.maxTokens > 1 ? await target.generate(opts.maxTokens - 1) : [];
  const eos = new Set(opts.eosTokenIds ?? []);
  const all = [firstToken, ...rest];
  const stop = all.findIndex((t) => eos.has(t));
  const tokens = stop >= 0 ? all.slice(0, stop + 1) : all;
  const wallMs = clock.now() - t0;
  return {
    tokens,
    stopReason: stop >= 0 ? 'eos' : 'max-tokens',
    targetPasses: target.targetPasses - passes0,
    wallMs,
    tokPerSec: wallMs > 0 ? (tokens.length * 1000) / wallMs : 0,
    ttftMs,
  };
}

// ---- injected latency: of the link, of the draft ----

/**
 * A TargetLink with rttMs of extra round-trip delay, half on the way out and half on the way
 * back (what `--rtt-ms` injects), through the same DelayLine as RemoteTarget's. Baseline
 * generation pays it once per call: the target streams its tokens without waiting for the
 * client, each arriving half the RTT after it was produced.
 */
export class DelayedLink implements TargetLink {
  private readonly line: DelayLine;

  constructor(readonly inner: TargetLink, readonly rttMs: number, readonly clock: Clock = realClock) {
    this.line = new DelayLine(rttMs, clock);
  }

  get targetPasses(): number {
    return this.inner.targetPasses;
  }

  private async around<T>(f: () => Promise<T>): Promise<T> {
    await this.line.send();
    const out = await f();
    if (this.rttMs > 0) await this.line.arrival();
    return out;
  }

  async open(promptTokens: number[], sampling: SamplingParams): Promise<Opened> {
    const r = await this.around(() => this.inner.open(promptTokens, sampling));
    return r.rttMs === undefined ? r : { ...r, rttMs: r.rttMs + this.rttMs };
  }

  verify(draft: number[], draftDists?: SparseDist[]): Promise<Verdict> {
    return this.around(() => this.inner.verify(draft, draftDists));
  }

  generate(n: number, onToken?: (token: number) => void): Promise<number[]> {
    // each streamed token reaches the caller half the RTT after the target produced it
    return this.around(() => this.inner.generate(n, onToken && ((t) => this.line.receive(() => onToken(t)))));
  }

  close(): Promise<void> {
    return this.around(() => this.inner.close());
  }
}

/**
 * A draft model whose every forward call takes delayMs longer (what `--draft-delay-ms` injects):
 * a draft device slow per step — a browser GPU with high dispatch latency, a busy laptop —
 * where speculation loses and the controller's k = 0 arm must take over. perTokenMs adds that
 * much per token of the call: a compute-bound (CPU) draft, whose catch-up after a stretch costs
 * in proportion to the tokens streamed.
 */
export class DelayedModel implements CausalLM {
  constructor(readonly inner: CausalLM, readonly delayMs: number, readonly clock: Clock = realClock, readonly perTokenMs = 0) {}

  get config() {
    return this.inner.config;
  }

  get maxContext(): number {
    return this.inner.maxContext;
  }

  get length(): number {
    return this.inner.length;
  }

  async forward(tokens: ArrayLike<number>, startPos: number): Promise<Float32Array> {
    const out = await this.inner.forward(tokens, startPos);
    const ms = this.delayMs + this.perTokenMs * tokens.length;
    if (ms > 0) await this.clock.sleep(ms);
    return out;
  }

  rollback(length: number): void {
    this.inner.rollback(length);
  }

  dispose(): void {
    this.inner.dispose();
  }
}
