// `duet speculate` end to end through the CLI entry (main): random-weight target and a noisy
// draft written to disk with a small byte-level BPE tokenizer. Oracle: greedy decoding that
// recomputes the whole sequence on a fresh CpuLlama each step. Covers the local target, the
// gateway path (H6's in-process gateway + client), --rtt-ms/--pipeline/--adaptive, the JSON
// keys of issue 4 item 6, and typed refusals (tokenizer mismatch, bad flags).

import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { syntheticConfig } from '../engine/config.ts';
import { CpuLlama } from '../engine/reference.ts';
import { randomWeights, type LlamaWeights } from '../engine/weights.ts';
import { greedyOracle } from '../engine/spec-fixtures.ts';
import { writeModelDir } from '../../tools/fixtures/safetensors-writer.ts';
import { byteBpeTokenizer } from '../../tools/fixtures/byte-bpe.ts';
import { main } from './main.ts';

const bpe = byteBpeTokenizer();
const cfg = syntheticConfig('tiny', { hiddenSize: 32, numHeads: 4, numKvHeads: 2, headDim: 8, intermediateSize: 53, numLayers: 2, vocabSize: bpe.vocabSize, bosTokenId: bpe.bosId, eosTokenIds: [bpe.eosId] });
const targetW = randomWeights(cfg, 31);
let root: string;
let targetDir: string;
let draftDir: string;
let otherTokDir: string;

/** The target plus small multiplicative noise: a correlated, imperfect draft. */
function noisy(w: LlamaWeights, noise: number): LlamaWeights {
  let s = 12345;
  const rand = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32);
  const p = (a: Float32Array) => a.map((x) => x * (1 + noise * (rand() * 2 - 1)));
  return { embed: p(w.embed), finalNorm: p(w.finalNorm), lmHead: w.lmHead && p(w.lmHead), layers: w.layers.map((l) => Object.fromEntries(Object.entries(l).map(([k, v]) => [k, p(v)])) as unknown as typeof l) };
}

async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const l = vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void (out += a.join(' ') + '\n'));
  const e = vi.spyOn(console, 'error').mockImplementation((...a: unknown[]) => void (err += a.join(' ') + '\n'));
  try {
    return { code: await main(args), out, err };
  } finally {
    l.mockRestore();
    e.mockRestore();
  }
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'duet-spec-'));
  targetDir = join(root, 'target');
  draftDir = join(root, 'draft');
  otherTokDir = join(root, 'other');
  await writeModelDir(targetDir, cfg, targetW, 'F32');
  await writeModelDir(draftDir, cfg, noisy(targetW, 0.05), 'F32');
  await writeModelDir(otherTokDir, cfg, targetW, 'F32');
  for (const d of [targetDir, draftDir]) {
    await writeFile(join(d, 'tokenizer.json'), JSON.stringify(bpe.tokenizerJson));
    await writeFile(join(d, 'tokenizer_config.json'), JSON.stringify(bpe.tokenizerConfig));
  }
  // same vocabulary size, different merges: a different tokenizer
  const other = byteBpeTokenizer(['Ġ a', 'i n']);
  await writeFile(join(otherTokDir, 'tokenizer.json'), JSON.stringify(other.tokenizerJson));
  await writeFile(join(otherTokDir, 'tokenizer_config.json'), JSON.stringify(other.tokenizerConfig));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

const prompt = [bpe.bosId, 72, 101, 108];
const KEYS = ['text', 'tokens', 'acceptanceRate', 'meanAcceptedPerRound', 'tokensPerTargetPass', 'targetPasses', 'draftMsPerToken', 'verifyMsPerPass', 'roundMs', 'wallMs', 'tokPerSec'];

function untilEos(tokens: number[]): number[] {
  const i = tokens.indexOf(bpe.eosId);
  return i < 0 ? tokens : tokens.slice(0, i + 1);
}

