// How the draft side talks to the target, whether in-process (LocalTarget, src/engine) or
// through the gateway (the WebSocket client). The speculative controller sees only this.

import type { SamplingParams, SparseDist } from './sampling.ts';

export interface Verdict {
  /** Draft tokens that stand, 0..k. */
  accepted: number;
  /** The target's own token after them: correction (accepted < k) or bonus (accepted == k). */
  token: number;
  /** Target forward time for this block as measured where it ran, ms. */
  verifyMs: number;
  /** Server load, where a gateway reports it: time the block waited in the batcher's queue, ms, and sessions in its pass. */
  queueMs?: number;
  batch?: number;
}

/** What open() answers: the target's first token, and what the link learned of its costs. */
export interface Opened {
  firstToken: number;
  /** The prefill's time where it ran (the target's side of open), ms; absent if not known. */
  prefillMs?: number;
  /**
   * The link's own round trip without target compute (the network, injected RTT), ms, as the
   * link measured it (RemoteTarget: its hello); 0 in-process; absent if not known.
   */
  rttMs?: number;
}

export interface TargetLink {
  /** Prefill the prompt on the target; the first generated token comes from the target. */
  open(promptTokens: number[], sampling: SamplingParams): Promise<Opened>;
  /**
   * Verify draft tokens proposed after the accepted transcript (whose last token the target
   * has not yet run). draftDists[i] is q for draft[i]; required when temperature > 0.
   */
  verify(draft: number[], draftDists?: SparseDist[]): Promise<Verdict>;
  /** Baseline: n tokens from the target alone (one pass each), streamed through onToken. */
  generate(n: number, onToken?: (token: number) => void): Promise<number[]>;
  /** Target passes (forwards) this link has used so far, prefill included. */
  readonly targetPasses: number;
  close(): Promise<void>;
}
