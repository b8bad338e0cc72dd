// Time for the speculative controller, injectable: the real clock (performance.now, timers),
// or a virtual one in which injected costs (a slowed draft, a target pass of a given length,
// an RTT) advance time deterministically — so tests can assert tokens per second of a cost
// model without timing real speed on a loaded machine.

export interface Clock {
  /** Milliseconds since an arbitrary origin. */
  now(): number;
  /** Resolve after ms; sleep(0) yields one macrotask (lets I/O and timers run). */
  sleep(ms: number): Promise<void>;
}

export const realClock: Clock = {
  now: () => globalThis.performance.now(),
  sleep: (ms) => {
    if (ms > 0) return new Promise((r) => setTimeout(r, ms));
    const si = (globalThis as { setImmediate?: (f: () => void) => unknown }).setImmediate;
    return new Promise((r) => (si ? si(r) : setTimeout(r, 0)));
  },
};

export class VirtualClockDeadlock extends Error {
  override name = 'VirtualClockDeadlock';
}

/**
 * Discrete-event time: sleep(ms) schedules a wake-up at now + ms; run(task) lets the task run
 * until every strand of it waits on this clock (the microtask queue is empty, seen from a
 * macrotask), then jumps to the earliest wake-up, one at a time, FIFO among equal times.
 * Code run under it must wait only on this clock and on promises (no real timers or I/O);
 * otherwise run() throws VirtualClockDeadlock instead of hanging.
 */
export class VirtualClock implements Clock {
  private t = 0;
  private seq = 0;
  private readonly timers: { at: number; seq: number; wake: () => void }[] = [];

  now(): number {
    return this.t;
  }

  sleep(ms: number): Promise<void> {
    if (!(ms >= 0)) throw new RangeError(`sleep(${ms}): expected ms >= 0`);
    return new Promise((wake) => {
      const at = this.t + ms;
      const s = this.seq++;
      let i = this.timers.length;
      while (i > 0 && (this.timers[i - 1].at > at || (this.timers[i - 1].at === at && this.timers[i - 1].seq > s))) i--;
      this.timers.splice(i, 0, { at, seq: s, wake });
    });
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    let done = false;
    const p = task();
    // marks the end either way; a rejection still reaches the caller through `return p`
    p.then(() => (done = true), () => (done = true));
    const macrotask = (): Promise<void> => new Promise((r) => setImmediate(r));
    for (;;) {
      await macrotask();
      if (done) return p;
      const next = this.timers.shift();
      if (!next) throw new VirtualClockDeadlock('virtual clock: the task waits on something other than this clock (real timers or I/O) and nothing is scheduled');
      this.t = next.at;
      next.wake();
    }
  }
}
