// `duet serve` configuration from DUET_* environment variables: every flag has one (the list
// comes from the parser's own option table, so a new flag without a variable cannot slip by),
// the command line wins over the environment, lists and booleans parse, and a bad value names
// the variable. Also `duet --version` (from package.json) and the load progress bar.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { envName, parseServeArgs, SERVE_ENV, UsageError } from './serve.ts';
import { loadBar, progressText } from './progress.ts';

describe('DUET_* environment for duet serve', () => {
  it('every flag has a variable, named DUET_ + the flag in capitals', () => {
    expect(Object.keys(SERVE_ENV).length).toBeGreaterThanOrEqual(20);
    expect(SERVE_ENV['max-batch']).toBe('DUET_MAX_BATCH');
    expect(envName('batch-window-ms')).toBe('DUET_BATCH_WINDOW_MS');
    // the usage text documents the rule, and every flag the usage text lists is in the table
    const help = readFileSync('server/serve.ts', 'utf8');
    const flags = [...help.matchAll(/^ {2}--([a-z-]+)/gm)].map((m) => m[1]);
    expect(flags.length).toBeGreaterThan(15);
    for (const f of flags) expect(SERVE_ENV, `--${f}`).toHaveProperty(f);
  });

  it('fills every flag from the environment', () => {
    const a = parseServeArgs([], {
      DUET_PORT: '9001', DUET_HOST: '0.0.0.0', DUET_TARGET: '/m/t', DUET_VERIFIER: 'sidecar',
      DUET_SIDECAR_CMD: 'python3 a.py --x 1\npython3 b.py', DUET_SIDECAR_ADDR: 'h:1, h:2', DUET_MODELS_DIR: '/m', DUET_STATIC: '/s',
      DUET_TOKEN: 'tok', DUET_ALLOW_ORIGIN: 'http://a,http://b', DUET_MAX_SESSIONS: '7', DUET_MAX_CONTEXT: '300',
      DUET_MAX_BATCH: '3', DUET_MAX_BLOCK: '5', DUET_BATCH_WINDOW_MS: '2', DUET_RATE: '0',
      DUET_MAX_CONNECTIONS_PER_ADDRESS: '11', DUET_MAX_SESSIONS_PER_ADDRESS: '12', DUET_TRUST_PROXY: '127.0.0.2,::1',
      DUET_IDLE_TIMEOUT_S: '13', DUET_SESSION_IDLE_S: '14', DUET_MEMORY_BUDGET_MB: '15', DUET_DRAIN_TIMEOUT_S: '16',
      DUET_DEV: 'true', DUET_OPEN_URL: '1', DUET_JSON: 'yes', DUET_QUIET: 'on',
    });
    expect(a).toEqual({
      port: 9001, host: '0.0.0.0', target: '/m/t', verifier: 'sidecar', sidecarCmds: ['python3 a.py --x 1', 'python3 b.py'], sidecarAddrs: ['h:1', 'h:2'],
      modelsDir: '/m', staticDir: '/s', token: 'tok', allowOrigins: ['http://a', 'http://b'], maxSessions: 7, maxContext: 300,
      maxBatch: 3, maxBlock: 5, batchWindowMs: 2, rate: 0,
      maxConnectionsPerAddress: 11, maxSessionsPerAddress: 12, trustProxy: ['127.0.0.2', '::1'],
      idleTimeoutS: 13, sessionIdleS: 14, memoryBudgetMb: 15, drainTimeoutS: 16,
      dev: true, openUrl: true, json: true, quiet: true,
    });
  });

  it('a flag wins over its variable; unset variables leave the defaults', () => {
    const a = parseServeArgs(['--port', '1234', '--allow-origin', 'http://c', '--json'], { DUET_PORT: '9001', DUET_ALLOW_ORIGIN: 'http://a', DUET_JSON: '0', DUET_MAX_BATCH: '4' });
    expect(a.port).toBe(1234);
    expect(a.allowOrigins).toEqual(['http://c']);
    expect(a.json).toBe(true);
    expect(a.maxBatch).toBe(4);
    expect(parseServeArgs([], {}).port).toBe(8080);
    expect(parseServeArgs([], { DUET_DEV: '0' }).dev).toBe(false);
  });

  it('a bad value names the variable it came from', () => {
    expect(() => parseServeArgs([], { DUET_PORT: 'eighty' })).toThrow(/DUET_PORT \(--port\) expects an integer/);
    expect(() => parseServeArgs([], { DUET_DEV: 'maybe' })).toThrow(UsageError);
    expect(() => parseServeArgs([], { DUET_VERIFIER: 'tpu' })).toThrow(/DUET_VERIFIER/);
    expect(() => parseServeArgs(['--port', 'x'], {})).toThrow(/^--port expects/);
  });
});

describe('duet --version', () => {
  it('prints the version in package.json', () => {
    const out = execFileSync(process.execPath, ['bin/duet.mjs', '--version'], { encoding: 'utf8' });
    expect(out.trim()).toBe(`duet ${JSON.parse(readFileSync('package.json', 'utf8')).version}`);
  });
});

describe('load progress bar', () => {
  const tty = (isTTY: boolean) => Object.assign(new PassThrough(), { isTTY, columns: 160 }) as unknown as NodeJS.WriteStream & PassThrough;
  const events = [
    { file: 'model.safetensors', loadedBytes: 3 << 20, totalBytes: 12 << 20, bytesPerSec: 6 << 20, etaSec: 1.5 },
    { file: 'model.safetensors', loadedBytes: 12 << 20, totalBytes: 12 << 20, bytesPerSec: 6 << 20, etaSec: 0 },
  ];

  it('shows bytes, rate and ETA on a TTY', () => {
    const s = tty(true);
    let out = '';
    s.on('data', (d) => (out += d));
    const bar = loadBar('tiny', { stream: s });
    for (const e of events) bar.onProgress!(e);
    bar.stop();
    expect(progressText(events[0])).toBe('3.0 MiB / 12.0 MiB | 6.0 MiB/s | ETA 2s');
    expect(out).toContain('loading tiny');
    expect(out).toContain('12.0 MiB / 12.0 MiB | 6.0 MiB/s | ETA 0s');
    expect(out).toContain('100%');
  });

  it('is silent without a TTY and under --json', () => {
    for (const [isTTY, quiet] of [[false, false], [true, true]]) {
      const s = tty(isTTY);
      let out = '';
      s.on('data', (d) => (out += d));
      const bar = loadBar('tiny', { stream: s, quiet });
      expect(bar.onProgress).toBeUndefined();
      bar.stop();
      expect(out).toBe('');
    }
  });
});
