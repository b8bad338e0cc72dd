// The k = 0 arm of adaptive k ("never slower than the target alone"). Speeds here are never
// timed on this machine: every cost is injected — the target's pass time per position
// (CostedTarget), the draft's time per forward (DelayedModel), the RTT (DelayedLink) — on a
// VirtualClock, so tokens per second are a deterministic function of those costs, and the real
// models (a small random pair) supply the tokens, acceptances and exactness.
// Claims: with a draft slower per step than the target, adaptive k runs at >= 0.9x the
// target-only baseline's tok/s (and without the arm it would not); with a fast draft it
// speculates and beats the baseline; greedy output is identical to target-only in every mode;
// the controller picks k = 0 from the cost model (draft ms, verify ms, RTT, acceptance, queue
// time), probes within its budget and returns to drafting when drafting pays.

import { describe, expect, it } from 'vitest';
import { VirtualClock } from './clock.ts';
import { LocalTarget } from './local-target.ts';
import { DelayedLink, DelayedModel, KController, PROBE_BUDGET, PROBE_MAX, STRETCH_MAX, STRETCH_MIN, baseline, fitLine, speculate, type DraftPrior, type SpecResult } from './speculative.ts';
import { CostedTarget, randomPrompts, tinyPair } from './spec-fixtures.ts';
import type { SamplingParams } from './sampling.ts';
import type { TargetLink } from './target-link.ts';

const GREEDY: SamplingParams = { temperature: 0, topK: 0, topP: 1, seed: 0 };
// a close draft (acceptance ~0.8-0.9 greedy): speculation pays whenever drafting is cheap
const pair = tinyPair({ seed: 7, noise: 0.05, config: { vocabSize: 131, hiddenSize: 40, intermediateSize: 61, numHeads: 4, numKvHeads: 2, headDim: 10 } });
const N = 256;
// a memory-bound target: a pass costs 8 ms + 0.5 ms per position (a 5-token verify 10.5 ms, a decode step 8.5 ms)
const COST = { fixedMs: 8, perPositionMs: 0.5, prefillMs: 20 };

interface Run {
  spec: SpecResult;
  specTokPerSec: number;
  baseTokPerSec: number;
  baseTokens: number[];
}

async function run(prompt: number[], o: { draftDelayMs: number; draftPerTokenMs?: number; rttMs?: number; params?: SamplingParams; pipeline?: boolean; targetOnlyArm?: boolean; queueMs?: number; cost?: typeof COST; maxTokens?: number; prior?: DraftPrior }): Promise<Run> {
  const maxTokens = o.maxTokens ?? N;
  const clock = new VirtualClock();
  const cost = o.cost ?? COST;
  const link = (): TargetLink => {
    const costed = new CostedTarget(new LocalTarget(pair.newTarget(N + 32)), clock, { ...cost, queueMs: o.queueMs });
    return o.rttMs ? new DelayedLink(costed, o.rttMs, clock) : costed;
  };
  const params = o.params ?? GREEDY;
  const spec = await clock.run(() => speculate(new DelayedModel(pair.newDraft(N + 32), o.draftDelayMs, clock, o.draftPerTokenMs), link(), prompt, {
    params, maxTokens, adaptive: true, pipeline: o.pipeline, targetOnlyArm: o.targetOnlyArm, clock, prior: o.prior,
  }));
  const clockB = new VirtualClock();
  const costedB = new CostedTarget(new LocalTarget(pair.newTarget(N + 32)), clockB, { ...cost, queueMs: o.queueMs });
  const linkB = o.rttMs ? new DelayedLink(costedB, o.rttMs, clockB) : costedB;
  const base = await clockB.run(() => baseline(linkB, prompt, { params, maxTokens, clock: clockB }));
  return { spec, specTokPerSec: spec.stats.tokPerSec, baseTokPerSec: base.tokPerSec, baseTokens: base.tokens };
}

const prompts = randomPrompts(3, pair.config.vocabSize, 17, 8);

