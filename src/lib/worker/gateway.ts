// The worker's side of the gateway: the URL a user typed as the WebSocket URL, the connect
// probe that checks the target's tokenizer against the draft's, the RemoteTarget each run
// opens, and client events as notices.

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
}

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

/** One run's session link; reconnects (and resumes the session) across short outages. */
export function openLink(g: Gateway, tokenizerHash: string, mode: RunMode, rttMs: number, onReconnecting: () => void): RemoteTarget {
  return new RemoteTarget({
    url: g.wsUrl, tokenizerHash, token: g.token || undefined, mode, rttMs,
    reconnect: { attempts: 40, baseDelayMs: 100, maxDelayMs: 1500 }, clientName: mode === 'baseline' ? 'duet web (baseline)' : 'duet web',
    onEvent: (e) => {
      const n = noticeOf(e, g.wsUrl);
      if (n) g.onNotice(n);
      if (e.type === 'reconnecting') onReconnecting();
    },
  });
}
