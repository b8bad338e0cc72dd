// Injected network latency (`--rtt-ms`, the app's RTT setting), the one mechanism: both the
// in-process DelayedLink (speculative.ts) and the WebSocket client (RemoteTarget) delay through
// a DelayLine, so a link over a socket and a link in-process see the same delays. A message
// sent waits half the RTT before it leaves; each message received is handed over half the RTT
// after it arrived, in arrival order (a stream's tokens stay pipelined: the RTT is paid once
// per exchange, not once per token).

import { type Clock, realClock } from './clock.ts';

export class DelayLine {
  private queue: Promise<void> = Promise.resolve();

  constructor(readonly rttMs: number, private readonly clock: Clock = realClock) {}

  get halfMs(): number {
    return this.rttMs / 2;
  }

  /** Before sending: wait half the RTT (nothing when there is no injected latency). */
  async send(): Promise<void> {
    if (this.halfMs > 0) await this.clock.sleep(this.halfMs);
  }

  /** On receiving: run `deliver` half the RTT from now, after everything received before it (at once, synchronously, when there is no injected latency). */
  receive(deliver: () => void): void {
    const half = this.halfMs;
    if (half <= 0) return deliver();
    const due = this.clock.now() + half;
    this.queue = this.queue.then(async () => {
      const wait = due - this.clock.now();
      if (wait > 0) await this.clock.sleep(wait);
      deliver();
    });
  }

  /** Resolves half the RTT after now, once everything received before was handed over: a reply's arrival. */
  arrival(): Promise<void> {
    return new Promise((resolve) => this.receive(resolve));
  }
}
