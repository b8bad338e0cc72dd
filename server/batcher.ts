// The verify queue and batcher. Verify requests from many sessions wait here and reach the
// verifier as ONE verifyBatch call: a batch flushes when maxBatch requests are waiting, or
// windowMs after the first one arrived if the verifier is idle; while the verifier is busy,
// requests accumulate and go out together as soon as it is free (dynamic batching).
// Baseline decode steps are verify requests with an empty draft (k = 0: one position, the
// next token sampled exactly as generate samples it), so every session's baseline step and
// the waiting speculative verifies share one pass (continuous batching); a baseline step
// never waits for the window when the verifier is idle, so a lone stream is not slowed.
// Opens: on a verifier with a shared pass (Verifier.pass: the cpu backend), queued prefills ride
// in the same pass as the verify batch, as rows beside the verify blocks, at most
// prefillTokens prompt tokens per pass (a longer prompt goes in chunks over several passes, so
// a big prefill cannot hold the verifier): an open waits for about one pass, not for its turn
// behind every other open. Elsewhere a prefill is a job: between batches, waiting jobs run for
// as long as the batch took (at least one), so opens and verify traffic share the verifier
// about evenly and neither starves. An open or job whose session is gone by its turn is dropped
// unrun (a part-prefilled one is closed on the verifier), and the event loop gets a turn
// between passes and jobs (the cpu backend computes synchronously).

import { isPartialBatchFailure, prefillLength, type OpenRequest, type PassResult, type PrefillChunk, type Verifier, type VerifyRequest, type VerifyResult } from './verifiers/types.ts';

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
  /** A baseline decode step (k = 0), counted apart in the stats. */
  baseline: boolean;
  at: number;
  resolve: (r: BatchedResult) => void;
  reject: (e: unknown) => void;
}

interface PendingOpen {
  req: OpenRequest;
  isLive: () => boolean;
  /** Prefill tokens not yet run. */
  left: number;
  /** Some of its prefill has run: the verifier holds a part-built session. */
  started: boolean;
  resolve: (r: { firstToken: number }) => void;
  reject: (e: unknown) => void;
}

interface PendingJob {
  run: () => Promise<unknown>;
  isLive: () => boolean;
  resolve: (r: unknown) => void;
  reject: (e: unknown) => void;
}

export interface BatcherStats {
  batches: number;
  batchedRequests: number;
  jobs: number;
  /** Jobs and opens dropped unrun because their session was gone by their turn (an abandoned open). */
  jobsDropped: number;
  /** Opens served in the shared pass, and the prefill chunks they took. */
  passOpens: number;
  prefillChunks: number;
  maxBatchSeen: number;
  /** Batches with at least one baseline step, and the baseline steps in them. */
  baselineBatches: number;
  baselineRequests: number;
}

/** A queued job whose session went away before its turn; it never ran. */
export class JobAbandonedError extends Error {
  override name = 'JobAbandonedError';
}

const now = (): number => performance.now();
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));
/**
 * Event-loop turns given to I/O between passes. libuv accepts at most one connection per loop
 * iteration (libuv PR #3696, "don't accept() connections in a loop"), so with one synchronous
 * pass (the cpu backend) per iteration a gateway under load accepted about one connection per
 * pass: with 64 sessions churning, 50 connections sat in the listen queue and an upgrade took
 * ~1 s (tools/load/gateway-load.ts, connectMs). An idle turn costs microseconds.
 */
export const IO_TURNS_BETWEEN_PASSES = 16;

export class Batcher {
  private verifies: PendingVerify[] = [];
  private jobs: PendingJob[] = [];
  private opens: PendingOpen[] = [];
  private running = false;
  private timer: ReturnType<typeof setTimeout> | null = null;
  readonly stats: BatcherStats = { batches: 0, batchedRequests: 0, jobs: 0, jobsDropped: 0, passOpens: 0, prefillChunks: 0, maxBatchSeen: 0, baselineBatches: 0, baselineRequests: 0 };
  /** Baseline steps waiting: they start a pass at once when the verifier is idle. */
  private baselineWaiting = 0;
  /** Told after every verifyBatch call (the gateway's metrics: batch size, batch wall time). */
  onBatch?: (size: number, ms: number) => void;

  constructor(
    private readonly verifier: Verifier,
    private readonly maxBatch: number,
    private readonly windowMs: number,
    /** Called before a batch goes out: requests of sessions that are gone are dropped. */
    private readonly isLive: (sessionId: string) => boolean = () => true,
    /** Most prompt tokens of queued opens one shared pass takes (the rest wait for the next). */
    private readonly prefillTokens = 256,
  ) {
    if (!(prefillTokens >= 1)) throw new RangeError(`prefillTokens ${prefillTokens}: expected at least 1`);
  }

