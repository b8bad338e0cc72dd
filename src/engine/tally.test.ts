// SpecTally: rounds and whole runs add up, and the ratios are the counts' own (hand-computed).
import { describe, expect, it } from 'vitest';
import { SpecTally } from './tally.ts';

describe('SpecTally', () => {
  it('sums rounds and runs; ratios from the sums; empty tallies give 0, not NaN', () => {
    const t = new SpecTally();
    expect([t.acceptanceRate, t.meanAcceptedPerRound, t.tokensPerTargetPass, t.meanKPerRound, t.verifyMsPerPass, t.draftMsPerToken, t.tokPerSec]).toEqual([0, 0, 0, 0, 0, 0, 0]);
    t.round(4, 3, 10);
    t.round(2, 0, 6);
    t.add({ tokens: 7, targetPasses: 3, wallMs: 500, draftMs: 12, draftTokens: 6 });
    t.add({ tokens: 5, targetPasses: 2, rounds: 1, drafted: 4, accepted: 4, kSum: 4, verifyMs: 8 });
    expect([t.tokens, t.targetPasses, t.rounds, t.drafted, t.accepted, t.kSum, t.verifyMs]).toEqual([12, 5, 3, 10, 7, 10, 24]);
    expect(t.acceptanceRate).toBe(7 / 10);
    expect(t.meanAcceptedPerRound).toBe(7 / 3);
    expect(t.tokensPerTargetPass).toBe(12 / 5);
    expect(t.meanKPerRound).toBe(10 / 3);
    expect(t.verifyMsPerPass).toBe(8);
    expect(t.draftMsPerToken).toBe(2);
    expect(t.tokPerSec).toBe(24);
  });
});
