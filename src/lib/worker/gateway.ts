// The worker's side of the gateway: the URL a user typed as the WebSocket URL, the connect
// probe that checks the target's tokenizer against the draft's, the RemoteTarget each run
// opens (taken, where one is ready, from a link already connected and greeted for that run's
// mode: its first token then waits for the open alone), and client events as notices.

import type { DuetErrorInfo, DuetNotice, GatewayInfo, GatewayOptions } from '../types.ts';
import type { RunMode } from './protocol.ts';
import { RemoteTarget, checkUpgrade, type ClientEvent } from '../../protocol/client.ts';
import { ProtocolError } from '../../protocol/errors.ts';
import { WorkerFailure, fail, toErrorInfo } from './errors.ts';

/** The gateway the worker connected to; each run opens its own session on it. */
export interface Gateway {
  wsUrl: string;
  token: string;
  info: GatewayInfo;
  onNotice: (n: DuetNotice) => void;
  /** Links connected and greeted ahead of the next run, by standbyKey; made by warmLink. */
  standby?: Map<string, Standby>;
  /** Replaced by a newer connect: no more standby links are made for it. */
  retired?: boolean;
}

/** A link whose connect + hello is done, with no session yet, kept for the next run of its kind. */
interface Standby {
  link: RemoteTarget;
  hooks: LinkHooks;
  readyAt: number;
}

/** Where a link's client events go: nowhere while it waits in standby, to its run once taken. */
interface LinkHooks {
  quiet: boolean;
  onReconnecting: () => void;
}

/**
 * A standby link older than this is replaced, not used: a gateway closes a connection with no
 * frames after its idle timeout (`duet serve` default 120 s). One that was closed anyway
 * reconnects on open, as a new link would.
 */
export const STANDBY_MAX_AGE_MS = 60_000;
/** A standby connect that has not finished in this long is given up (the next run connects itself). */
const STANDBY_CONNECT_MS = 5_000;

const standbyKey = (tokenizerHash: string, mode: RunMode, rttMs: number): string => `${tokenizerHash}|${mode}|${rttMs}`;
const nowMs = (): number => globalThis.performance.now();
/** Still connected (info is null once its socket closed: an idle timeout, a restart) and young enough to take. */
const usable = (s: Standby | undefined): boolean => !!s && !!s.link.info && nowMs() - s.readyAt <= STANDBY_MAX_AGE_MS;

/** '' → this page's gateway; http(s)://host → ws(s)://host/ws; a bare ws(s)://host/ gets /ws. */
export function wsUrlOf(url: string): string {
  let u: URL;
  try {
    u = new URL(url || '/ws', self.location.origin);
  } catch {
    fail('gateway-unreachable', `"${url}" is not a URL.`, 'Enter the gateway as ws://host:port or http://host:port (Models view).');
  }
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') fail('gateway-unreachable', `"${url}" is not a ws:// or http:// URL.`, 'Enter the gateway as ws://host:port (Models view).');
  if (u.pathname === '/' || u.pathname === '') u.pathname = '/ws';
  return u.href;
}

function noticeOf(e: ClientEvent, url: string): DuetNotice | null {
  switch (e.type) {
    case 'connected':
      return { kind: 'gateway', state: 'connected', detail: '' };
    case 'resumed':
      return { kind: 'gateway', state: 'connected', detail: `resumed the session after a reconnect (${e.transcriptLength} tokens replayed)` };
    case 'reconnecting':
      return { kind: 'gateway', state: 'reconnecting', detail: `${url}: attempt ${e.attempt}, next in ${Math.round(e.delayMs)} ms` };
    default:
      return null;
  }
}

/** Connects once (no reconnects) to read the gateway's info; a tokenizer mismatch is refused here. */
export async function probeGateway(opts: GatewayOptions, tokenizerHash: string, onNotice: (n: DuetNotice) => void): Promise<Gateway> {
  const wsUrl = wsUrlOf(opts.url);
  const token = opts.token ?? '';
  const probe = new RemoteTarget({ url: wsUrl, tokenizerHash, token: token || undefined, reconnect: false, clientName: 'duet web (probe)', timeoutMs: 15_000 });
  try {
    const i = await probe.connect();
    const info: GatewayInfo = { url: wsUrl, backend: i.backend, model: i.model, device: i.device, tokenizerHash: i.tokenizerHash, vocabSize: i.vocabSize, maxContext: i.maxContext };
    return { wsUrl, token, info, onNotice };
  } catch (err) {
    throw new WorkerFailure(toErrorInfo(err, wsUrl));
  } finally {
    await probe.close();
  }
}

