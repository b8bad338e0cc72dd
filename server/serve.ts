// `duet serve`: the gateway as a command. Loads the target for the chosen verifier backend
// (cpu: TypeScript reference; webgpu: the WGSL engine on Dawn; sidecar: Python processes),
// serves the built app from dist/, models from a local folder, /api/info, the WebSocket
// protocol, the OpenAI-shaped /v1 API and /metrics on one port. Prints the URL (and a JSON line with --json) once listening.
// Every flag can also come from a DUET_* environment variable (--max-batch: DUET_MAX_BATCH);
// a flag on the command line wins over the environment.
// While the target loads, the port already answers GET /health with 503 {"status":"loading"};
// SIGTERM drains (health 503, sessions finish or resume elsewhere, then exit), SIGINT stops.

import { existsSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { basename, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { startGateway, type Gateway } from './gateway.ts';
import type { TextModel } from './openai.ts';
import { loadBar } from './progress.ts';
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
  --token SECRET        require ?token=SECRET on the WebSocket upgrade, and
                        Authorization: Bearer SECRET on /v1/* and /metrics
  --allow-origin O      browser origin allowed to connect (repeatable; default same-origin only)
  --max-sessions N      concurrent sessions (default 64)
  --max-context N       tokens per session (default: the model's, at most 2048)
  --max-batch N         sessions per verifier call (default 16)
  --max-block N         draft tokens per verify (default 16)
  --batch-window-ms MS  how long an idle verifier waits to fill a batch (default 1)
  --rate N              requests per second per session (default 500; 0 = unlimited)
  --max-connections-per-address N   (default: --max-sessions)
  --max-sessions-per-address N      (default: half of --max-sessions)
  --trust-proxy ADDR    a load balancer whose X-Forwarded-For names the client (repeatable)
  --idle-timeout-s S    close a connection that sends nothing for S s (default 120)
  --session-idle-s S    end a session with no request for S s (default 300)
  --memory-budget-mb M  bytes all send queues may hold together (default 256)
  --drain-timeout-s S   on SIGTERM, wait at most S s for requests in flight (default 30)
  --dev                 serve the app through Vite's dev server (HMR) instead of dist/
  --open-url            print the URL prominently (npm start)
  --json                print one JSON line {url, ws, info} once listening
  --quiet               no per-connection log lines

Every option can be set by an environment variable instead: DUET_ and the flag's name in
capitals with _ for - (--max-batch 8: DUET_MAX_BATCH=8; --dev: DUET_DEV=1). A flag on the
command line wins. Repeatable flags take a list: DUET_ALLOW_ORIGIN and DUET_SIDECAR_ADDR
comma-separated, DUET_SIDECAR_CMD one command per line.`;

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
  maxConnectionsPerAddress?: number;
  maxSessionsPerAddress?: number;
  trustProxy: string[];
  idleTimeoutS: number;
  sessionIdleS: number;
  memoryBudgetMb: number;
  drainTimeoutS: number;
  dev: boolean;
  openUrl: boolean;
  json: boolean;
  quiet: boolean;
}

export class UsageError extends Error {
  override name = 'UsageError';
}

const OPTIONS = {
  port: { type: 'string' }, host: { type: 'string' }, target: { type: 'string' }, verifier: { type: 'string' },
  'sidecar-cmd': { type: 'string', multiple: true }, 'sidecar-addr': { type: 'string', multiple: true },
  'models-dir': { type: 'string' }, static: { type: 'string' }, token: { type: 'string' },
  'allow-origin': { type: 'string', multiple: true }, 'max-sessions': { type: 'string' }, 'max-context': { type: 'string' },
  'max-batch': { type: 'string' }, 'max-block': { type: 'string' }, 'batch-window-ms': { type: 'string' }, rate: { type: 'string' },
  'max-connections-per-address': { type: 'string' }, 'max-sessions-per-address': { type: 'string' }, 'trust-proxy': { type: 'string', multiple: true },
  'idle-timeout-s': { type: 'string' }, 'session-idle-s': { type: 'string' }, 'memory-budget-mb': { type: 'string' }, 'drain-timeout-s': { type: 'string' },
  dev: { type: 'boolean' }, 'open-url': { type: 'boolean' }, json: { type: 'boolean' }, quiet: { type: 'boolean' },
} as const;
type Flag = keyof typeof OPTIONS;

/** The environment variable of a flag: --max-batch → DUET_MAX_BATCH. */
export const envName = (flag: string): string => `DUET_${flag.toUpperCase().replace(/-/g, '_')}`;
/** Every `serve` flag with its environment variable (docs and tests list them from here). */
export const SERVE_ENV: Record<Flag, string> = Object.fromEntries(Object.keys(OPTIONS).map((f) => [f, envName(f)])) as Record<Flag, string>;

const TRUE = new Set(['1', 'true', 'yes', 'on']);
const FALSE = new Set(['', '0', 'false', 'no', 'off']);

/** Fill the flags the command line left out from DUET_* variables; returns the name each value came from. */
function fromEnv(values: Record<string, string | boolean | string[] | undefined>, env: NodeJS.ProcessEnv): Map<string, string> {
  const source = new Map<string, string>();
  for (const [flag, spec] of Object.entries(OPTIONS)) {
    source.set(flag, `--${flag}`);
    if (values[flag] !== undefined) continue;
    const name = envName(flag);
    const raw = env[name];
    if (raw === undefined) continue;
    source.set(flag, `${name} (--${flag})`);
    if (spec.type === 'boolean') {
      const v = raw.trim().toLowerCase();
      if (!TRUE.has(v) && !FALSE.has(v)) throw new UsageError(`${name} expects 1/0, true/false, yes/no or on/off, got "${raw}"`);
      values[flag] = TRUE.has(v);
    } else if ('multiple' in spec) {
      const parts = raw.split(flag === 'sidecar-cmd' ? /\r?\n/ : ',').map((x) => x.trim()).filter(Boolean);
      values[flag] = parts;
    } else values[flag] = raw;
  }
  return source;
}

function intArg(v: string | undefined, flag: string, fallback: number, min = 0): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`${flag} expects an integer >= ${min}, got "${v}"`);
  return n;
}