describe('duet speculate', () => {
  it('local target, greedy: equals the no-cache oracle; --baseline gives speedup and identical', async () => {
    const want = untilEos(greedyOracle(new CpuLlama(cfg, targetW, 64), prompt, 20));
    for (const extra of [['--k', '3'], ['--adaptive', '--pipeline', '--rtt-ms', '4']]) {
      const r = await cli(['speculate', '--draft', draftDir, '--target', targetDir, '--tokens', prompt.join(','), '--max-tokens', '20', '--baseline', '--json', ...extra]);
      expect(r.code, r.err).toBe(0);
      const j = JSON.parse(r.out);
      for (const key of KEYS) expect(j, `key ${key}`).toHaveProperty(key);
      expect(j.tokens, extra.join(' ')).toEqual(want);
      expect(j.baseline.tokens).toEqual(want);
      expect(j.identical).toBe(true);
      expect(j.speedup).toBeGreaterThan(0);
      expect(j.baseline.targetPasses).toBe(want.length);
      expect(j.targetPasses).toBeLessThanOrEqual(want.length);
      expect(j.settings.rttMs).toBe(extra.includes('--rtt-ms') ? 4 : 0);
    }
  });

  it('--repeats N: warm-up, N runs of each mode in alternating order, medians of each', async () => {
    const want = untilEos(greedyOracle(new CpuLlama(cfg, targetW, 64), prompt, 12));
    const r = await cli(['speculate', '--draft', draftDir, '--target', targetDir, '--tokens', prompt.join(','), '--max-tokens', '12', '--baseline', '--repeats', '3', '--json']);
    expect(r.code, r.err).toBe(0);
    const j = JSON.parse(r.out);
    expect(j.tokens).toEqual(want);
    expect(j.identical).toBe(true); // every one of the 6 runs
    expect(j.repeats.n).toBe(3);
    for (const mode of ['speculative', 'baseline']) {
      expect(j.repeats[mode].tokPerSec).toHaveLength(3);
      expect(j.repeats[mode].ttftMs).toHaveLength(3);
    }
    const med = (xs: number[]) => [...xs].sort((x, y) => x - y)[1];
    expect(j.repeats.median.specTokPerSec).toBe(med(j.repeats.speculative.tokPerSec));
    expect(j.repeats.median.baseTtftMs).toBe(med(j.repeats.baseline.ttftMs));
    expect(j.repeats.speedup).toBeCloseTo(j.repeats.median.specTokPerSec / j.repeats.median.baseTokPerSec, 3);
    const bad = await cli(['speculate', '--draft', draftDir, '--target', targetDir, '--tokens', prompt.join(','), '--repeats', '2']);
    expect(bad.code).not.toBe(0);
    expect(bad.err).toMatch(/--repeats .*needs --baseline/);
  });

  it('through a gateway (cpu verifier): same greedy output', async () => {
    const { startGateway } = await import('../../server/gateway.ts');
    const { createCpuVerifier } = await import('../../server/verifiers/cpu.ts');
    const { tokenizerHash } = await import('../engine/tokenizer.ts');
    const verifier = createCpuVerifier({ config: cfg, weights: targetW, model: 'target', tokenizerHash: await tokenizerHash(bpe.tokenizerJson), maxContext: 64 });
    const gw = await startGateway({ verifier, ownsVerifier: true });
    try {
      const want = untilEos(greedyOracle(new CpuLlama(cfg, targetW, 64), prompt, 16));
      const r = await cli(['speculate', '--draft', draftDir, '--gateway', gw.wsUrl, '--tokens', prompt.join(','), '--max-tokens', '16', '--k', '2', '--baseline', '--json']);
      expect(r.code, r.err).toBe(0);
      const j = JSON.parse(r.out);
      expect(j.tokens).toEqual(want);
      expect(j.identical).toBe(true);
      const big = await cli(['speculate', '--draft', draftDir, '--gateway', gw.wsUrl, '--tokens', prompt.join(','), '--k', String(gw.info.maxBlock + 1)]);
      expect(big.code).toBe(1);
      expect(big.err).toMatch(/at most \d+ draft tokens per verify/);
    } finally {
      await gw.close();
    }
  });

  it('sampled run: reproducible from --seed; the stats are the counts\' own ratios', async () => {
    const args = ['speculate', '--draft', draftDir, '--target', targetDir, '--prompt', 'hello world', '--max-tokens', '12', '--temperature', '0.8', '--top-k', '20', '--seed', '7', '--json'];
    const a = JSON.parse((await cli(args)).out);
    const b = JSON.parse((await cli(args)).out);
    expect(a.tokens).toEqual(b.tokens);
    expect(typeof a.text).toBe('string');
    // fixed k: every round is a verify of k drafted tokens (no k = 0 stretches)
    const kHistory = a.kHistory as number[];
    expect(kHistory.length).toBe(a.rounds);
    expect(kHistory.every((k) => k === kHistory[0])).toBe(true);
    const drafted = kHistory.reduce((x, y) => x + y, 0);
    // accepted draft tokens, recovered exactly from the mean per round (rounded to 0.01, rounds < 50)
    const accepted = Math.round(a.meanAcceptedPerRound * a.rounds);
    expect(drafted).toBeGreaterThan(0);
    expect(a.acceptanceRate).toBe(Math.round((accepted / drafted) * 10000) / 10000);
    expect(a.tokensPerTargetPass).toBe(Math.round((a.tokens.length / a.targetPasses) * 100) / 100);
    // one target pass for the prefill and one per verify round
    expect(a.targetPasses).toBe(1 + a.rounds);
    // every token has one provenance: the first is the target's, then each round's accepted drafts and its correction or bonus
    const prov = a.provenance as Record<string, number>;
    expect(prov.draft + prov.correction + prov.bonus + prov.target).toBe(a.tokens.length);
    expect(prov.target).toBe(1);
    expect(prov.draft).toBeLessThanOrEqual(accepted);
  });

  it('refuses a tokenizer mismatch and bad flags with a typed message', async () => {
    const m = await cli(['speculate', '--draft', draftDir, '--target', otherTokDir, '--tokens', '1,2', '--json']);
    expect(m.code).toBe(1);
    expect(m.err).toMatch(/TokenizerMismatchError/);
    const u = await cli(['speculate', '--draft', draftDir, '--tokens', '1,2']);
    expect(u.code).toBe(1);
    expect(u.err).toMatch(/--target DIR or --gateway URL/);
    const k = await cli(['speculate', '--draft', draftDir, '--target', targetDir, '--tokens', '1,2', '--k', '0']);
    expect(k.err).toMatch(/--k 0/);
    const both = await cli(['speculate', '--draft', draftDir, '--target', targetDir, '--tokens', '1,2', '--k', '2', '--adaptive']);
    expect(both.err).toMatch(/exclude each other/);
  });
});
