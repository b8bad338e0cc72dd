// Resource limits of the gateway that do not depend on the protocol: token buckets (frames
// and errors per connection, requests per session), the send-queue byte accounting with a
// gateway-wide memory budget, and per-address counters. Kept apart from gateway.ts so the
// rules can be read (and tested) in one place.

/**
 * The per-address and per-session rate limits switched off, for in-process benchmark gateways:
 * every bench session connects from 127.0.0.1, so a per-address flood limit (2000 frames/s by
 * default) would throttle the load generator itself, not a flooder. Memory and size limits stay.
 */
export const NO_RATE_LIMITS = { ratePerSec: 0, framesPerSec: 0, errorsPerSec: 0 } as const;

/** A token bucket: `rate` per second, a burst of `burst`; may go negative to measure overuse. */
export class TokenBucket {
  private level: number;
  private at: number;
  constructor(readonly rate: number, readonly burst: number, private readonly clock: () => number = () => performance.now()) {
    this.level = burst;
    this.at = clock();
  }

  /** Take one token. Returns the level after taking (< 0: over the limit by that much). */
  take(): number {
    if (this.rate <= 0) return Infinity;
    const t = this.clock();
    this.level = Math.min(this.burst, this.level + ((t - this.at) / 1000) * this.rate);
    this.at = t;
    this.level -= 1;
    return this.level;
  }

  /** Has it refilled to its burst (no debt, nothing to remember)? */
  full(): boolean {
    if (this.rate <= 0) return true;
    return this.level + ((this.clock() - this.at) / 1000) * this.rate >= this.burst;
  }

  /** Take one token only if there is one. */
  tryTake(): boolean {
    if (this.rate <= 0) return true;
    if (this.take() >= 0) return true;
    this.level += 1; // refused: give it back, the request did not happen
    return false;
  }
}

/**
 * Bytes a message costs while it waits in a connection's send queue beyond its payload: the
 * WebSocket frame header (2–10 bytes) plus the write request and buffer objects Node keeps per
 * queued chunk. Without this a flood of tiny replies looks small while it takes hundreds of
 * bytes each (the probe's 24 never-reading connections reached ~900 MB at "16 MB" each).
 */
export const QUEUED_MESSAGE_OVERHEAD = 320;

/**
 * The bytes every connection has queued for sending, against a per-connection cap and a
 * gateway-wide budget. add() before a send, and the send's completion callback release()s.
 */
export class SendBudget {
  total = 0;
  peak = 0;
  constructor(readonly budgetBytes: number, readonly perConnectionBytes: number) {}

  /** Would queuing `bytes` more on a connection holding `held` stay inside both limits? */
  fits(held: number, bytes: number): boolean {
    return held + bytes <= this.perConnectionBytes && this.total + bytes <= this.budgetBytes;
  }

  add(bytes: number): void {
    this.total += bytes;
    if (this.total > this.peak) this.peak = this.total;
  }

  release(bytes: number): void {
    this.total -= bytes;
  }
}

/** Counts per client address (connections, sessions) against a cap. */
export class AddressCounter {
  private readonly counts = new Map<string, number>();
  constructor(readonly cap: number) {}

  get(addr: string): number {
    return this.counts.get(addr) ?? 0;
  }

  /** Count one more for addr if under the cap; false (and nothing counted) otherwise. */
  tryAdd(addr: string): boolean {
    const n = this.get(addr);
    if (n >= this.cap) return false;
    this.counts.set(addr, n + 1);
    return true;
  }

  remove(addr: string): void {
    const n = this.get(addr) - 1;
    if (n > 0) this.counts.set(addr, n);
    else this.counts.delete(addr);
  }
}

/**
 * One token bucket per client address, shared by all its connections, so closing and
 * reopening connections does not reset a flooder's allowance. Full buckets of addresses with
 * no connection left are forgotten by sweep().
 */
export class AddressBuckets {
  private readonly buckets = new Map<string, TokenBucket>();
  constructor(readonly rate: number, readonly burst: number) {}

  get(addr: string): TokenBucket {
    let b = this.buckets.get(addr);
    if (!b) this.buckets.set(addr, (b = new TokenBucket(this.rate, this.burst)));
    return b;
  }

  /** Forget addresses without connections whose bucket has refilled (nothing to remember). */
  sweep(connected: (addr: string) => boolean): void {
    for (const [addr, b] of this.buckets) if (!connected(addr) && b.full()) this.buckets.delete(addr);
  }
}
