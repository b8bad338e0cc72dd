// LocalTarget over the CPU reference: greedy generation and verification against a
// no-cache oracle (full recompute each step), transcript/KV bookkeeping across partial
// acceptances, pass counting, resume, and typed errors on bad input.

import { describe, expect, it } from 'vitest';
import { LocalTarget, TargetStateError } from './local-target.ts';
import { VerifyInputError } from './accept.ts';
import { SamplingParamsError, type SamplingParams } from './sampling.ts';
import { greedyOracle, randomPrompts, tinyPair } from './spec-fixtures.ts';

const GREEDY: SamplingParams = { temperature: 0, topK: 0, topP: 1, seed: 0 };
const pair = tinyPair({ seed: 11 });
const vocab = pair.config.vocabSize;

describe('LocalTarget, greedy', () => {
  it('open + generate equal the no-cache oracle (5 prompts incl. length 1)', async () => {
    const prompts = [[5], ...randomPrompts(4, vocab, 21)];
    for (const prompt of prompts) {
      const want = greedyOracle(pair.newTarget(), prompt, 12);
      const t = new LocalTarget(pair.newTarget());
      const { firstToken } = await t.open(prompt, GREEDY);
      const streamed: number[] = [];
      const rest = await t.generate(11, (x) => streamed.push(x));
      expect([firstToken, ...rest], `prompt ${prompt}`).toEqual(want);
      expect(streamed).toEqual(rest);
      expect(t.targetPasses).toBe(12);
      expect(t.transcript).toEqual([...prompt, ...want]);
    }
  });

  it('generate lets the event loop run between tokens (a link or socket in this thread sees them as they come)', async () => {
    const t = new LocalTarget(pair.newTarget());
    await t.open([3, 141, 59], GREEDY);
    let count = 0;
    const atTurns: number[] = [];
    // a macrotask per turn of the event loop while generate runs: with every token in one
    // burst of microtasks, the first would only see all 6
    let running = true;
    const tick = (): void => {
      atTurns.push(count);
      if (running) setImmediate(tick);
    };
    setImmediate(tick);
    await t.generate(6, () => count++);
    running = false;
    expect(atTurns.length).toBeGreaterThanOrEqual(5);
    expect(atTurns[0]).toBeLessThan(6);
  });

  it('verify accepts the oracle continuation, stops at a corrupted token, and stays consistent', async () => {
    const prompt = [7, 300, 12, 999];
    const want = greedyOracle(pair.newTarget(), prompt, 24);
    const t = new LocalTarget(pair.newTarget());
    const out = [(await t.open(prompt, GREEDY)).firstToken];
    // a block of 4 correct tokens: all stand, the bonus is the 5th
    let v = await t.verify(want.slice(1, 5));
    expect(v.accepted).toBe(4);
    out.push(...want.slice(1, 5), v.token);
    // a block with its 3rd token wrong: 2 stand, the correction is the oracle's token
    const block = want.slice(6, 10);
    block[2] = (block[2] + 1) % vocab;
    v = await t.verify(block);
    expect(v.accepted).toBe(2);
    out.push(...block.slice(0, 2), v.token);
    // wrong from the first token, then an empty block (one plain decode step)
    v = await t.verify([(want[out.length] + 5) % vocab, 1, 2]);
    expect(v.accepted).toBe(0);
    out.push(v.token);
    v = await t.verify([]);
    out.push(v.token);
    expect(out).toEqual(want.slice(0, out.length));
    // the rest by plain generation continues the same sequence (KV rolled back correctly)
    out.push(...(await t.generate(24 - out.length)));
    expect(out).toEqual(want);
    expect(t.model.length).toBe(t.transcript.length - 1);
  });

  it('resume rebuilds a session from a transcript and continues identically', async () => {
    const prompt = [42, 43];
    const want = greedyOracle(pair.newTarget(), prompt, 10);
    const t = new LocalTarget(pair.newTarget());
    await t.resume([...prompt, ...want.slice(0, 4)], GREEDY);
    expect(await t.generate(6)).toEqual(want.slice(4));
    // resuming from the prompt alone: the next token is the first generated one
    const u = new LocalTarget(pair.newTarget());
    await u.resume(prompt, GREEDY);
    expect((await u.verify([want[0]])).accepted).toBe(1);
  });
});

describe('LocalTarget, errors', () => {
  it('answers bad input with typed errors and keeps the session usable', async () => {
    const t = new LocalTarget(pair.newTarget(64), { maxDraft: 8 });
    await expect(t.verify([1])).rejects.toThrow(TargetStateError);
    await expect(t.open([], GREEDY)).rejects.toThrow(VerifyInputError);
    await expect(t.open([vocab], GREEDY)).rejects.toThrow(/outside the vocabulary/);
    await expect(t.open([1], { ...GREEDY, topP: 2 })).rejects.toThrow(SamplingParamsError);
    const { firstToken } = await t.open([1, 2, 3], GREEDY);
    await expect(t.verify([1, -1])).rejects.toThrow(/outside the vocabulary/);
    await expect(t.verify(new Array(9).fill(1))).rejects.toThrow(/exceeds the limit of 8/);
    // the refused blocks changed nothing: the next block is verified as if they never came
    const [g1, g2, g3] = greedyOracle(pair.newTarget(64), [1, 2, 3], 3);
    expect(firstToken).toBe(g1);
    const d = g2 === 1 ? 2 : 1; // a draft token the target rejects, so the verdict is the correction g2
    const v = await t.verify([d], undefined);
    expect([v.accepted, v.token]).toEqual([0, g2]);
    expect(t.transcript).toEqual([1, 2, 3, g1, g2]);
    expect(t.targetPasses).toBe(2); // the prefill and this verify; the refused blocks cost none
    const w = await t.verify([g3]);
    expect([w.accepted, w.token]).toEqual([1, greedyOracle(pair.newTarget(64), [1, 2, 3], 4)[3]]);
    const sampled = new LocalTarget(pair.newTarget(64));
    await sampled.open([1], { temperature: 1, topK: 0, topP: 1, seed: 1 });
    await expect(sampled.verify([1, 2])).rejects.toThrow(/draft distribution/);
    expect(sampled.targetPasses).toBe(1); // no pass spent on a refused block
    // fill the context: 64 positions
    await t.generate(64 - t.transcript.length);
    await expect(t.verify([1])).rejects.toThrow(/context full/);
    await t.close();
    await expect(t.generate(1)).rejects.toThrow(TargetStateError);
  });
});
