// `duet serve`: the gateway as a command. Loads the target for the chosen verifier backend
// (cpu: TypeScript reference; webgpu: the WGSL engine on Dawn; sidecar: Python processes),
// serves the built app from dist/, models from a local folder, /api/info, and the WebSocket
// protocol on one port. Prints the URL (and a JSON line with --json) once listening.

import { existsSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { startGateway, type Gateway } from './gateway.ts';
import type { Verifier } from './verifiers/types.ts';

const USAGE = `usage: duet serve [options]
  --port N              port to listen on (default 8080; 0 = any free port)
  --host H              interface (default 127.0.0.1)
  --target DIR          target model folder (default public/models/tiny-target)
  --verifier B          cpu | webgpu | sidecar (default cpu)
  --sidecar-cmd CMD     sidecar to spawn and supervise (repeatable; --verifier sidecar)
  --sidecar-addr H:P    running sidecar to connect to (repeatable; --verifier sidecar)
  --models-dir DIR      served at /models/ with Range support (default public/models)
  --static DIR          the built web app (default dist/)
  --token SECRET        require ?token=SECRET on the WebSocket upgrade
  --allow-origin O      browser origin allowed to connect (repeatable; default same-origin only)
  --max-sessions N      concurrent sessions (default 64)
  --max-context N       tokens per session (default: the model's, at most 2048)
  --max-batch N         sessions per verifier call (default 16)
  --max-block N         draft tokens per verify (default 16)
  --batch-window-ms MS  how long an idle verifier waits to fill a batch (default 1)
  --rate N              requests per second per session (default 500; 0 = unlimited)
  --dev                 serve the app through Vite's dev server (HMR) instead of dist/
  --open-url            print the URL prominently (npm start)
  --json                print one JSON line {url, ws, info} once listening
  --quiet               no per-connection log lines`;

export interface ServeArgs {
  port: number;
  host: string;
  target: string;
  verifier: 'cpu' | 'webgpu' | 'sidecar';
  sidecarCmds: string[];
  sidecarAddrs: string[];
  modelsDir?: string;
  staticDir?: string;
  token?: string;
  allowOrigins: string[];
  maxSessions: number;
  maxContext?: number;
  maxBatch: number;
  maxBlock: number;
  batchWindowMs: number;
  rate: number;
  dev: boolean;
  openUrl: boolean;
  json: boolean;
  quiet: boolean;
}

export class UsageError extends Error {
  override name = 'UsageError';
}

function intArg(v: string | undefined, flag: string, fallback: number, min = 0): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`${flag} expects an integer >= ${min}, got "${v}"`);
  return n;
}

export function parseServeArgs(argv: string[]): ServeArgs {
  try {
    return parseServeArgsStrict(argv);
  } catch (e) {
    if (e instanceof UsageError) throw e;
    throw new UsageError((e as Error).message);
  }
}

function parseServeArgsStrict(argv: string[]): ServeArgs {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      port: { type: 'string' }, host: { type: 'string' }, target: { type: 'string' }, verifier: { type: 'string' },
      'sidecar-cmd': { type: 'string', multiple: true }, 'sidecar-addr': { type: 'string', multiple: true },
      'models-dir': { type: 'string' }, static: { type: 'string' }, token: { type: 'string' },
      'allow-origin': { type: 'string', multiple: true }, 'max-sessions': { type: 'string' }, 'max-context': { type: 'string' },
      'max-batch': { type: 'string' }, 'max-block': { type: 'string' }, 'batch-window-ms': { type: 'string' }, rate: { type: 'string' },
      dev: { type: 'boolean' }, 'open-url': { type: 'boolean' }, json: { type: 'boolean' }, quiet: { type: 'boolean' },
    },
  });
  const verifier = values.verifier ?? 'cpu';
  if (verifier !== 'cpu' && verifier !== 'webgpu' && verifier !== 'sidecar') throw new UsageError(`--verifier expects cpu, webgpu or sidecar, got "${verifier}"`);
  const sidecarCmds = values['sidecar-cmd'] ?? [];
  const sidecarAddrs = values['sidecar-addr'] ?? [];
  if (verifier === 'sidecar' && sidecarCmds.length + sidecarAddrs.length === 0) throw new UsageError('--verifier sidecar needs --sidecar-cmd CMD or --sidecar-addr HOST:PORT');
  if (verifier !== 'sidecar' && sidecarCmds.length + sidecarAddrs.length > 0) throw new UsageError('--sidecar-cmd/--sidecar-addr need --verifier sidecar');
  const origins = (values['allow-origin'] ?? []).flatMap((o) => o.split(',')).map((o) => o.trim()).filter(Boolean);
  const defaultModels = resolve('public/models');
  const defaultStatic = resolve('dist');
  return {
    port: intArg(values.port, '--port', 8080),
    host: values.host ?? '127.0.0.1',
    target: resolve(values.target ?? 'public/models/tiny-target'),
    verifier,
    sidecarCmds,
    sidecarAddrs,
    modelsDir: values['models-dir'] ? resolve(values['models-dir']) : existsSync(defaultModels) ? defaultModels : undefined,
    staticDir: values.static ? resolve(values.static) : existsSync(defaultStatic) ? defaultStatic : undefined,
    token: values.token,
    allowOrigins: origins,
    maxSessions: intArg(values['max-sessions'], '--max-sessions', 64, 1),
    maxContext: values['max-context'] === undefined ? undefined : intArg(values['max-context'], '--max-context', 0, 2),
    maxBatch: intArg(values['max-batch'], '--max-batch', 16, 1),
    maxBlock: intArg(values['max-block'], '--max-block', 16, 1),
    batchWindowMs: intArg(values['batch-window-ms'], '--batch-window-ms', 1, 0),
    rate: intArg(values.rate, '--rate', 500, 0),
    dev: !!values.dev,
    openUrl: !!values['open-url'],
    json: !!values.json,
    quiet: !!values.quiet,
  };
}

