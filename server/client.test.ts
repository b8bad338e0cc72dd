// The WebSocket client (src/protocol/client.ts) against a real gateway: sampled speculative
// decoding through it is token-identical to the in-process LocalTarget with the same seed
// (so q's cross the wire bit-exactly and the gateway applies the same rule); injected RTT;
// inactivity timeout; close() ending a stream; VERIFIER_FAILED followed by a transparent reopen.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { greedyOracle, randomPrompts } from '../src/engine/spec-fixtures.ts';
import { speculate } from '../src/engine/speculative.ts';
import { LocalTarget } from '../src/engine/local-target.ts';
import { GREEDY } from '../src/engine/sampling.ts';
import { RemoteTarget } from '../src/protocol/client.ts';
import { startGateway } from './gateway.ts';
import { createCpuVerifier } from './verifiers/cpu.ts';
import type { Verifier } from './verifiers/types.ts';
import { TEST_TOKENIZER_HASH, remote, startTestGateway, type TestGateway } from './testing.ts';

const SMALL = { hiddenSize: 64, intermediateSize: 131, numHeads: 4, numKvHeads: 2, headDim: 16, vocabSize: 389 };
let t: TestGateway;
beforeAll(async () => {
  t = await startTestGateway({ pairOptions: { seed: 17, noise: 0.3, config: SMALL } });
});
afterAll(async () => t?.close());

describe('RemoteTarget', () => {
  it('sampled speculative through the gateway == in-process LocalTarget, token for token (same seeds)', async () => {
    const prompts = randomPrompts(6, SMALL.vocabSize, 8, 7);
    for (const [i, prompt] of prompts.entries()) {
      const params = { temperature: 0.9, topK: i % 2 ? 40 : 0, topP: i % 3 ? 0.95 : 1, seed: 1000 + i };
      const opts = { params, maxTokens: 24, k: 1 + (i % 4) };
      const link = remote(t.gateway);
      const viaGateway = await speculate(t.pair.newDraft(), link, prompt, opts);
      await link.close();
      const local = await speculate(t.pair.newDraft(), new LocalTarget(t.pair.newTarget()), prompt, opts);
      expect(viaGateway.tokens, `prompt ${i}`).toEqual(local.tokens);
      expect(viaGateway.stats.targetPasses).toBe(local.stats.targetPasses);
    }
  });

  it('injects half the RTT on each way of every exchange', async () => {
    const waits: number[] = [];
    const link = remote(t.gateway, { rttMs: 30, delay: async (ms) => void waits.push(ms) });
    await link.open([1, 2, 3], GREEDY);
    const before = waits.length;
    await link.verify([4, 5]);
    const perVerify = waits.slice(before);
    expect(perVerify.length).toBe(2); // one out, one back
    expect(perVerify[0]).toBe(15);
    expect(perVerify[1]).toBeGreaterThan(0);
    expect(perVerify[1]).toBeLessThanOrEqual(15);
    await link.close();
  });

  it('open() reports the link round trip (its hello, injected RTT included) and the gateway\'s prefill time', async () => {
    const link = remote(t.gateway, { rttMs: 40 });
    const r = await link.open([1, 2, 3], GREEDY);
    // both injected halves (20 + 20 ms): more than one half; Node timers round each down by up to ~1 ms
    expect(r.rttMs).toBeGreaterThan(30);
    expect(r.rttMs).toBe(link.rttMs);
    expect(r.prefillMs).toBeGreaterThanOrEqual(0);
    expect(Number.isFinite(r.prefillMs)).toBe(true);
    await link.close();
    const near = remote(t.gateway);
    const n = await near.open([1, 2, 3], GREEDY);
    expect(n.rttMs).toBeGreaterThanOrEqual(0);
    expect(Number.isFinite(n.rttMs)).toBe(true);
    await near.close();
  });

  it('close() during a baseline stream ends it with the tokens received so far', async () => {
    const link = remote(t.gateway);
    await link.open([7, 8], GREEDY);
    const got: number[] = [];
    const out = await link.generate(200, (tok) => {
      got.push(tok);
      if (got.length === 3) void link.close();
    });
    expect(out).toEqual(got);
    expect(out.length).toBeGreaterThanOrEqual(3);
    expect(out.length).toBeLessThan(200);
    expect(out).toEqual(greedyOracle(t.pair.newTarget(), [7, 8], 1 + out.length).slice(1));
  });

  it('a silent gateway → TIMEOUT (no reconnect configured)', async () => {
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await new Promise((r) => wss.once('listening', r));
    const port = (wss.address() as { port: number }).port;
    const link = new RemoteTarget({ url: `ws://127.0.0.1:${port}/ws`, tokenizerHash: 'x', timeoutMs: 150, reconnect: false });
    await expect(link.connect()).rejects.toMatchObject({ name: 'ProtocolError', code: 'TIMEOUT' });
    await expect(new RemoteTarget({ url: `ws://127.0.0.1:${port}/ws`, tokenizerHash: 'x', timeoutMs: 150, reconnect: { attempts: 1, baseDelayMs: 5 } }).connect()).rejects.toMatchObject({ code: 'TIMEOUT' });
    wss.close();
  });

  it('VERIFIER_FAILED ends the session with a typed error; the next call reopens it from the transcript', async () => {
    const inner = createCpuVerifier({ config: t.pair.config, weights: t.pair.target, model: 'tiny-random', tokenizerHash: TEST_TOKENIZER_HASH, maxContext: 256 });
    let calls = 0;
    const flaky: Verifier = {
      info: () => inner.info(),
      open: (...a) => inner.open(...a),
      verifyBatch: async (reqs) => {
        if (++calls === 2) throw new Error('device lost (simulated)');
        return inner.verifyBatch(reqs);
      },
      generate: (...a) => inner.generate(...a),
      close: (id) => inner.close(id),
      dispose: () => inner.dispose(),
    };
    const g = await startGateway({ verifier: flaky, ownsVerifier: true });
    try {
      const prompt = [9, 10, 11];
      const oracle = greedyOracle(t.pair.newTarget(), prompt, 8);
      const link = remote(g);
      const { firstToken } = await link.open(prompt, GREEDY);
      const v1 = await link.verify([oracle[1], oracle[2]]);
      expect(v1).toMatchObject({ accepted: 2, token: oracle[3] });
      await expect(link.verify([oracle[4]])).rejects.toMatchObject({ code: 'VERIFIER_FAILED', message: expect.stringMatching(/device lost/) });
      const v2 = await link.verify([oracle[4]]);
      expect(v2).toMatchObject({ accepted: 1, token: oracle[5] });
      expect([firstToken, ...link.transcript.slice(prompt.length + 1)]).toEqual(oracle.slice(0, 6));
      expect(g.stats().opened).toBe(2); // the original and the transparent reopen
      await link.close();
    } finally {
      await g.close();
    }
  });
});
