// Tests of the shared sampler: the RNG against published xoshiro128** outputs, the processed
// distribution against a plain sort-everything oracle, and sampling frequencies by chi-square.

import { describe, expect, it } from 'vitest';
import { Rng, SamplingParamsError, argmax, processedDist, rankByLogit, sample, validateSampling, type SamplingParams, type SparseDist } from './sampling.ts';
import { mulberry32 } from './weights.ts';
import { chiSquarePValue } from './stats.ts';

const params = (temperature: number, topK = 0, topP = 1, seed = 0): SamplingParams => ({ temperature, topK, topP, seed });

/** Oracle: sort every token with a comparator, softmax in f64, cut, renormalize. */
function oracleDist(row: Float32Array, p: SamplingParams): { ids: number[]; probs: number[] } {
  const ids = [...row.keys()].sort((a, b) => row[b] - row[a] || a - b);
  const max = row[ids[0]];
  const w = ids.map((i) => Math.exp((row[i] - max) / p.temperature));
  const z = w.reduce((a, b) => a + b, 0);
  let probs = w.map((x) => x / z);
  let n = p.topK > 0 ? Math.min(p.topK, ids.length) : ids.length;
  if (p.topP < 1) {
    let cum = 0;
    let m = 0;
    while (m < n && cum < p.topP) cum += probs[m++];
    n = m;
  }
  probs = probs.slice(0, n);
  const s = probs.reduce((a, b) => a + b, 0);
  return { ids: ids.slice(0, n), probs: probs.map((x) => x / s) };
}

function randomRow(vocab: number, seed: number, ties: boolean): Float32Array {
  const r = mulberry32(seed);
  // with ties: logits on a coarse grid so many tokens share a value
  return Float32Array.from({ length: vocab }, () => (ties ? Math.round(r() * 8) / 2 : (r() * 2 - 1) * 6));
}

describe('Rng', () => {
  it('xoshiro128** core matches the published outputs for state (1, 2, 3, 4)', () => {
    const rng = new Rng(0);
    rng.setState([1, 2, 3, 4]);
    // rand_xoshiro's reference vector (Blackman & Vigna's C code gives the same)
    const want = [11520, 0, 5927040, 70819200, 2031721883, 1637235492, 1287239034, 3734860849, 3729100597, 4258142804];
    expect(want.map(() => rng.nextU32())).toEqual(want);
  });

  it('seeds by splitmix32 as documented (values from an independent Python implementation)', () => {
    const cases: [number, number, number[]][] = [
      [0, 0, [3809008728, 1133695204, 53579671, 2891528803, 139681546]],
      [42, 1, [3704290710, 166753127, 957952423, 1464233848, 469586928]],
      [123456789, 2, [3006757398, 579733234, 1864695990, 3535141515, 2641886470]],
    ];
    for (const [seed, stream, want] of cases) {
      const rng = new Rng(seed, stream);
      expect(want.map(() => rng.nextU32()), `seed ${seed} stream ${stream}`).toEqual(want);
    }
  });

  it('uniform() is in [0, 1), looks uniform, and streams differ', () => {
    const rng = new Rng(7, 1);
    const bins = new Array(20).fill(0);
    const n = 200_000;
    let outside = 0;
    for (let i = 0; i < n; i++) {
      const u = rng.uniform();
      if (!(u >= 0 && u < 1)) outside++;
      else bins[Math.floor(u * 20)]++;
    }
    expect(outside).toBe(0);
    const pv = chiSquarePValue(bins, new Array(20).fill(n / 20));
    expect(pv).toBeGreaterThan(0.001);
    const a = new Rng(7, 1).nextU32();
    const b = new Rng(7, 2).nextU32();
    expect(a).not.toBe(b);
  });

  it('state round-trips and rejects bad state', () => {
    const a = new Rng(99, 2);
    a.uniform();
    const b = new Rng(0);
    b.setState(a.getState());
    expect(b.uniform()).toBe(a.uniform());
    expect(() => b.setState([0, 0, 0, 0])).toThrow(RangeError);
    expect(() => b.setState([1, 2, 3])).toThrow(RangeError);
  });
});