describe('k = 0 arm end to end (virtual time, injected costs)', () => {
  it('a draft slower per step than the target: adaptive >= 0.9x the baseline (RTT 0 and 20 ms, pipelined or not); greedy identical', async () => {
    for (const [i, prompt] of prompts.entries()) {
      for (const rttMs of [0, 20]) {
        const r = await run(prompt, { draftDelayMs: 12, rttMs, pipeline: i % 2 === 1 });
        const ratio = r.specTokPerSec / r.baseTokPerSec;
        const what = `prompt ${i}, RTT ${rttMs}: ${r.specTokPerSec.toFixed(1)} vs ${r.baseTokPerSec.toFixed(1)} tok/s, ${r.spec.stats.streamedTokens} streamed, k ${r.spec.kHistory.join(',')}`;
        expect(r.spec.tokens, what).toEqual(r.baseTokens);
        expect(ratio, what).toBeGreaterThanOrEqual(0.9);
        // it got there by streaming, and it kept probing drafting — where the price of a probe's
        // catch-up is known: a prompt of 3+ tokens times the draft's forward of several tokens at
        // its prefill; a shorter one only after a short first stretch (RTT 0: round 0 streams
        // STRETCH_MIN while the draft prefills, and an early probe measures it). After a long
        // first stretch with the slope unknown the controller assumes the worst and does not probe.
        expect(r.spec.provenance.slice(1).filter((p) => p === 'target').length, what).toBe(r.spec.stats.streamedTokens); // [0] is the prefill's token
        expect(r.spec.stats.streamedTokens, what).toBeGreaterThan(N * 0.7);
        if (prompt.length >= 3 || rttMs === 0) expect(r.spec.kHistory.slice(r.spec.kHistory.indexOf(0)).some((k) => k > 0), what).toBe(true);
      }
    }
  });

  it('a compute-bound draft (its catch-up after a stretch costs per streamed token): adaptive >= 0.9x the baseline; greedy identical', async () => {
    // a draft step 12 ms (4 ms + 8 ms a token), a catch-up of 100 streamed tokens 804 ms: a probe
    // after P streamed tokens costs about what streaming them took, so it is put off (PROBE_MAX)
    for (const [i, prompt] of prompts.entries()) {
      for (const rttMs of [0, 20]) {
        const r = await run(prompt, { draftDelayMs: 4, draftPerTokenMs: 8, rttMs, pipeline: i % 2 === 1 });
        const what = `prompt ${i}, RTT ${rttMs}: ${r.specTokPerSec.toFixed(1)} vs ${r.baseTokPerSec.toFixed(1)} tok/s, ${r.spec.stats.streamedTokens} streamed, k ${r.spec.kHistory.join(',')}`;
        expect(r.spec.tokens, what).toEqual(r.baseTokens);
        expect(r.specTokPerSec / r.baseTokPerSec, what).toBeGreaterThanOrEqual(0.9);
        expect(r.spec.stats.streamedTokens, what).toBeGreaterThan(N * 0.8);
      }
    }
  });

  it('the same slow draft without the k = 0 arm is below 0.9x (the setting is one where speculation loses)', async () => {
    const r = await run(prompts[0], { draftDelayMs: 12, targetOnlyArm: false });
    expect(r.spec.stats.streamedTokens).toBe(0);
    expect(r.spec.tokens).toEqual(r.baseTokens);
    expect(r.specTokPerSec / r.baseTokPerSec).toBeLessThan(0.9);
  });

  it('a fast draft: adaptive speculates (streams only to measure the stream) and beats the baseline; greedy identical', async () => {
    for (const [i, prompt] of prompts.entries()) {
      const r = await run(prompt, { draftDelayMs: 0.5, pipeline: i % 2 === 0 });
      const what = `prompt ${i}: ${r.specTokPerSec.toFixed(1)} vs ${r.baseTokPerSec.toFixed(1)} tok/s, k ${r.spec.kHistory.join(',')}`;
      expect(r.spec.tokens, what).toEqual(r.baseTokens);
      // only the stream-cost probes (STRETCH_MIN tokens at the start and every 50 rounds)
      expect(r.spec.stats.streamedTokens, what).toBeLessThanOrEqual(N * 0.1);
      expect(r.specTokPerSec / r.baseTokPerSec, what).toBeGreaterThan(1.2);
    }
  });

  it('a fast target behind a long round trip: streams from round 0 (open shows the RTT dominates) and keeps up with the baseline; at RTT 0 it drafts first', async () => {
    // a 1.1 ms decode step, a 3 ms prefill, 50 ms RTT: one draft round costs ~45 streamed tokens
    const FAST = { fixedMs: 1, perPositionMs: 0.1, prefillMs: 3 };
    for (const [i, prompt] of prompts.entries()) {
      const r = await run(prompt, { draftDelayMs: 0.5, rttMs: 50, cost: FAST, pipeline: i % 2 === 1 });
      const what = `prompt ${i}: ${r.specTokPerSec.toFixed(1)} vs ${r.baseTokPerSec.toFixed(1)} tok/s, k ${r.spec.kHistory.join(',')}`;
      expect(r.spec.tokens, what).toEqual(r.baseTokens);
      expect(r.spec.kHistory[0], what).toBe(0);
      expect(r.specTokPerSec / r.baseTokPerSec, what).toBeGreaterThanOrEqual(0.97);
      const near = await run(prompt, { draftDelayMs: 0.5, rttMs: 0, cost: FAST });
      expect(near.spec.kHistory[0], `RTT 0, prompt ${i}: k ${near.spec.kHistory.join(',')}`).toBeGreaterThan(0);
      expect(near.spec.tokens).toEqual(near.baseTokens);
    }
  });

  it('a second run starts from the first\'s draft costs: a slow draft beside a fast target skips its prompt prefill (round 0 streams) and a short generation keeps up with the baseline', async () => {
    // a 1.1 ms decode step and a 3 ms prefill against a 12 ms draft step; 24 tokens take the
    // baseline ~30 ms, about what the draft's prefill (two forwards) costs: the first run waits
    // for it (nothing returns while the draft's KV is still being written), the second skips it
    const FAST = { fixedMs: 1, perPositionMs: 0.1, prefillMs: 3 };
    for (const [i, prompt] of prompts.entries()) {
      for (const rttMs of [0, 20]) {
        const o = { draftDelayMs: 12, rttMs, cost: FAST, maxTokens: 24, pipeline: i % 2 === 1 };
        const cold = await run(prompt, o);
        const prior = cold.spec.prior;
        const what = (r: Run): string => `prompt ${i} (${prompt.length} tokens), RTT ${rttMs}: ${r.specTokPerSec.toFixed(1)} vs ${r.baseTokPerSec.toFixed(1)} tok/s, prefill ${r.spec.stats.draftPrefill}, k ${r.spec.kHistory.join(',')}`;
        expect(cold.spec.tokens, what(cold)).toEqual(cold.baseTokens);
        expect(cold.spec.stats.draftPrefill, what(cold)).toBe('overlap');
        // what it measured: a draft step at the injected 12 ms, the prefill as a catch-up, mostly streamed
        expect(prior?.draftMs, what(cold)).toBeGreaterThanOrEqual(12);
        // (a 2-token prompt's prefill is one token and a step: no catch-up point)
        if (prompt.length > 2) expect(prior?.catchUps.length, what(cold)).toBeGreaterThanOrEqual(1);
        expect(prior?.streamedShare, what(cold)).toBeGreaterThan(0.5);
        const warm = await run(prompt, { ...o, prior });
        expect(warm.spec.tokens, what(warm)).toEqual(warm.baseTokens);
        expect(warm.spec.stats.draftPrefill, what(warm)).toBe('skipped');
        expect(warm.spec.kHistory.every((k) => k === 0), what(warm)).toBe(true);
        // the probe schedule's price (see the next test)
        expect(warm.specTokPerSec / warm.baseTokPerSec, what(warm)).toBeGreaterThanOrEqual(0.9);
        // at RTT 0 the cold run waited for the prefill; behind 20 ms it ran during the round trip
        if (rttMs === 0) expect(warm.specTokPerSec, `${what(cold)} / ${what(warm)}`).toBeGreaterThan(cold.specTokPerSec * 1.1);
        else expect(warm.specTokPerSec, `${what(cold)} / ${what(warm)}`).toBeGreaterThanOrEqual(cold.specTokPerSec);
      }
    }
  });

  it('a compute-bound fast target behind a short round trip: the second run streams from round 0 on the first\'s measured stream step; greedy identical', async () => {
    // a step 1.2 ms, a 5-token verify 5.2 ms, a 17-token prefill 17 ms; 10 ms RTT and a 1 ms draft
    // step: a draft round (~15 ms for ~2.5 tokens) loses to streaming (1.2 ms a token), but the
    // open alone bounds a step by the whole prefill, 17 ms, and cannot rule drafting out
    // (a prompt of 5+ tokens: with fewer, prefill / P bounds a step from below no better than the
    // prefill itself, and the hint is held within those bounds)
    const CB = { fixedMs: 0.2, perPositionMs: 1, prefillMs: 17 };
    const long = prompts.filter((p) => p.length >= 5);
    expect(long.length).toBeGreaterThanOrEqual(2);
    for (const [i, prompt] of long.entries()) {
      const cold = await run(prompt, { draftDelayMs: 1, rttMs: 10, cost: CB, maxTokens: 64, pipeline: i % 2 === 1 });
      const what = (r: Run): string => `prompt ${i}: ${r.specTokPerSec.toFixed(1)} vs ${r.baseTokPerSec.toFixed(1)} tok/s, k ${r.spec.kHistory.join(',')}`;
      expect(cold.spec.kHistory[0], what(cold)).toBeGreaterThan(0);
      expect(cold.spec.prior?.streamMs, what(cold)).toBeGreaterThan(1);
      const warm = await run(prompt, { draftDelayMs: 1, rttMs: 10, cost: CB, maxTokens: 64, pipeline: i % 2 === 1, prior: cold.spec.prior });
      expect(warm.spec.tokens, what(warm)).toEqual(warm.baseTokens);
      expect(warm.spec.kHistory[0], what(warm)).toBe(0);
      expect(warm.specTokPerSec, `${what(warm)}; cold ${what(cold)}`).toBeGreaterThan(cold.specTokPerSec);
      // what remains is the probe schedule: the stretch ends where a probe comes due, and the
      // next stretch pays the round trip again (a probe's price, within PROBE_BUDGET)
      expect(warm.specTokPerSec / warm.baseTokPerSec, what(warm)).toBeGreaterThanOrEqual(0.9);
    }
  });

  it('with a fast draft the prior keeps the prefill overlapped with the open, and the run speculates', async () => {
    const cold = await run(prompts[0], { draftDelayMs: 0.5 });
    expect(cold.spec.prior?.streamedShare).toBeLessThan(0.5);
    const warm = await run(prompts[0], { draftDelayMs: 0.5, prior: cold.spec.prior });
    expect(warm.spec.stats.draftPrefill).toBe('overlap');
    expect(warm.spec.tokens).toEqual(warm.baseTokens);
    expect(warm.specTokPerSec / warm.baseTokPerSec).toBeGreaterThan(1.2);
  });

  it('a slow (memory-bound) target and a fast draft: no stream probe; a second run waits for the short prefill instead of streaming round 0 and keeps up with adaptive k without the arm', async () => {
    // a decode step ~285 ms, a 5-token verify ~425 ms (the padded 1B-cost target on this CPU), a 1.7 ms draft step
    const SLOW = { fixedMs: 250, perPositionMs: 35, prefillMs: 600 };
    for (const [i, prompt] of prompts.entries()) {
      const o = { draftDelayMs: 1.7, cost: SLOW, maxTokens: 48, pipeline: i % 2 === 0 };
      const cold = await run(prompt, o);
      const noArm = await run(prompt, { ...o, targetOnlyArm: false });
      // the last run mostly streamed (as a short warm-up can): the next one prefills after the open
      const prior = { ...cold.spec.prior!, streamedShare: 0.9 };
      const warm = await run(prompt, { ...o, prior });
      const what = (r: Run): string => `prompt ${i}: ${r.specTokPerSec.toFixed(2)} vs ${r.baseTokPerSec.toFixed(2)} tok/s, prefill ${r.spec.stats.draftPrefill}, k ${r.spec.kHistory.join(',')}`;
      for (const r of [cold, noArm, warm]) {
        expect(r.spec.tokens, what(r)).toEqual(r.baseTokens);
        expect(r.specTokPerSec / r.baseTokPerSec, what(r)).toBeGreaterThan(1.2);
      }
      // no stretch: a stream probe is not worth its tokens beside a target speculation beats
      // clearly, and round 0 waited for the short prefill instead of streaming while it ran
      for (const r of [cold, warm]) expect(r.spec.stats.streamedTokens, what(r)).toBe(0);
      expect(warm.spec.stats.draftPrefill, what(warm)).toBe(prompt.length < 2 ? 'skipped' : 'after-open');
      // knowing the draft's costs, the arm costs nothing here: within 3% of adaptive k without it
      // (a first run, knowing nothing, starts at k = 2 in case the draft is slow)
      expect(warm.specTokPerSec / noArm.specTokPerSec, `${what(warm)} / no arm ${what(noArm)}`).toBeGreaterThan(0.97);
    }
  });

  it('sampled (T = 0.7): the stretch tokens are the target\'s own samples, so text and stats stay consistent', async () => {
    const params = { temperature: 0.7, topK: 0, topP: 1, seed: 3 };
    const r = await run(prompts[1], { draftDelayMs: 12, params });
    expect(r.spec.tokens).toHaveLength(N);
    expect(r.spec.stats.streamedTokens).toBeGreaterThan(N * 0.5);
    expect(r.spec.stats.targetPasses).toBe(r.spec.stats.rounds + 1 + r.spec.stats.streamedTokens);
    // (the distribution itself is tested with a scripted mix of k = 0 and k > 0 in speculative.stat.test.ts)
  });
});

