// One generation in the worker: runGeneration(mode) opens a session on the gateway, then
// either runs the speculative controller (draft here, verify there) or streams the target
// alone (baseline), and posts token pieces with their provenance, live stats and per-round
// timings. The two modes share the setup, the streaming and the accounting.

import type { Provenance, RoundTiming, RunStats, TokenPiece } from '../types.ts';
import type { RunEvent, RunMode, RunRequest, StopReason } from './protocol.ts';
import type { SamplingParams, SparseDist } from '../../engine/sampling.ts';
import type { Opened, TargetLink, Verdict } from '../../engine/target-link.ts';
import type { StreamDecoder } from '../../engine/tokenizer.ts';
import { speculate } from '../../engine/speculative.ts';
import type { RemoteTarget } from '../../protocol/client.ts';
import type { Draft } from './draft.ts';
import { openLink, warmLink, type Gateway } from './gateway.ts';
import { fail } from './errors.ts';

const now = (): number => performance.now();

/** Per-round timing, measured around each verify on the draft's side. */
class TimedLink implements TargetLink {
  private mark: number;
  drafted = 0;
  accepted = 0;
  rounds = 0;

  constructor(readonly inner: RemoteTarget, private readonly t0: number, private readonly onRound: (r: RoundTiming) => void) {
    this.mark = t0;
  }

  get targetPasses(): number {
    return this.inner.targetPasses;
  }

  async open(promptTokens: number[], sampling: SamplingParams): Promise<Opened> {
    const r = await this.inner.open(promptTokens, sampling);
    this.mark = now();
    return r;
  }

  async verify(draftTokens: number[], draftDists?: SparseDist[]): Promise<Verdict> {
    const sent = now();
    const v = await this.inner.verify(draftTokens, draftDists);
    const back = now();
    this.drafted += draftTokens.length;
    this.accepted += v.accepted;
    this.rounds++;
    // Drafting overlapped with the previous round (pipelining) does not count: only the
    // time between the last verdict and this send is on the critical path.
    this.onRound({ k: draftTokens.length, accepted: v.accepted, draftMs: sent - this.mark, networkMs: Math.max(0, back - sent - v.verifyMs), verifyMs: v.verifyMs, startMs: this.mark - this.t0 });
    this.mark = back;
    return v;
  }

