// The gateway's HTTP side and the `duet serve` argument parser: /api/info, /models with byte
// ranges (what the browser's URL loader relies on), the static app, path traversal refused.
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseRange } from './http.ts';
import { parseServeArgs, UsageError } from './serve.ts';
import { startTestGateway, type TestGateway } from './testing.ts';

let t: TestGateway;
const blob = Uint8Array.from({ length: 1000 }, (_, i) => (i * 7) & 255);

beforeAll(async () => {
  const root = mkdtempSync(join(tmpdir(), 'duet-http-'));
  mkdirSync(join(root, 'models', 'm'), { recursive: true });
  mkdirSync(join(root, 'dist'), { recursive: true });
  writeFileSync(join(root, 'models', 'm', 'model.safetensors'), blob);
  writeFileSync(join(root, 'dist', 'index.html'), '<!doctype html><title>duet</title>');
  writeFileSync(join(root, 'secret.txt'), 'do not serve');
  t = await startTestGateway({
    pairOptions: { seed: 2, config: { hiddenSize: 32, intermediateSize: 67, numHeads: 2, numKvHeads: 1, headDim: 16, vocabSize: 263 } },
    modelsDir: join(root, 'models'), staticDir: join(root, 'dist'), allowOrigins: ['http://localhost:5173'],
  });
});
afterAll(async () => t?.close());

const get = (path: string, headers: Record<string, string> = {}, method = 'GET') => fetch(`${t.gateway.url}${path}`, { headers, method });

describe('HTTP', () => {
  it('GET /api/info describes the target, verifier and limits', async () => {
    const r = await get('/api/info', { Origin: 'http://localhost:5173' });
    expect(r.status).toBe(200);
    expect(r.headers.get('access-control-allow-origin')).toBe('http://localhost:5173');
    const info = await r.json();
    expect(info).toMatchObject({ protocol: 1, backend: 'cpu', model: 'tiny-random', tokenizerHash: 'test-tokenizer-hash', vocabSize: 263, auth: false, sessions: 0 });
    expect((await get('/api/info', { Origin: 'http://evil.example' })).headers.get('access-control-allow-origin')).toBeNull();
  });

  it('serves /models with byte ranges', async () => {
    const whole = await get('/models/m/model.safetensors');
    expect(whole.status).toBe(200);
    expect(whole.headers.get('accept-ranges')).toBe('bytes');
    expect(new Uint8Array(await whole.arrayBuffer())).toEqual(blob);
    const part = await get('/models/m/model.safetensors', { Range: 'bytes=10-19' });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe('bytes 10-19/1000');
    expect(new Uint8Array(await part.arrayBuffer())).toEqual(blob.subarray(10, 20));
    const tail = await get('/models/m/model.safetensors', { Range: 'bytes=-5' });
    expect(new Uint8Array(await tail.arrayBuffer())).toEqual(blob.subarray(995));
    const open = await get('/models/m/model.safetensors', { Range: 'bytes=990-' });
    expect(new Uint8Array(await open.arrayBuffer())).toEqual(blob.subarray(990));
    const bad = await get('/models/m/model.safetensors', { Range: 'bytes=2000-3000' });
    expect(bad.status).toBe(416);
    expect(bad.headers.get('content-range')).toBe('bytes */1000');
    const head = await get('/models/m/model.safetensors', {}, 'HEAD');
    expect(head.headers.get('content-length')).toBe('1000');
    expect((await get('/models/m/missing.bin')).status).toBe(404);
  });

  it('serves the app and refuses to leave its folders', async () => {
    const index = await get('/');
    expect(index.headers.get('content-type')).toMatch(/text\/html/);
    expect(await index.text()).toMatch(/duet/);
    for (const p of ['/../secret.txt', '/models/../../secret.txt', '/models/%2e%2e/%2e%2e/secret.txt', '/%2e%2e/secret.txt', '/models/m%00.txt']) {
      const r = await get(p);
      expect(r.status, p).toBeGreaterThanOrEqual(400);
      expect(await r.text(), p).not.toMatch(/do not serve/);
    }
    expect((await get('/api/info', {}, 'POST')).status).toBe(405);
  });

  it('parseRange covers the single-range forms', () => {
    expect(parseRange(undefined, 10)).toBeNull();
    expect(parseRange('bytes=0-0', 10)).toEqual({ start: 0, end: 0 });
    expect(parseRange('bytes=5-100', 10)).toEqual({ start: 5, end: 9 });
    expect(parseRange('bytes=-3', 10)).toEqual({ start: 7, end: 9 });
    expect(parseRange('bytes=-30', 10)).toEqual({ start: 0, end: 9 });
    for (const bad of ['bytes=-0', 'bytes=10-', 'bytes=5-2']) expect(parseRange(bad, 10), bad).toBe('bad');
    // RFC 9110 §14.2: a Range the server does not serve (other unit, several ranges, malformed) is ignored: whole file
    for (const ignored of ['bytes=-', 'items=0-1', 'bytes=0-1,3-4', 'pages=1']) expect(parseRange(ignored, 10), ignored).toBeNull();
    expect(parseRange('BYTES=2-4', 10)).toEqual({ start: 2, end: 4 });
  });
});

describe('duet serve arguments', () => {
  it('parses every option with its default', () => {
    const a = parseServeArgs(['--port', '0', '--verifier', 'sidecar', '--sidecar-addr', 'h:1', '--sidecar-addr', 'h:2', '--allow-origin', 'http://a,http://b', '--max-batch', '4', '--token', 's']);
    expect(a).toMatchObject({ port: 0, host: '127.0.0.1', verifier: 'sidecar', sidecarAddrs: ['h:1', 'h:2'], allowOrigins: ['http://a', 'http://b'], maxBatch: 4, token: 's', maxSessions: 64 });
    expect(parseServeArgs([]).target).toMatch(/public\/models\/tiny-target$/);
  });
  it('refuses bad options with a usage error', () => {
    expect(() => parseServeArgs(['--verifier', 'tpu'])).toThrow(UsageError);
    expect(() => parseServeArgs(['--port', '-1'])).toThrow(UsageError);
    expect(() => parseServeArgs(['--port=1.5'])).toThrow(/--port/);
    expect(() => parseServeArgs(['--verifier', 'sidecar'])).toThrow(/sidecar-cmd/);
    expect(() => parseServeArgs(['--sidecar-addr', 'h:1'])).toThrow(/--verifier sidecar/);
    expect(() => parseServeArgs(['--bogus'])).toThrow(UsageError);
  });
});
