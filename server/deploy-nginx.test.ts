// deploy/nginx/duet.conf for real: Debian's nginx (unprivileged, temp prefix; pid and logs in
// a temp dir) in front of two `duet serve` gateways (child processes, CPU verifier on the
// bundled tiny target). 16 greedy speculative sessions through nginx; one gateway is SIGKILLed
// mid-generation and every session resumes through nginx on the other; then, with the gateway
// back, the other is drained with SIGTERM mid-generation: /health turns 503, upgrades through
// nginx land on the remaining gateway, sessions in flight finish or resume. Every text must
// equal target-only greedy decoding (CpuLlama oracle) and no error may reach a client.
//
// The gateways use the CPU verifier, not a torch sidecar each: failover lives in the gateway
// and the client (the transcript is on the client), not in the backend, and two torch imports
// plus prefill on this 2-core CI machine would add tens of seconds to a test meant to stay short.
//
// Skips only where nginx is absent and CI is not set; in CI (.ci/run installs nginx) it runs.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync, chmodSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { loadModelDir, type LoadedModel } from '../src/engine/loader/node.ts';
import { Tokenizer, tokenizerHash } from '../src/engine/tokenizer.ts';
import { CpuLlama } from '../src/engine/reference.ts';
import { speculate } from '../src/engine/speculative.ts';
import { GREEDY } from '../src/engine/sampling.ts';
import { RemoteTarget, type ClientEvent } from '../src/protocol/client.ts';
import { encodeJson } from '../src/protocol/codec.ts';
import { PROTOCOL_VERSION } from '../src/protocol/messages.ts';
import { spawnServe, targetGreedy as greedy, type ServeChild } from './testing.ts';

const NGINX = ['/usr/sbin/nginx', '/usr/bin/nginx'].find((p) => existsSync(p)) ?? (spawnSync('sh', ['-c', 'command -v nginx']).stdout?.toString().trim() || null);
const CI = !!process.env.CI || !!process.env.DUET_CI; // .ci/run sets DUET_CI
if (!NGINX && !CI) console.warn('deploy-nginx.test: SKIPPED — nginx is not installed (apt-get install nginx); in CI this test runs and must pass');
const TARGET = 'public/models/tiny-target';
const DRAFT = 'public/models/tiny-draft';
const SESSIONS = 16;
const N = 16;

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

function startGateway(port: number, staticDir: string): Promise<ServeChild> {
  return spawnServe(['--port', String(port), '--target', TARGET, '--max-context', '256', '--trust-proxy', '127.0.0.1', '--static', staticDir, '--drain-timeout-s', '20']);
}

/** The shipped config with this test's gateways and listen address; the rest unchanged. */
function siteConfig(listenPort: number, gatewayPorts: number[]): string {
  const conf = readFileSync('deploy/nginx/duet.conf', 'utf8');
  const serverLine = /^(\s*)server 127\.0\.0\.1:\d+ (.*);$/m;
  const m = serverLine.exec(conf);
  if (!m) throw new Error('deploy/nginx/duet.conf: no upstream server line to replace');
  const lines = gatewayPorts.map((p) => `${m[1]}server 127.0.0.1:${p} ${m[2]};`).join('\n');
  return conf.replace(new RegExp(serverLine.source, 'gm'), '\u0000').replace(/\u0000(\n\u0000)*/, lines).replace(/^(\s*)listen 8080;$/m, `$1listen 127.0.0.1:${listenPort};`);
}

