// The worker's standby links (gateway.ts): a run takes a link that is already connected and
// greeted for its mode and RTT, so its first frame on the wire is the open; a standby link that
// went away, aged out or belongs to another kind is not used; closeStandby ends them all.
// Against a minimal fake gateway (npm `ws`) that counts connections and frames.
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { WebSocketServer, type WebSocket } from 'ws';
import type { AddressInfo } from 'node:net';
import { PROTOCOL_VERSION, type GatewayInfo } from '../../protocol/messages.ts';
import { STANDBY_MAX_AGE_MS, closeStandby, openLink, warmLink, type Gateway } from './gateway.ts';

const HASH = 'standby-test-hash';
const INFO: GatewayInfo = {
  protocol: PROTOCOL_VERSION, backend: 'fake', model: 'fake', device: 'none', tokenizerHash: HASH, vocabSize: 97, maxContext: 64,
  maxBlock: 8, maxBatch: 4, maxSessions: 8, maxPayloadBytes: 1 << 20, ratePerSec: 1000, auth: false,
};

let wss: WebSocketServer;
let url = '';
/** Every socket the fake gateway accepted, with the message types it received, in order. */
const conns: { ws: WebSocket; frames: string[] }[] = [];

beforeAll(async () => {
  wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await new Promise<void>((r) => wss.once('listening', () => r()));
  url = `ws://127.0.0.1:${(wss.address() as AddressInfo).port}/ws`;
  wss.on('connection', (ws) => {
    const c = { ws, frames: [] as string[] };
    conns.push(c);
    ws.on('message', (data) => {
      const m = JSON.parse(String(data)) as { type: string; session?: number; prompt?: number[] };
      c.frames.push(m.type);
      if (m.type === 'hello') ws.send(JSON.stringify({ type: 'welcome', protocol: PROTOCOL_VERSION, info: INFO }));
      if (m.type === 'open') ws.send(JSON.stringify({ type: 'opened', session: m.session, firstToken: 5, length: (m.prompt?.length ?? 0) + 1, prefillMs: 1 }));
    });
  });
});
afterAll(async () => {
  for (const c of conns) c.ws.terminate();
  await new Promise<void>((r) => wss.close(() => r()));
});
afterEach(() => {
  vi.useRealTimers();
});

function gateway(): Gateway {
  return { wsUrl: url, token: '', info: { url, backend: 'fake', model: 'fake', device: 'none', tokenizerHash: HASH, vocabSize: 97, maxContext: 64 }, onNotice: () => {} };
}

const GREEDY = { temperature: 0, topK: 0, topP: 1, seed: 0 };

describe('standby links', () => {
  it('a run takes the warmed link: no new connection, and the open is the first frame after the hello', async () => {
    const g = gateway();
    const before = conns.length;
    await warmLink(g, HASH, 'speculative', 0);
    expect(conns.length).toBe(before + 1);
    expect(conns.at(-1)!.frames).toEqual(['hello']);
    const link = openLink(g, HASH, 'speculative', 0, () => {});
    const opened = await link.open([1, 2, 3], GREEDY);
    expect(opened.firstToken).toBe(5);
    expect(conns.length).toBe(before + 1);
    expect(conns.at(-1)!.frames).toEqual(['hello', 'open']);
    // taken: the next run of this kind connects itself unless a new one is warmed
    expect(g.standby?.size).toBe(0);
    await link.close();
    const other = openLink(g, HASH, 'speculative', 0, () => {});
    await other.open([1], GREEDY);
    expect(conns.length).toBe(before + 2);
    await other.close();
    await closeStandby(g);
  });

  it('is kept per mode and RTT: a baseline run does not take the speculative link', async () => {
    const g = gateway();
    await warmLink(g, HASH, 'speculative', 0);
    const before = conns.length;
    const base = openLink(g, HASH, 'baseline', 0, () => {});
    await base.open([4], GREEDY);
    const rtt = openLink(g, HASH, 'speculative', 20, () => {});
    await rtt.open([4], GREEDY);
    expect(conns.length).toBe(before + 2);
    expect(g.standby?.size).toBe(1);
    await Promise.all([base.close(), rtt.close()]);
    await closeStandby(g);
  });

  it('one whose socket closed, or that aged out, is replaced by a fresh connect', async () => {
    const g = gateway();
    await warmLink(g, HASH, 'speculative', 0);
    const first = conns.at(-1)!;
    first.ws.close(1000, 'idle timeout');
    await vi.waitFor(() => expect(g.standby!.get(`${HASH}|speculative|0`)!.link.info).toBeNull());
    const before = conns.length;
    const link = openLink(g, HASH, 'speculative', 0, () => {});
    await link.open([7], GREEDY);
    expect(conns.length).toBe(before + 1);
    expect(conns.at(-1)!.frames).toEqual(['hello', 'open']);
    await link.close();

    await warmLink(g, HASH, 'speculative', 0);
    const aged = conns.at(-1)!;
    const realNow = performance.now.bind(performance);
    const spy = vi.spyOn(performance, 'now').mockImplementation(() => realNow() + STANDBY_MAX_AGE_MS + 1000);
    try {
      const late = openLink(g, HASH, 'speculative', 0, () => {});
      await late.open([7], GREEDY);
      expect(conns.at(-1)).not.toBe(aged);
      expect(aged.frames).toEqual(['hello']);
      await late.close();
    } finally {
      spy.mockRestore();
    }
    await vi.waitFor(() => expect(aged.ws.readyState).toBe(aged.ws.CLOSED));
    await closeStandby(g);
  });

  it('closeStandby closes the waiting links, and a retired gateway warms no more', async () => {
    const g = gateway();
    await warmLink(g, HASH, 'speculative', 0);
    await warmLink(g, HASH, 'baseline', 0);
    const waiting = conns.slice(-2);
    await closeStandby(g);
    await vi.waitFor(() => expect(waiting.every((c) => c.ws.readyState === c.ws.CLOSED)).toBe(true));
    const before = conns.length;
    await warmLink(g, HASH, 'speculative', 0);
    expect(conns.length).toBe(before);
    expect(g.standby).toBeUndefined();
  });

  it('a gateway that does not answer leaves no standby link and no error', async () => {
    const g: Gateway = { ...gateway(), wsUrl: 'ws://127.0.0.1:9/ws' };
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const warm = warmLink(g, HASH, 'speculative', 0);
    await vi.advanceTimersByTimeAsync(6_000);
    await expect(warm).resolves.toBeUndefined();
    expect(g.standby?.size ?? 0).toBe(0);
  });
});