  generate(n: number, onToken?: (token: number) => void): Promise<number[]> {
    return this.inner.generate(n, onToken);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

function promptTokens(d: Draft, req: RunRequest): number[] {
  const tok = d.tokenizer;
  let ids: number[];
  if (tok.hasChatTemplate && !req.prompt) ids = tok.encodeChat(req.messages);
  else {
    // No template: a plain continuation of the conversation's text.
    const text = req.prompt ?? req.messages.map((m) => m.content).join('\n');
    ids = tok.encode(text, { addSpecialTokens: true });
  }
  if (ids.length === 0) fail('not-ready', 'The prompt is empty after tokenization.', 'Type some text.');
  return ids;
}

/** Collects token pieces and posts them in batches (one message per macrotask, not per token). */
class Streamer {
  private pieces: TokenPiece[] = [];
  private scheduled = false;
  readonly t0 = now();
  firstAt: number | null = null;
  tokens = 0;

  constructor(
    private readonly runId: string,
    private readonly onEvent: (e: RunEvent) => void,
    private readonly decoder: StreamDecoder,
    readonly stats: () => RunStats,
  ) {}

  token(id: number, prov: Provenance): void {
    this.firstAt ??= now();
    this.tokens++;
    this.add({ id, text: this.decoder.push(id), prov });
  }

  /** Ends the text: trailing bytes that complete no token become a piece with id -1. */
  end(): void {
    const tail = this.decoder.flush();
    if (tail) this.add({ id: -1, text: tail, prov: 'target' });
    this.flush();
  }

  private add(p: TokenPiece): void {
    this.pieces.push(p);
    if (!this.scheduled) {
      this.scheduled = true;
      setTimeout(() => this.flush(), 0);
    }
  }

  private flush(): void {
    this.scheduled = false;
    if (this.pieces.length === 0) return;
    const pieces = this.pieces;
    this.pieces = [];
    this.onEvent({ kind: 'tokens', runId: this.runId, pieces, stats: this.stats() });
  }
}

/** What one mode does once the session link and the stream exist. */
type ModeBody = (ctx: { d: Draft; link: TimedLink; remote: RemoteTarget; prompt: number[]; params: SamplingParams; req: RunRequest; stream: Streamer; signal: AbortSignal }) => Promise<StopReason>;

const speculative: ModeBody = async ({ d, link, prompt, params, req, stream, signal }) => {
  const s = req.settings;
  const result = await speculate(d.model, link, prompt, {
    params, maxTokens: s.maxTokens, k: s.k, adaptive: s.adaptive, kMax: s.k, pipeline: true,
    eosTokenIds: d.eosTokenIds, signal, prior: d.prior,
    onToken: (e) => stream.token(e.token, e.provenance),
  });
  // the next generation with this draft starts from what this one measured of its costs
  d.prior = result.prior ?? d.prior;
  return result.stopReason === 'abort' ? 'stopped' : result.stopReason === 'eos' ? 'eos' : 'max-tokens';
};

const baseline: ModeBody = async ({ d, remote, prompt, params, req, stream, signal }) => {
  const eos = new Set(d.eosTokenIds);
  let reason: StopReason | null = null;
  // Tokens after EOS or after Stop are not shown; closing the link ends the stream early.
  const take = (id: number): void => {
    if (reason !== null || signal.aborted) return;
    stream.token(id, 'target');
    if (eos.has(id)) {
      reason = 'eos';
      void remote.close();
    }
  };
  const onAbort = (): void => {
    reason ??= 'stopped';
    void remote.close();
  };
  signal.addEventListener('abort', onAbort);
  try {
    const { firstToken } = await remote.open(prompt, params);
    take(firstToken);
    if (req.settings.maxTokens > 1 && reason === null) await remote.generate(req.settings.maxTokens - 1, take);
  } catch (err) {
    // Closing the link on EOS or Stop fails the pending generate: that is the normal end.
    if (reason === null) throw err;
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
  return reason ?? 'max-tokens';
};

const MODES: Record<RunMode, ModeBody> = { speculative, baseline };

/**
 * Runs one generation in `mode` and posts its events; resolves when it has ended (throws
 * what went wrong, for the caller to map). `signal` stops it early (reason 'stopped').
 */
export async function runGeneration(mode: RunMode, d: Draft, g: Gateway, req: RunRequest, signal: AbortSignal, onEvent: (e: RunEvent) => void): Promise<void> {
  const s = req.settings;
  const params: SamplingParams = { temperature: s.temperature, topK: s.topK, topP: s.topP, seed: s.seed };
  const prompt = promptTokens(d, req);
  const remote = openLink(g, d.info.tokenizerHash, mode, s.rttMs, () => onEvent({ kind: 'status', runId: req.runId, text: 'reconnecting to the gateway…' }));
  let link!: TimedLink;
  const stats = (): RunStats => {
    const wallMs = now() - stream.t0;
    const passes = link.targetPasses;
    return {
      promptTokens: prompt.length,
      tokens: stream.tokens,
      ttftMs: stream.firstAt === null ? null : stream.firstAt - stream.t0,
      wallMs,
      tokPerSec: wallMs > 0 ? (stream.tokens * 1000) / wallMs : 0,
      targetPasses: passes,
      tokensPerTargetPass: passes > 0 ? stream.tokens / passes : 0,
      acceptanceRate: mode === 'speculative' && link.drafted > 0 ? link.accepted / link.drafted : null,
      rounds: link.rounds,
    };
  };
  const stream = new Streamer(req.runId, onEvent, d.tokenizer.streamDecoder({ skipSpecialTokens: true }), stats);
  link = new TimedLink(remote, stream.t0, (round) => onEvent({ kind: 'round', runId: req.runId, round }));
  let reason: StopReason;
  try {
    reason = await MODES[mode]({ d, link, remote, prompt, params, req, stream, signal });
  } finally {
    await remote.close();
    // the next run of this kind starts on a link that is already connected
    void warmLink(g, d.info.tokenizerHash, mode, s.rttMs);
  }
  stream.end();
  onEvent({ kind: 'done', runId: req.runId, reason, stats: stats() });
}
