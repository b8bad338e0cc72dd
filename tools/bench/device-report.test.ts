// The device report's speed-of-light figures, on hand-computed reports.
import { describe, expect, it } from 'vitest';
import { decodeTokPerSec, speedOfLight } from './device-report.ts';

describe('device report: speed of light', () => {
  // 11 rounds of k ≈ 5.9 at a 523 ms pass and a 2.34 ms draft step, 3.27 accepted a round; 48 tokens
  const run = { rounds: 11, streamedTokens: 0, meanAcceptedPerRound: 3.27, verifyMsPerPass: 523.11, meanK: 5.91, draftMsPerToken: 2.34 };

  it('is τ ÷ (pass + k draft steps + RTT), and undefined where k = 0 stretches mix in', () => {
    const ms = 523.11 + 5.91 * 2.34;
    expect(speedOfLight(run, 0)).toBeCloseTo((1000 * 4.27) / ms, 9);
    expect(speedOfLight(run, 20)).toBeCloseTo((1000 * 4.27) / (ms + 20), 9);
    expect(speedOfLight({ ...run, streamedTokens: 8 }, 0)).toBeNull();
    expect(speedOfLight({ ...run, rounds: 0 }, 0)).toBeNull();
  });

  it('compares with the decode-phase rate: (n − 1) tokens over the time after the first', () => {
    const tokens = Array.from({ length: 48 }, (_, i) => i);
    expect(decodeTokPerSec({ tokens, wallMs: 6673.08, ttftMs: 723.78 })).toBeCloseTo((47 * 1000) / (6673.08 - 723.78), 9);
    // the wall rate of the same run is ~11 % lower: its time includes the prompt's prefill
    expect((48 * 1000) / 6673.08 / decodeTokPerSec({ tokens, wallMs: 6673.08, ttftMs: 723.78 })!).toBeLessThan(0.92);
    expect(decodeTokPerSec({ tokens: [1], wallMs: 10, ttftMs: 5 })).toBeNull();
    expect(decodeTokPerSec({ tokens, wallMs: 5, ttftMs: 5 })).toBeNull();
  });
});