describe('processedDist', () => {
  const vocabs = [1, 2, 7, 97, 1031];
  const settings: SamplingParams[] = [
    params(1), params(0.7), params(1.3, 5), params(0.8, 0, 0.9), params(1, 40, 0.95), params(0.5, 1), params(2, 3, 0.5), params(1, 0, 0.01),
  ];

  it('matches the sort-everything oracle (ids exactly, probs within 1e-6)', () => {
    let cases = 0;
    for (const vocab of vocabs) {
      for (const ties of [false, true]) {
        for (const p of settings) {
          const row = randomRow(vocab, vocab * 31 + (ties ? 1 : 0), ties);
          const got = processedDist(row, p);
          const want = oracleDist(row, p);
          const where = `vocab ${vocab} ties ${ties} ${JSON.stringify(p)}`;
          expect([...got.ids], where).toEqual(want.ids);
          let maxErr = 0;
          for (let i = 0; i < want.probs.length; i++) maxErr = Math.max(maxErr, Math.abs(got.probs[i] - want.probs[i]));
          expect(maxErr, where).toBeLessThan(1e-6);
          cases++;
        }
      }
    }
    expect(cases).toBe(vocabs.length * 2 * settings.length);
  });

  it('top-p on a large vocabulary (nucleus inside and beyond the first 256 ranked) matches the oracle', () => {
    const vocab = 5003;
    for (const [spread, topP] of [[12, 0.9], [0.5, 0.9], [0.5, 0.3], [3, 0.999]] as const) {
      const r = mulberry32(vocab + topP * 1000);
      const row = Float32Array.from({ length: vocab }, () => (r() * 2 - 1) * spread);
      const p = params(1, 0, topP);
      const got = processedDist(row, p);
      const want = oracleDist(row, p);
      expect([...got.ids], `spread ${spread} topP ${topP}`).toEqual(want.ids);
      expect(Math.max(...want.probs.map((x, i) => Math.abs(x - got.probs[i])))).toBeLessThan(1e-6);
    }
  });

  it('reads a row at an offset inside a (positions, vocab) block', () => {
    const vocab = 13;
    const block = randomRow(3 * vocab, 5, false);
    const row1 = block.slice(vocab, 2 * vocab);
    expect([...processedDist(block, params(0.9, 4), vocab, vocab).ids]).toEqual([...processedDist(row1, params(0.9, 4)).ids]);
  });

  it('temperature 0 is a point mass on the argmax, lowest id on ties', () => {
    const row = Float32Array.from([1, 3, 2, 3, -1]);
    const d = processedDist(row, params(0));
    expect([...d.ids]).toEqual([1]);
    expect([...d.probs]).toEqual([1]);
    expect(argmax(row)).toBe(1);
    expect(argmax(Float32Array.from([NaN, -Infinity, -5]))).toBe(2);
  });

  it('ranks ties by id and the bounded selection agrees with the full sort', () => {
    const row = randomRow(1031, 77, true);
    const full = rankByLogit(row, 0, row.length);
    for (const limit of [1, 2, 17, 100, 500]) {
      expect([...rankByLogit(row, 0, row.length, limit)], `limit ${limit}`).toEqual([...full.slice(0, limit)]);
    }
    for (let i = 1; i < full.length; i++) {
      const a = row[full[i - 1]];
      const b = row[full[i]];
      expect(a > b || (a === b && full[i - 1] < full[i])).toBe(true);
    }
  });
});

describe('sample', () => {
  it('draws with the given frequencies (chi-square, p > 0.001)', () => {
    const dist: SparseDist = { ids: Int32Array.from([4, 9, 2, 7]), probs: Float32Array.from([0.5, 0.25, 0.15, 0.1]) };
    const rng = new Rng(2024, 1);
    const n = 50_000;
    const counts = new Map<number, number>();
    for (let i = 0; i < n; i++) {
      const t = sample(dist, rng);
      counts.set(t, (counts.get(t) ?? 0) + 1);
    }
    expect([...counts.keys()].sort((a, b) => a - b)).toEqual([2, 4, 7, 9]);
    const observed = [...dist.ids].map((id) => counts.get(id) ?? 0);
    const expected = [...dist.probs].map((p) => p * n);
    expect(chiSquarePValue(observed, expected)).toBeGreaterThan(0.001);
  });

  it('is reproducible from the seed', () => {
    const dist = processedDist(randomRow(97, 3, false), params(1));
    const draw = (seed: number) => {
      const rng = new Rng(seed, 1);
      return Array.from({ length: 50 }, () => sample(dist, rng));
    };
    expect(draw(11)).toEqual(draw(11));
    expect(draw(11)).not.toEqual(draw(12));
  });
});

describe('validateSampling', () => {
  it('accepts good params and names the bad field', () => {
    expect(() => validateSampling(params(0.7, 40, 0.9, 3))).not.toThrow();
    expect(() => validateSampling(params(-1))).toThrow(/temperature/);
    expect(() => validateSampling(params(1, 1.5))).toThrow(/topK/);
    expect(() => validateSampling(params(1, 0, 0))).toThrow(/topP/);
    expect(() => validateSampling(params(1, 0, 1, -2))).toThrow(SamplingParamsError);
  });
});