export function parseServeArgs(argv: string[], env: NodeJS.ProcessEnv = process.env): ServeArgs {
  try {
    return parseServeArgsStrict(argv, env);
  } catch (e) {
    if (e instanceof UsageError) throw e;
    throw new UsageError((e as Error).message);
  }
}

function parseServeArgsStrict(argv: string[], env: NodeJS.ProcessEnv): ServeArgs {
  const { values } = parseArgs({ args: argv, strict: true, options: OPTIONS });
  const src = fromEnv(values, env);
  const from = (flag: Flag): string => src.get(flag)!;
  const verifier = values.verifier ?? 'cpu';
  if (verifier !== 'cpu' && verifier !== 'webgpu' && verifier !== 'sidecar') throw new UsageError(`${from('verifier')} expects cpu, webgpu or sidecar, got "${verifier}"`);
  const sidecarCmds = values['sidecar-cmd'] ?? [];
  const sidecarAddrs = values['sidecar-addr'] ?? [];
  if (verifier === 'sidecar' && sidecarCmds.length + sidecarAddrs.length === 0) throw new UsageError('--verifier sidecar needs --sidecar-cmd CMD or --sidecar-addr HOST:PORT');
  if (verifier !== 'sidecar' && sidecarCmds.length + sidecarAddrs.length > 0) throw new UsageError('--sidecar-cmd/--sidecar-addr need --verifier sidecar');
  const origins = (values['allow-origin'] ?? []).flatMap((o) => o.split(',')).map((o) => o.trim()).filter(Boolean);
  const defaultModels = resolve('public/models');
  const defaultStatic = resolve('dist');
  return {
    port: intArg(values.port, from('port'), 8080),
    host: values.host ?? '127.0.0.1',
    target: resolve(values.target ?? 'public/models/tiny-target'),
    verifier,
    sidecarCmds,
    sidecarAddrs,
    modelsDir: values['models-dir'] ? resolve(values['models-dir']) : existsSync(defaultModels) ? defaultModels : undefined,
    staticDir: values.static ? resolve(values.static) : existsSync(defaultStatic) ? defaultStatic : undefined,
    token: values.token,
    allowOrigins: origins,
    maxSessions: intArg(values['max-sessions'], from('max-sessions'), 64, 1),
    maxContext: values['max-context'] === undefined ? undefined : intArg(values['max-context'], from('max-context'), 0, 2),
    maxBatch: intArg(values['max-batch'], from('max-batch'), 16, 1),
    maxBlock: intArg(values['max-block'], from('max-block'), 16, 1),
    batchWindowMs: intArg(values['batch-window-ms'], from('batch-window-ms'), 1, 0),
    rate: intArg(values.rate, from('rate'), 500, 0),
    maxConnectionsPerAddress: values['max-connections-per-address'] === undefined ? undefined : intArg(values['max-connections-per-address'], from('max-connections-per-address'), 0, 1),
    maxSessionsPerAddress: values['max-sessions-per-address'] === undefined ? undefined : intArg(values['max-sessions-per-address'], from('max-sessions-per-address'), 0, 1),
    trustProxy: (values['trust-proxy'] ?? []).flatMap((o) => o.split(',')).map((o) => o.trim()).filter(Boolean),
    idleTimeoutS: intArg(values['idle-timeout-s'], from('idle-timeout-s'), 120, 1),
    sessionIdleS: intArg(values['session-idle-s'], from('session-idle-s'), 300, 1),
    memoryBudgetMb: intArg(values['memory-budget-mb'], from('memory-budget-mb'), 256, 1),
    drainTimeoutS: intArg(values['drain-timeout-s'], from('drain-timeout-s'), 30, 0),
    dev: !!values.dev,
    openUrl: !!values['open-url'],
    json: !!values.json,
    quiet: !!values.quiet,
  };
}

