// Faults: the gateway restarted mid-generation (same port, and a different gateway
// instance) → the client reconnects, resumes from its transcript, and the greedy output is
// still identical to target-only; a client that vanishes mid-verify (or while queued) frees
// its session on the verifier; a free that fails in the background is logged and counted.
import { afterEach, describe, expect, it } from 'vitest';
import { greedyOracle, tinyPair } from '../src/engine/spec-fixtures.ts';
import { speculate, baseline } from '../src/engine/speculative.ts';
import { GREEDY } from '../src/engine/sampling.ts';
import { encodeJson, encodeVerify } from '../src/protocol/codec.ts';
import { PROTOCOL_VERSION } from '../src/protocol/messages.ts';
import type { ClientEvent } from '../src/protocol/client.ts';
import { startGateway, type Gateway } from './gateway.ts';
import { createCpuVerifier } from './verifiers/cpu.ts';
import type { Verifier, VerifyRequest } from './verifiers/types.ts';
import { RawClient, TEST_TOKENIZER_HASH, remote, until } from './testing.ts';

const pair = tinyPair({ seed: 21, noise: 0.25, config: { hiddenSize: 64, intermediateSize: 131, numHeads: 4, numKvHeads: 2, headDim: 16, vocabSize: 389 } });
const newVerifier = () => createCpuVerifier({ config: pair.config, weights: pair.target, model: 'tiny-random', tokenizerHash: TEST_TOKENIZER_HASH, maxContext: 256 });
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function gatewayOn(port = 0): Promise<Gateway> {
  const verifier = newVerifier();
  const g = await startGateway({ verifier, port, ownsVerifier: true });
  cleanups.push(() => g.close());
  return g;
}

