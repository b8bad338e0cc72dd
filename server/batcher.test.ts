// The batcher alone, over a scripted verifier: batches flush at maxBatch or after the window,
// requests that arrive while the verifier is busy go out together, a partial failure fails
// only its own sessions, requests of dead sessions never reach the verifier, and jobs
// interleave with batches. On a verifier with a shared pass, queued opens ride in the verify
// pass (an open waits one pass, not one per open ahead of it), long prompts go in chunks of
// at most prefillTokens, and an open abandoned part-way is closed on the verifier.
import { describe, expect, it } from 'vitest';
import { Batcher } from './batcher.ts';
import { until } from './testing.ts';
import { JobAbandonedError } from './batcher.ts';
import { GREEDY } from '../src/engine/sampling.ts';
import { PartialBatchError, type OpenRequest, type PassResult, type PrefillChunk, type Verifier, type VerifyRequest, type VerifyResult } from './verifiers/types.ts';

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

/** A scripted verifier with a shared pass: logs each pass's prefill chunks and verifies; tracks what each open has run. */
function withPass(): { v: Verifier; passes: { prefills: string[]; verifies: string[] }[]; closed: string[]; run: Map<string, number> } {
  const { v } = scripted();
  const passes: { prefills: string[]; verifies: string[] }[] = [];
  const closed: string[] = [];
  const run = new Map<string, number>();
  const need = (o: OpenRequest) => o.prompt.length;
  v.pass = async (prefills: PrefillChunk[], verifies: VerifyRequest[]): Promise<PassResult> => {
    passes.push({ prefills: prefills.map((c) => `${c.open.sessionId}:${c.tokens}`), verifies: verifies.map((r) => r.sessionId) });
    await new Promise((r) => setTimeout(r, 2));
    const opened: PassResult['opened'] = [];
    for (const c of prefills) {
      const done = (run.get(c.open.sessionId) ?? 0) + c.tokens;
      run.set(c.open.sessionId, done);
      if (done >= need(c.open)) opened.push({ sessionId: c.open.sessionId, firstToken: c.open.prompt.length });
    }
    return { verifies: verifies.map((r) => ({ sessionId: r.sessionId, accepted: 0, token: 7, forwardMs: 2 })), opened, failures: new Map() };
  };
  v.verifyBatch = async (reqs) => (await v.pass!([], reqs)).verifies;
  v.close = async (id) => {
    closed.push(id);
  };
  return { v, passes, closed, run };
}
const openReq = (id: string, n: number): OpenRequest => ({ sessionId: id, prompt: Array.from({ length: n }, (_, i) => i), sampling: GREEDY });

