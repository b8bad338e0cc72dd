// `duet bench all`: a --quick smoke run through the CLI (the suite runs, results.json is well
// formed, report.md references every figure and each figure is an SVG), plus the report's
// pure parts against independent hand computations: crossover text, the projection formula,
// the README marker rewrite, and the reference report's quoted figures against its text.
// Asserts no speed.

import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AllResults } from './schema.ts';
import { MARK_END, MARK_START, REFERENCE, crossover, expectedTokensPerPass, figures, projectTokPerSec, renderReport, updateReadme } from './report.ts';

const machine = { cpu: 'Test CPU', cores: 2, memBytes: 2 ** 33, node: 'v20', platform: 'linux-x64', loadavgStart: 1, loadavgEnd: 1, commit: 'abc1234', models: { start: { a: '1' }, end: { a: '1' } } };

/** A results object with every section failed or skipped: the report must still reference every figure. */
function emptyResults(): AllResults {
  return {
    schema: 'duet-bench-all/1', date: '2026-01-01T00:00:00.000Z', quick: true, machine,
    adapters: { webgpu: null, spec: 'cpu', capacity: 'cpu verifier', browser: null }, config: { rttMs: [0, 50], sessions: [1], capacitySeconds: 1, capacityMaxTokens: 4 },
    sections: {
      kernels: { status: 'error', wallMs: 1, error: 'WebGPUUnavailableError: none' }, spec: { status: 'skipped', reason: '--skip' },
      capacity: { status: 'skipped', reason: '--skip' }, sidecar: { status: 'error', wallMs: 1, error: 'x' }, verify: { status: 'skipped', reason: '--skip' }, loadtime: { status: 'skipped', reason: '--skip' },
    },
    unhandledRejections: [], wallMs: 5,
  };
}

function checkSvg(svg: string, where: string): void {
  expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"'), where).toBe(true);
  expect(svg.trimEnd().endsWith('</svg>'), where).toBe(true);
  expect(svg, where).toMatch(/<title>[^<]+<\/title>/);
  expect(svg, where).not.toMatch(/NaN|undefined|Infinity/);
}

describe('report', () => {
  it('crossover names the RTT interval where the speedup crosses 1', () => {
    expect(crossover([{ rttMs: 0, speedup: 1.4 }, { rttMs: 20, speedup: 1.1 }, { rttMs: 50, speedup: 0.8 }])).toContain('between 20 and 50 ms');
    expect(crossover([{ rttMs: 0, speedup: 0.9 }, { rttMs: 50, speedup: 0.5 }])).toContain('< baseline at every RTT');
    expect(crossover([{ rttMs: 0, speedup: 2 }, { rttMs: 100, speedup: 1.5 }])).toContain('≥ baseline at every RTT');
  });

  it('projection: Leviathan expectation and the stated formula (hand-computed values)', () => {
    // α = 0.5, k = 2: 1 + 0.5 + 0.25 = 1.75; α = 1: k + 1
    expect(expectedTokensPerPass(0.5, 2)).toBeCloseTo(1.75, 12);
    expect(expectedTokensPerPass(1, 4)).toBe(5);
    // τ = 2, k = 1, D = 50, T = 25, RTT 10 ms: 2 / (0.02 + 0.04 + 0.01) = 28.571…
    expect(projectTokPerSec(2, 1, 10, { browserDraft1BTokPerSec: 50, n150Target3BTokPerSec: 25 })).toBeCloseTo(2 / 0.07, 9);
  });

  it('renders every figure and references each one even when sections failed', () => {
    const r = emptyResults();
    const { markdown, figures: figs } = renderReport(r);
    expect(figs.length).toBe(10);
    expect(new Set(figs.map((f) => f.file)).size).toBe(figs.length);
    for (const f of figs) {
      expect(markdown).toContain(`](${f.file})`);
      checkSvg(f.svg, f.file);
      expect(f.svg).toContain('Test CPU ×2'); // every figure carries the machine
    }
    expect(markdown).toContain('**kernels failed**: WebGPUUnavailableError: none');
  });

  it('flags model files that changed during the run', () => {
    const r = emptyResults();
    expect(renderReport(r).markdown).not.toContain('changed during the run');
    r.machine = { ...r.machine, models: { start: { a: '1' }, end: { a: '2' } } };
    expect(renderReport(r).markdown).toContain('changed during the run');
  });

  it('README: writes between the markers, keeps the rest, and is idempotent', () => {
    const r = emptyResults();
    const fresh = updateReadme('# duet\n\nIntro.\n', r, 'bench/report.md');
    expect(fresh.startsWith('# duet\n\nIntro.\n\n## Results\n\n' + MARK_START)).toBe(true);
    const edited = fresh.replace('Intro.', 'Intro, edited by the lead.') + '\n## After\n';
    const again = updateReadme(edited, r, 'bench/report.md');
    expect(again).toContain('Intro, edited by the lead.');
    expect(again).toContain('## After');
    expect(again.split(MARK_START).length).toBe(2);
    expect(updateReadme(again, r, 'bench/report.md')).toBe(again);
    const section = again.slice(again.indexOf(MARK_START), again.indexOf(MARK_END));
    // every reference number carries its label
    expect(section.match(/claimed-by-reference/g)!.length).toBeGreaterThanOrEqual(6);
  });

  const seed = '/work/shared/reference/seed-benchmark.md';
  it.skipIf(!existsSync(seed))('the quoted reference figures appear in the reference report', () => {
    const text = readFileSync(seed, 'utf8');
    expect(text).toContain(`${(REFERENCE.acceptanceRate * 100).toFixed(1)}%`);
    for (const v of [REFERENCE.tokensPerTargetStep, REFERENCE.specTokPerSec, REFERENCE.baselineTokPerSec, REFERENCE.specTtftMs, REFERENCE.specInitS, REFERENCE.baselineInitS]) expect(text).toContain(String(v));
    expect(text).toContain('5,038.8ms');
  });
});