describe.skipIf(!NGINX && !CI)('nginx in front of two gateways (deploy/nginx/duet.conf)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'duet-nginx-'));
  let nginx: ChildProcess | null = null;
  let a: ServeChild;
  let b: ServeChild;
  let lbPort: number;
  let target: LoadedModel;
  let draft: LoadedModel;
  let hash: string;
  let prompts: number[][];
  let oracle: number[][];
  const nginxArgs = () => ['-p', dir, '-c', join(dir, 'nginx.conf')];

  beforeAll(async () => {
    if (!NGINX) throw new Error('nginx is not installed but CI is set: .ci/run must install it (apt-get install nginx)');
    chmodSync(dir, 0o777); // workers may run as another user when the test runs as root (CI)
    const app = join(dir, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'index.html'), '<!doctype html><title>duet via nginx</title>');
    for (const d of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(dir, d), { mode: 0o777 });
    [a, b] = await Promise.all([startGateway(0, app), startGateway(0, app)]);
    lbPort = await freePort();
    writeFileSync(join(dir, 'duet.conf'), siteConfig(lbPort, [a.port, b.port]));
    writeFileSync(join(dir, 'nginx.conf'), [
      'worker_processes 2;', `pid ${dir}/nginx.pid;`, `error_log ${dir}/error.log info;`, 'daemon off;',
      'events { worker_connections 1024; }',
      'http {', `  access_log ${dir}/access.log;`,
      ...['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((d) => `  ${d === 'body' ? 'client_body' : d}_temp_path ${dir}/${d};`),
      `  include ${dir}/duet.conf;`, '}', ''].join('\n'));
    const check = spawnSync(NGINX, [...nginxArgs(), '-t'], { encoding: 'utf8' });
    if (check.status !== 0) throw new Error(`nginx -t refused the config:\n${check.stderr}`);
    nginx = spawn(NGINX, nginxArgs(), { stdio: ['ignore', 'ignore', 'inherit'] });
    for (let i = 0; ; i++) {
      const ok = await fetch(`http://127.0.0.1:${lbPort}/health`).then((r) => r.ok, () => false);
      if (ok) break;
      if (i > 100) throw new Error(`nginx did not come up; see ${dir}/error.log`);
      await new Promise((r) => setTimeout(r, 50));
    }
    [target, draft] = await Promise.all([loadModelDir(TARGET), loadModelDir(DRAFT)]);
    hash = await tokenizerHash(draft.tokenizerJson!);
    const tok = new Tokenizer(draft.tokenizerJson!, draft.tokenizerConfig);
    const held = JSON.parse(readFileSync('public/models/heldout-prompts.json', 'utf8')) as { prompts: { text: string }[] };
    prompts = Array.from({ length: SESSIONS }, (_, i) => tok.encode(held.prompts[i % held.prompts.length].text.split(' ').slice(0, 3 + (i % 5)).join(' ')));
  });

  afterAll(async () => {
    nginx?.kill('SIGQUIT');
    for (const g of [a, b]) g?.proc.kill('SIGKILL');
  });

  const lbWs = () => `ws://127.0.0.1:${lbPort}/ws`;

  /** SESSIONS speculative runs through nginx; `at` fires once when `after` tokens arrived in total. */
  async function runAll(after: number, at: () => void): Promise<{ texts: number[][]; reconnects: number; events: ClientEvent[] }> {
    let total = 0;
    let fired = false;
    const events: ClientEvent[] = [];
    const links = prompts.map(() => new RemoteTarget({ url: lbWs(), tokenizerHash: hash, reconnect: { attempts: 30, baseDelayMs: 50, maxDelayMs: 500 }, onEvent: (e) => events.push(e) }));
    const runs = links.map((link, i) => speculate(new CpuLlama(draft.config, draft.weights, 256), link, prompts[i], {
      params: GREEDY, maxTokens: N, k: 3,
      onToken: () => {
        if (++total >= after && !fired) {
          fired = true;
          at();
        }
      },
    }));
    const results = await Promise.all(runs); // any error reaching a client rejects here
    const reconnects = links.reduce((s, l) => s + l.reconnects, 0);
    await Promise.all(links.map((l) => l.close()));
    return { texts: results.map((r) => r.tokens), reconnects, events };
  }

  it('serves the app, /models (Range) and /api/info through nginx', async () => {
    const base = `http://127.0.0.1:${lbPort}`;
    expect(await (await fetch(`${base}/`)).text()).toContain('duet via nginx');
    const r = await fetch(`${base}/models/tiny-target/config.json`, { headers: { Range: 'bytes=0-0' } });
    expect(r.status).toBe(206);
    expect(await r.text()).toBe('{');
    expect(await (await fetch(`${base}/api/info`)).json()).toMatchObject({ model: 'tiny-target', backend: 'cpu' });
  });

  it('SIGKILL of one gateway mid-generation: all 16 sessions resume through nginx on the other, texts == target-only', async () => {
    oracle = prompts.map((p) => greedy(target, p, N));
    const r = await runAll(SESSIONS * 4, () => a.proc.kill('SIGKILL'));
    expect(r.texts).toEqual(oracle);
    expect(r.reconnects).toBeGreaterThan(0);
    expect(r.events.filter((e) => e.type === 'resumed').length).toBeGreaterThan(0);
    expect(await a.exited).toBeNull(); // killed by the signal
  });

  it('graceful drain (SIGTERM) mid-generation: /health 503, new upgrades go to the other gateway, no error reaches a client', async () => {
    // bring the killed gateway back on its port; a reload gives nginx's workers fresh upstream state
    a = await startGateway(a.port, join(dir, 'app'));
    spawnSync(NGINX!, [...nginxArgs(), '-s', 'reload']);
    await new Promise((r) => setTimeout(r, 300));
    const health: number[] = [];
    const viaLb: number[] = [];
    // a long baseline stream held directly on b keeps it draining long enough to watch /health
    let onB = `ws://127.0.0.1:${b.port}/ws`;
    const stream = new RemoteTarget({ url: () => onB, tokenizerHash: hash, mode: 'baseline', reconnect: { attempts: 30, baseDelayMs: 50, maxDelayMs: 500 } });
    const longPrompt = prompts[0];
    await stream.open(longPrompt, GREEDY);
    // an idle session on b (between requests when the drain starts): the drain must close its
    // connection, and its next request must resume through nginx on the other gateway. (The 64
    // sessions below may or may not be mid-round on b at that moment: timing, not a rule.)
    let idleOn = `ws://127.0.0.1:${b.port}/ws`;
    const idleEvents: ClientEvent[] = [];
    const idle = new RemoteTarget({ url: () => idleOn, tokenizerHash: hash, mode: 'baseline', reconnect: { attempts: 30, baseDelayMs: 50, maxDelayMs: 500 }, onEvent: (e) => idleEvents.push(e) });
    const idlePrompt = prompts[1];
    await idle.open(idlePrompt, GREEDY);
    // A connection that holds b's drain open until the probes are done: it never reads, so it
    // never answers b's close frame, and b waits (conns > 0) until it is resumed below. Without
    // it the drain could finish before the first probe: the batched verifier streams 60 tokens
    // in ~0.1 s, and b then exits (health 0 instead of 503).
    const holder = new WebSocket(`ws://127.0.0.1:${b.port}/ws`);
    await new Promise<void>((res, rej) => {
      holder.once('message', () => res()); // welcome
      holder.once('error', rej);
      holder.once('open', () => holder.send(encodeJson({ type: 'hello', protocol: PROTOCOL_VERSION, tokenizerHash: hash })));
    });
    const holderClosed = new Promise<number>((res) => holder.once('close', (code) => res(code)));
    holder.pause();
    let streamed: Promise<number[]> | null = null;
    let probing: Promise<void> | null = null;
    const r = await runAll(SESSIONS * 4, () => {
      probing = (async () => {
        const info = await (await fetch(`http://127.0.0.1:${b.port}/api/info`)).json();
        expect(info.sessions).toBeGreaterThan(1); // the drained gateway held sessions besides the stream
        let first!: () => void;
        const started = new Promise<void>((res) => (first = res));
        streamed = stream.generate(60, () => first());
        await started;
        onB = lbWs(); // should the stream be cut, it resumes through nginx
        idleOn = lbWs();
        b.proc.kill('SIGTERM');
        // the signal lands asynchronously: wait for the first answer that is not "ready"
        for (let i = 0; i < 200; i++) {
          const h = await fetch(`http://127.0.0.1:${b.port}/health`).then((x) => x.status, () => 0);
          if (h !== 200) break;
          await new Promise((res) => setTimeout(res, 10));
        }
        for (let i = 0; i < 6; i++) {
          health.push(await fetch(`http://127.0.0.1:${b.port}/health`).then((x) => x.status, () => 0));
          viaLb.push(await upgradeStatus(lbWs()));
        }
        holder.resume(); // reads the close frame, answers it: b's last connection goes
      })();
    });
    await probing;
    const tail = await streamed!;
    expect([stream.transcript[longPrompt.length], ...tail]).toEqual(greedy(target, longPrompt, 61));
    await stream.close();
    expect(r.texts).toEqual(oracle);
    // up and saying so after SIGTERM, for as long as the holder keeps the drain open
    expect(health).toEqual(health.map(() => 503));
    expect(viaLb).toEqual(viaLb.map(() => 101)); // nginx skips the 503 and reaches the other gateway
    expect(await holderClosed).toBe(1001); // told SHUTTING_DOWN by the drain
    expect(await b.exited).toBe(0); // drained and exited cleanly
    // the idle session was cut by the drain and resumes on the other gateway, exactly
    const idleTail = await idle.generate(8);
    expect(idleEvents.filter((e) => e.type === 'resumed').length).toBe(1);
    expect([idle.transcript[idlePrompt.length], ...idleTail]).toEqual(greedy(target, idlePrompt, 9));
    await idle.close();
  });
});

function upgradeStatus(url: string): Promise<number> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url);
    ws.on('open', () => {
      ws.close();
      resolve(101);
    });
    ws.on('unexpected-response', (_q, res) => {
      resolve(res.statusCode ?? 0);
      res.resume();
    });
    ws.on('error', () => resolve(0));
  });
}