describe('k = 0 arm: stopping', () => {
  it('an abort during a stretch stops the emitted tokens at once', async () => {
    const clock = new VirtualClock();
    const ac = new AbortController();
    const link = new CostedTarget(new LocalTarget(pair.newTarget(N + 32)), clock, COST);
    const r = await clock.run(() => speculate(new DelayedModel(pair.newDraft(N + 32), 12, clock), link, prompts[0], {
      params: GREEDY, maxTokens: N, adaptive: true, clock, signal: ac.signal,
      onToken: (e) => e.index === 39 && ac.abort(),
    }));
    expect(r.stopReason).toBe('abort');
    // token 40 came from a stretch (the slow draft streams from its second decision on)
    expect(r.provenance[39]).toBe('target');
    expect(r.tokens).toHaveLength(40);
  });
});

describe('KController: the k = 0 decision from injected costs', () => {
  /**
   * A controller that ran 20 decisions against these costs: rounds at the k it chose (k = 1..4
   * forced for the first 8, so the verify table has points), stretches when it chose 0 (each
   * streamed token one decode step verifyMs(0) plus the queue time; the stretch pays the RTT once).
   */
  const fed = (o: { draftMs: number; verifyMs: (k: number) => number; rttMs?: number; queueMs?: number; accept: number; pipeline?: boolean; prefillMs?: number }): KController => {
    const c = new KController(8, 4, !!o.pipeline, true);
    // the prompt's prefill (17 tokens) took one draft step unless told: a GPU-like draft, whose catch-up after a stretch costs about a step
    c.observeCatchUp(o.prefillMs ?? o.draftMs, 17);
    const q = o.queueMs ?? 0;
    const rtt = o.rttMs ?? 0;
    for (let i = 0; i < 20; i++) {
      const chosen = c.choose();
      const k = i < 8 && chosen > 0 ? 1 + (i % 4) : chosen;
      if (k === 0) {
        const n = c.stretchTokens();
        const step = o.verifyMs(0) + q;
        c.observeStretch(n, rtt + n * step, step);
      } else {
        c.observeRound(k, Math.round(o.accept * k), o.verifyMs(k) + rtt + q, o.verifyMs(k), { queueMs: q, batch: 4 });
        c.observeDraft(o.draftMs);
      }
    }
    return c;
  };
  const flat = (k: number): number => 10 + 0.2 * (k + 1);

  it('streams when a draft step costs about a target step, drafts when it is cheap', () => {
    expect(fed({ draftMs: 12, verifyMs: flat, accept: 0.8 }).choose()).toBe(0);
    expect(fed({ draftMs: 0.5, verifyMs: flat, accept: 0.8 }).choose()).toBeGreaterThan(1);
  });

  it('streams when acceptance is poor even with a cheap draft; a compute-bound target (verify linear in k) streams too', () => {
    expect(fed({ draftMs: 4, verifyMs: flat, accept: 0 }).choose()).toBe(0);
    expect(fed({ draftMs: 2, verifyMs: (k) => 10 * (k + 1), accept: 0.8 }).choose()).toBe(0);
  });

  it('server load (queue time per pass) tips a losing draft back to speculating: every stream step queues, a round once per τ tokens', () => {
    const o = { draftMs: 10, verifyMs: flat, accept: 0.8 };
    expect(fed(o).choose()).toBe(0);
    expect(fed({ ...o, queueMs: 30 }).choose()).toBeGreaterThan(0);
  });

  it('round 0 from what open measured: streams first only when that beats even a free draft', () => {
    const first = (o: { rttMs: number; prefillMs: number; promptTokens: number }): { k: number; n: number } => {
      const c = new KController(8, 2, false, true);
      c.observeOpen(o);
      const k = c.choose();
      return { k, n: k === 0 ? c.stretchTokens() : 0 };
    };
    // a fast target behind 50 ms: stream, long enough to pay the round trip back
    expect(first({ rttMs: 50, prefillMs: 3, promptTokens: 17 })).toEqual({ k: 0, n: STRETCH_MAX });
    // no round trip, or a slow (memory-bound) target behind the same 50 ms: draft first, as before
    expect(first({ rttMs: 0, prefillMs: 3, promptTokens: 17 }).k).toBe(2);
    expect(first({ rttMs: 50, prefillMs: 40, promptTokens: 17 }).k).toBe(2);
    // without the arm it never streams
    const noArm = new KController(8, 4, false, false);
    noArm.observeOpen({ rttMs: 50, prefillMs: 3, promptTokens: 17 });
    expect(noArm.choose()).toBe(4);
    // nonsense from a link is ignored
    expect(first({ rttMs: Number.NaN, prefillMs: 3, promptTokens: 17 }).k).toBe(2);
  });

  it('round 0 with an earlier run\'s draft costs: skips the prefill where streaming wins, waits for a short one, streams while a long one runs', () => {
    const at = (prior: DraftPrior, open: { rttMs: number; prefillMs: number; promptTokens: number }): { streamsFirst: boolean; waits: boolean } => {
      const c = new KController(8, 2, false, true);
      c.seedDraft(prior);
      c.observeOpen(open);
      return { streamsFirst: c.streamsFirst(), waits: c.waitsForPrefill(open.promptTokens) };
    };
    // a SwiftShader-like draft (25 ms a step, 110 ms for 5 prompt tokens) beside a fast target (a 6-token prefill in 10 ms)
    expect(at({ draftMs: 25, catchUps: [[5, 110]], streamedShare: 1 }, { rttMs: 1, prefillMs: 10, promptTokens: 6 }).streamsFirst).toBe(true);
    // a fast CPU draft beside a slow target (600 ms for 12 tokens): wait ~10 ms, then draft
    expect(at({ draftMs: 1.7, catchUps: [[11, 8]], streamedShare: 1 }, { rttMs: 0, prefillMs: 600, promptTokens: 12 })).toEqual({ streamsFirst: false, waits: true });
    // a draft step of 12 ms beside a 20 ms prefill of 8 tokens: waiting ~36 ms would cost more than streaming meanwhile
    expect(at({ draftMs: 12, catchUps: [[7, 12]], streamedShare: 1 }, { rttMs: 0, prefillMs: 20, promptTokens: 8 })).toEqual({ streamsFirst: false, waits: false });
    // an earlier run's stream step: a compute-bound target (a 6-token prefill in 12 ms, a step
    // ~2.3 ms) behind 10 ms streams first; the open's bounds alone (a step up to 12 ms) draft
    const cpuDraft = { draftMs: 1.5, catchUps: [[5, 7]] as [number, number][], streamedShare: 0.9 };
    const cbOpen = { rttMs: 10, prefillMs: 12, promptTokens: 6 };
    expect(at(cpuDraft, cbOpen).streamsFirst).toBe(false);
    expect(at({ ...cpuDraft, streamMs: 2.3 }, cbOpen).streamsFirst).toBe(true);
    // held within this open's bounds: a step from a slow gateway cannot exceed this prefill, and
    // a slow (memory-bound) target with a fast draft still drafts first
    expect(at({ ...cpuDraft, streamMs: 500 }, cbOpen).streamsFirst).toBe(false);
    expect(at({ ...cpuDraft, streamMs: 430 }, { rttMs: 10, prefillMs: 600, promptTokens: 12 }).streamsFirst).toBe(false);
    // nothing known of the draft: no wait (the prefill's cost is unknown)
    const bare = new KController(8, 2, false, true);
    bare.observeOpen({ rttMs: 0, prefillMs: 600, promptTokens: 12 });
    expect(bare.waitsForPrefill(12)).toBe(false);
  });

  it('a fast target behind 10 ms, streaming from round 0: the first stretch is not cut short for a probe priced on the step\'s upper bound', () => {
    // the in-process tiny pair as measured here: a 10-token prefill in 11 ms (a step between
    // 1.1 and 11 ms; streamed, ~2 ms), a CPU draft at 0.46 ms a step. Priced at 11 ms a streamed
    // token, a probe's 2.5 expected tokens looked worth more than its round trip, so probes came
    // every STRETCH_MIN tokens and a 48-token generation paid a second stretch's round trip
    const c = new KController(8, 2, false, true);
    c.seedDraft({ draftMs: 0.46, catchUps: [[9, 2.08]], streamedShare: 0.98, streamMs: 2 });
    c.observeOpen({ rttMs: 10, prefillMs: 11, promptTokens: 10 });
    expect(c.choose()).toBe(0);
    expect(c.stretchTokens()).toBeGreaterThanOrEqual(48);
    // a slow (memory-bound) target behind the same round trip and a cheap draft still probes
    // early: the stretch is the shortest
    const slow = new KController(8, 2, false, true);
    slow.observeDraft(0.46);
    slow.observeOpen({ rttMs: 10, prefillMs: 400, promptTokens: 10 });
    expect(slow.choose(false)).toBe(0);
    expect(slow.stretchTokens()).toBe(STRETCH_MIN);
  });

  it('prices a catch-up from the draft\'s own forwards: a line through its prefill, catch-ups and steps', () => {
    const cpu = new KController(8, 2, false, true);
    cpu.observeCatchUp(12, 12); // a 12-token prefill in 12 ms
    expect(cpu.catchUpTime(100)).toBeCloseTo(100, 9); // one point: in proportion
    cpu.observeDraft(1.5); // a step (n = 1) in 1.5 ms: the line through (1, 1.5) and (12, 12)
    expect(cpu.catchUpTime(100)).toBeCloseTo(1.5 + (99 * 10.5) / 11, 9);
    const gpu = new KController(8, 2, false, true);
    gpu.observeCatchUp(10, 40);
    gpu.observeDraft(10);
    gpu.observeCatchUp(10.5, 150);
    gpu.observeCatchUp(9.5, 90);
    // about a step whatever n (the least-squares slope through these points is 0.0025 ms a token)
    expect(gpu.catchUpTime(500)).toBeGreaterThan(9.5);
    expect(gpu.catchUpTime(500)).toBeLessThan(12);
    // the fit itself (a, b >= 0): a falling line is flat at the mean; one below the origin goes through it
    expect(fitLine([[1, 4], [3, 2]], 'half')).toEqual({ a: 3, b: 0 });
    expect(fitLine([[2, 1], [4, 5]], 'half')).toEqual({ a: 0, b: 22 / 20 });
    expect(fitLine([[2, 6]], 'half')).toEqual({ a: 3, b: 1.5 });
    // nonsense is ignored
    gpu.observeCatchUp(Number.NaN, 3);
    gpu.observeCatchUp(5, 0);
    expect(gpu.catchUpTime(500)).toBeLessThan(12);
  });

  it('puts probes off to PROBE_MAX streamed tokens when catching up costs more per token than the probe budget', () => {
    // a CPU-like draft: its 17-token prefill took 17 steps; catching up on P tokens costs ~P steps, > PROBE_BUDGET of streaming them
    const c = fed({ draftMs: 12, verifyMs: flat, accept: 0.8, prefillMs: 17 * 12 });
    const s = c.streamStepTime();
    expect(c.catchUpTime(1) - c.catchUpTime(0)).toBeGreaterThan(PROBE_BUDGET * s);
    let streamed = 0;
    let probeAt = -1;
    for (let i = 0; i < 2000 && probeAt < 0; i++) {
      const k = c.choose();
      if (k > 0) probeAt = streamed;
      else {
        const n = c.stretchTokens();
        c.observeStretch(n, n * s, s);
        streamed += n;
      }
    }
    expect(probeAt).toBeGreaterThanOrEqual(PROBE_MAX - STRETCH_MAX);
    expect(probeAt).toBeLessThanOrEqual(PROBE_MAX + STRETCH_MAX);
  });

  it('keeps probing while streaming, within the probe budget, and returns to drafting when the draft gets fast', () => {
    const c = fed({ draftMs: 12, verifyMs: flat, accept: 0.8 });
    const s = c.streamStepTime();
    // count the streamed tokens between two probes (the first one may come early: fed() already streamed)
    let streamed = 0;
    let probes = 0;
    let probeAt = -1;
    let probeK = 0;
    for (let i = 0; i < 400 && probeAt < 0; i++) {
      const k = c.choose();
      if (k > 0 && probes++ === 0) {
        c.observeRound(k, Math.round(0.8 * k), flat(k), flat(k));
        c.observeDraft(12);
        streamed = 0;
      } else if (k > 0) {
        probeAt = streamed;
        probeK = k;
      }
      else {
        const n = c.stretchTokens();
        c.observeStretch(n, n * s, s);
        streamed += n;
      }
    }
    expect(probeAt).toBeGreaterThan(0);
    // the probe (at the best k, at most 2) has an expected loss (its round + the draft catching up,
    // one 12 ms step − what streaming gives in that time) of at most the budget share of the streaming before it
    expect(probeK).toBe(Math.min(c.best(), 2));
    const loss = c.roundTime(probeK) + 12 + c.stretchFixedTime() - c.expectedTokens(probeK) * s;
    expect(loss).toBeGreaterThan(0);
    expect(loss).toBeLessThanOrEqual(PROBE_BUDGET * probeAt * s);
    // and the probe is not put off much longer than that (one stretch at most)
    expect(probeAt * s * PROBE_BUDGET).toBeLessThan(loss + STRETCH_MAX * s * PROBE_BUDGET);
    // the probe finds a fast draft: drafting resumes
    for (let i = 0; i < 6; i++) c.observeDraft(0.3);
    c.observeRound(2, 2, flat(2), flat(2));
    expect(c.choose()).toBeGreaterThan(0);
  });
});
