// Checks made on a WebSocket upgrade before a socket exists, in the order checkUpgrade makes
// them: a well-formed path, a gateway taking connections, the /ws path, an allowed browser
// Origin, the token, the connection caps, and which client address it counts against (behind
// a trusted proxy: the address the proxy reports in X-Forwarded-For). Also the one comparison
// of an offered token with the gateway's --token, for the upgrade, hello and the /v1 API.
//
// The Origin is compared with the configured allow-list and with the address the gateway
// listens on — never with the request's Host header, which the page's own origin controls
// under DNS rebinding (evil.example resolving to 127.0.0.1 sends Origin and Host both
// evil.example:PORT).

import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { isIP, type Socket } from 'node:net';
import { networkInterfaces } from 'node:os';

const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '[::1]'];

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host === '[::1]' || /^127\./.test(host);
}

function bracket(ip: string): string {
  return ip.includes(':') ? `[${ip}]` : ip;
}

/** Hostnames (as a URL writes them) under which a page served by this gateway itself is reached. */
export function listeningHostnames(host: string): string[] {
  if (isLoopback(host)) return LOOPBACK_NAMES;
  if (host === '0.0.0.0' || host === '::' || host === '') {
    // every interface: the page may be loaded from any of this machine's addresses
    const out = new Set(LOOPBACK_NAMES);
    for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) out.add(bracket(a.address));
    return [...out];
  }
  return [isIP(host) ? bracket(host) : host.toLowerCase()];
}

/**
 * May a page from `origin` open the WebSocket? No Origin (not a browser): yes — the check
 * protects browsers from cross-site pages, and non-browser clients can set any header anyway.
 */