describe('gateway restarted mid-generation', () => {
  for (const pipeline of [false, true]) {
    it(`speculative (k = 3, ${pipeline ? 'pipelined' : 'not pipelined'}): same port, output identical to target-only`, async () => {
      const prompt = [11, 12, 13, 14, 15];
      const N = 40;
      let g = await gatewayOn();
      const port = g.port;
      const events: ClientEvent['type'][] = [];
      const link = remote(g.wsUrl, { reconnect: { attempts: 20, baseDelayMs: 20, maxDelayMs: 200 }, onEvent: (e) => events.push(e.type) });
      let restarted: Promise<void> | null = null;
      const r = await speculate(pair.newDraft(), link, prompt, {
        params: GREEDY, maxTokens: N, k: 3, pipeline,
        onToken: (e) => {
          if (e.index === 12 && !restarted) {
            restarted = (async () => {
              await g.close();
              g = await gatewayOn(port);
            })();
          }
        },
      });
      await restarted;
      expect(r.tokens).toEqual(greedyOracle(pair.newTarget(), prompt, N));
      expect(link.reconnects).toBeGreaterThanOrEqual(1);
      expect(events).toContain('resumed');
      expect(g.stats().opened).toBe(1); // the resumed session on the new gateway
      await link.close();
    });
  }

  it('sampled speculative (T = 0.8) resumes too: the run completes and agrees with an uninterrupted run up to the restart', async () => {
    const prompt = [21, 22, 23];
    const N = 30;
    const params = { temperature: 0.8, topK: 20, topP: 0.95, seed: 77 };
    let g = await gatewayOn();
    const port = g.port;
    const ref = remote(g.wsUrl);
    const uninterrupted = await speculate(pair.newDraft(), ref, prompt, { params, maxTokens: N, k: 3 });
    await ref.close();
    const link = remote(g.wsUrl, { reconnect: { attempts: 20, baseDelayMs: 20, maxDelayMs: 200 } });
    let restartAt = -1;
    let restarted: Promise<void> | null = null;
    const r = await speculate(pair.newDraft(), link, prompt, {
      params, maxTokens: N, k: 3,
      onToken: (e) => {
        if (e.index >= 10 && !restarted) {
          restartAt = e.index;
          restarted = (async () => {
            await g.close();
            g = await gatewayOn(port);
          })();
        }
      },
    });
    await restarted;
    expect(link.reconnects).toBeGreaterThanOrEqual(1);
    expect(r.tokens.length).toBe(N);
    expect(r.tokens.slice(0, restartAt + 1)).toEqual(uninterrupted.tokens.slice(0, restartAt + 1));
    await link.close();
  });

  it('baseline stream resumes on a different gateway instance (another port) with no lost or duplicated token', async () => {
    const prompt = [3, 1, 4, 1, 5];
    const N = 30;
    const a = await gatewayOn();
    let current = a.wsUrl;
    const link = remote(() => current, { mode: 'baseline', reconnect: { attempts: 20, baseDelayMs: 20, maxDelayMs: 200 } });
    const seen: number[] = [];
    const { firstToken } = await link.open(prompt, GREEDY);
    let switched: Promise<void> | null = null;
    const rest = await link.generate(N - 1, (tok) => {
      seen.push(tok);
      if (seen.length === 9 && !switched) {
        switched = (async () => {
          const b = await gatewayOn();
          current = b.wsUrl;
          await a.close();
        })();
      }
    });
    await switched;
    expect(rest).toEqual(seen);
    expect([firstToken, ...rest]).toEqual(greedyOracle(pair.newTarget(), prompt, N));
    expect(link.reconnects).toBeGreaterThanOrEqual(1);
    await link.close();
  });

  it('a backend without resume support (like the sidecar today) is resumed by prefill: greedy output still exact', async () => {
    const noResume = (): Verifier => {
      const inner = newVerifier();
      return {
        info: () => ({ ...inner.info(), resume: false }),
        open: (id, prompt, sampling) => inner.open(id, prompt, sampling), // ignores resume
        verifyBatch: (r) => inner.verifyBatch(r),
        generate: (...a) => inner.generate(...a),
        close: (id) => inner.close(id),
        dispose: () => inner.dispose(),
      };
    };
    const prompt = [31, 32, 33];
    const N = 30;
    let g = await startGateway({ verifier: noResume(), ownsVerifier: true });
    const port = g.port;
    const link = remote(g.wsUrl, { reconnect: { attempts: 20, baseDelayMs: 20, maxDelayMs: 200 } });
    let restarted: Promise<void> | null = null;
    const r = await speculate(pair.newDraft(), link, prompt, {
      params: GREEDY, maxTokens: N, k: 2,
      onToken: (e) => {
        if (e.index === 9 && !restarted) {
          restarted = (async () => {
            await g.close();
            g = await startGateway({ verifier: noResume(), ownsVerifier: true, port });
            cleanups.push(() => g.close());
          })();
        }
      },
    });
    await restarted;
    expect(link.reconnects).toBeGreaterThanOrEqual(1);
    expect(r.tokens).toEqual(greedyOracle(pair.newTarget(), prompt, N));
    await link.close();
  });

  it('gives up with CONNECTION_LOST when no gateway comes back', async () => {
    const g = await gatewayOn();
    const link = remote(g.wsUrl, { reconnect: { attempts: 2, baseDelayMs: 10, maxDelayMs: 20 } });
    const r = await baseline(link, [1, 2], { params: GREEDY, maxTokens: 3 });
    expect(r.tokens.length).toBe(3);
    await g.close();
    await expect(link.generate(5)).rejects.toMatchObject({ code: 'CONNECTION_LOST' });
  });
});

/** A verifier whose verifyBatch waits for the test to release it: "mid-verify" made deterministic. */
function gated(inner: Verifier): { verifier: Verifier; entered: Promise<void>; release: () => void } {
  let release!: () => void;
  let entered!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const enteredP = new Promise<void>((r) => (entered = r));
  const verifier: Verifier = {
    info: () => inner.info(),
    open: (...a) => inner.open(...a),
    async verifyBatch(reqs: VerifyRequest[]) {
      entered();
      await gate;
      return inner.verifyBatch(reqs);
    },
    generate: (...a) => inner.generate(...a),
    close: (id) => inner.close(id),
    dispose: () => inner.dispose(),
  };
  return { verifier, entered: enteredP, release };
}

