// The upgrade checks (upgrade.ts) on hand-made requests: the one token comparison that the
// upgrade, hello and the /v1 API share, and checkUpgrade's verdicts in the order it makes them
// (a request that breaks several rules gets the first one's answer). harden.test.ts drives the
// same checks over real sockets.
import type { IncomingMessage } from 'node:http';
import { describe, expect, it } from 'vitest';
import { bearerToken, checkUpgrade, offeredToken, tokenAccepted, type UpgradePolicy } from './upgrade.ts';

function req(url: string, headers: Record<string, string> = {}, remoteAddress = '127.0.0.1'): IncomingMessage {
  return { url, headers: Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v])), socket: { remoteAddress } } as unknown as IncomingMessage;
}

function policy(o: Partial<UpgradePolicy> = {}): UpgradePolicy {
  return {
    path: '/ws', allowOrigins: [], listenHost: '127.0.0.1', listenPort: 8080, token: 'sekrit', trustProxy: [],
    stopping: () => false, connections: () => 0, maxConnections: 10, connectionsOf: () => 0, maxConnectionsPerAddress: 2, ...o,
  };
}

const statusOf = (v: ReturnType<typeof checkUpgrade>): number | string => ('refuse' in v ? v.refuse.status : v.addr);

describe('the token comparison', () => {
  it('a gateway without a token takes anyone; with one, only that token', () => {
    expect(tokenAccepted(null, undefined)).toBe(true);
    expect(tokenAccepted('anything', undefined)).toBe(true);
    expect(tokenAccepted('anything', '')).toBe(true);
    expect(tokenAccepted(null, 'sekrit')).toBe(false);
    expect(tokenAccepted('', 'sekrit')).toBe(false);
    expect(tokenAccepted('sekri', 'sekrit')).toBe(false);
    expect(tokenAccepted('sekritt', 'sekrit')).toBe(false);
    expect(tokenAccepted('sekrit', 'sekrit')).toBe(true);
  });

  it('reads Bearer case-insensitively, ?token= first', () => {
    expect(bearerToken('Bearer abc')).toBe('abc');
    expect(bearerToken('bEaReR\tabc \t')).toBe('abc');
    expect(bearerToken('Basic abc')).toBeNull();
    expect(bearerToken('Bearer ')).toBeNull();
    expect(bearerToken(undefined)).toBeNull();
    expect(offeredToken(req('/ws?token=q'), new URL('/ws?token=q', 'http://x'))).toBe('q');
    expect(offeredToken(req('/ws?token=q', { Authorization: 'Bearer h' }), new URL('/ws?token=q', 'http://x'))).toBe('q');
    expect(offeredToken(req('/ws', { Authorization: 'Bearer h' }), new URL('/ws', 'http://x'))).toBe('h');
    expect(offeredToken(req('/ws'), new URL('/ws', 'http://x'))).toBeNull();
  });
});

describe('checkUpgrade', () => {
  const good = { Authorization: 'Bearer sekrit' };

  it('lets a good request in, counted against its own address or, behind a trusted proxy, the forwarded one', () => {
    expect(statusOf(checkUpgrade(req('/ws', good), policy()))).toBe('127.0.0.1');
    expect(statusOf(checkUpgrade(req('/ws?token=sekrit', { Origin: 'http://localhost:8080' }), policy()))).toBe('127.0.0.1');
    expect(statusOf(checkUpgrade(req('/ws', { ...good, 'X-Forwarded-For': '10.0.0.7' }, '::ffff:10.1.1.1'), policy({ trustProxy: ['10.1.1.1'] })))).toBe('10.0.0.7');
    expect(statusOf(checkUpgrade(req('/ws', { ...good, 'X-Forwarded-For': '10.0.0.7' }, '10.1.1.2'), policy({ trustProxy: ['10.1.1.1'] })))).toBe('10.1.1.2');
  });

  it('refuses in order: path syntax, stopping, path, origin, token, connections, per address', () => {
    const all: Partial<UpgradePolicy> = { stopping: () => true, connections: () => 10, connectionsOf: () => 2 };
    const bad = { Origin: 'http://evil.example:8080' };
    expect(statusOf(checkUpgrade(req('//[', bad), policy(all)))).toBe(400);
    expect(statusOf(checkUpgrade(req('/nope', bad), policy(all)))).toBe(503);
    expect(statusOf(checkUpgrade(req('/nope', bad), policy({ ...all, stopping: () => false })))).toBe(404);
    expect(statusOf(checkUpgrade(req('/ws', bad), policy({ ...all, stopping: () => false })))).toBe(403);
    expect(statusOf(checkUpgrade(req('/ws'), policy({ ...all, stopping: () => false })))).toBe(401);
    expect(statusOf(checkUpgrade(req('/ws', good), policy({ ...all, stopping: () => false })))).toBe(503);
    const perAddr = checkUpgrade(req('/ws', good), policy({ connectionsOf: (a) => (a === '127.0.0.1' ? 2 : 0) }));
    expect(statusOf(perAddr)).toBe(503);
    expect('refuse' in perAddr && perAddr.refuse.body).toContain('address 127.0.0.1 holds its maximum of 2 connections');
  });
});
