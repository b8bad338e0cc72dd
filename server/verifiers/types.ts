// The verifier interface: what the gateway needs from any target backend (cpu reference,
// webgpu engine in Node, Python sidecar). Sessions own a target KV cache on the backend.

import type { SamplingParams, SparseDist } from '../../src/engine/sampling.ts';

export interface VerifierInfo {
  backend: 'cpu' | 'webgpu' | 'sidecar';
  /** Human-readable model name (directory name or HF id). */
  model: string;
  /** Tokenizer identity hash (see src/engine/tokenizer.ts); drafts must match it. */
  tokenizerHash: string;
  vocabSize: number;
  maxContext: number;
  /** Most sessions one verifyBatch call takes. */
  maxBatch: number;
  /** Device description (adapter name, "cpu", "wormhole n150", ...). */
  device: string;
  /**
   * open() honours `resume` (prefill without sampling). A backend without it is resumed by
   * the gateway as open(prompt + resume[:-1]) and kept only if its first token equals the
   * resumed last token (always so at temperature 0).
   */
  resume?: boolean;
  /**
   * How a k+1 verify runs, where the backend has a choice (sidecar ttnn: 'split-update' or
   * 'single-decode', chosen by its start-up self-test on the card), and per sidecar that test's
   * outcome (server/sidecar/README.md).
   */
  verifyPath?: string;
  selfTest?: Record<string, unknown>[];
}

export interface VerifyRequest {
  sessionId: string;
  /**
   * Draft tokens d_1..d_k proposed after the session's accepted transcript. The backend
   * runs one forward over [last accepted token, d_1..d_k] (k + 1 positions).
   */
  draft: number[];
  /** q_i for each draft token (sampled mode); omitted or empty for greedy. */
  draftDists?: SparseDist[];
}

export interface VerifyResult {
  sessionId: string;
  /** How many draft tokens stand (0..k). */
  accepted: number;
  /** The target's token after them: a correction (accepted < k) or a bonus (accepted == k). */
  token: number;
  /** Wall time of the forward that served this request, ms. */
  forwardMs: number;
}

export interface Verifier {
  info(): VerifierInfo;
  /**
   * Start a session: prefill the prompt (at least one token). Resolves with the target's
   * first token (sampled with `sampling`), so the first token costs one target pass.
   * Resume (a client reconnecting with its transcript): `resume` holds the tokens generated
   * after the prompt (>= 1), the last of which the target has not run. Prefill
   * prompt + resume[:-1], sample nothing, and resolve with firstToken = resume[resume.length-1];
   * the next verify then continues the transcript exactly. The target RNG for a resumed
   * sampled session restarts from a stream derived from (seed, transcript length).
   */
  open(sessionId: string, promptTokens: number[], sampling: SamplingParams, resume?: number[]): Promise<{ firstToken: number }>;
  /** One target pass over every request's k + 1 positions (batched where the backend can). */
  verifyBatch(requests: VerifyRequest[]): Promise<VerifyResult[]>;
  /** Baseline: n tokens from the target alone, one pass each; onToken streams them. */
  generate(sessionId: string, n: number, onToken?: (token: number) => void): Promise<number[]>;
  close(sessionId: string): Promise<void>;
  dispose(): Promise<void>;
  /**
   * Optional: ONE pass over prefill chunks of opening sessions and the verify blocks of open
   * ones together (a backend with a batched forward that can take prompt rows). The batcher
   * then feeds opens into the shared pass instead of running each as a job of its own, and
   * cuts long prompts into chunks so one big prefill cannot hold the verifier. Batch-invariant
   * like verifyBatch: an open's first token and logits do not depend on the chunking or on who
   * shares its passes. close() of a session whose prefill is part-way through drops it.
   */
  pass?(prefills: PrefillChunk[], verifies: VerifyRequest[]): Promise<PassResult>;
}

/** An open as the batcher queues it: Verifier.open's arguments. */
export interface OpenRequest {
  sessionId: string;
  prompt: number[];
  sampling: SamplingParams;
  resume?: number[];
}

/** The tokens an open prefills before its first token: the prompt, or prompt + resume[:-1]. */
export function prefillLength(o: OpenRequest): number {
  return o.resume && o.resume.length > 0 ? o.prompt.length + o.resume.length - 1 : o.prompt.length;
}

/** The next piece of an open's prefill: its first `tokens` not yet run (at least 1; all of them finishes the open). */
export interface PrefillChunk {
  open: OpenRequest;
  tokens: number;
}

export interface PassResult {
  verifies: VerifyResult[];
  /** Opens whose prefill finished in this pass. */
  opened: { sessionId: string; firstToken: number }[];
  /** Sessions (verify or open) that failed; a failed open holds nothing on the backend. */
  failures: Map<string, Error>;
}

/**
 * A verifyBatch that failed for some sessions only: `results` stand (their backend state has
 * advanced), `failures` name the others. The batcher resolves the former and fails only the
 * latter, so one bad session does not fail its batch-mates. Any error with these two fields
 * is treated so (the sidecar's SidecarBatchError has them).
 */
export interface PartialBatchFailure {
  results: VerifyResult[];
  failures: Map<string, Error>;
}

export class PartialBatchError extends Error implements PartialBatchFailure {
  override name = 'PartialBatchError';
  constructor(readonly results: VerifyResult[], readonly failures: Map<string, Error>) {
    super(`${failures.size} of ${failures.size + results.length} verify requests failed: ${[...failures].slice(0, 3).map(([s, e]) => `${s}: ${e.message}`).join('; ')}`);
  }
}

export function isPartialBatchFailure(e: unknown): e is PartialBatchFailure {
  const x = e as Partial<PartialBatchFailure> | null;
  return !!x && typeof x === 'object' && Array.isArray(x.results) && x.failures instanceof Map;
}