describe('a client that vanishes', () => {
  const hello = encodeJson({ type: 'hello', protocol: PROTOCOL_VERSION, tokenizerHash: TEST_TOKENIZER_HASH });
  const open = (s: number) => JSON.stringify({ type: 'open', session: s, prompt: [1, 2, 3], sampling: GREEDY, mode: 'speculative' });

  it('mid-verify frees its session once the verify returns', async () => {
    const inner = newVerifier();
    const { verifier, entered, release } = gated(inner);
    const g = await startGateway({ verifier });
    cleanups.push(async () => {
      await g.close();
      await inner.dispose();
    });
    const c = await RawClient.connect(g.wsUrl);
    c.send(hello);
    c.send(open(1));
    c.send(open(2));
    await c.next((m) => m.type === 'opened' && m.session === 1);
    await c.next((m) => m.type === 'opened' && m.session === 2);
    expect(inner.sessionCount).toBe(2);
    c.send(encodeVerify({ type: 'verify', session: 1, seq: 0, draft: Int32Array.of(5, 6) }));
    await entered;
    c.ws.terminate(); // no close frame: the client is simply gone
    await until(() => g.stats().connections === 0, 5_000, 'the gateway to notice the dead socket');
    // session 2 (idle) is freed at once; session 1 is held by the verify in flight
    await until(() => inner.sessionCount === 1, 5_000, 'idle session freed');
    release();
    await until(() => inner.sessionCount === 0, 5_000, 'in-flight session freed');
    expect(g.stats().sessions).toBe(0);
  });

  it('while its verify waits in the queue: dropped before the batch, session freed', async () => {
    const verifier = newVerifier();
    const g = await startGateway({ verifier, batchWindowMs: 300 });
    cleanups.push(async () => {
      await g.close();
      await verifier.dispose();
    });
    const c = await RawClient.connect(g.wsUrl);
    c.send(hello);
    c.send(open(1));
    await c.next((m) => m.type === 'opened');
    c.send(encodeVerify({ type: 'verify', session: 1, seq: 0, draft: Int32Array.of(5) }));
    await new Promise((r) => setTimeout(r, 20));
    c.ws.terminate();
    await until(() => verifier.sessionCount === 0, 5_000, 'queued session freed');
    await new Promise((r) => setTimeout(r, 400));
    expect(g.stats().batchedRequests).toBe(0); // the dead session's block never reached the target
  });
});

describe('a failure nobody awaits', () => {
  it('freeing a session whose client left is logged and counted in /metrics, also when its verify failed after the client left', async () => {
    const inner = newVerifier();
    const { verifier: held, entered: enteredP, release } = gated(inner);
    const verifier: Verifier = {
      ...held,
      // the verify fails once released, and every free fails
      verifyBatch: async (reqs) => {
        await held.verifyBatch(reqs);
        throw new Error('verify boom');
      },
      close: async () => {
        throw new Error('close boom');
      },
    };
    const lines: string[] = [];
    const g = await startGateway({ verifier, log: (l) => lines.push(l) });
    cleanups.push(async () => {
      await g.close();
      await inner.dispose();
    });
    const counted = async (): Promise<number> => {
      const m = /^duet_background_errors_total\{where="ws_session_close"\} (\d+)$/m.exec(await (await fetch(`${g.url}/metrics`)).text());
      return m ? Number(m[1]) : NaN;
    };
    expect(await counted()).toBe(0);
    const c = await RawClient.connect(g.wsUrl);
    c.send(encodeJson({ type: 'hello', protocol: PROTOCOL_VERSION, tokenizerHash: TEST_TOKENIZER_HASH }));
    for (const s of [1, 2]) c.send(JSON.stringify({ type: 'open', session: s, prompt: [1, 2, 3], sampling: GREEDY, mode: 'speculative' }));
    await c.next((m) => m.type === 'opened' && m.session === 1);
    await c.next((m) => m.type === 'opened' && m.session === 2);
    c.send(encodeVerify({ type: 'verify', session: 1, seq: 0, draft: Int32Array.of(5, 6) }));
    await enteredP;
    c.ws.terminate();
    // session 2 was idle: freed (and failing) as soon as the gateway sees the socket gone
    await until(() => lines.some((l) => /^close c\d+s2o\d+: close boom$/.test(l)), 5_000, 'the idle session\'s failed free to be logged');
    expect(await counted()).toBe(1);
    // session 1's verify fails after its client left: its free fails too, and is not swallowed
    release();
    await until(() => lines.some((l) => /^close c\d+s1o\d+: close boom$/.test(l)), 5_000, 'the in-flight session\'s failed free to be logged');
    expect(await counted()).toBe(2);
    expect(lines.filter((l) => l.includes('close boom'))).toHaveLength(2);
  });
});
