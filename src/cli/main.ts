// `duet` command dispatcher. Each subcommand lives in its own module under src/cli/ (or
// server/ for `serve`) and is loaded lazily so `duet logits` does not pay for the gateway.

import { readFileSync } from 'node:fs';

type Command = (argv: string[]) => Promise<number>;

const commands: Record<string, { summary: string; load: () => Promise<Command> }> = {
  logits: { summary: 'logits of a model at given tokens (cpu|webgpu)', load: async () => (await import('./logits.ts')).run },
  serve: { summary: 'the gateway: web app, /models, /api/info, the verifier WebSocket, OpenAI-shaped /v1, /metrics', load: async () => (await import('../../server/serve.ts')).run },
  bench: { summary: 'benchmarks (suite: kernels), JSON out', load: async () => (await import('./bench.ts')).run },
  kernels: { summary: 'kernel sources: --dump-wgsl DIR writes every assembled matmul variant as a .wgsl file', load: async () => (await import('./kernels.ts')).run },
  generate: { summary: 'generate text with one model (cpu|webgpu), streamed or --json', load: async () => (await import('./generate.ts')).run },
  perplexity: { summary: 'perplexity of a model on a text file (cpu|webgpu)', load: async () => (await import('./perplexity.ts')).run },
  fixtures: { summary: 'generated model folders for benchmarks (padded tiny target at 1B/3B cost)', load: async () => (await import('./fixtures.ts')).run },
  speculate: { summary: 'speculative decoding: draft here, target local or via a gateway; --json stats', load: async () => (await import('./speculate.ts')).run },
};

function usage(): string {
  const lines = Object.entries(commands).map(([name, c]) => `  duet ${name.padEnd(11)} ${c.summary}`);
  return ['usage: duet <command> [options]   (duet <command> --help for its options; duet --version)', '', ...lines].join('\n');
}

/** The package's version (package.json), for `duet --version`. */
export function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === '--version' || name === '-V') {
    console.log(`duet ${version()}`);
    return 0;
  }
  if (!name || name === '--help' || name === '-h') {
    console.log(usage());
    return name ? 0 : 2;
  }
  const cmd = commands[name];
  if (!cmd) {
    console.error(`duet: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  try {
    return await (await cmd.load())(rest);
  } catch (err) {
    const e = err as Error;
    console.error(`duet ${name}: ${e.name ?? 'Error'}: ${e.message}`);
    if (process.env.DUET_DEBUG) console.error(e.stack);
    return 1;
  }
}
