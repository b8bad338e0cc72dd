// The gateway's Session (server/gateway.ts): whatever the order of begin / settle / end, the
// session is forgotten once and its target KV freed exactly once — at end() when idle, else
// at the settle() of the request in flight — and never for an open that failed.
import { describe, expect, it } from 'vitest';
import { GREEDY } from '../src/engine/sampling.ts';
import { Session } from './gateway.ts';

function session(ratePerSec = 100): { s: Session; forgot: () => number; freed: () => number } {
  let forgot = 0;
  let freed = 0;
  const s = new Session('c1s1o1', 1, 'speculative', GREEDY, 4, ratePerSec, () => forgot++, () => freed++);
  return { s, forgot: () => forgot, freed: () => freed };
}

describe('Session', () => {
  it('ended while idle: forgotten and freed at once, a second end does nothing', () => {
    const { s, forgot, freed } = session();
    s.end();
    s.end();
    expect([s.closed, forgot(), freed()]).toEqual([true, 1, 1]);
  });

  it('a request answered on a live session: settle says live, nothing freed', () => {
    const { s, freed } = session();
    s.begin();
    expect(s.busy).toBe(true);
    expect(s.settle()).toBe(true);
    expect([s.busy, s.closed, freed()]).toEqual([false, false, 0]);
  });

  it('ended mid-request: forgotten now, freed at settle, once', () => {
    const { s, forgot, freed } = session();
    s.begin();
    s.end();
    expect([forgot(), freed()]).toEqual([1, 0]);
    expect(s.settle()).toBe(false);
    expect(freed()).toBe(1);
    s.end();
    expect([forgot(), freed()]).toEqual([1, 1]);
  });

  it('an open that failed after the session ended leaves no KV to free', () => {
    const { s, freed } = session();
    s.begin();
    s.end();
    expect(s.settle(false)).toBe(false);
    expect(freed()).toBe(0);
  });

  it('rate() takes from a bucket of one second\'s worth', () => {
    const { s } = session(3);
    expect([s.rate(), s.rate(), s.rate(), s.rate()]).toEqual([true, true, true, false]);
  });
});
