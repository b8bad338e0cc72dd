// The verify queue and batcher. Verify requests from many sessions wait here and reach the
// verifier as ONE verifyBatch call: a batch flushes when maxBatch requests are waiting, or
// windowMs after the first one arrived if the verifier is idle; while the verifier is busy,
// requests accumulate and go out together as soon as it is free (dynamic batching).
// Prefills and baseline steps are serialized through the same queue, one job between
// batches, so a long prompt or a baseline stream cannot starve the verify traffic, and the
// event loop gets a turn between jobs (the cpu backend computes synchronously).

import { isPartialBatchFailure, type Verifier, type VerifyRequest, type VerifyResult } from './verifiers/types.ts';

export interface BatchedResult extends VerifyResult {
  /** Time the request waited before its batch started, ms. */
  queueMs: number;
  /** Wall time of the verifyBatch call that served it, ms. */
  batchMs: number;
  /** Requests in that batch. */
  batch: number;
}

interface PendingVerify {
  req: VerifyRequest;
  at: number;
  resolve: (r: BatchedResult) => void;
  reject: (e: unknown) => void;
}

interface PendingJob {
  run: () => Promise<unknown>;
  resolve: (r: unknown) => void;
  reject: (e: unknown) => void;
}

export interface BatcherStats {
  batches: number;
  batchedRequests: number;
  jobs: number;
  maxBatchSeen: number;
}

const now = (): number => performance.now();
const yieldToEventLoop = (): Promise<void> => new Promise((r) => setImmediate(r));

export class Batcher {
  private verifies: PendingVerify[] = [];
  private jobs: PendingJob[] = [];
  private running = false;
  private timer: ReturnType<typeof setTimeout> | null = null;
  readonly stats: BatcherStats = { batches: 0, batchedRequests: 0, jobs: 0, maxBatchSeen: 0 };

  constructor(
    private readonly verifier: Verifier,
    private readonly maxBatch: number,
    private readonly windowMs: number,
    /** Called before a batch goes out: requests of sessions that are gone are dropped. */
    private readonly isLive: (sessionId: string) => boolean = () => true,
  ) {}

  verify(req: VerifyRequest): Promise<BatchedResult> {
    return new Promise((resolve, reject) => {
      this.verifies.push({ req, at: now(), resolve, reject });
      this.kick();
    });
  }

  /** Serialize a job (prefill, baseline step) with the verify traffic. */
  job<T>(run: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.jobs.push({ run, resolve: resolve as (r: unknown) => void, reject });
      this.kick();
    });
  }

  /** A batch or job is running (or about to: the pump has not yet gone idle). */
  get busy(): boolean {
    return this.running;
  }

  get queued(): number {
    return this.verifies.length + this.jobs.length;
  }

  /** Fail everything still queued (gateway shutting down). */
  drain(err: Error): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    for (const p of this.verifies.splice(0)) p.reject(err);
    for (const j of this.jobs.splice(0)) j.reject(err);
  }

  private kick(): void {
    if (this.running) return;
    const full = this.verifies.length >= this.maxBatch;
    if (full || this.jobs.length > 0 || this.windowMs <= 0) {
      if (this.timer) clearTimeout(this.timer);
      this.timer = null;
      void this.pump();
    } else if (!this.timer && this.verifies.length > 0) {
      this.timer = setTimeout(() => {
        this.timer = null;
        void this.pump();
      }, this.windowMs);
    }
  }

  private async pump(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (this.verifies.length > 0 || this.jobs.length > 0) {
        if (this.verifies.length > 0) await this.runBatch(this.verifies.splice(0, this.maxBatch));
        const job = this.jobs.shift();
        if (job) {
          this.stats.jobs++;
          try {
            job.resolve(await job.run());
          } catch (e) {
            job.reject(e);
          }
        }
        await yieldToEventLoop();
      }
    } finally {
      this.running = false;
    }
  }

  private async runBatch(batch: PendingVerify[]): Promise<void> {
    const live = batch.filter((p) => {
      if (this.isLive(p.req.sessionId)) return true;
      p.reject(new Error(`session ${p.req.sessionId} closed while its verify was queued`));
      return false;
    });
    if (live.length === 0) return;
    const t0 = now();
    this.stats.batches++;
    this.stats.batchedRequests += live.length;
    this.stats.maxBatchSeen = Math.max(this.stats.maxBatchSeen, live.length);
    let results: VerifyResult[];
    let failures = new Map<string, Error>();
    try {
      results = await this.verifier.verifyBatch(live.map((p) => p.req));
    } catch (e) {
      if (!isPartialBatchFailure(e)) {
        for (const p of live) p.reject(e);
        return;
      }
      // some sessions failed: the others' results stand (their backend state has advanced)
      results = e.results;
      failures = e.failures;
    }
    const batchMs = now() - t0;
    const byId = new Map(results.map((r) => [r.sessionId, r]));
    for (const p of live) {
      const r = byId.get(p.req.sessionId);
      if (r) p.resolve({ ...r, queueMs: t0 - p.at, batchMs, batch: live.length });
      else p.reject(failures.get(p.req.sessionId) ?? new Error(`verifier returned no result for session ${p.req.sessionId}`));
    }
  }
}
