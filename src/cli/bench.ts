// `duet bench <suite> [--json FILE] [--quick] ...`: benchmark suites, JSON out. Speed is
// measured here and never asserted in tests. Suites are registered in SUITES (lazily loaded).

import { writeFileSync } from 'node:fs';
import { isWeightFormat } from '../engine/quantize.ts';

type Suite = (args: Args) => Promise<unknown>;
interface Args {
  quick: boolean;
  json: string | null;
  formats: string[] | null;
  noEngine: boolean;
  workingSetMiB: number | null;
  draftDelayMs: number | null;
  onlySlowDraft: boolean;
  /** capacity suite */
  verifier: string;
  target: string | null;
  draft: string | null;
  sessions: number[];
  seconds: number | null;
  maxTokens: number | null;
  k: number | null;
  liveDraft: boolean;
  sidecarCmd: string | null;
}

const BACKENDS = ['cpu', 'cpu-reference', 'webgpu', 'sidecar'] as const;

const SUITES: Record<string, { summary: string; run: Suite }> = {
  spec: { summary: 'speculative decoding on the tiny pair: k sweep, RTT speedups, gateway capacity', run: async (a) => (await import('../../tools/bench/spec.ts')).runSpecBench({ quick: a.quick, draftDelayMs: a.draftDelayMs ?? undefined, onlySlowDraft: a.onlySlowDraft, log: (l) => console.error(l) }) },
  capacity: {
    summary: 'N concurrent sessions through an in-process gateway, speculative vs batched baseline (--verifier, --target, --sessions 1,4,16)',
    run: async (a) => {
      const { runCapacity, loadTinyPair } = await import('../../tools/bench/capacity.ts');
      const { createTargetVerifier } = await import('../../server/verifiers/load.ts');
      const { splitCommand } = await import('../../server/verifiers/sidecar.ts');
      const log = (l: string) => console.error(l);
      // prompts, tokenizer and the memo's local target come from the tiny pair; --target may be
      // a padded copy of tiny-target (same tokenizer, same logits) served by any backend
      const pair = await loadTinyPair(undefined, a.draft ?? undefined);
      // one verifier (one model load) for every session count, sized for the largest
      const most = Math.max(...a.sessions);
      const verifier = await createTargetVerifier(a.verifier as (typeof BACKENDS)[number], a.target ?? 'public/models/tiny-target', {
        maxContext: 256, maxBatch: Math.max(16, most), maxSessions: most * 2 + 1,
        sidecarCmd: a.sidecarCmd ? splitCommand(a.sidecarCmd) : undefined, log,
      });
      const runs = [];
      try {
        const v = verifier.info();
        if (v.tokenizerHash && v.tokenizerHash !== pair.tokenizerHash) throw new BenchUsageError(`--target ${a.target} has another tokenizer than the tiny pair (hash ${v.tokenizerHash} vs ${pair.tokenizerHash})`);
        for (const n of a.sessions) {
          runs.push(await runCapacity({ pair, verifier, sessions: n, seconds: a.seconds ?? 20, maxTokens: a.maxTokens ?? 32, k: a.k ?? 4, draft: a.liveDraft ? 'live' : 'memo', maxBatch: Math.max(16, n), log }));
        }
      } finally {
        await verifier.dispose();
      }
      const { gitCommit } = await import('../../tools/bench/all.ts');
      const { cpus, loadavg } = await import('node:os');
      return {
        suite: 'capacity', date: new Date().toISOString(), commit: gitCommit(),
        machine: { cpu: cpus()[0]?.model.trim() ?? 'unknown CPU', cores: cpus().length, loadavgEnd: loadavg()[0] },
        target: a.target ?? 'public/models/tiny-target', backend: a.verifier, runs,
      };
    },
  },
  verify: {
    summary: 'one target pass per backend (cpu, cpu-reference, webgpu, sidecar) and shape, B sessions x T tokens',
    run: async (a) => (await import('../../tools/bench/verify.ts')).runVerifyBench({ quick: a.quick, log: (l) => console.error(l) }),
  },
  kernels: {
    summary: 'decode matmul GB/s per weight format vs a copy kernel; engine decode tok/s',
    run: async (a) => {
      const { runKernelBench } = await import('../../tools/bench/kernels.ts');
      const formats = a.formats?.map((f) => {
        if (!isWeightFormat(f)) throw new BenchUsageError(`unknown format "${f}" in --formats; use f32,f16,bf16,q8,q4`);
        return f;
      });
      return runKernelBench({
        quick: a.quick, formats, skipEngine: a.noEngine,
        workingSetBytes: a.workingSetMiB ? a.workingSetMiB * 2 ** 20 : undefined,
        log: (l) => console.error(l),
      });
    },
  },
};

