// Why a browser's upgrade was refused. A browser hides the HTTP status of a refused WebSocket
// upgrade (close 1006, whatever it was), so the client asks GET /api/upgrade-check what the
// gateway would answer a page at its origin with its token. Only an explicit 401 / 403 is
// final; a full, draining or restarting gateway is retried. (The old probe read "the gateway
// answers /api/info" as an origin refusal, so a reconnect that met a gateway coming back up,
// or a full one, failed for good with ORIGIN_REFUSED: a CI failure of e2e/gateway-restart.)
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import WebSocket from 'ws';
import type { WebSocketLike } from '../src/protocol/client.ts';
import { ProtocolError } from '../src/protocol/errors.ts';
import { RawClient, remote, startTestGateway, type TestGateway } from './testing.ts';

const SMALL = { hiddenSize: 64, intermediateSize: 131, numHeads: 4, numKvHeads: 2, headDim: 16, vocabSize: 389 };
const APP = 'http://app.example';

/** A WebSocket that behaves as a browser's does: a refused upgrade is a bare close 1006, no status. */
class BrowserLikeSocket implements WebSocketLike {
  binaryType = 'arraybuffer';
  onopen: WebSocketLike['onopen'] = null;
  onmessage: WebSocketLike['onmessage'] = null;
  onclose: WebSocketLike['onclose'] = null;
  onerror: WebSocketLike['onerror'] = null;
  readonly #ws: WebSocket;
  constructor(url: string, origin: string) {
    const ws = new WebSocket(url, { headers: { Origin: origin } });
    this.#ws = ws;
    let refused = false;
    ws.on('unexpected-response', (req) => {
      refused = true;
      req.destroy();
      this.onerror?.({});
      this.onclose?.({ code: 1006, reason: '' });
    });
    ws.on('open', () => this.onopen?.({}));
    ws.on('message', (data, isBinary) => this.onmessage?.({ data: isBinary ? data : data.toString() }));
    ws.on('error', () => {
      if (!refused) this.onerror?.({});
    });
    ws.on('close', (code, reason) => {
      if (!refused) this.onclose?.({ code, reason: reason.toString() });
    });
  }
  get readyState(): number {
    return this.#ws.readyState;
  }
  send(data: string | Uint8Array): void {
    this.#ws.send(data);
  }
  close(code?: number, reason?: string): void {
    this.#ws.close(code, reason);
  }
}

let g: TestGateway;
beforeAll(async () => {
  g = await startTestGateway({ pairOptions: { seed: 3, config: SMALL }, token: 's3cret', allowOrigins: [APP], maxConnections: 2 });
});
afterAll(async () => g?.close());
afterEach(() => vi.unstubAllGlobals());

async function check(query: string): Promise<{ admit: boolean; status: number; message: string; cors: string | null }> {
  const res = await fetch(`${g.gateway.url}/api/upgrade-check${query}`);
  expect(res.status).toBe(200);
  return { ...(await res.json()), cors: res.headers.get('access-control-allow-origin') };
}

/** A client in a page at `origin`, on browser-like sockets, that gives up after one retry. */
function pageClient(origin: string, token?: string) {
  vi.stubGlobal('location', { origin });
  return remote(g.gateway, { token, reconnect: { attempts: 1, baseDelayMs: 10 }, createWebSocket: (u) => new BrowserLikeSocket(u, origin) });
}

describe('GET /api/upgrade-check', () => {
  it('answers what an upgrade from that origin with that token would get', async () => {
    expect(await check('')).toMatchObject({ admit: false, status: 401, cors: '*' });
    expect(await check('?token=nope')).toMatchObject({ admit: false, status: 401 });
    expect(await check('?token=s3cret')).toMatchObject({ admit: true, status: 101 });
    const foreign = await check(`?token=s3cret&origin=${encodeURIComponent('http://evil.example')}`);
    expect(foreign).toMatchObject({ admit: false, status: 403 });
    expect(foreign.message).toMatch(/--allow-origin http:\/\/evil\.example/);
    expect(await check(`?token=s3cret&origin=${encodeURIComponent(APP)}`)).toMatchObject({ admit: true, status: 101 });
  });

  it('says 503 while the gateway holds its maximum of connections', async () => {
    const a = await RawClient.connect(`${g.gateway.wsUrl}?token=s3cret`);
    const b = await RawClient.connect(`${g.gateway.wsUrl}?token=s3cret`);
    try {
      const r = await check('?token=s3cret');
      expect(r).toMatchObject({ admit: false, status: 503 });
      expect(r.message).toMatch(/maximum of 2 connections/);
    } finally {
      a.close();
      b.close();
    }
  });
});

describe('a browser-like client explains a refused upgrade from the check', () => {
  it('no token: UNAUTHORIZED, final', async () => {
    const t = pageClient(APP);
    await expect(t.connect()).rejects.toMatchObject({ code: 'UNAUTHORIZED', fatal: true });
    await t.close();
  });

  it('a foreign origin: ORIGIN_REFUSED, final', async () => {
    const t = pageClient('http://evil.example', 's3cret');
    await expect(t.connect()).rejects.toMatchObject({ code: 'ORIGIN_REFUSED', fatal: true });
    await t.close();
  });

  it('a full gateway is not called an origin refusal: retried, then CONNECTION_LOST saying it is full', async () => {
    const a = await RawClient.connect(`${g.gateway.wsUrl}?token=s3cret`);
    const b = await RawClient.connect(`${g.gateway.wsUrl}?token=s3cret`);
    const t = pageClient(APP, 's3cret');
    try {
      const err = await t.connect().then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(ProtocolError);
      expect(err).toMatchObject({ code: 'CONNECTION_LOST' });
      expect((err as Error).message).toMatch(/full or draining \(HTTP 503\)/);
    } finally {
      a.close();
      b.close();
      await t.close();
    }
    // and once a connection is free, the same page connects
    await until(async () => (await check('?token=s3cret')).admit);
    const ok = pageClient(APP, 's3cret');
    expect((await ok.connect()).auth).toBe(true);
    await ok.close();
  });
});

async function until(pred: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}