/** Build the verifier backend a `duet serve` invocation asks for. */
export async function createVerifier(a: ServeArgs, log: (l: string) => void): Promise<Verifier> {
  const maxContext = a.maxContext ?? 2048;
  if (a.verifier === 'sidecar') {
    const { createSidecarVerifier } = await import('./verifiers/sidecar.ts');
    return createSidecarVerifier({ cmds: a.sidecarCmds, addrs: a.sidecarAddrs, log });
  }
  if (!existsSync(a.target)) throw new UsageError(`target model folder ${a.target} does not exist: pass --target DIR (an HF folder with config.json, tokenizer.json, *.safetensors)`);
  const { loadTargetDir } = await import('./verifiers/load.ts');
  const m = await loadTargetDir(a.target);
  const common = { config: m.config, weights: m.weights, model: basename(a.target), tokenizerHash: m.tokenizerHash, maxContext, maxBatch: a.maxBatch, maxDraft: a.maxBlock };
  if (a.verifier === 'webgpu') {
    const { createWebGpuVerifier } = await import('./verifiers/webgpu.ts');
    return createWebGpuVerifier({ ...common, maxSessions: a.maxSessions });
  }
  const { createCpuVerifier } = await import('./verifiers/cpu.ts');
  return createCpuVerifier(common);
}

export async function serve(a: ServeArgs): Promise<Gateway> {
  const log = a.quiet ? () => {} : (l: string) => console.error(`[duet serve] ${l}`);
  const verifier = await createVerifier(a, log);
  let devFallback: Parameters<typeof startGateway>[0]['fallback'];
  if (a.dev) {
    const vite = await import('vite');
    // --json promises one JSON line on stdout: keep Vite's own logging to warnings
    const dev = await vite.createServer({ server: { middlewareMode: true }, appType: 'spa', clearScreen: false, logLevel: a.json || a.quiet ? 'warn' : 'info' });
    devFallback = (req, res) => dev.middlewares(req, res);
  }
  return startGateway({
    verifier, ownsVerifier: true, port: a.port, host: a.host, token: a.token, allowOrigins: a.allowOrigins,
    maxSessions: a.maxSessions, maxContext: a.maxContext, maxBatch: a.maxBatch, maxBlock: a.maxBlock,
    batchWindowMs: a.batchWindowMs, ratePerSec: a.rate, staticDir: a.dev ? undefined : a.staticDir, modelsDir: a.modelsDir,
    fallback: devFallback, log,
  });
}

export async function run(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(USAGE);
    return 0;
  }
  let args: ServeArgs;
  try {
    args = parseServeArgs(argv);
  } catch (e) {
    console.error(`duet serve: ${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const g = await serve(args);
  const i = g.info;
  if (args.json) console.log(JSON.stringify({ url: g.url, ws: g.wsUrl, info: i }));
  else {
    console.log(`duet gateway: ${i.model} on the ${i.backend} verifier (${i.device}), vocab ${i.vocabSize}, context ${i.maxContext}`);
    if (!args.staticDir && !args.dev) console.log('  (no dist/: run `npm run build` for the web app; the API and /models are served)');
    console.log(`${args.openUrl ? '\n  open ' : '  listening on '}${g.url}${args.openUrl ? '\n' : ''}`);
  }
  await new Promise<void>((resolveStop) => {
    const stop = (sig: string) => {
      console.error(`duet serve: ${sig}, shutting down`);
      void g.close().then(() => resolveStop());
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  return 0;
}