describe('duet bench all --quick', () => {
  it('runs (spec + capacity; kernels, sidecar and browser have their own tests) and writes a well-formed report', () => {
    const out = mkdtempSync(join(tmpdir(), 'duet-bench-all-'));
    try {
      const r = spawnSync(process.execPath, ['bin/duet.mjs', 'bench', 'all', '--out', out, '--quick', '--skip', 'kernels,sidecar,verify,loadtime'], { encoding: 'utf8', timeout: 290_000 });
      expect(r.status, r.stderr.slice(-3000)).toBe(0);
      const res = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as AllResults;
      expect(res.schema).toBe('duet-bench-all/1');
      expect(res.quick).toBe(true);
      expect(res.machine.cores).toBeGreaterThan(0);
      expect(res.machine.cpu.length).toBeGreaterThan(0);
      expect(Object.values(res.machine.models.start)).not.toContain('missing');
      expect(res.sections.spec.status).toBe('ok');
      expect(res.sections.capacity.status).toBe('ok');
      expect(res.sections.kernels.status).toBe('skipped');
      const spec = (res.sections.spec as { data: { kSweep: { tokensPerTargetPass: number; mismatches?: number; tokPerSec: number; baselineTokPerSec?: number; speedup?: number }[]; rtt: { rttMs: number; mismatches: number }[] } }).data;
      expect(spec.rtt.map((x) => x.rttMs)).toEqual([0, 0, 50, 50]);
      // exactness holds in the benchmark too: greedy speculative == target-only
      for (const row of spec.kSweep) if (row.mismatches !== undefined) expect(row.mismatches).toBe(0);
      for (const row of spec.kSweep) expect(row.tokensPerTargetPass).toBeGreaterThanOrEqual(1);
      // every row carries its own target-only runs, and its speedup is against them
      for (const row of spec.kSweep) {
        expect(row.baselineTokPerSec).toBeGreaterThan(0);
        expect(row.speedup).toBeCloseTo(row.tokPerSec / row.baselineTokPerSec!, 2);
      }
      // the k = 0 arm's rows: both modes at RTT 0 and 20, greedy text identical, in the report
      const sd = (res.sections.spec as { data: { slowDraft: { rows: { rttMs: number; mode: string; ratio: number; specTokPerSec: number; baselineTokPerSec: number; mismatches: number; repeats: number }[] } } }).data.slowDraft;
      expect(sd.rows.map((x) => `${x.rttMs} ${x.mode}`)).toEqual(['0 adaptive', '0 adaptive-no-k0', '20 adaptive', '20 adaptive-no-k0']);
      for (const x of sd.rows) {
        expect(x.mismatches).toBe(0);
        expect(x.repeats).toBe(1);
        expect(x.ratio).toBeCloseTo(x.specTokPerSec / x.baselineTokPerSec, 2);
      }
      const cap = (res.sections.capacity as { data: { results: { errors: number; sessions: number }[] }[] }).data;
      expect(cap.map((c) => c.results[0].sessions)).toEqual([1, 4]);
      for (const c of cap) for (const m of c.results) expect(m.errors).toBe(0);
      const md = readFileSync(join(out, 'report.md'), 'utf8');
      expect(md).toContain('## Never slower: a slowed draft and the k = 0 arm');
      expect(md).toContain('| 20 | adaptive-no-k0 |');
      for (const f of figures(res)) {
        expect(md).toContain(`](${f.file})`);
        checkSvg(readFileSync(join(out, f.file), 'utf8'), f.file);
      }
      // readme from the same results
      const readme = join(out, 'README.md');
      writeFileSync(readme, '# x\n');
      const rr = spawnSync(process.execPath, ['bin/duet.mjs', 'bench', 'readme', '--from', out, '--readme', readme], { encoding: 'utf8' });
      expect(rr.status, rr.stderr).toBe(0);
      expect(readFileSync(readme, 'utf8')).toContain('measured-here');
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  it('refuses a bad option with a usage error', () => {
    const r = spawnSync(process.execPath, ['bin/duet.mjs', 'bench', 'all', '--out', '/tmp/x', '--skip', 'nope'], { encoding: 'utf8' });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('unknown section "nope"');
  });
});
