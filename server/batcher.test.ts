// The batcher alone, over a scripted verifier: batches flush at maxBatch or after the window,
// requests that arrive while the verifier is busy go out together, a partial failure fails
// only its own sessions, requests of dead sessions never reach the verifier, and jobs
// interleave with batches.
import { describe, expect, it } from 'vitest';
import { Batcher } from './batcher.ts';
import { until } from './testing.ts';
import { PartialBatchError, type Verifier, type VerifyRequest, type VerifyResult } from './verifiers/types.ts';

function scripted(onBatch: (reqs: VerifyRequest[]) => Promise<void> | void = () => {}): { v: Verifier; batches: string[][]; log: string[] } {
  const batches: string[][] = [];
  const log: string[] = [];
  const v: Verifier = {
    info: () => ({ backend: 'cpu', model: 'm', tokenizerHash: 'h', vocabSize: 10, maxContext: 64, maxBatch: 4, device: 'test' }),
    open: async () => ({ firstToken: 0 }),
    async verifyBatch(reqs) {
      batches.push(reqs.map((r) => r.sessionId));
      log.push(`batch:${reqs.map((r) => r.sessionId).join(',')}`);
      await onBatch(reqs);
      return reqs.map((r): VerifyResult => ({ sessionId: r.sessionId, accepted: r.draft.length, token: 7, forwardMs: 1 }));
    },
    generate: async () => [1],
    close: async () => {},
    dispose: async () => {},
  };
  return { v, batches, log };
}
const req = (id: string): VerifyRequest => ({ sessionId: id, draft: [1, 2] });

describe('Batcher', () => {
  it('flushes a full batch at once and the rest after the window', async () => {
    const { v, batches } = scripted();
    const b = new Batcher(v, 3, 30);
    const rs = await Promise.all(['a', 'b', 'c', 'd'].map((id) => b.verify(req(id))));
    expect(batches).toEqual([['a', 'b', 'c'], ['d']]);
    expect(rs.map((r) => r.batch)).toEqual([3, 3, 3, 1]);
    expect(rs[0]).toMatchObject({ sessionId: 'a', accepted: 2, token: 7 });
    await until(() => !b.busy, 5_000, 'the batcher to go idle');
    const lone = performance.now();
    await b.verify(req('e'));
    expect(performance.now() - lone).toBeGreaterThanOrEqual(25); // waited for the window
    expect(b.stats).toMatchObject({ batches: 3, batchedRequests: 5, maxBatchSeen: 3 });
  });

  it('groups what arrives while the verifier is busy', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let first = true;
    const { v, batches } = scripted(async () => {
      if (first) {
        first = false;
        await gate;
      }
    });
    const b = new Batcher(v, 8, 0);
    const p1 = b.verify(req('a'));
    await new Promise((r) => setTimeout(r, 10));
    const rest = ['b', 'c', 'd'].map((id) => b.verify(req(id)));
    release();
    await Promise.all([p1, ...rest]);
    expect(batches).toEqual([['a'], ['b', 'c', 'd']]);
  });

  it('a partial failure fails only the sessions it names', async () => {
    const { v } = scripted();
    v.verifyBatch = async (reqs) => {
      const ok = reqs.filter((r) => r.sessionId !== 'bad').map((r) => ({ sessionId: r.sessionId, accepted: 0, token: 3, forwardMs: 1 }));
      throw new PartialBatchError(ok, new Map([['bad', new Error('boom')]]));
    };
    const b = new Batcher(v, 3, 1);
    const [x, y, z] = await Promise.allSettled(['x', 'bad', 'z'].map((id) => b.verify(req(id))));
    expect(x).toMatchObject({ status: 'fulfilled', value: { sessionId: 'x', token: 3 } });
    expect(y).toMatchObject({ status: 'rejected', reason: { message: 'boom' } });
    expect(z).toMatchObject({ status: 'fulfilled', value: { sessionId: 'z' } });
  });

  it('drops requests of sessions that died while queued, and interleaves jobs with batches', async () => {
    const { v, batches, log } = scripted();
    const live = new Set(['a', 'c']);
    const b = new Batcher(v, 4, 20, (id) => live.has(id));
    const dead = b.verify(req('b'));
    const ok = [b.verify(req('a')), b.verify(req('c'))];
    const job = b.job(async () => {
      log.push('job');
      return 42;
    });
    await expect(dead).rejects.toThrow(/closed while its verify was queued/);
    await Promise.all(ok);
    expect(await job).toBe(42);
    expect(batches).toEqual([['a', 'c']]);
    expect(log).toEqual(['batch:a,c', 'job']);
  });

  it('drain() fails everything still queued', async () => {
    const { v, batches } = scripted();
    const b = new Batcher(v, 4, 1000);
    const p = b.verify(req('a'));
    b.drain(new Error('stopping'));
    await expect(p).rejects.toThrow('stopping');
    expect(batches).toEqual([]);
  });
});
