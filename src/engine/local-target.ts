// LocalTarget: the target side of speculative decoding over any CausalLM, in-process. It owns
// the accepted transcript and the target KV cache, runs one forward per verify block and
// applies the exact acceptance rule (accept.ts). The CLI uses it directly; the gateway's
// cpu/webgpu verifier backends hold one per session.
//
// Invariant: the KV cache holds every transcript token except the last, which the target has
// not yet run (it was sampled from the previous pass). A verify block is therefore
// [last, d_1..d_k] at startPos = transcript.length − 1: k + 1 positions, k + 1 logits rows.

import type { CausalLM } from './model.ts';
import { Rng, STREAM_TARGET, sampleRow, validateSampling, type SamplingParams, type SparseDist } from './sampling.ts';
import type { Opened, TargetLink, Verdict } from './target-link.ts';
import { acceptBlock, VerifyInputError } from './accept.ts';
import { realClock } from './clock.ts';

export class TargetStateError extends Error {
  override name = 'TargetStateError';
}

export interface LocalTargetOptions {
  /** Largest verify block accepted (draft tokens per verify). */
  maxDraft?: number;
  /** The acceptance rule; only tests replace it (with a deliberately broken one, to show the statistical test has power). */
  rule?: typeof acceptBlock;
}

const now = (): number => globalThis.performance.now();

export class LocalTarget implements TargetLink {
  readonly model: CausalLM;
  readonly maxDraft: number;
  private readonly rule: typeof acceptBlock;
  private tokens: number[] = [];
  private params: SamplingParams | null = null;
  private rng: Rng = new Rng(0, STREAM_TARGET);
  private passes = 0;
  private closed = false;

  constructor(model: CausalLM, opts: LocalTargetOptions = {}) {
    this.model = model;
    this.maxDraft = opts.maxDraft ?? 16;
    this.rule = opts.rule ?? acceptBlock;
  }

  get targetPasses(): number {
    return this.passes;
  }

  /** Prompt + every accepted/generated token so far. */
  get transcript(): readonly number[] {
    return this.tokens;
  }

  get sampling(): SamplingParams | null {
    return this.params;
  }

  /** The target RNG's state, so a resumed session can continue the same stream. */
  rngState(): [number, number, number, number] {
    return this.rng.getState();
  }

  async open(promptTokens: number[], sampling: SamplingParams): Promise<Opened> {
    const { tokens } = this.prepareOpen(promptTokens, sampling);
    const vocab = this.model.config.vocabSize;
    const t0 = now();
    const last = this.model.forwardLast
      ? await this.model.forwardLast(tokens, 0)
      : (await this.model.forward(tokens, 0)).subarray((tokens.length - 1) * vocab);
    const prefillMs = now() - t0;
    return { firstToken: this.applyOpen(last), prefillMs, rttMs: 0 };
  }

  /**
   * What open(promptTokens) runs, for a backend that runs the prefill itself (batched with
   * other sessions' work, or in pieces): validates and starts the transcript; the caller runs
   * `tokens` from position 0, then hands the last position's logits to applyOpen.
   */
  prepareOpen(promptTokens: number[], sampling: SamplingParams): { tokens: number[] } {
    this.start(promptTokens, sampling, 1);
    return { tokens: promptTokens };
  }

  /** Sample the first token from the prompt's last logits (after prepareOpen's prefill ran). */
  applyOpen(lastLogits: Float32Array): number {
    this.checkOpen();
    this.passes++;
    const first = sampleRow(lastLogits, this.params as SamplingParams, this.rng, 0, this.model.config.vocabSize);
    this.tokens.push(first);
    return first;
  }

  /**
   * Rebuild a session from a transcript the client holds (reconnect, or a different gateway):
   * prefill all but its last token, sample nothing. Pass rngState to continue the same RNG
   * stream; without it the stream restarts from the seed (still a correct sampler).
   */
  async resume(transcript: number[], sampling: SamplingParams, rngState?: readonly number[]): Promise<void> {
    const { tokens } = this.prepareResume(transcript, sampling, rngState);
    if (tokens.length > 0) await (this.model.forwardLast ? this.model.forwardLast(tokens, 0) : this.model.forward(tokens, 0));
    this.applyResume(tokens.length);
  }

  /** What resume(transcript) runs (see prepareOpen): `tokens` (all but the last; may be none) from position 0, then applyResume. */
  prepareResume(transcript: number[], sampling: SamplingParams, rngState?: readonly number[]): { tokens: number[] } {
    this.start(transcript, sampling, 1);
    if (rngState) this.rng.setState(rngState);
    return { tokens: transcript.slice(0, -1) };
  }

