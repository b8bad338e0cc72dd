// The contract between the UI thread and the engine worker (src/engine/worker.ts, exposed
// through comlink): requests, streamed events and the typed errors the UI shows. Plain data
// only — everything here crosses postMessage by structured clone.

/** Where a generated token came from. */
export type Provenance =
  | 'draft' // a draft token the target accepted
  | 'correction' // the target's token after a rejection
  | 'bonus' // the target's extra token after a fully accepted block
  | 'target'; // a token from the target alone (first token, baseline)

export type DraftSource =
  | { kind: 'bundled' }
  | { kind: 'url'; base: string }
  | { kind: 'folder'; files: File[] };

export type Quant = 'none' | 'q8' | 'q4';
export type Backend = 'webgpu' | 'cpu';

export interface LoadOptions {
  source: DraftSource;
  quant: Quant;
  /** Force the CPU reference even where WebGPU works. */
  forceCpu?: boolean;
}

export interface LoadProgress {
  phase: 'download' | 'quantize' | 'upload' | 'cache';
  /** 0..1, or null when the total is unknown. */
  fraction: number | null;
  detail: string;
}

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
  /** ws:// or wss:// URL of the gateway; '' = the page's own origin. */
  url: string;
  token: string;
}

export interface GatewayInfo {
  url: string;
  backend: string;
  model: string;
  device: string;
  tokenizerHash: string;
  vocabSize: number;
  maxContext: number;
}

export interface RunSettings {
  temperature: number;
  topP: number;
  topK: number;
  seed: number;
  maxTokens: number;
  /** Fixed draft length; ignored when adaptive. */
  k: number;
  adaptive: boolean;
  /** Injected latency on the draft↔gateway link, round trip, ms. */
  rttMs: number;
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export interface RunRequest {
  runId: string;
  mode: 'speculative' | 'baseline';
  /** Chat turns; the chat template is applied when the model has one, else the contents are joined. */
  messages: ChatMessage[];
  /** Raw prompt text (no template): used instead of messages when set. */
  prompt?: string;
  settings: RunSettings;
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

export type UiErrorCode =
  | 'no-webgpu'
  | 'device-lost'
  | 'gateway-unreachable'
  | 'auth-refused'
  | 'tokenizer-mismatch'
  | 'load-failed'
  | 'not-ready'
  | 'internal';

export interface UiError {
  code: UiErrorCode;
  message: string;
  /** What the user can do about it. */
  hint: string;
}

export type RunEvent =
  | { kind: 'tokens'; runId: string; pieces: TokenPiece[]; stats: RunStats }
  | { kind: 'round'; runId: string; round: RoundTiming }
  | { kind: 'status'; runId: string; text: string }
  | { kind: 'done'; runId: string; reason: 'eos' | 'max-tokens' | 'stopped'; stats: RunStats }
  | { kind: 'error'; runId: string; error: UiError };

export type WorkerNotice =
  | { kind: 'draft-lost'; error: UiError }
  | { kind: 'gateway'; state: 'connected' | 'reconnecting' | 'disconnected'; detail: string };

export interface CacheEntry {
  key: string;
  name: string;
  /** What is stored, e.g. "f32" (the decoded source weights). */
  format: string;
  byteLength: number;
  savedAt: number;
}

/** Result of the engine check page: WebGPU engine logits vs the CPU reference. */
export interface EngineCheckResult {
  adapter: string;
  positions: number;
  vocabSize: number;
  /** Logits of the WebGPU engine in the worker, (positions, vocab) row-major. */
  logits: Float32Array;
}

export interface EngineCheckSpec {
  /** syntheticConfig('tiny') overrides: a small random-weight model. */
  config: Record<string, number>;
  seed: number;
  tokens: number[];
}

/** What the worker exposes through comlink. Callbacks must be wrapped in Comlink.proxy. */
export interface DuetWorkerApi {
  /** Loads the draft model (and its tokenizer); replaces any loaded draft. */
  loadDraft(opts: LoadOptions, onProgress: (p: LoadProgress) => void): Promise<DraftInfo>;
  /** Connects to the gateway and checks that its tokenizer matches the draft's. */
  connect(opts: GatewayOptions, onNotice: (n: WorkerNotice) => void): Promise<GatewayInfo>;
  /** Runs one generation; resolves when it ends (events carry the outcome). */
  run(req: RunRequest, onEvent: (e: RunEvent) => void): Promise<void>;
  stop(runId: string): Promise<void>;
  listCache(): Promise<CacheEntry[]>;
  deleteCache(key: string): Promise<void>;
  /** Test page: the WebGPU engine's logits on a random-weight model. */
  engineCheck(spec: EngineCheckSpec): Promise<EngineCheckResult>;
  /** Tests only: destroy the draft's GPU device as a driver reset would; false if none. */
  simulateDeviceLoss(): Promise<boolean>;
}

/** What the page's test API (window.__duet, in ?test mode) reports; Playwright waits on it. */
export interface DuetTestSnapshot {
  view: string;
  draft: { status: string; backend: Backend | null; fromCache: boolean | null; loadMs: number | null; fallbackReason: string | null };
  gateway: { status: string; model: string | null; detail: string };
  chat: { messages: number; running: boolean; lastText: string; lastStats: RunStats | null; lastError: UiError | null; lastDone: string | null; provenance: Record<Provenance, number> };
  compare: Record<'spec' | 'base', { running: boolean; text: string; tokens: number[]; stats: RunStats | null; rounds: number; error: UiError | null; doneReason: string | null } | null>;
  errors: UiError[];
  notices: { level: string; title: string }[];
}

export interface DuetTestApi {
  snapshot(): DuetTestSnapshot;
  /** Destroy the draft's GPU device (as a driver reset would); false when the draft is not on a GPU. */
  loseDevice(): Promise<boolean>;
}

/** The engine check page's result (window.__duetEngineCheck). */
export interface EngineCheckReport {
  done: boolean;
  error: string | null;
  adapter: string;
  positions: number;
  vocabSize: number;
  nmse: number;
  maxAbsErr: number;
  argmaxAgree: number;
  nonFinite: number;
}
