// `duet fixtures`: generated model folders for benchmarks (never committed).
//   padded        the tiny target widened/deepened to a real model's cost, logits unchanged
//                 (tools/fixtures/padded.ts has the construction and its algebra)
//   check-padded  its logits vs the original's, on the cpu reference, webgpu or the sidecar

import { parseArgs } from 'node:util';
import { PADDED_LIKE, type PaddedBackend, type PaddedLike, checkPadded, writePaddedModel } from '../../tools/fixtures/padded.ts';

const USAGE = `usage:
  duet fixtures padded --like 1b|3b --out DIR [--from DIR] [--layers N] [--hidden N] [--mlp N] [--dtype bf16|f32] [--json]
      a function-preserving padded copy of --from (default public/models/tiny-target) at Llama-3.2-1B/3B
      hidden/MLP/layer sizes (overridable); the tiny pair's acceptance at a real model's cost per pass
  duet fixtures check-padded --model DIR [--from DIR] [--backend cpu|webgpu|sidecar] [--tokens 1,2,3] [--sidecar-cmd CMD] [--json]
      logits of the padded model (f32) vs the original's on the CPU reference: NMSE, argmax agreement`;

class FixturesUsageError extends Error {
  override name = 'FixturesUsageError';
}

const posInt = (v: string | undefined, what: string): number | undefined => {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new FixturesUsageError(`${what} must be a positive integer, got "${v}"`);
  return n;
};

async function padded(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv, strict: true,
    options: {
      like: { type: 'string' }, out: { type: 'string' }, from: { type: 'string', default: 'public/models/tiny-target' },
      layers: { type: 'string' }, hidden: { type: 'string' }, mlp: { type: 'string' }, dtype: { type: 'string', default: 'bf16' },
      json: { type: 'boolean', default: false },
    },
  });
  if (!values.out) throw new FixturesUsageError(`--out is required\n${USAGE}`);
  if (values.like !== undefined && !(values.like in PADDED_LIKE)) throw new FixturesUsageError(`--like must be 1b or 3b, got "${values.like}"`);
  if (values.like === undefined && (values.hidden === undefined || values.mlp === undefined || values.layers === undefined)) {
    throw new FixturesUsageError(`give --like 1b|3b, or all of --hidden, --mlp and --layers\n${USAGE}`);
  }
  if (values.dtype !== 'bf16' && values.dtype !== 'f32') throw new FixturesUsageError(`--dtype must be bf16 or f32, got "${values.dtype}"`);
  const like = values.like ? PADDED_LIKE[values.like as PaddedLike] : { hiddenSize: 0, intermediateSize: 0, numLayers: 0 };
  const shape = {
    hiddenSize: posInt(values.hidden, '--hidden') ?? like.hiddenSize,
    intermediateSize: posInt(values.mlp, '--mlp') ?? like.intermediateSize,
    numLayers: posInt(values.layers, '--layers') ?? like.numLayers,
  };
  const r = await writePaddedModel(values.from!, values.out, shape, { dtype: values.dtype === 'f32' ? 'F32' : 'BF16' });
  const summary = {
    dir: r.dir, like: values.like ?? null, hiddenSize: r.config.hiddenSize, intermediateSize: r.config.intermediateSize, numLayers: r.config.numLayers,
    numHeads: r.config.numHeads, numKvHeads: r.config.numKvHeads, headDim: r.config.headDim, vocabSize: r.config.vocabSize,
    rmsNormEps: r.config.rmsNormEps, params: r.params, bytes: r.bytes, ms: r.ms,
  };
  if (values.json) console.log(JSON.stringify(summary));
  else console.log(`wrote ${r.dir}: ${(r.params / 1e6).toFixed(0)}M parameters (hidden ${summary.hiddenSize}, MLP ${summary.intermediateSize}, ${summary.numLayers} layers, ${summary.numHeads}/${summary.numKvHeads} heads), ${(r.bytes / 2 ** 20).toFixed(0)} MiB in ${(r.ms / 1000).toFixed(1)} s — the tiny target's logits at this model's cost per pass`);
  return 0;
}

async function check(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv, strict: true,
    options: {
      model: { type: 'string' }, from: { type: 'string', default: 'public/models/tiny-target' }, backend: { type: 'string', default: 'cpu' },
      tokens: { type: 'string', default: '4091,17,250,1033,9,4000,77,2048,5,300,11' }, 'sidecar-cmd': { type: 'string' }, json: { type: 'boolean', default: false },
    },
  });
  if (!values.model) throw new FixturesUsageError(`--model is required\n${USAGE}`);
  if (!['cpu', 'webgpu', 'sidecar'].includes(values.backend!)) throw new FixturesUsageError(`--backend must be cpu, webgpu or sidecar, got "${values.backend}"`);
  const tokens = values.tokens!.split(',').map((s) => Number(s.trim()));
  if (tokens.some((t) => !Number.isInteger(t) || t < 0)) throw new FixturesUsageError(`--tokens must be comma-separated token ids, got "${values.tokens}"`);
  const { splitCommand } = await import('../../server/verifiers/sidecar.ts');
  const r = await checkPadded(values.model, values.from!, tokens, values.backend as PaddedBackend, { sidecarCmd: values['sidecar-cmd'] ? splitCommand(values['sidecar-cmd']) : undefined });
  // the bound: NMSE <= 1e-6 and the same argmax everywhere (padded.test.ts holds f32 runs to 1e-8)
  const ok = r.nmse <= 1e-6 && r.argmaxAgree === r.positions;
  if (values.json) console.log(JSON.stringify({ ...r, ok }));
  else console.log(`${r.backend}: nmse ${r.nmse.toExponential(2)}, max |err| ${r.maxAbsErr.toExponential(2)}, argmax ${r.argmaxAgree}/${r.positions} (${r.ms} ms) ${ok ? 'OK' : 'MISMATCH'}`);
  return ok ? 0 : 1;
}

export async function run(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (!sub || sub === '--help' || sub === '-h' || rest.includes('--help')) {
    console.log(USAGE);
    return sub ? 0 : 2;
  }
  try {
    if (sub === 'padded') return await padded(rest);
    if (sub === 'check-padded') return await check(rest);
    throw new FixturesUsageError(`unknown fixture "${sub}"\n${USAGE}`);
  } catch (e) {
    if (e instanceof FixturesUsageError || (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      console.error(`duet fixtures: ${(e as Error).message}`);
      return 2;
    }
    throw e;
  }
}