/**
 * What can be known of a gateway before a draft is loaded (the full connect checks the draft's
 * tokenizer, so it waits for the draft): a URL that is not one, no answer there, or an upgrade
 * this page would be refused (token, origin). null: nothing wrong found (connect will tell the rest).
 */
export async function precheckGateway(opts: GatewayOptions): Promise<DuetErrorInfo | null> {
  let wsUrl: string;
  try {
    wsUrl = wsUrlOf(opts.url);
  } catch (err) {
    return toErrorInfo(err, opts.url);
  }
  const u = new URL(wsUrl);
  if (opts.token) u.searchParams.set('token', opts.token);
  const r = await checkUpgrade(u.href);
  if (!r.answered) return { code: 'gateway-unreachable', message: `No answer from the gateway at ${wsUrl}.`, hint: 'Check that `duet serve` is running there and the gateway URL (Models view), then retry. The draft keeps loading meanwhile.' };
  if (r.status === 401) return toErrorInfo(new ProtocolError('UNAUTHORIZED', 'refused the token', true), wsUrl);
  if (r.status === 403) return toErrorInfo(new ProtocolError('ORIGIN_REFUSED', 'refused the origin', true), wsUrl);
  return null;
}

function newLink(g: Gateway, tokenizerHash: string, mode: RunMode, rttMs: number, hooks: LinkHooks): RemoteTarget {
  return new RemoteTarget({
    url: g.wsUrl, tokenizerHash, token: g.token || undefined, mode, rttMs,
    reconnect: { attempts: 40, baseDelayMs: 100, maxDelayMs: 1500 }, clientName: mode === 'baseline' ? 'duet web (baseline)' : 'duet web',
    onEvent: (e) => {
      if (hooks.quiet) return;
      const n = noticeOf(e, g.wsUrl);
      if (n) g.onNotice(n);
      if (e.type === 'reconnecting') hooks.onReconnecting();
    },
  });
}

/**
 * One run's session link; reconnects (and resumes the session) across short outages. Takes the
 * standby link for this mode and RTT when one is ready (connected, greeted, not too old), so the
 * run does not pay for the connect and the hello's round trip before its first token.
 */
export function openLink(g: Gateway, tokenizerHash: string, mode: RunMode, rttMs: number, onReconnecting: () => void): RemoteTarget {
  const key = standbyKey(tokenizerHash, mode, rttMs);
  const s = g.standby?.get(key);
  if (s) {
    g.standby!.delete(key);
    if (usable(s)) {
      s.hooks.quiet = false;
      s.hooks.onReconnecting = onReconnecting;
      return s.link;
    }
    void s.link.close();
  }
  return newLink(g, tokenizerHash, mode, rttMs, { quiet: false, onReconnecting });
}

/**
 * Connects and greets a link for the next run of this mode and RTT, in the background; it is
 * kept (one per kind) until a run takes it, the gateway is replaced (closeStandby) or it ages
 * out. Failures are dropped quietly: the run then connects as it would without one.
 */
export function warmLink(g: Gateway, tokenizerHash: string, mode: RunMode, rttMs: number): Promise<void> {
  if (g.retired) return Promise.resolve();
  const key = standbyKey(tokenizerHash, mode, rttMs);
  const map = (g.standby ??= new Map());
  // links for another draft's tokenizer, closed or too old to be taken only hold a connection
  for (const [k, v] of map) {
    if (!k.startsWith(`${tokenizerHash}|`) || !usable(v)) {
      map.delete(k);
      void v.link.close();
    }
  }
  if (map.has(key)) return Promise.resolve();
  const hooks: LinkHooks = { quiet: true, onReconnecting: () => {} };
  const link = newLink(g, tokenizerHash, mode, rttMs, hooks);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('standby connect timed out')), STANDBY_CONNECT_MS);
  });
  return Promise.race([link.connect(), late]).then(() => {
    const cur = map.get(key);
    // closed meanwhile (closeStandby), or another warm won the race
    if (g.retired || g.standby !== map || usable(cur)) {
      void link.close();
      return;
    }
    if (cur) void cur.link.close();
    map.set(key, { link, hooks, readyAt: nowMs() });
  }, () => {
    void link.close();
  }).finally(() => clearTimeout(timer));
}

/** Closes every standby link of a gateway the worker no longer uses. */
export async function closeStandby(g: Gateway | null): Promise<void> {
  if (!g) return;
  g.retired = true;
  if (!g.standby) return;
  const links = [...g.standby.values()].map((s) => s.link);
  g.standby = undefined;
  await Promise.all(links.map((l) => l.close()));
}