  /** After prepareResume's prefill of `prefilled` tokens ran (none: the cache is emptied). */
  applyResume(prefilled: number): void {
    this.checkOpen();
    if (prefilled > 0) this.passes++;
    else this.model.rollback(0);
  }

  /** What a verify of `draft` runs: the tokens and the position of the first. */
  prepareVerify(draft: readonly number[]): { tokens: number[]; startPos: number } {
    this.checkOpen();
    const vocab = this.model.config.vocabSize;
    if (draft.length > this.maxDraft) throw new VerifyInputError(`verify block of ${draft.length} draft tokens exceeds the limit of ${this.maxDraft}`);
    for (const d of draft) {
      if (!Number.isInteger(d) || d < 0 || d >= vocab) throw new VerifyInputError(`draft token ${d} outside the vocabulary [0, ${vocab})`);
    }
    const startPos = this.tokens.length - 1;
    if (startPos + draft.length + 1 > this.model.maxContext) {
      throw new VerifyInputError(`context full: ${startPos + draft.length + 1} positions > maxContext ${this.model.maxContext}; start a new session`);
    }
    return { tokens: [this.tokens[startPos], ...draft], startPos };
  }

  /**
   * Apply the acceptance rule to logits a caller computed for prepareVerify(draft) (a batched
   * backend runs the forward itself), append the outcome to the transcript and roll the KV back.
   */
  applyVerify(logits: Float32Array, draft: readonly number[], draftDists: readonly SparseDist[] | undefined, verifyMs: number): Verdict {
    this.checkOpen();
    const params = this.params as SamplingParams;
    const { accepted, token } = this.rule(logits, this.model.config.vocabSize, draft, draftDists, params, this.rng);
    this.passes++;
    for (let i = 0; i < accepted; i++) this.tokens.push(draft[i]);
    this.tokens.push(token);
    const kvLength = this.tokens.length - 1;
    if (this.model.length > kvLength) this.model.rollback(kvLength);
    return { accepted, token, verifyMs };
  }

  async verify(draft: number[], draftDists?: SparseDist[]): Promise<Verdict> {
    const { tokens, startPos } = this.prepareVerify(draft);
    // validate q's before the forward so bad input costs no target pass
    if ((this.params as SamplingParams).temperature > 0 && draft.length > 0 && (!draftDists || draftDists.length !== draft.length)) {
      throw new VerifyInputError(`sampled verify needs one draft distribution q per draft token: got ${draftDists?.length ?? 0} for k = ${draft.length}`);
    }
    const t0 = now();
    const logits = await this.model.forward(tokens, startPos);
    return this.applyVerify(logits, draft, draftDists, now() - t0);
  }

  async generate(n: number, onToken?: (token: number) => void): Promise<number[]> {
    this.checkOpen();
    if (!Number.isInteger(n) || n < 0) throw new VerifyInputError(`generate(${n}): expected an integer >= 0`);
    const params = this.params as SamplingParams;
    const vocab = this.model.config.vocabSize;
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      // between tokens, one macrotask: a caller in this thread (a link that delivers each token
      // later, a gateway's socket) sees them as they come, not in one burst at the stretch's end
      if (i > 0) await realClock.sleep(0);
      const startPos = this.tokens.length - 1;
      if (startPos + 1 > this.model.maxContext) throw new VerifyInputError(`context full at ${startPos + 1} positions (maxContext ${this.model.maxContext})`);
      const logits = await this.model.forward([this.tokens[startPos]], startPos);
      this.passes++;
      const t = sampleRow(logits, params, this.rng, 0, vocab);
      this.tokens.push(t);
      out.push(t);
      onToken?.(t);
    }
    return out;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.params = null;
  }

  private start(tokens: number[], sampling: SamplingParams, minLength: number): void {
    if (this.closed) throw new TargetStateError('session is closed; open a new LocalTarget');
    validateSampling(sampling);
    const vocab = this.model.config.vocabSize;
    if (tokens.length < minLength) throw new VerifyInputError(`need at least ${minLength} token(s) to start a session, got ${tokens.length}`);
    for (const t of tokens) {
      if (!Number.isInteger(t) || t < 0 || t >= vocab) throw new VerifyInputError(`token id ${t} outside the vocabulary [0, ${vocab})`);
    }
    if (tokens.length + 1 > this.model.maxContext) throw new VerifyInputError(`prompt of ${tokens.length} tokens leaves no room in maxContext ${this.model.maxContext}`);
    this.params = { ...sampling };
    this.rng = new Rng(sampling.seed, STREAM_TARGET);
    this.tokens = [...tokens];
  }

  private checkOpen(): void {
    if (this.closed) throw new TargetStateError('session is closed');
    if (!this.params) throw new TargetStateError('session not open: call open() or resume() first');
  }
}