/** Tokenizer + eos ids of a target folder without its weights (the sidecar loads those itself). */
async function loadTextModel(dir: string): Promise<TextModel | undefined> {
  if (!existsSync(dir)) return undefined;
  const { openModelDir } = await import('../src/engine/loader/node.ts');
  const { stopTokenIds } = await import('../src/engine/loader/model.ts');
  const { Tokenizer } = await import('../src/engine/tokenizer.ts');
  const m = await openModelDir(dir);
  try {
    if (!m.tokenizerJson) return undefined;
    const tokenizer = new Tokenizer(m.tokenizerJson, m.tokenizerConfig);
    return { tokenizer, eosIds: stopTokenIds(m.generationConfig, m.config, tokenizer) };
  } finally {
    await m.close();
  }
}

/**
 * Build the verifier backend a `duet serve` invocation asks for, and the target's tokenizer
 * for the /v1 API (for a sidecar: from --target DIR when that folder exists).
 */
export async function createVerifier(a: ServeArgs, log: (l: string) => void): Promise<{ verifier: Verifier; text?: TextModel }> {
  const maxContext = a.maxContext ?? 2048;
  if (a.verifier === 'sidecar') {
    const { createSidecarVerifier } = await import('./verifiers/sidecar.ts');
    const text = await loadTextModel(a.target);
    if (!text) log(`no tokenizer at ${a.target}: /v1/chat/completions and /v1/completions answer 503 (pass --target DIR, the sidecar's model folder)`);
    return { verifier: await createSidecarVerifier({ cmds: a.sidecarCmds, addrs: a.sidecarAddrs, log }), text };
  }
  if (!existsSync(a.target)) throw new UsageError(`target model folder ${a.target} does not exist: pass --target DIR (an HF folder with config.json, tokenizer.json, *.safetensors)`);
  const { loadTargetDir } = await import('./verifiers/load.ts');
  const bar = loadBar(basename(a.target), { quiet: a.json || a.quiet });
  let m;
  try {
    m = await loadTargetDir(a.target, { onProgress: bar.onProgress });
  } finally {
    bar.stop();
  }
  const common = { config: m.config, weights: m.weights, model: basename(a.target), tokenizerHash: m.tokenizerHash, maxContext, maxBatch: a.maxBatch, maxDraft: a.maxBlock };
  if (a.verifier === 'webgpu') {
    const { createWebGpuVerifier } = await import('./verifiers/webgpu.ts');
    return { verifier: await createWebGpuVerifier({ ...common, maxSessions: a.maxSessions }), text: m.text };
  }
  const { createCpuVerifier } = await import('./verifiers/cpu.ts');
  return { verifier: await createCpuVerifier(common), text: m.text };
}

