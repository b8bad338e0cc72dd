// The contract between the library's main-thread side (src/lib/engine.ts) and its worker
// (src/lib/worker/entry.ts, exposed through comlink): requests, streamed run events, notices.
// The library is the only caller; apps use DuetEngine. Plain data only (structured clone).

import type {
  CacheEntry, ChatMessage, DraftInfo, DuetErrorInfo, DuetNotice, GatewayInfo, GatewayOptions, LoadProgress, Quant, RoundTiming, RunSettings, RunStats, TokenPiece,
} from '../types.ts';

/** A draft source after the main thread resolved it (URLs are absolute). */
export type WireDraftSource = { kind: 'url'; base: string } | { kind: 'folder'; files: File[] };

export interface LoadRequest {
  source: WireDraftSource;
  quant: Quant;
  /** Force the CPU reference even where WebGPU works. */
  forceCpu?: boolean;
}

export type { RunSettings };

export type RunMode = 'speculative' | 'baseline';

export interface RunRequest {
  runId: string;
  mode: RunMode;
  /** Chat turns; the chat template is applied when the model has one, else the contents are joined. */
  messages: ChatMessage[];
  /** Raw prompt text (no template): used instead of messages when set. */
  prompt?: string;
  settings: RunSettings;
}

export type StopReason = 'eos' | 'max-tokens' | 'stopped';

export type RunEvent =
  | { kind: 'tokens'; runId: string; pieces: TokenPiece[]; stats: RunStats }
  | { kind: 'round'; runId: string; round: RoundTiming }
  | { kind: 'status'; runId: string; text: string }
  | { kind: 'done'; runId: string; reason: StopReason; stats: RunStats }
  | { kind: 'error'; runId: string; error: DuetErrorInfo };

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

/**
 * What the worker exposes through comlink. Callbacks must be wrapped in Comlink.proxy.
 * Methods reject with an Error whose message is a JSON DuetErrorInfo (see errors.ts).
 */
export interface DuetWorkerApi {
  /** Loads the draft model (and its tokenizer); replaces any loaded draft. */
  loadDraft(req: LoadRequest, onProgress: (p: LoadProgress) => void, onNotice: (n: DuetNotice) => void): Promise<DraftInfo>;
  /** Connects to the gateway and checks that its tokenizer matches the draft's. */
  connect(opts: GatewayOptions, onNotice: (n: DuetNotice) => void): Promise<GatewayInfo>;
  /** Runs one generation; resolves when it ends (events carry the outcome, errors included). */
  run(req: RunRequest, onEvent: (e: RunEvent) => void): Promise<void>;
  stop(runId: string): Promise<void>;
  listCache(): Promise<CacheEntry[]>;
  deleteCache(key: string): Promise<void>;
  /** Test page: the WebGPU engine's logits on a random-weight model. */
  engineCheck(spec: EngineCheckSpec): Promise<EngineCheckResult>;
  /** Tests only: destroy the draft's GPU device as a driver reset would; false if none. */
  simulateDeviceLoss(): Promise<boolean>;
}
