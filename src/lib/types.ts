// The library's public types (`import type { … } from 'duet'`): the OpenAI-shaped chat
// completion request, response and stream chunk, the one extra field `duet` that carries the
// speculative detail, and the plain data the engine reports (draft, gateway, cache, errors).
// Plain data only: everything here also crosses the worker boundary by structured clone.

import type { Provenance } from '../engine/speculative.ts';
import type { GatewayInfo as ServedGatewayInfo } from '../protocol/messages.ts';

export type { LoadProgress } from '../engine/progress.ts';
/** Where a generated token came from: 'draft', 'correction', 'bonus' or 'target' (the speculative controller's own type). */
export type { Provenance };

/**
 * A draft model: the URL of a model folder (HF format: config.json, tokenizer.json,
 * *.safetensors, or a .gguf; relative URLs resolve against the page) or the files of a
 * folder the user picked (`<input type=file webkitdirectory>`).
 */
export type DraftSource = string | URL | File[] | FileList;

/** 'auto': a GGUF file's own precision (4-bit → q4, 8-bit → q8), f32 otherwise. */
export type Quant = 'none' | 'auto' | 'q8' | 'q4';
export type Backend = 'webgpu' | 'cpu';

export interface DraftInfo {
  name: string;
  backend: Backend;
  /** Weight format on the device (f32 / q8 / q4 on WebGPU; f32 on the CPU). */
  format: string;
  /** GPU buffer bytes of the engine (0 on the CPU). */
  gpuBytes: number;
  /** Something the user should know about the cache (quota, eviction), or null. */
  cacheNotice: string | null;
  /** Why WebGPU is not used, when backend is 'cpu'. */
  fallbackReason: string | null;
  adapter: string | null;
  fromCache: boolean;
  loadMs: number;
  params: number;
  vocabSize: number;
  tokenizerHash: string;
  hasChatTemplate: boolean;
}

export interface GatewayOptions {
  /** ws(s):// or http(s):// URL of the gateway (`duet serve`); '' = the page's own origin. */
  url: string;
  /** The gateway's --token, if it was started with one. */
  token?: string;
}

/** The gateway the engine connected to: the URL it used and what the gateway says it serves (the protocol's GatewayInfo). */
export type GatewayInfo = { url: string } & Pick<ServedGatewayInfo, 'backend' | 'model' | 'device' | 'tokenizerHash' | 'vocabSize' | 'maxContext'>;

/** A run's sampling and speculation settings: the worker's form of a request, and the app's settings form. */
export interface RunSettings {
  temperature: number;
  topP: number;
  topK: number;
  seed: number;
  maxTokens: number;
  /** Fixed draft length; the adaptive controller's upper bound when adaptive. */
  k: number;
  adaptive: boolean;
  /** Injected latency on the draft↔gateway link, round trip, ms. */
  rttMs: number;
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export interface TokenPiece {
  /** Token id; -1 for trailing text that completes no token (held-back bytes at the end). */
  id: number;
  text: string;
  prov: Provenance;
}

export interface RoundTiming {
  /** Draft tokens proposed this round. */
  k: number;
  accepted: number;
  draftMs: number;
  /** Round time not spent drafting or verifying: transport + queueing + injected RTT. */
  networkMs: number;
  verifyMs: number;
  /** Start of the round relative to the run start, ms. */
  startMs: number;
}

export interface RunStats {
  /** Prompt length in tokens (after the chat template). */
  promptTokens: number;
  tokens: number;
  ttftMs: number | null;
  wallMs: number;
  tokPerSec: number;
  targetPasses: number;
  tokensPerTargetPass: number;
  /** Accepted draft tokens / proposed draft tokens; null in baseline mode. */
  acceptanceRate: number | null;
  rounds: number;
}

export type DuetErrorCode =
  | 'no-webgpu'
  | 'device-lost'
  | 'gateway-unreachable'
  | 'auth-refused'
  | 'tokenizer-mismatch'
  | 'load-failed'
  | 'not-ready'
  | 'invalid-request'
  | 'internal';

/** An error as plain data: what went wrong and what the user can do about it. */
export interface DuetErrorInfo {
  code: DuetErrorCode;
  message: string;
  /** What the user can do about it. */
  hint: string;
}

/** Things the engine reports outside a request: the GPU went away, the gateway link changed, the worker died. */
export type DuetNotice =
  | { kind: 'draft-lost'; error: DuetErrorInfo }
  | { kind: 'gateway'; state: 'connected' | 'reconnecting' | 'disconnected'; detail: string }
  | { kind: 'worker-failed'; error: DuetErrorInfo };

export interface CacheEntry {
  key: string;
  name: string;
  /** What is stored, e.g. "f32" (the decoded source weights). */
  format: string;
  byteLength: number;
  savedAt: number;
}

// ---- chat completions (OpenAI's shapes; duet's additions live under `duet`) ----

/** duet's own request options, beside OpenAI's. */
export interface DuetRequestOptions {
  /** 'speculative' (default): draft here, verify on the gateway; 'baseline': the target alone. */
  mode?: 'speculative' | 'baseline';
  /** Draft tokens per round (fixed), or the most the adaptive controller may use. Default 4. */
  k?: number;
  /** Choose k per round from the acceptance seen so far (default true). */
  adaptive?: boolean;
  /** Injected latency on the draft↔gateway link, round trip, ms (for experiments). Default 0. */
  rttMs?: number;
  /** Raw prompt text used instead of `messages` (no chat template applied). */
  prompt?: string;
}

export interface ChatCompletionRequest {
  messages: ChatMessage[];
  stream?: boolean;
  /** Default 1 (OpenAI's); 0 = greedy, token for token the target's own greedy text. */
  temperature?: number;
  /** Default 1. */
  top_p?: number;
  /** vLLM's and llama.cpp's extension; 0 (default) = off. */
  top_k?: number;
  /** Default 256. */
  max_tokens?: number;
  /** Seed of the sampler on both sides (default 0). */
  seed?: number;
  duet?: DuetRequestOptions;
}

export interface CreateOptions {
  /** Aborting ends the request with finish_reason 'abort' (the text so far is kept). */
  signal?: AbortSignal;
}

/** 'abort' (WebLLM's name) when the request was interrupted. */
export type FinishReason = 'stop' | 'length' | 'abort';

export interface CompletionUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/**
 * The one extra field of every response and chunk. In a chunk, `tokens` and `rounds` are
 * those since the previous chunk and `stats` is the running total; in a completion, all of
 * them for the whole reply.
 */
export interface DuetExtra {
  /** The reply's tokens with their provenance (their texts join to the content). */
  tokens: TokenPiece[];
  /** Per verify round: drafted k, accepted, and where the time went. */
  rounds: RoundTiming[];
  stats: RunStats;
  /** A transient condition worth showing (e.g. "reconnecting to the gateway…"), else absent. */
  status?: string;
}

export interface ChatCompletion {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  choices: { index: number; message: { role: 'assistant'; content: string }; finish_reason: FinishReason; logprobs: null }[];
  usage: CompletionUsage;
  duet: DuetExtra;
}

export interface ChatCompletionChunk {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  choices: { index: number; delta: { role?: 'assistant'; content?: string }; finish_reason: FinishReason | null; logprobs: null }[];
  /** On the last chunk (the one with a finish_reason). */
  usage?: CompletionUsage;
  duet: DuetExtra;
}