/**
 * Hold the port while the target loads: GET /health answers 503 {"status":"loading"} (a load
 * balancer or orchestrator sees "not yet", not "connection refused"), everything else 503.
 */
async function loadingPlaceholder(port: number, host: string): Promise<{ port: number; close(): Promise<void> }> {
  const body = JSON.stringify({ status: 'loading' }) + '\n';
  const srv = createServer((req, res) => {
    res.writeHead(503, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(body), 'Retry-After': '5', 'Cache-Control': 'no-cache' });
    res.end(body);
  });
  srv.on('upgrade', (_req, socket) => socket.end('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 5\r\nContent-Length: 0\r\n\r\n'));
  await new Promise<void>((resolveListen, rejectListen) => {
    srv.once('error', rejectListen);
    srv.listen(port, host, () => resolveListen());
  });
  return {
    port: (srv.address() as AddressInfo).port,
    close: () => new Promise<void>((r) => {
      srv.close(() => r());
      srv.closeAllConnections();
    }),
  };
}

export async function serve(a: ServeArgs): Promise<Gateway> {
  const log = a.quiet ? () => {} : (l: string) => console.error(`[duet serve] ${l}`);
  const placeholder = await loadingPlaceholder(a.port, a.host);
  let created: Awaited<ReturnType<typeof createVerifier>>;
  try {
    created = await createVerifier(a, log);
  } finally {
    await placeholder.close();
  }
  const { verifier, text } = created;
  let devFallback: Parameters<typeof startGateway>[0]['fallback'];
  if (a.dev) {
    const vite = await import('vite');
    // --json promises one JSON line on stdout: keep Vite's own logging to warnings
    const dev = await vite.createServer({ server: { middlewareMode: true }, appType: 'spa', clearScreen: false, logLevel: a.json || a.quiet ? 'warn' : 'info' });
    devFallback = (req, res) => dev.middlewares(req, res);
  }
  return startGateway({
    verifier, ownsVerifier: true, port: placeholder.port, host: a.host, token: a.token, allowOrigins: a.allowOrigins,
    maxConnectionsPerAddress: a.maxConnectionsPerAddress, maxSessionsPerAddress: a.maxSessionsPerAddress, trustProxy: a.trustProxy,
    idleTimeoutMs: a.idleTimeoutS * 1000, sessionIdleMs: a.sessionIdleS * 1000, memoryBudgetBytes: a.memoryBudgetMb << 20,
    maxSessions: a.maxSessions, maxContext: a.maxContext, maxBatch: a.maxBatch, maxBlock: a.maxBlock,
    batchWindowMs: a.batchWindowMs, ratePerSec: a.rate, staticDir: a.dev ? undefined : a.staticDir, modelsDir: a.modelsDir,
    fallback: devFallback, log, textModel: text,
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
    process.once('SIGTERM', () => {
      // drain: /health 503 at once, sessions finish what is in flight or are told to resume elsewhere
      console.error(`duet serve: SIGTERM, draining (up to ${args.drainTimeoutS} s)`);
      void g.drain(args.drainTimeoutS * 1000).then(() => resolveStop());
    });
  });
  return 0;
}