describe('Batcher: opens in the shared pass', () => {
  it('9 opens queued beside a verify batch are all served in the next pass, with the verifies', async () => {
    const { v, passes } = withPass();
    const b = new Batcher(v, 16, 0, () => true, 256);
    const busy = b.verify(req('x')); // the verifier is busy while the rest queue
    const opens = Array.from({ length: 9 }, (_, i) => b.open(openReq(`o${i}`, 3 + i)));
    const verifies = ['y', 'z'].map((id) => b.verify(req(id)));
    await Promise.all([busy, ...verifies]);
    expect((await Promise.all(opens)).map((r) => r.firstToken)).toEqual(Array.from({ length: 9 }, (_, i) => 3 + i));
    expect(passes).toEqual([
      { prefills: [], verifies: ['x'] },
      { prefills: Array.from({ length: 9 }, (_, i) => `o${i}:${3 + i}`), verifies: ['y', 'z'] },
    ]);
    expect(b.stats).toMatchObject({ passOpens: 9, prefillChunks: 9, jobs: 0 });
  });

  it('a long prompt goes in chunks of at most prefillTokens, shared fairly with a short open, and verify batches pass between them', async () => {
    const { v, passes } = withPass();
    const b = new Batcher(v, 16, 0, () => true, 8);
    const long = b.open(openReq('long', 21));
    const short = b.open(openReq('short', 5));
    let served = 0;
    const verifier = (async () => {
      while (served < 4) {
        await b.verify(req('x'));
        served++;
      }
    })();
    await Promise.all([long, short, verifier]);
    const chunks = passes.flatMap((p) => p.prefills);
    // pass 1 is the long one's alone (the short one is not queued yet); then the two share each
    // pass's 8 tokens equally, the long one taking what the short one leaves
    expect(chunks).toEqual(['long:8', 'long:4', 'short:4', 'long:7', 'short:1', 'long:2']);
    // the short open finished before the long one, not after its whole prefill
    expect(chunks.lastIndexOf('short:1')).toBeLessThan(chunks.lastIndexOf('long:2'));
    for (const p of passes) expect(p.prefills.map((c) => Number(c.split(':')[1])).reduce((a, n) => a + n, 0)).toBeLessThanOrEqual(8);
    // verify passes were not held back behind the whole prefill
    const firstVerify = passes.findIndex((p) => p.verifies.length > 0);
    const lastLong = passes.map((p) => p.prefills.some((c) => c.startsWith('long'))).lastIndexOf(true);
    expect(firstVerify).toBeLessThan(lastLong);
  });

  it('an open abandoned part-way through its prefill is closed on the verifier and rejected with JobAbandonedError', async () => {
    const { v, passes, closed, run } = withPass();
    let live = true;
    const b = new Batcher(v, 16, 0, () => true, 4);
    const p = b.open(openReq('gone', 30), () => live);
    await until(() => (run.get('gone') ?? 0) >= 8, 5_000, 'two chunks to run');
    live = false;
    await expect(p).rejects.toBeInstanceOf(JobAbandonedError);
    expect(closed).toEqual(['gone']);
    expect(run.get('gone')).toBeLessThan(30);
    expect(b.stats.jobsDropped).toBe(1);
    expect(b.stats.passOpens).toBe(0);
    expect(passes.length).toBeLessThan(8);
  });

  it('a verifier without a shared pass runs each open as a job (its own run, or verifier.open)', async () => {
    const { v, log } = scripted();
    const b = new Batcher(v, 4, 0);
    v.open = async (id) => {
      log.push(`open:${id}`);
      return { firstToken: 9 };
    };
    expect(await b.open(openReq('a', 2))).toEqual({ firstToken: 9 });
    expect(await b.open(openReq('b', 2), () => true, async () => ({ firstToken: 4 }))).toEqual({ firstToken: 4 });
    expect(log).toEqual(['open:a']);
    expect(b.stats).toMatchObject({ jobs: 2, passOpens: 0 });
  });
});

describe('Batcher and the event loop', () => {
  // libuv accepts one connection per loop iteration, so a batcher that gave I/O one turn per
  // synchronous pass let a loaded gateway accept one connection per pass (upgrades took ~1 s
  // with 64 sessions churning). 30 connections wait in the listen queue (a child process made
  // them while this process was blocked in spawnSync); passes run back to back and each takes
  // 3 ms synchronously, as the cpu backend does. All 30 must be accepted within 4 passes.
  it('gives queued connections their turns between synchronous passes', async () => {
    const { createServer } = await import('node:net');
    const { spawnSync } = await import('node:child_process');
    const accepted: unknown[] = [];
    const server = createServer((s) => {
      accepted.push(s);
      s.on('error', () => {});
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as { port: number }).port;
    const CONNS = 30;
    const child = spawnSync(process.execPath, ['-e', `
      const net = require('node:net'); let n = 0; const all = [];
      for (let i = 0; i < ${CONNS}; i++) all.push(net.connect(${port}, '127.0.0.1', () => { if (++n === ${CONNS}) process.exit(0); }));
      setTimeout(() => process.exit(2), 10000);`], { encoding: 'utf8' });
    expect(child.status).toBe(0);
    const acceptedAtPass: number[] = [];
    const { v } = scripted(() => {
      acceptedAtPass.push(accepted.length);
      const t = performance.now();
      while (performance.now() - t < 3); // a synchronous pass
    });
    const b = new Batcher(v, 1, 0);
    await Promise.all(Array.from({ length: 12 }, (_, i) => b.verify(req(`s${i}`))));
    server.close();
    for (const s of accepted) (s as { destroy(): void }).destroy();
    expect(acceptedAtPass.length).toBe(12);
    expect(acceptedAtPass[4]).toBe(CONNS);
  });
});
