// The duet wire protocol, version 1: a discriminated union on `type`. Control messages
// travel as JSON text frames; `verify` (token ids + sparse draft distributions) travels as a
// binary frame, see codec.ts for its byte layout. Imported by the browser worker and the
// gateway alike, so nothing here may import Node modules.

import type { SamplingParams, SparseDist } from '../engine/sampling.ts';
import type { ErrorCode } from './errors.ts';

export const PROTOCOL_VERSION = 1;

export type Mode = 'speculative' | 'baseline';

// ---- client → gateway ----

/** First message on a connection; nothing else is accepted before the gateway's `welcome`. */
export interface HelloMsg {
  type: 'hello';
  protocol: number;
  /** tokenizerHash of the draft's tokenizer; must equal the target's. */
  tokenizerHash: string;
  /** Shared secret, if the gateway runs with --token (may also be given as ?token= on upgrade). */
  token?: string;
  /** Free-form client name for logs. */
  client?: string;
}

/**
 * Start a session (ids are chosen by the client, unique per connection). `resume` reopens a
 * session after a reconnect: the tokens generated after the prompt so far, the last of which
 * the target has not yet run. The gateway prefills prompt + resume[:-1] and samples nothing,
 * so the transcript continues with no lost or duplicated token.
 */
export interface OpenMsg {
  type: 'open';
  session: number;
  prompt: number[];
  sampling: SamplingParams;
  mode: Mode;
  resume?: number[];
}

/** Draft tokens d_1..d_k after the accepted transcript, with q_i for each (sampled mode). */
export interface VerifyMsg {
  type: 'verify';
  session: number;
  /** 0, 1, 2, ... per session; a resumed session starts again at 0. */
  seq: number;
  draft: Int32Array;
  dists?: SparseDist[];
}

/** Baseline: n tokens from the target alone, streamed as `tokens` messages. */
export interface GenerateMsg {
  type: 'generate';
  session: number;
  n: number;
}

export interface CloseMsg {
  type: 'close';
  session: number;
}

export interface PingMsg {
  type: 'ping';
  t: number;
}

export type ClientMessage = HelloMsg | OpenMsg | VerifyMsg | GenerateMsg | CloseMsg | PingMsg;

// ---- gateway → client ----

/** What the gateway serves; also the body of GET /api/info. */
export interface GatewayInfo {
  protocol: number;
  backend: string;
  model: string;
  device: string;
  tokenizerHash: string;
  vocabSize: number;
  maxContext: number;
  /** Longest draft block one verify may carry. */
  maxBlock: number;
  /** Most sessions batched into one target pass. */
  maxBatch: number;
  maxSessions: number;
  /** Largest frame the gateway accepts, bytes. */
  maxPayloadBytes: number;
  /** Per-session limit on requests (verify/generate/open) per second. */
  ratePerSec: number;
  auth: boolean;
}

export interface WelcomeMsg {
  type: 'welcome';
  protocol: number;
  info: GatewayInfo;
}

export interface OpenedMsg {
  type: 'opened';
  session: number;
  /** The target's token after the prompt (or, on resume, the last resumed token). */
  firstToken: number;
  /** Tokens of the transcript the target now holds or has pending (prompt + generated). */
  length: number;
  prefillMs: number;
}

export interface VerdictMsg {
  type: 'verdict';
  session: number;
  seq: number;
  accepted: number;
  token: number;
  /** Target forward time of the batch that served this block, ms. */
  verifyMs: number;
  /** Time the block waited in the batcher's queue, ms. */
  queueMs: number;
  /** Sessions in the batch that served this block. */
  batch: number;
}

export interface TokensMsg {
  type: 'tokens';
  session: number;
  tokens: number[];
  done: boolean;
}

export interface ClosedMsg {
  type: 'closed';
  session: number;
}

export interface PongMsg {
  type: 'pong';
  t: number;
}

export interface ErrorMsg {
  type: 'error';
  code: ErrorCode;
  message: string;
  /** The gateway closes the connection after a fatal error. */
  fatal: boolean;
  session?: number;
  seq?: number;
}

export type ServerMessage = WelcomeMsg | OpenedMsg | VerdictMsg | TokensMsg | ClosedMsg | PongMsg | ErrorMsg;