  verify(req: VerifyRequest): Promise<BatchedResult> {
    return this.enqueue(req, false);
  }

  /** One baseline decode step of a session: a k = 0 verify; resolves with the sampled token. */
  step(sessionId: string): Promise<BatchedResult> {
    return this.enqueue({ sessionId, draft: [] }, true);
  }

  private enqueue(req: VerifyRequest, baseline: boolean): Promise<BatchedResult> {
    return new Promise((resolve, reject) => {
      this.verifies.push({ req, baseline, at: now(), resolve, reject });
      if (baseline) this.baselineWaiting++;
      this.kick();
    });
  }

  /**
   * Serialize a job (a prefill) with the verify traffic. isLive is asked when its turn comes:
   * false (the client closed or left meanwhile) drops it unrun with JobAbandonedError.
   */
  job<T>(run: () => Promise<T>, isLive: () => boolean = () => true): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.jobs.push({ run, isLive, resolve: resolve as (r: unknown) => void, reject });
      this.kick();
    });
  }

  /**
   * Open a session on the verifier. With a shared pass its prefill joins the verify batches
   * (see the header); otherwise `run` (default: verifier.open) runs as a job. isLive as for job().
   */
  open(req: OpenRequest, isLive: () => boolean = () => true, run: () => Promise<{ firstToken: number }> = () => this.verifier.open(req.sessionId, req.prompt, req.sampling, req.resume)): Promise<{ firstToken: number }> {
    if (!this.verifier.pass) return this.job(run, isLive);
    return new Promise((resolve, reject) => {
      this.opens.push({ req, isLive, left: prefillLength(req), started: false, resolve, reject });
      this.kick();
    });
  }

  /** A batch or job is running (or about to: the pump has not yet gone idle). */
  get busy(): boolean {
    return this.running;
  }

  get queued(): number {
    return this.verifies.length + this.jobs.length + this.opens.length;
  }

  /** Fail everything still queued (gateway shutting down). */
  drain(err: Error): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    for (const p of this.verifies.splice(0)) p.reject(err);
    this.baselineWaiting = 0;
    for (const j of this.jobs.splice(0)) j.reject(err);
    // a part-prefilled session stays on the verifier until its dispose()
    for (const o of this.opens.splice(0)) o.reject(err);
  }

  private kick(): void {
    if (this.running) return;
    const full = this.verifies.length >= this.maxBatch;
    if (full || this.jobs.length > 0 || this.opens.length > 0 || this.baselineWaiting > 0 || this.windowMs <= 0) {
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
      while (this.hasWork()) {
        let batchMs = 0;
        const prefills = this.takePrefills();
        if (this.verifies.length > 0 || prefills.length > 0) {
          const t0 = now();
          await this.runBatch(this.verifies.splice(0, this.maxBatch), prefills);
          batchMs = now() - t0;
        }
        // Fair shares: after a batch, queued jobs (opens) get as much verifier time as the batch
        // took (at least one job), so with both queues full each side gets about half: an open
        // waits for O(one batch), not for one batch per open ahead of it.
        const t1 = now();
        do {
          const job = this.jobs.shift();
          if (!job) break;
          if (!job.isLive()) {
            this.stats.jobsDropped++;
            job.reject(new JobAbandonedError('the session went away before its turn; its job was not run'));
            continue;
          }
          this.stats.jobs++;
          try {
            job.resolve(await job.run());
          } catch (e) {
            job.reject(e);
          }
        } while (now() - t1 < batchMs);
        await this.ioTurns();
      }
    } finally {
      this.running = false;
    }
  }

  private hasWork(): boolean {
    return this.verifies.length > 0 || this.jobs.length > 0 || this.opens.length > 0;
  }

  /**
   * Up to IO_TURNS_BETWEEN_PASSES event-loop turns, while work is queued. Once the queues are
   * empty it returns at once, so the run ends and the next request waits for its batch window
   * as on an idle verifier.
   */
  private async ioTurns(): Promise<void> {
    for (let i = 0; i < IO_TURNS_BETWEEN_PASSES; i++) {
      await turn();
      if (!this.hasWork()) return;
    }
  }

  /**
   * The prefill chunks of the next pass: the first queued opens (at most maxBatch, and at most
   * one per token of the budget) share prefillTokens prompt tokens max-min fairly: each gets an
   * equal share or what it has left, whichever is less, and what the short ones leave goes to
   * the others in arrival order. So a short open queued behind a long prompt finishes in its
   * first pass instead of waiting out the long one. Opens whose session went away are dropped.
   */
  private takePrefills(): { p: PendingOpen; chunk: PrefillChunk }[] {
    const live: PendingOpen[] = [];
    const cap = Math.min(this.maxBatch, this.prefillTokens);
    for (let i = 0; i < this.opens.length && live.length < cap;) {
      const p = this.opens[i];
      if (p.isLive()) {
        live.push(p);
        i++;
      } else {
        this.opens.splice(i, 1);
        void this.abandon(p);
      }
    }
    if (live.length === 0) return [];
    const share = Math.floor(this.prefillTokens / live.length);
    const tokens = live.map((p) => Math.min(p.left, share));
    let rest = this.prefillTokens - tokens.reduce((a, n) => a + n, 0);
    for (let i = 0; i < live.length && rest > 0; i++) {
      const more = Math.min(live[i].left - tokens[i], rest);
      tokens[i] += more;
      rest -= more;
    }
    return live.map((p, i) => ({ p, chunk: { open: p.req, tokens: tokens[i] } }));
  }

  /** Reject an abandoned open; one part-prefilled is closed on the verifier first (a close error rides as the cause). */
  private async abandon(p: PendingOpen): Promise<void> {
    this.stats.jobsDropped++;
    const err = new JobAbandonedError('the session went away before its prefill finished; it was not opened');
    if (p.started) {
      try {
        await this.verifier.close(p.req.sessionId);
      } catch (e) {
        err.cause = e;
      }
    }
    p.reject(err);
  }

  private async runBatch(batch: PendingVerify[], prefills: { p: PendingOpen; chunk: PrefillChunk }[] = []): Promise<void> {
    for (const p of batch) if (p.baseline) this.baselineWaiting--;
    const live = batch.filter((p) => {
      if (this.isLive(p.req.sessionId)) return true;
      p.reject(new Error(`session ${p.req.sessionId} closed while its verify was queued`));
      return false;
    });
    if (live.length === 0 && prefills.length === 0) return;
    const t0 = now();
    if (live.length > 0) {
      this.stats.batches++;
      this.stats.batchedRequests += live.length;
      this.stats.maxBatchSeen = Math.max(this.stats.maxBatchSeen, live.length);
    }
    const baseline = live.filter((p) => p.baseline).length;
    if (baseline > 0) {
      this.stats.baselineBatches++;
      this.stats.baselineRequests += baseline;
    }
    let results: VerifyResult[];
    let failures = new Map<string, Error>();
    try {
      if (prefills.length > 0) {
        this.stats.prefillChunks += prefills.length;
        const r = await (this.verifier.pass as NonNullable<Verifier['pass']>).call(this.verifier, prefills.map((x) => x.chunk), live.map((p) => p.req));
        this.settlePrefills(prefills, r);
        results = r.verifies;
        failures = r.failures;
      } else {
        results = await this.verifier.verifyBatch(live.map((p) => p.req));
      }
    } catch (e) {
      if (!isPartialBatchFailure(e)) {
        for (const p of live) p.reject(e);
        for (const x of prefills) this.failOpen(x.p, e);
        return;
      }
      // some sessions failed: the others' results stand (their backend state has advanced)
      results = e.results;
      failures = e.failures;
    }
    const batchMs = now() - t0;
    if (live.length > 0) this.onBatch?.(live.length, batchMs);
    const byId = new Map(results.map((r) => [r.sessionId, r]));
    for (const p of live) {
      const r = byId.get(p.req.sessionId);
      if (r) p.resolve({ ...r, queueMs: t0 - p.at, batchMs, batch: live.length });
      else p.reject(failures.get(p.req.sessionId) ?? new Error(`verifier returned no result for session ${p.req.sessionId}`));
    }
  }

  /** After a pass: finished opens resolve, failed ones reject, the rest wait for their next chunk. */
  private settlePrefills(prefills: { p: PendingOpen; chunk: PrefillChunk }[], r: PassResult): void {
    const opened = new Map(r.opened.map((o) => [o.sessionId, o.firstToken]));
    for (const { p, chunk } of prefills) {
      const id = p.req.sessionId;
      const failed = r.failures.get(id);
      const first = opened.get(id);
      if (failed) this.failOpen(p, failed);
      else if (first !== undefined) {
        this.dequeue(p);
        this.stats.passOpens++;
        p.resolve({ firstToken: first });
      } else {
        p.left -= chunk.tokens;
        p.started = true;
        if (p.left <= 0) this.failOpen(p, new Error(`verifier ran all ${prefillLength(p.req)} prefill tokens of session ${id} but did not open it`));
      }
    }
  }

  private failOpen(p: PendingOpen, e: unknown): void {
    this.dequeue(p);
    // the verifier holds nothing for an open that failed in its pass (Verifier.pass)
    p.reject(e);
  }

  private dequeue(p: PendingOpen): void {
    const i = this.opens.indexOf(p);
    if (i >= 0) this.opens.splice(i, 1);
  }
}