export function originAllowed(origin: string | undefined, allowOrigins: readonly string[], listenHost: string, listenPort: number): boolean {
  if (origin === undefined) return true;
  if (allowOrigins.includes('*') || allowOrigins.includes(origin)) return true;
  let u: URL;
  try {
    u = new URL(origin);
  } catch {
    return false;
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return false;
  const port = u.port ? Number(u.port) : u.protocol === 'https:' ? 443 : 80;
  return port === listenPort && listeningHostnames(listenHost).includes(u.hostname.toLowerCase());
}

/** The token of an `Authorization: Bearer TOKEN` header (scheme case-insensitive, RFC 9110 §11.1). */
export function bearerToken(authorization: string | undefined): string | null {
  const m = /^bearer[ \t]+(\S+)[ \t]*$/i.exec(authorization ?? '');
  return m ? m[1] : null;
}

/** The token offered on the upgrade: `?token=` or `Authorization: Bearer`. */
export function offeredToken(req: UpgradeRequest, url: URL): string | null {
  return url.searchParams.get('token') ?? bearerToken(req.headers.authorization);
}

const digest = (s: string): Buffer => createHash('sha256').update(s).digest();

/**
 * Does an offered token let the client in? A gateway without --token takes anyone; with one,
 * a missing token (null) is refused and a given one is compared in constant time.
 */
export function tokenAccepted(given: string | null, expected: string | undefined): boolean {
  if (!expected) return true;
  return given !== null && timingSafeEqual(digest(given), digest(expected));
}

/**
 * The client address a request counts against. A request from a trusted proxy (e.g. the
 * nginx in deploy/) is attributed to the nearest untrusted address in X-Forwarded-For.
 */
export function clientAddress(req: UpgradeRequest, trustedProxies: readonly string[]): string {
  const peer = normalize(req.socket.remoteAddress ?? 'unknown');
  if (!trustedProxies.includes(peer)) return peer;
  const xff = req.headers['x-forwarded-for'];
  const hops = (Array.isArray(xff) ? xff.join(',') : xff ?? '').split(',').map((s) => normalize(s.trim())).filter(Boolean);
  for (let i = hops.length - 1; i >= 0; i--) if (!trustedProxies.includes(hops[i])) return hops[i];
  return hops[0] ?? peer;
}

function normalize(addr: string): string {
  return addr.startsWith('::ffff:') ? addr.slice(7) : addr;
}

/** What checkUpgrade needs to know about the gateway, read at the moment of each upgrade. */
export interface UpgradePolicy {
  /** The WebSocket endpoint's path (/ws). */
  path: string;
  allowOrigins: readonly string[];
  /** The address and port the gateway listens on (the Origin check's own-page case). */
  listenHost: string;
  listenPort: number;
  token: string | undefined;
  trustProxy: readonly string[];
  /** Draining or shutting down: every upgrade is refused. */
  stopping(): boolean;
  connections(): number;
  maxConnections: number;
  connectionsOf(addr: string): number;
  maxConnectionsPerAddress: number;
}

/** The parts of an upgrade request the checks read. */
export type UpgradeRequest = Pick<IncomingMessage, 'url' | 'headers' | 'socket'>;

/** An HTTP answer that refuses the upgrade. */
export interface UpgradeRefusal {
  status: number;
  text: string;
  body: string;
}

/** The upgrade's verdict: the client address to count the connection against, or a refusal. */
export function checkUpgrade(req: UpgradeRequest, p: UpgradePolicy): { addr: string } | { refuse: UpgradeRefusal } {
  const refuse = (status: number, text: string, body: string) => ({ refuse: { status, text, body } });
  let url: URL;
  try {
    url = new URL(req.url ?? '/', 'http://gateway');
  } catch {
    return refuse(400, 'Bad Request', 'bad request path\n');
  }
  if (p.stopping()) return refuse(503, 'Service Unavailable', 'gateway is draining or shutting down: connect to another gateway\n');
  if (url.pathname !== p.path) return refuse(404, 'Not Found', `the WebSocket endpoint is ${p.path}\n`);
  const origin = req.headers.origin;
  if (!originAllowed(origin, p.allowOrigins, p.listenHost, p.listenPort)) return refuse(403, 'Forbidden', `origin ${origin} is not allowed; start the gateway with --allow-origin ${origin}\n`);
  if (!tokenAccepted(offeredToken(req, url), p.token)) return refuse(401, 'Unauthorized', 'missing or wrong token: connect with ?token=SECRET or Authorization: Bearer SECRET\n');
  if (p.connections() >= p.maxConnections) return refuse(503, 'Service Unavailable', `the gateway holds its maximum of ${p.maxConnections} connections; retry later\n`);
  const addr = clientAddress(req, p.trustProxy);
  if (p.connectionsOf(addr) >= p.maxConnectionsPerAddress) return refuse(503, 'Service Unavailable', `address ${addr} holds its maximum of ${p.maxConnectionsPerAddress} connections; close one or retry later\n`);
  return { addr };
}

/**
 * checkUpgrade for GET /api/upgrade-check?origin=O&token=T: the upgrade a page at origin O
 * offering token T would make from this request's address. 101 = it would be taken.
 */
export function checkUpgradeFor(req: IncomingMessage, query: URL, p: UpgradePolicy): { status: number; message: string } {
  const token = query.searchParams.get('token');
  const origin = query.searchParams.get('origin') ?? req.headers.origin;
  const headers = { ...req.headers, origin: origin || undefined };
  const verdict = checkUpgrade({ url: p.path + (token !== null ? `?token=${encodeURIComponent(token)}` : ''), headers, socket: req.socket }, p);
  return 'refuse' in verdict ? { status: verdict.refuse.status, message: verdict.refuse.body.trim() } : { status: 101, message: 'the upgrade would be taken' };
}

/** Answer a refused upgrade on the raw socket and close it. */
export function refuseUpgrade(socket: Socket, r: UpgradeRefusal): void {
  socket.end(`HTTP/1.1 ${r.status} ${r.text}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(r.body)}\r\n\r\n${r.body}`);
}