export class BenchUsageError extends Error {
  override name = 'BenchUsageError';
}

const USAGE = `usage: duet bench <suite> [--json FILE] [--quick] [--formats f32,q4] [--no-engine] [--working-set-mib N] [--draft-delay-ms MS] [--only-slow-draft]
       duet bench capacity [--verifier cpu|cpu-reference|webgpu|sidecar] [--target DIR] [--draft DIR] [--sessions 1,4,16] [--seconds S] [--max-tokens N] [--k N] [--live-draft] [--sidecar-cmd CMD] [--json FILE]
suites:
${Object.entries(SUITES).map(([n, s]) => `  ${n.padEnd(10)} ${s.summary}`).join('\n')}
Progress goes to stderr; the result JSON to FILE (or stdout without --json).`;

function parse(argv: string[]): Args {
  const a: Args = {
    quick: false, json: null, formats: null, noEngine: false, workingSetMiB: null, draftDelayMs: null, onlySlowDraft: false,
    verifier: 'cpu', target: null, draft: null, sessions: [1, 4, 16], seconds: null, maxTokens: null, k: null, liveDraft: false, sidecarCmd: null,
  };
  const positive = (k: string, v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new BenchUsageError(`${k} must be a whole number >= 1, got "${v}"`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const val = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new BenchUsageError(`${k} needs a value\n${USAGE}`);
      return v;
    };
    if (k === '--quick') a.quick = true;
    else if (k === '--json') a.json = val();
    else if (k === '--formats') a.formats = val().split(',').filter(Boolean);
    else if (k === '--no-engine') a.noEngine = true;
    else if (k === '--only-slow-draft') a.onlySlowDraft = true;
    else if (k === '--verifier') {
      a.verifier = val();
      if (!(BACKENDS as readonly string[]).includes(a.verifier)) throw new BenchUsageError(`--verifier must be one of ${BACKENDS.join(', ')}, got "${a.verifier}"`);
    } else if (k === '--target') a.target = val();
    else if (k === '--draft') a.draft = val();
    else if (k === '--sessions') a.sessions = val().split(',').filter(Boolean).map((x) => positive(k, x));
    else if (k === '--seconds') a.seconds = positive(k, val());
    else if (k === '--max-tokens') a.maxTokens = positive(k, val());
    else if (k === '--k') a.k = positive(k, val());
    else if (k === '--live-draft') a.liveDraft = true;
    else if (k === '--sidecar-cmd') a.sidecarCmd = val();
    else if (k === '--draft-delay-ms') {
      // spec suite: injected ms per draft forward in its slowDraft section (default one target step)
      a.draftDelayMs = Number(val());
      if (!(a.draftDelayMs >= 0)) throw new BenchUsageError(`--draft-delay-ms must be a number >= 0`);
    }
    else if (k === '--working-set-mib') {
      a.workingSetMiB = Number(val());
      if (!(a.workingSetMiB > 0)) throw new BenchUsageError(`--working-set-mib must be a positive number`);
    } else throw new BenchUsageError(`unknown option "${k}"\n${USAGE}`);
  }
  return a;
}

export async function run(argv: string[]): Promise<number> {
  const [suite, ...rest] = argv;
  if (!suite || suite === '--help' || suite === '-h') {
    console.log(USAGE);
    return suite ? 0 : 2;
  }
  if (suite === 'all' || suite === 'readme') return (await import('../../tools/bench/all.ts')).runCli(suite, rest);
  const s = SUITES[suite];
  if (!s) {
    console.error(`duet bench: unknown suite "${suite}"\n${USAGE}`);
    return 2;
  }
  const args = parse(rest);
  const result = await s.run(args);
  const text = JSON.stringify(result, null, 2);
  if (args.json) {
    writeFileSync(args.json, text + '\n');
    console.error(`wrote ${args.json}`);
  } else console.log(text);
  return 0;
}
