// DelayLine, the one latency injector (DelayedLink and RemoteTarget), in virtual time: a send
// waits half the RTT; each message received is handed over half the RTT after it arrived, in
// order; a DelayedLink's stream is pipelined (token i at production time + half).
import { describe, expect, it } from 'vitest';
import { VirtualClock } from './clock.ts';
import { DelayLine } from './latency.ts';
import { DelayedLink } from './speculative.ts';
import type { TargetLink } from './target-link.ts';

describe('DelayLine', () => {
  it('send waits half; receive hands over half later, in arrival order; 0 ms is synchronous', async () => {
    const clock = new VirtualClock();
    const line = new DelayLine(40, clock);
    const log: string[] = [];
    await clock.run(async () => {
      await line.send();
      log.push(`sent@${clock.now()}`);
      line.receive(() => log.push(`a@${clock.now()}`));
      await clock.sleep(5);
      line.receive(() => log.push(`b@${clock.now()}`));
      await line.arrival();
      log.push(`arrived@${clock.now()}`);
    });
    expect(log).toEqual(['sent@20', 'a@40', 'b@45', 'arrived@45']);
    const now: string[] = [];
    new DelayLine(0, clock).receive(() => now.push('sync'));
    expect(now).toEqual(['sync']);
  });

  it('DelayedLink: verify pays the RTT once; a stream of tokens 10 ms apart arrives 10 ms apart, half the RTT late', async () => {
    const clock = new VirtualClock();
    const inner: TargetLink = {
      targetPasses: 0,
      open: async () => ({ firstToken: 1 }),
      verify: async () => {
        await clock.sleep(3);
        return { accepted: 0, token: 2, verifyMs: 3 };
      },
      generate: async (n, onToken) => {
        const out: number[] = [];
        for (let i = 0; i < n; i++) {
          await clock.sleep(10);
          out.push(i);
          onToken?.(i);
        }
        return out;
      },
      close: async () => undefined,
    };
    const link = new DelayedLink(inner, 30, clock);
    const seen: number[] = [];
    const t = await clock.run(async () => {
      const t0 = clock.now();
      await link.verify([5]);
      const verifyMs = clock.now() - t0;
      const g0 = clock.now();
      await link.generate(3, () => seen.push(clock.now() - g0));
      return { verifyMs, generateMs: clock.now() - g0 };
    });
    expect(t.verifyMs).toBe(33);
    expect(seen).toEqual([15 + 10 + 15, 15 + 20 + 15, 15 + 30 + 15]);
    expect(t.generateMs).toBe(60);
  });
});
