// Pearson's chi-square goodness-of-fit test, for the statistical exactness tests of the
// sampler and of speculative sampling. p-value = Q(df/2, x/2), the regularized upper incomplete
// gamma function (series / Lentz continued fraction as in Numerical Recipes §6.2).

/** ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9; ~1e-15 relative). */
export function lnGamma(x: number): number {
  const c = [0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
    12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7];
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - lnGamma(1 - x);
  x -= 1;
  let a = c[0];
  const t = x + 7.5;
  for (let i = 1; i < 9; i++) a += c[i] / (x + i);
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(a);
}

/** Regularized upper incomplete gamma Q(a, x). */
export function gammaQ(a: number, x: number): number {
  if (x <= 0) return 1;
  const lnPre = a * Math.log(x) - x - lnGamma(a);
  if (x < a + 1) {
    // series for P(a, x)
    let sum = 1 / a;
    let term = sum;
    for (let n = 1; n < 10_000; n++) {
      term *= x / (a + n);
      sum += term;
      if (Math.abs(term) < Math.abs(sum) * 1e-15) break;
    }
    return 1 - sum * Math.exp(lnPre);
  }
  // continued fraction for Q(a, x)
  const tiny = 1e-300;
  let b = x + 1 - a;
  let c = 1 / tiny;
  let d = 1 / b;
  let h = d;
  for (let i = 1; i < 10_000; i++) {
    const an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (Math.abs(d) < tiny) d = tiny;
    c = b + an / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const del = d * c;
    h *= del;
    if (Math.abs(del - 1) < 1e-15) break;
  }
  return Math.exp(lnPre) * h;
}

/** Survival function of the chi-square distribution with df degrees of freedom. */
export function chiSquareSf(x: number, df: number): number {
  return gammaQ(df / 2, x / 2);
}

/** p-value of observed counts against expected counts (same order, same total); df = bins − 1. */
export function chiSquarePValue(observed: readonly number[], expected: readonly number[]): number {
  if (observed.length !== expected.length || observed.length < 2) throw new RangeError('chiSquarePValue: need >= 2 bins of equal length');
  let x = 0;
  for (let i = 0; i < observed.length; i++) x += (observed[i] - expected[i]) ** 2 / expected[i];
  return chiSquareSf(x, observed.length - 1);
}

/**
 * Goodness of fit of sampled tokens (counts by id) to a distribution (probs by id): bins with
 * an expected count below minExpected are pooled into one, as the chi-square approximation
 * needs; a token seen that the distribution gives probability 0 makes the p-value 0.
 */
export function chiSquareFit(counts: ReadonlyMap<number, number>, probs: ReadonlyMap<number, number>, minExpected = 5): { pValue: number; stat: number; df: number; bins: number } {
  let n = 0;
  for (const c of counts.values()) n += c;
  for (const [id, c] of counts) if (c > 0 && !((probs.get(id) ?? 0) > 0)) return { pValue: 0, stat: Infinity, df: 0, bins: 0 };
  const obs: number[] = [];
  const exp: number[] = [];
  let poolObs = 0;
  let poolExp = 0;
  for (const [id, p] of probs) {
    const e = p * n;
    const o = counts.get(id) ?? 0;
    if (e < minExpected) {
      poolObs += o;
      poolExp += e;
    } else {
      obs.push(o);
      exp.push(e);
    }
  }
  if (poolExp > 0) {
    obs.push(poolObs);
    exp.push(poolExp);
  }
  if (obs.length < 2) return { pValue: 1, stat: 0, df: 0, bins: obs.length };
  let stat = 0;
  for (let i = 0; i < obs.length; i++) stat += (obs[i] - exp[i]) ** 2 / exp[i];
  return { pValue: chiSquareSf(stat, obs.length - 1), stat, df: obs.length - 1, bins: obs.length };
}
