// The duet gateway: HTTP (web app, /models, /api/info) and the WebSocket protocol on one
// port. Each connection says hello (protocol version, tokenizer hash), then opens sessions
// whose target KV cache lives on the verifier; verify blocks from every session go through
// one Batcher. Bad input is answered with a typed `error` and never takes the process down;
// a connection that goes away frees its sessions, also mid-verify.

import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import { decodeClientFrame, encodeJson, errorMessage, type Limits } from '../src/protocol/codec.ts';
import { ProtocolError, type ErrorCode } from '../src/protocol/errors.ts';
import { PROTOCOL_VERSION, type ClientMessage, type GatewayInfo, type GenerateMsg, type Mode, type OpenMsg, type ServerMessage, type VerifyMsg } from '../src/protocol/messages.ts';
import type { SamplingParams } from '../src/engine/sampling.ts';
import { Batcher } from './batcher.ts';
import { createHttpHandler } from './http.ts';
import type { Verifier } from './verifiers/types.ts';

export interface GatewayOptions {
  verifier: Verifier;
  /** 0 = any free port (tests). */
  port?: number;
  host?: string;
  /** Shared secret required on upgrade (?token=... or Authorization: Bearer ...). */
  token?: string;
  /**
   * Browser origins allowed to open the WebSocket. Empty: only same-origin pages (Origin
   * host == Host header) and non-browser clients (no Origin header).
   */
  allowOrigins?: string[];
  maxSessions?: number;
  /** Sessions one connection may hold (default 16), so one client cannot take them all. */
  maxSessionsPerConnection?: number;
  /** Open WebSockets (default 4 × maxSessions); more are refused with HTTP 503 on upgrade. */
  maxConnections?: number;
  /** A connection that has not said hello after this long is closed (default 10 s). */
  helloTimeoutMs?: number;
  /** Tokens per session (prompt + generated); capped by the verifier's maxContext. */
  maxContext?: number;
  /** Sessions per verifyBatch call; capped by the verifier's maxBatch. */
  maxBatch?: number;
  /** Longest draft block per verify. */
  maxBlock?: number;
  /** How long an idle verifier waits for more requests to fill a batch, ms. */
  batchWindowMs?: number;
  /** Requests (open/verify/generate) per second per session; 0 = unlimited. */
  ratePerSec?: number;
  maxPayloadBytes?: number;
  pingIntervalMs?: number;
  staticDir?: string;
  modelsDir?: string;
  /** Requests no route matched (the Vite dev server's middlewares with --dev). */
  fallback?: (req: IncomingMessage, res: ServerResponse) => void;
  /** Dispose the verifier when the gateway closes. */
  ownsVerifier?: boolean;
  log?: (line: string) => void;
}

export interface GatewayStats {
  connections: number;
  sessions: number;
  opened: number;
  verifies: number;
  generatedTokens: number;
  errors: Partial<Record<ErrorCode, number>>;
  batches: number;
  batchedRequests: number;
  maxBatchSeen: number;
}

export interface Gateway {
  port: number;
  /** http://host:port */
  url: string;
  /** ws://host:port/ws */
  wsUrl: string;
  info: GatewayInfo;
  stats(): GatewayStats;
  /** Stop: tell every client SHUTTING_DOWN, free every session, stop listening. */
  close(): Promise<void>;
}

interface Session {
  key: string;
  wire: number;
  mode: Mode;
  sampling: SamplingParams;
  /** Transcript length (prompt + generated, incl. the pending last token). */
  length: number;
  nextSeq: number;
  busy: boolean;
  closed: boolean;
  bucket: number;
  bucketAt: number;
}

interface Conn {
  id: number;
  ws: WebSocket;
  ready: boolean;
  alive: boolean;
  sessions: Map<number, Session>;
}

const now = (): number => performance.now();
const WS_PATH = '/ws';
/** A client whose unread backlog exceeds this many bytes is dropped (it stopped reading). */
const MAX_BUFFERED_BYTES = 16 << 20;

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

