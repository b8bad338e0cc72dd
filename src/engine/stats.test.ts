// Chi-square survival function against torch.special.gammaincc (values computed offline).
import { describe, expect, it } from 'vitest';
import { chiSquareFit, chiSquareSf, lnGamma } from './stats.ts';

describe('chi-square', () => {
  it('matches torch.special.gammaincc(df/2, x/2) to 1e-8 relative', () => {
    const cases: [number, number, number][] = [
      [3.841458820694124, 1, 0.04999999999999994],
      [18.307038053275146, 10, 0.050000000000000024],
      [6.6348966010212145, 1, 0.009999999999999995],
      [100, 80, 0.06457036901551728],
      [0.5, 3, 0.9188914116546758],
      [250, 200, 0.009379131680740276],
      [30, 2, 3.0590232050182594e-07],
    ];
    for (const [x, df, want] of cases) expect(Math.abs(chiSquareSf(x, df) / want - 1), `x ${x} df ${df}`).toBeLessThan(1e-8);
    expect(Math.abs(lnGamma(5) - Math.log(24))).toBeLessThan(1e-12);
  });

  it('pools small bins and fails on a token outside the support', () => {
    const probs = new Map([[0, 0.5], [1, 0.3], [2, 0.19], [3, 0.01]]);
    const good = chiSquareFit(new Map([[0, 502], [1, 298], [2, 190], [3, 10]]), probs);
    expect(good.pValue).toBeGreaterThan(0.5);
    const bad = chiSquareFit(new Map([[0, 300], [1, 500], [2, 190], [3, 10]]), probs);
    expect(bad.pValue).toBeLessThan(1e-6);
    expect(chiSquareFit(new Map([[0, 10], [9, 1]]), probs).pValue).toBe(0);
    expect(chiSquareFit(new Map([[0, 5], [1, 3], [2, 2]]), probs).bins).toBeLessThan(4);
  });
});