export async function startGateway(opts: GatewayOptions): Promise<Gateway> {
  const verifier = opts.verifier;
  const vinfo = verifier.info();
  const log = opts.log ?? (() => {});
  const maxContext = Math.min(opts.maxContext ?? vinfo.maxContext, vinfo.maxContext);
  const maxBatch = Math.max(1, Math.min(opts.maxBatch ?? vinfo.maxBatch, vinfo.maxBatch));
  const maxBlock = opts.maxBlock ?? 16;
  const maxSessions = opts.maxSessions ?? 64;
  const maxPerConn = opts.maxSessionsPerConnection ?? 16;
  const maxConnections = opts.maxConnections ?? 4 * maxSessions;
  const ratePerSec = opts.ratePerSec ?? 500;
  // A full-support q over the vocabulary is 8 bytes per entry; allow maxBlock of them.
  const maxPayloadBytes = opts.maxPayloadBytes ?? Math.max(1 << 20, 64 + maxBlock * (12 + 8 * vinfo.vocabSize));
  const allowOrigins = opts.allowOrigins ?? [];
  const limits: Limits = { vocabSize: vinfo.vocabSize, maxBlock, maxContext };
  const info: GatewayInfo = {
    protocol: PROTOCOL_VERSION, backend: vinfo.backend, model: vinfo.model, device: vinfo.device,
    tokenizerHash: vinfo.tokenizerHash, vocabSize: vinfo.vocabSize, maxContext, maxBlock, maxBatch,
    maxSessions, maxPayloadBytes, ratePerSec, auth: !!opts.token,
  };
  const st: GatewayStats = { connections: 0, sessions: 0, opened: 0, verifies: 0, generatedTokens: 0, errors: {}, batches: 0, batchedRequests: 0, maxBatchSeen: 0 };
  const conns = new Set<Conn>();
  const liveKeys = new Set<string>();
  const batcher = new Batcher(verifier, maxBatch, opts.batchWindowMs ?? 1, (key) => liveKeys.has(key));
  let nextConnId = 1;
  let closing = false;

  const startedAt = Date.now();
  const http: Server = createServer(createHttpHandler({
    staticDir: opts.staticDir,
    modelsDir: opts.modelsDir,
    fallback: opts.fallback,
    allowOrigins,
    info: () => ({ ...info, verifier: vinfo, sessions: st.sessions, connections: st.connections, uptimeS: Math.round((Date.now() - startedAt) / 1000) }),
  }));
  const wss = new WebSocketServer({ noServer: true, maxPayload: maxPayloadBytes, perMessageDeflate: false });

  // ---- upgrade: path, origin and token are checked before a socket exists ----

  function refuse(socket: Socket, status: number, text: string, body: string): void {
    socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  }

  function originAllowed(req: IncomingMessage): boolean {
    const origin = req.headers.origin;
    if (!origin) return true; // not a browser: origin checks protect browsers from cross-site pages
    if (allowOrigins.includes('*') || allowOrigins.includes(origin)) return true;
    try {
      return new URL(origin).host === req.headers.host;
    } catch {
      return false;
    }
  }

  function tokenOk(req: IncomingMessage, url: URL): boolean {
    if (!opts.token) return true;
    const auth = req.headers.authorization;
    const given = url.searchParams.get('token') ?? (auth?.startsWith('Bearer ') ? auth.slice(7) : null);
    return given !== null && timingSafeEqual(digest(given), digest(opts.token));
  }

  http.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    socket.on('error', (e) => log(`upgrade socket error: ${e.message}`));
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://gateway');
    } catch {
      return refuse(socket, 400, 'Bad Request', 'bad request path\n');
    }
    if (closing) return refuse(socket, 503, 'Service Unavailable', 'gateway is shutting down\n');
    if (url.pathname !== WS_PATH) return refuse(socket, 404, 'Not Found', `the WebSocket endpoint is ${WS_PATH}\n`);
    if (!originAllowed(req)) return refuse(socket, 403, 'Forbidden', `origin ${req.headers.origin} is not allowed; start the gateway with --allow-origin ${req.headers.origin}\n`);
    if (!tokenOk(req, url)) return refuse(socket, 401, 'Unauthorized', 'missing or wrong token: connect with ?token=SECRET\n');
    if (conns.size >= maxConnections) return refuse(socket, 503, 'Service Unavailable', `the gateway holds its maximum of ${maxConnections} connections; retry later\n`);
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
  });

  // ---- connections ----

  wss.on('connection', (ws: WebSocket) => {
    const conn: Conn = { id: nextConnId++, ws, ready: false, alive: true, sessions: new Map() };
    conns.add(conn);
    st.connections++;
    ws.on('error', (e) => log(`connection ${conn.id}: socket error: ${e.message}`));
    ws.on('pong', () => (conn.alive = true));
    const helloTimer = setTimeout(() => {
      if (!conn.ready) fail(conn, perr('NOT_READY', `no hello within ${opts.helloTimeoutMs ?? 10_000} ms; closing`, undefined, undefined, true));
    }, opts.helloTimeoutMs ?? 10_000);
    helloTimer.unref();
    ws.on('close', () => {
      clearTimeout(helloTimer);
      conns.delete(conn);
      st.connections--;
      for (const s of [...conn.sessions.values()]) endSession(conn, s);
    });
    ws.on('message', (data: RawData, isBinary: boolean) => {
      const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
      let msg: ClientMessage;
      try {
        msg = decodeClientFrame(isBinary ? bytes : bytes.toString('utf8'), isBinary, limits);
      } catch (e) {
        return fail(conn, e);
      }
      try {
        handle(conn, msg);
      } catch (e) {
        fail(conn, e);
      }
    });
  });

  function send(conn: Conn, msg: ServerMessage): void {
    if (conn.ws.readyState !== conn.ws.OPEN) return;
    if (conn.ws.bufferedAmount > MAX_BUFFERED_BYTES) {
      log(`connection ${conn.id}: client is not reading (${conn.ws.bufferedAmount} bytes queued); dropping it`);
      conn.ws.terminate();
      return;
    }
    conn.ws.send(encodeJson(msg));
  }

  /** Answer an error; a fatal one closes the connection. Non-protocol errors are the verifier's. */
  function fail(conn: Conn, e: unknown, session?: number, seq?: number): void {
    const pe = e instanceof ProtocolError ? e : new ProtocolError('VERIFIER_FAILED', `target backend failed: ${(e as Error)?.message ?? String(e)}`, false, session, seq);
    st.errors[pe.code] = (st.errors[pe.code] ?? 0) + 1;
    send(conn, errorMessage(pe));
    if (pe.fatal) conn.ws.close(1008, pe.code);
  }

  const perr = (code: ErrorCode, message: string, session?: number, seq?: number, fatal = false): ProtocolError =>
    new ProtocolError(code, message, fatal, session, seq);

  function handle(conn: Conn, msg: ClientMessage): void {
    if (msg.type === 'ping') return send(conn, { type: 'pong', t: msg.t });
    if (msg.type === 'hello') return hello(conn, msg.tokenizerHash, msg.token);
    if (!conn.ready) throw perr('NOT_READY', `"${msg.type}" before hello: send hello first`);
    switch (msg.type) {
      case 'open': return open(conn, msg);
      case 'verify': return verify(conn, msg);
      case 'generate': return generate(conn, msg);
      case 'close': {
        const s = conn.sessions.get(msg.session);
        if (!s) throw perr('UNKNOWN_SESSION', `close: no open session ${msg.session}`, msg.session);
        endSession(conn, s);
        return send(conn, { type: 'closed', session: msg.session });
      }
    }
  }

  function hello(conn: Conn, tokenizerHash: string, token?: string): void {
    if (conn.ready) throw perr('BAD_FIELD', 'hello was already received on this connection');
    if (token !== undefined && (!opts.token || !timingSafeEqual(digest(token), digest(opts.token)))) {
      throw perr('UNAUTHORIZED', 'hello carries a token this gateway does not accept', undefined, undefined, true);
    }
    if (tokenizerHash !== info.tokenizerHash) {
      throw perr('TOKENIZER_MISMATCH', `the draft's tokenizer (${tokenizerHash.slice(0, 16)}…) is not the target's (${info.tokenizerHash.slice(0, 16)}…, ${info.model}); use a draft with the same tokenizer`, undefined, undefined, true);
    }
    conn.ready = true;
    send(conn, { type: 'welcome', protocol: PROTOCOL_VERSION, info });
  }

  /** Token bucket per session: a burst of one second's worth, refilled continuously. */
  function rateOk(s: Session): boolean {
    if (ratePerSec <= 0) return true;
    const t = now();
    s.bucket = Math.min(ratePerSec, s.bucket + ((t - s.bucketAt) / 1000) * ratePerSec);
    s.bucketAt = t;
    if (s.bucket < 1) return false;
    s.bucket -= 1;
    return true;
  }

  function open(conn: Conn, m: OpenMsg): void {
    if (conn.sessions.has(m.session)) throw perr('SESSION_EXISTS', `session ${m.session} is already open on this connection; close it or pick another id`, m.session);
    if (st.sessions >= maxSessions) throw perr('TOO_MANY_SESSIONS', `the gateway holds its maximum of ${maxSessions} sessions`, m.session);
    if (conn.sessions.size >= maxPerConn) throw perr('TOO_MANY_SESSIONS', `this connection holds its maximum of ${maxPerConn} sessions; close one first`, m.session);
    const length = m.prompt.length + (m.resume?.length ?? 1);
    // a resumed transcript must leave room for at least one more token, like a fresh prompt does
    const needed = m.resume ? length + 1 : length;
    if (needed > maxContext) throw perr('CONTEXT_FULL', `prompt${m.resume ? ' + resume' : ''} needs ${needed} positions, over maxContext ${maxContext}`, m.session);
    const s: Session = {
      key: `c${conn.id}s${m.session}`, wire: m.session, mode: m.mode, sampling: m.sampling, length,
      nextSeq: 0, busy: true, closed: false, bucket: ratePerSec, bucketAt: now(),
    };
    rateOk(s);
    conn.sessions.set(m.session, s);
    liveKeys.add(s.key);
    st.sessions++;
    const t0 = now();
    batcher
      .job(() => openOnVerifier(s.key, m))
      .then(({ firstToken }) => {
        s.busy = false;
        if (s.closed) return void verifier.close(s.key).catch((e: Error) => log(`close ${s.key}: ${e.message}`));
        st.opened++;
        send(conn, { type: 'opened', session: m.session, firstToken, length: s.length, prefillMs: now() - t0 });
      })
      .catch((e) => {
        s.busy = false;
        dropSession(conn, s);
        if (!s.closed) fail(conn, e, m.session);
      });
  }

  /** open, or resume; a backend without resume support is rebuilt by prefill and checked. */
  async function openOnVerifier(key: string, m: OpenMsg): Promise<{ firstToken: number }> {
    if (!m.resume || vinfo.resume) return verifier.open(key, m.prompt, m.sampling, m.resume);
    const last = m.resume[m.resume.length - 1];
    const r = await verifier.open(key, [...m.prompt, ...m.resume.slice(0, -1)], m.sampling);
    if (r.firstToken !== last) {
      await verifier.close(key);
      throw new Error(`the ${vinfo.backend} backend cannot resume this sampled session exactly (it drew ${r.firstToken}, the transcript has ${last}); start a new session`);
    }
    return r;
  }

  function verify(conn: Conn, m: VerifyMsg): void {
    const s = liveSession(conn, m.session, m.seq);
    if (s.busy) throw perr('BUSY', `session ${m.session} has a request in flight; wait for its answer`, m.session, m.seq);
    if (m.seq !== s.nextSeq) throw perr('BAD_SEQ', `verify seq ${m.seq}, expected ${s.nextSeq}`, m.session, m.seq);
    const k = m.draft.length;
    if (s.sampling.temperature > 0 && (!m.dists || m.dists.length !== k)) {
      throw perr('BAD_FIELD', `sampled session (temperature ${s.sampling.temperature}) needs a draft distribution q for each of the ${k} draft tokens`, m.session, m.seq);
    }
    if (s.length + k > maxContext) throw perr('CONTEXT_FULL', `verify of ${k} tokens would reach ${s.length + k} positions, over maxContext ${maxContext}; start a new session`, m.session, m.seq);
    if (!rateOk(s)) throw perr('RATE_LIMITED', `session ${m.session} exceeds ${ratePerSec} requests per second`, m.session, m.seq);
    s.busy = true;
    s.nextSeq++;
    st.verifies++;
    batcher
      .verify({ sessionId: s.key, draft: Array.from(m.draft), ...(s.sampling.temperature > 0 ? { draftDists: m.dists } : {}) })
      .then((r) => {
        s.busy = false;
        if (s.closed) return void verifier.close(s.key).catch((e: Error) => log(`close ${s.key}: ${e.message}`));
        s.length += r.accepted + 1;
        send(conn, { type: 'verdict', session: m.session, seq: m.seq, accepted: r.accepted, token: r.token, verifyMs: r.forwardMs, queueMs: r.queueMs, batch: r.batch });
      })
      .catch((e) => {
        s.busy = false;
        if (s.closed) return void verifier.close(s.key).catch(() => {});
        // The backend's state for this session is unknown now: end it; the client can reopen with its transcript.
        endSession(conn, s);
        fail(conn, e, m.session, m.seq);
      });
  }

  function generate(conn: Conn, m: GenerateMsg): void {
    const s = liveSession(conn, m.session);
    if (s.busy) throw perr('BUSY', `session ${m.session} has a request in flight; wait for its answer`, m.session);
    if (s.length + m.n - 1 > maxContext) throw perr('CONTEXT_FULL', `generating ${m.n} tokens would reach ${s.length + m.n - 1} positions, over maxContext ${maxContext}`, m.session);
    if (!rateOk(s)) throw perr('RATE_LIMITED', `session ${m.session} exceeds ${ratePerSec} requests per second`, m.session);
    s.busy = true;
    void (async () => {
      try {
        for (let i = 0; i < m.n && !s.closed; i++) {
          // one job per token so baseline streams interleave with everyone's verify batches
          const [t] = await batcher.job(() => verifier.generate(s.key, 1));
          s.length++;
          st.generatedTokens++;
          send(conn, { type: 'tokens', session: m.session, tokens: [t], done: false });
        }
        s.busy = false;
        if (s.closed) return void verifier.close(s.key).catch(() => {});
        send(conn, { type: 'tokens', session: m.session, tokens: [], done: true });
      } catch (e) {
        s.busy = false;
        if (s.closed) return void verifier.close(s.key).catch(() => {});
        endSession(conn, s);
        fail(conn, e, m.session);
      }
    })();
  }

  function liveSession(conn: Conn, wire: number, seq?: number): Session {
    const s = conn.sessions.get(wire);
    if (!s || s.closed) throw perr('UNKNOWN_SESSION', `no open session ${wire} on this connection (never opened, or closed); open it (with resume) first`, wire, seq);
    return s;
  }

  /** Forget a session on the gateway side only. */
  function dropSession(conn: Conn, s: Session): void {
    if (conn.sessions.get(s.wire) === s) conn.sessions.delete(s.wire);
    if (liveKeys.delete(s.key)) st.sessions--;
  }

  /** End a session: free its KV now, or, if a request is in flight, as soon as it returns. */
  function endSession(conn: Conn, s: Session): void {
    if (s.closed) return;
    s.closed = true;
    dropSession(conn, s);
    if (!s.busy) void verifier.close(s.key).catch((e: Error) => log(`close ${s.key}: ${e.message}`));
  }

  // ---- liveness ----

  const pingTimer = setInterval(() => {
    for (const c of conns) {
      if (!c.alive) {
        log(`connection ${c.id}: no pong; terminating`);
        c.ws.terminate();
        continue;
      }
      c.alive = false;
      c.ws.ping();
    }
  }, opts.pingIntervalMs ?? 15_000);
  pingTimer.unref();

  await new Promise<void>((resolveListen, rejectListen) => {
    http.once('error', rejectListen);
    http.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => {
      http.off('error', rejectListen);
      resolveListen();
    });
  });
  http.on('error', (e) => log(`http server error: ${e.message}`));
  http.on('clientError', (e, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
  });
  const port = (http.address() as AddressInfo).port;
  const host = opts.host ?? '127.0.0.1';
  const hostForUrl = host.includes(':') ? `[${host}]` : host;

  return {
    port,
    url: `http://${hostForUrl}:${port}`,
    wsUrl: `ws://${hostForUrl}:${port}${WS_PATH}`,
    info,
    stats: () => ({ ...st, errors: { ...st.errors }, batches: batcher.stats.batches, batchedRequests: batcher.stats.batchedRequests, maxBatchSeen: batcher.stats.maxBatchSeen }),
    async close() {
      if (closing) return;
      closing = true;
      clearInterval(pingTimer);
      for (const c of conns) {
        send(c, errorMessage(new ProtocolError('SHUTTING_DOWN', 'the gateway is shutting down; reconnect and resume', true)));
        c.ws.close(1001, 'SHUTTING_DOWN');
        for (const s of [...c.sessions.values()]) endSession(c, s);
      }
      batcher.drain(new ProtocolError('SHUTTING_DOWN', 'the gateway is shutting down', true));
      const closed = new Promise<void>((r) => http.close(() => r()));
      setTimeout(() => {
        for (const c of conns) c.ws.terminate();
        http.closeAllConnections();
      }, 200).unref();
      await closed;
      wss.close();
      if (opts.ownsVerifier) await verifier.dispose();
    },
  };
}
