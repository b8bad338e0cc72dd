// The duet gateway: HTTP (web app, /models, /api/info, the OpenAI-shaped /v1 API and
// /metrics from openai.ts) and the WebSocket protocol on one port. Each connection says hello (protocol version, tokenizer hash), then opens sessions
// whose target KV cache lives on the verifier; verify blocks from every session go through
// one Batcher. Bad input is answered with a typed `error` and never takes the process down;
// a connection that goes away frees its sessions, also mid-verify. Resource limits (frame and
// error rates, send-queue bytes against a memory budget, per-address caps, idle timeouts) are
// in limits.ts; upgrade checks (path, origin, token, caps, client address) in upgrade.ts; each
// session's busy/closed state in the Session class (begin / settle / end / rate). drain() stops
// taking sessions, lets requests in flight finish and tells each client to resume elsewhere.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import { decodeClientFrame, encodeJson, errorMessage, type Limits } from '../src/protocol/codec.ts';
import { FATALITY, ProtocolError, type ErrorCode } from '../src/protocol/errors.ts';
import { PROTOCOL_VERSION, type ClientMessage, type GatewayInfo, type GenerateMsg, type Mode, type OpenMsg, type ServerMessage, type VerifyMsg } from '../src/protocol/messages.ts';
import type { SamplingParams } from '../src/engine/sampling.ts';
import { Batcher } from './batcher.ts';
import { createHttpHandler } from './http.ts';
import { GatewayMetrics } from './metrics.ts';
import { createOpenAiApi, type TextModel } from './openai.ts';
import { AddressBuckets, AddressCounter, QUEUED_MESSAGE_OVERHEAD, SendBudget, TokenBucket } from './limits.ts';
import { checkUpgrade, checkUpgradeFor, refuseUpgrade, tokenAccepted, type UpgradePolicy } from './upgrade.ts';
import type { Verifier } from './verifiers/types.ts';

export interface GatewayOptions {
  verifier: Verifier;
  /** 0 = any free port (tests). */
  port?: number;
  host?: string;
  /** Shared secret required on upgrade (?token=... or Authorization: Bearer ...). */
  token?: string;
  /**
   * Browser origins allowed to open the WebSocket. Empty: only pages served from the address
   * the gateway listens on (never judged by the Host header) and non-browser clients (no Origin).
   */
  allowOrigins?: string[];
  maxSessions?: number;
  /** Sessions one connection may hold (default 16), so one client cannot take them all. */
  maxSessionsPerConnection?: number;
  /** Open WebSockets (default 4 × maxSessions); more are refused with HTTP 503 on upgrade. */
  maxConnections?: number;
  /** A connection that has not said hello after this long is closed (default 10 s). */
  helloTimeoutMs?: number;
  /** Connections one client address may hold (default maxSessions); more get HTTP 503. */
  maxConnectionsPerAddress?: number;
  /** Sessions one client address may hold over all its connections (default maxSessions / 2). */
  maxSessionsPerAddress?: number;
  /** Peers whose X-Forwarded-For names the client address (a load balancer in front). */
  trustProxy?: string[];
  /** A connection that sends no frame for this long is closed; the client resumes on its next request (default 120 s). */
  idleTimeoutMs?: number;
  /** A session with no request for this long is ended and the client told `closed` (default 300 s). */
  sessionIdleMs?: number;
  /** Frames of any kind (ping and bad ones too) per second per client address, all its connections together, burst 1 s (default 2000; 0 = unlimited). */
  framesPerSec?: number;
  /** Error replies per second per connection, burst 1 s; beyond twice that the connection is closed (default 50). */
  errorsPerSec?: number;
  /** Bytes all connections together may hold in send queues, framing and per-message overhead included (default 256 MiB). */
  memoryBudgetBytes?: number;
  /** Bytes one connection may hold queued; a connection above it is dropped (default 16 MiB). */
  maxQueuedBytesPerConnection?: number;
  /** Above this many queued bytes a connection's input is no longer read until it drains (default 256 KiB). */
  readPauseBytes?: number;
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
  /** Tokenizer + eos ids of the target, for the OpenAI-shaped /v1 completion endpoints. */
  textModel?: TextModel;
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
  /** Verifier passes that carried baseline steps, and the steps in them (continuous batching). */
  baselineBatches: number;
  baselineRequests: number;
  /** Opens dropped before their prefill ran because the client had closed or left. */
  opensAbandoned: number;
  /** Bytes queued for sending now / at most so far, over all connections. */
  queuedBytes: number;
  peakQueuedBytes: number;
  /** Connections dropped for not reading, flooding, or by the memory budget. */
  dropped: number;
}

export interface HealthReport {
  status: 'ready' | 'draining';
  sessions: number;
  connections: number;
  queuedBytes: number;
  memoryBudgetBytes: number;
  backend: string;
  model: string;
  uptimeS: number;
}

export interface Gateway {
  port: number;
  /** http://host:port */
  url: string;
  /** ws://host:port/ws */
  wsUrl: string;
  info: GatewayInfo;
  stats(): GatewayStats;
  /** What GET /health answers (200 when ready, 503 while draining). */
  health(): HealthReport;
  /**
   * Graceful stop: /health turns 503, upgrades get 503 and new requests are not started; a
   * connection is told SHUTTING_DOWN (the client reconnects, e.g. through the load balancer to
   * another gateway, and resumes) as soon as none of its sessions has a request in flight.
   * After timeoutMs whatever is left is closed the same way; then close().
   */
  drain(timeoutMs?: number): Promise<void>;
  /** Stop: tell every client SHUTTING_DOWN, free every session, stop listening. */
  close(): Promise<void>;
}

/**
 * One session of a connection: its verifier key, transcript length and request rate, and the
 * only code that says whether a request is in flight (busy) or the session has ended (closed).
 * A request is begin()-ed, then settle()-d when it is answered or fails; end() may come at any
 * time. The session's target KV is freed exactly once: by end() when nothing is in flight,
 * else by the settle() of the request in flight.
 */
export class Session {
  #busy = false;
  #closed = false;
  nextSeq = 0;
  /** When its last request was answered or made (idle sessions are ended). */
  lastUsed = now();
  private readonly requests: TokenBucket;

  constructor(
    readonly key: string,
    readonly wire: number,
    readonly mode: Mode,
    readonly sampling: SamplingParams,
    /** Transcript length (prompt + generated, incl. the pending last token). */
    public length: number,
    ratePerSec: number,
    /** Forget it on the gateway side (wire id, verifier key, per-address count). */
    private readonly forget: () => void,
    /** Free its target KV on the verifier, in the background. */
    private readonly freeKv: () => void,
  ) {
    this.requests = new TokenBucket(ratePerSec, ratePerSec);
  }

  /** A request is in flight. */
  get busy(): boolean {
    return this.#busy;
  }

  /** Ended: by the client, an idle timeout, a drain, its connection going away or a failure. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Take one request from the session's token bucket (a burst of one second's worth, refilled continuously); false: over its rate. */
  rate(): boolean {
    this.lastUsed = now();
    return this.requests.tryTake();
  }

  /** A request starts; the session is busy until settle(). */
  begin(): void {
    this.#busy = true;
  }

  /**
   * The request in flight is answered or failed. True: the session is still live (answer the
   * client). False: it ended meanwhile, and its KV is freed now, unless the request was an open
   * that failed, which left no KV behind (holdsKv false).
   */
  settle(holdsKv = true): boolean {
    this.#busy = false;
    if (this.#closed) {
      if (holdsKv) this.freeKv();
      return false;
    }
    this.lastUsed = now();
    return true;
  }

  /** End the session: forget it now; free its KV now, or, if a request is in flight, at its settle(). */
  end(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.forget();
    if (!this.#busy) this.freeKv();
  }

  /** Forget it on the gateway side only, without ending it (an open that failed: no KV to free). */
  drop(): void {
    this.forget();
  }
}

interface Conn {
  id: number;
  ws: WebSocket;
  /** The client address it counts against (per-address caps). */
  addr: string;
  ready: boolean;
  alive: boolean;
  sessions: Map<number, Session>;
  frames: TokenBucket;
  errors: TokenBucket;
  lastFrameAt: number;
  /** Bytes this connection has queued for sending (payload + framing + overhead). */
  queued: number;
  readPaused: boolean;
  /** Gone: its send-queue bytes are released, nothing more is sent. */
  gone: boolean;
  /** Told SHUTTING_DOWN by a drain. */
  drained: boolean;
  /** Frames received after the close began. */
  lateFrames: number;
}

const now = (): number => performance.now();
const WS_PATH = '/ws';
const utf8 = new TextDecoder('utf-8', { fatal: true });

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
  const helloTimeoutMs = opts.helloTimeoutMs ?? 10_000;
  const connsByAddr = new AddressCounter(opts.maxConnectionsPerAddress ?? maxSessions);
  const sessionsByAddr = new AddressCounter(opts.maxSessionsPerAddress ?? Math.max(1, Math.ceil(maxSessions / 2)));
  const trustProxy = opts.trustProxy ?? [];
  const idleTimeoutMs = opts.idleTimeoutMs ?? 120_000;
  const sessionIdleMs = opts.sessionIdleMs ?? 300_000;
  const framesPerSec = opts.framesPerSec ?? 2000;
  const frameBuckets = new AddressBuckets(framesPerSec, framesPerSec);
  const errorsPerSec = opts.errorsPerSec ?? 50;
  const budget = new SendBudget(opts.memoryBudgetBytes ?? 256 << 20, opts.maxQueuedBytesPerConnection ?? 16 << 20);
  const readPauseBytes = opts.readPauseBytes ?? 256 << 10;
  // A full-support q over the vocabulary is 8 bytes per entry; allow maxBlock of them.
  const maxPayloadBytes = opts.maxPayloadBytes ?? Math.max(1 << 20, 64 + maxBlock * (12 + 8 * vinfo.vocabSize));
  const allowOrigins = opts.allowOrigins ?? [];
  const limits: Limits = { vocabSize: vinfo.vocabSize, maxBlock, maxContext };
  const info: GatewayInfo = {
    protocol: PROTOCOL_VERSION, backend: vinfo.backend, model: vinfo.model, device: vinfo.device,
    tokenizerHash: vinfo.tokenizerHash, vocabSize: vinfo.vocabSize, maxContext, maxBlock, maxBatch,
    maxSessions, maxPayloadBytes, ratePerSec, auth: !!opts.token,
  };
  /** Limits that are not part of the protocol's info object, shown in /api/info. */
  const gatewayLimits = {
    maxSessionsPerConnection: maxPerConn, maxConnections, maxConnectionsPerAddress: connsByAddr.cap, maxSessionsPerAddress: sessionsByAddr.cap,
    helloTimeoutMs, idleTimeoutMs, sessionIdleMs, framesPerSec, errorsPerSec,
    memoryBudgetBytes: budget.budgetBytes, maxQueuedBytesPerConnection: budget.perConnectionBytes, readPauseBytes, trustProxy,
  };
  const st: GatewayStats = { connections: 0, sessions: 0, opened: 0, verifies: 0, generatedTokens: 0, errors: {}, batches: 0, batchedRequests: 0, maxBatchSeen: 0, baselineBatches: 0, baselineRequests: 0, opensAbandoned: 0, queuedBytes: 0, peakQueuedBytes: 0, dropped: 0 };
  const conns = new Set<Conn>();
  /** Verifier key → the live session holding it (a closed id reopened on one connection reuses its key). */
  /** The session holding each verifier key ('http': an OpenAI-API request, server/openai.ts). */
  const liveKeys = new Map<string, Session | 'http'>();
  const batcher = new Batcher(verifier, maxBatch, opts.batchWindowMs ?? 1, (key) => liveKeys.has(key));
  let nextConnId = 1;
  let nextApiId = 1;
  let nextOpenId = 1;
  let closing = false;
  const metrics = new GatewayMetrics(() => ({ sessions: st.sessions, connections: st.connections, queued: batcher.queued, errors: st.errors }));
  batcher.onBatch = (size, ms) => metrics.batch(size, ms);

  /** The one baseline step (target alone, one token) of every session, WebSocket and HTTP alike. */
  async function baselineStep(key: string): Promise<number> {
    const t0 = now();
    // one k = 0 verify per token: every session's baseline step joins the same verifier pass
    const { token: t } = await batcher.step(key);
    metrics.baselineStep(now() - t0);
    return t;
  }

  const api = createOpenAiApi({
    model: vinfo.model, maxContext, maxSessions, text: opts.textModel, token: opts.token, allowOrigins, metrics, log,
    sessions: {
      acquire() {
        if (st.sessions >= maxSessions) return null;
        const key = `h${nextApiId++}`;
        liveKeys.set(key, 'http');
        st.sessions++;
        return key;
      },
      release(key) {
        if (liveKeys.delete(key)) st.sessions--;
      },
      async open(key, prompt, sampling) {
        const t0 = now();
        const { firstToken } = await batcher.open({ sessionId: key, prompt, sampling });
        metrics.sessionOpened('http', prompt.length, now() - t0);
        return firstToken;
      },
      step: baselineStep,
      close: (key) => verifier.close(key),
      closing: () => closing,
    },
  });
  let draining = false;
  let drainedAll: (() => void) | null = null;

  const startedAt = Date.now();
  /** Mean rows per verifier pass, all and baseline-only: what proves the batching in /api/info. */
  const batchingStats = () => {
    const b = batcher.stats;
    return {
      batches: b.batches, meanBatch: b.batches ? b.batchedRequests / b.batches : 0,
      baselineBatches: b.baselineBatches, meanBaselineBatch: b.baselineBatches ? b.baselineRequests / b.baselineBatches : 0,
      opensAbandoned: b.jobsDropped,
    };
  };
  const httpHandler = createHttpHandler({
    staticDir: opts.staticDir,
    modelsDir: opts.modelsDir,
    fallback: opts.fallback,
    allowOrigins,
    info: () => ({ ...info, verifier: vinfo, limits: gatewayLimits, sessions: st.sessions, connections: st.connections, uptimeS: Math.round((Date.now() - startedAt) / 1000), batching: batchingStats() }),
    health: () => {
      const h = health();
      return { status: h.status === 'ready' ? 200 : 503, body: h };
    },
    upgradeCheck: (req, url) => checkUpgradeFor(req, url, upgradePolicy),
  });
  const http: Server = createServer((req, res) => (api.owns(req) ? api.handle(req, res) : httpHandler(req, res)));
  // UTF-8 is checked here (decodeText) so invalid text gets a typed BAD_FRAME instead of ws's bare close 1007
  const wss = new WebSocketServer({ noServer: true, maxPayload: maxPayloadBytes, perMessageDeflate: false, skipUTF8Validation: true });

  function health(): HealthReport {
    return {
      status: draining || closing ? 'draining' : 'ready', sessions: st.sessions, connections: st.connections, queuedBytes: budget.total,
      memoryBudgetBytes: budget.budgetBytes, backend: vinfo.backend, model: vinfo.model, uptimeS: Math.round((Date.now() - startedAt) / 1000),
    };
  }

  // ---- upgrade: path, origin, token and caps are checked before a socket exists (upgrade.ts) ----

  const upgradePolicy: UpgradePolicy = {
    path: WS_PATH, allowOrigins, token: opts.token, trustProxy,
    // known once the server listens (below); upgrades come only after that
    get listenHost() {
      return host;
    },
    get listenPort() {
      return port;
    },
    stopping: () => closing || draining,
    connections: () => conns.size, maxConnections,
    connectionsOf: (addr) => connsByAddr.get(addr), maxConnectionsPerAddress: connsByAddr.cap,
  };

  http.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    // a client that vanishes (a closed tab resets its sockets, waiting ones included) is no
    // error worth a line: its connection's close handler frees what it held
    socket.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code !== 'ECONNRESET' && e.code !== 'EPIPE') log(`upgrade socket error: ${e.message}`);
    });
    const verdict = checkUpgrade(req, upgradePolicy);
    if ('refuse' in verdict) return refuseUpgrade(socket, verdict.refuse);
    wss.handleUpgrade(req, socket, head, (ws) => onConnection(ws, verdict.addr));
  });

  // ---- connections ----

  function onConnection(ws: WebSocket, addr: string): void {
    const t = now();
    const conn: Conn = {
      id: nextConnId++, ws, addr, ready: false, alive: true, sessions: new Map(),
      frames: frameBuckets.get(addr), errors: new TokenBucket(errorsPerSec, errorsPerSec),
      lastFrameAt: t, queued: 0, readPaused: false, gone: false, drained: false, lateFrames: 0,
    };
    conns.add(conn);
    connsByAddr.tryAdd(addr);
    st.connections++;
    ws.on('error', (e) => log(`connection ${conn.id}: socket error: ${e.message}`));
    ws.on('pong', () => (conn.alive = true));
    const helloTimer = setTimeout(() => {
      if (!conn.ready) fail(conn, perr('NOT_READY', `no hello within ${helloTimeoutMs} ms; closing`, undefined, undefined, true));
    }, helloTimeoutMs);
    helloTimer.unref();
    ws.on('close', () => {
      clearTimeout(helloTimer);
      release(conn);
      conns.delete(conn);
      connsByAddr.remove(addr);
      st.connections--;
      for (const s of [...conn.sessions.values()]) s.end();
      if (draining && conns.size === 0) drainedAll?.();
    });
    ws.on('message', (data: RawData, isBinary: boolean) => {
      // closing (after a fatal error, a drain): what still arrives is not worked on; from a peer
      // that keeps streaming frames instead of completing the close handshake nothing more is
      // read (what was already sent to it, the error and the close frame, still goes out) and
      // closeFatal's timer cuts it
      if (ws.readyState !== ws.OPEN) {
        if (++conn.lateFrames === 100) ws.pause();
        return;
      }
      conn.lastFrameAt = now();
      // every frame counts, before hello too: pings and bad frames cost the gateway work as well
      const level = conn.frames.take();
      if (level < 0) {
        if (level < -conn.frames.burst) return fail(conn, perr('RATE_LIMITED', `more than ${framesPerSec} frames per second from ${addr}; closing this connection`, undefined, undefined, true));
        return fail(conn, perr('RATE_LIMITED', `more than ${framesPerSec} frames per second from ${addr}; frame ignored, slow down`));
      }
      const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
      let msg: ClientMessage;
      try {
        msg = decodeClientFrame(isBinary ? bytes : decodeText(bytes), isBinary, limits);
      } catch (e) {
        return fail(conn, e);
      }
      try {
        handle(conn, msg);
      } catch (e) {
        fail(conn, e);
      }
    });
  }

  function decodeText(bytes: Buffer): string {
    try {
      return utf8.decode(bytes);
    } catch {
      throw perr('BAD_FRAME', 'text frame is not valid UTF-8: send JSON text as UTF-8');
    }
  }

  /** Release a connection's send-queue bytes from the budget (it is gone or being dropped). */
  function release(conn: Conn): void {
    if (conn.gone) return;
    conn.gone = true;
    budget.release(conn.queued);
    conn.queued = 0;
  }

  function drop(conn: Conn, why: string): void {
    log(`connection ${conn.id} (${conn.addr}): ${why}; dropping it`);
    st.dropped++;
    release(conn);
    conn.ws.terminate();
  }

  /**
   * Queue one message, counting its bytes (payload, framing and per-message overhead) until
   * the socket has written it. A connection over its own cap is dropped; when the gateway-wide
   * budget is full, the connection holding the most is dropped first. Above readPauseBytes a
   * connection's input is not read, so a client that does not read cannot make more work.
   */
  function send(conn: Conn, msg: ServerMessage): void {
    if (conn.gone || conn.ws.readyState !== conn.ws.OPEN) return;
    const data = encodeJson(msg);
    const cost = Buffer.byteLength(data) + QUEUED_MESSAGE_OVERHEAD;
    if (conn.queued + cost > budget.perConnectionBytes) return drop(conn, `client is not reading (${conn.queued} bytes queued)`);
    while (!budget.fits(conn.queued, cost)) {
      let victim = conn;
      for (const c of conns) if (!c.gone && c.queued > victim.queued) victim = c;
      drop(victim, `memory budget of ${budget.budgetBytes} bytes for send queues is full; it holds the most (${victim.queued} bytes)`);
      if (victim === conn) return;
    }
    conn.queued += cost;
    budget.add(cost);
    conn.ws.send(data, () => {
      if (conn.gone) return;
      conn.queued -= cost;
      budget.release(cost);
      if (conn.readPaused && conn.queued <= readPauseBytes / 2) {
        conn.readPaused = false;
        conn.ws.resume();
      }
    });
    if (!conn.readPaused && conn.queued > readPauseBytes) {
      conn.readPaused = true;
      conn.ws.pause();
    }
  }

  /**
   * Close after a fatal error. Frames still arriving are not worked on (the message handler
   * drops them once the socket is closing) but are still read, so a client that reads completes
   * the close handshake; one that does not read never answers it and is cut after 1 s.
   */
  function closeFatal(conn: Conn, code: number, reason: string): void {
    conn.ws.close(code, reason);
    setTimeout(() => conn.ws.terminate(), 1000).unref();
  }

  /** Answer an error; a fatal one closes the connection. Non-protocol errors are the verifier's. */
  function fail(conn: Conn, e: unknown, session?: number, seq?: number): void {
    const pe = e instanceof ProtocolError ? e : new ProtocolError('VERIFIER_FAILED', `target backend failed: ${(e as Error)?.message ?? String(e)}`, false, session, seq);
    st.errors[pe.code] = (st.errors[pe.code] ?? 0) + 1;
    // error replies are rate limited too (a flood of bad frames must not become a flood of answers)
    const level = pe.fatal ? 0 : conn.errors.take();
    if (level < -conn.errors.burst) {
      send(conn, errorMessage(perr('RATE_LIMITED', `more than ${errorsPerSec} bad requests per second on this connection; closing it`, undefined, undefined, true)));
      return closeFatal(conn, 1008, 'RATE_LIMITED');
    }
    if (level >= 0) send(conn, errorMessage(pe));
    if (pe.fatal) closeFatal(conn, pe.code === 'SHUTTING_DOWN' ? 1001 : 1008, pe.code);
    maybeCloseDrained(conn);
  }

  /** A typed error; fatal as errors.ts's FATALITY table says unless this is its named exception. */
  const perr = (code: ErrorCode, message: string, session?: number, seq?: number, fatal = FATALITY[code].fatal === true): ProtocolError =>
    new ProtocolError(code, message, fatal, session, seq);

  function handle(conn: Conn, msg: ClientMessage): void {
    if (msg.type === 'ping') return send(conn, { type: 'pong', t: msg.t });
    if (msg.type === 'hello') return hello(conn, msg.tokenizerHash, msg.token);
    if (!conn.ready) throw perr('NOT_READY', `"${msg.type}" before hello: send hello first`);
    if (draining && msg.type !== 'close') {
      // not started: the client is told SHUTTING_DOWN (now, or when its requests in flight are answered) and retries elsewhere
      return maybeCloseDrained(conn);
    }
    switch (msg.type) {
      case 'open': return open(conn, msg);
      case 'verify': return verify(conn, msg);
      case 'generate': return generate(conn, msg);
      case 'close': {
        const s = conn.sessions.get(msg.session);
        if (!s) throw perr('UNKNOWN_SESSION', `close: no open session ${msg.session}`, msg.session);
        s.end();
        send(conn, { type: 'closed', session: msg.session });
        return maybeCloseDrained(conn);
      }
    }
  }

  function hello(conn: Conn, tokenizerHash: string, token?: string): void {
    if (conn.ready) throw perr('BAD_FIELD', 'hello was already received on this connection');
    // a gateway without --token ignores a hello token (e.g. auth is done by a proxy in front)
    if (token !== undefined && !tokenAccepted(token, opts.token)) {
      throw perr('UNAUTHORIZED', 'hello carries a token this gateway does not accept', undefined, undefined, true);
    }
    if (tokenizerHash !== info.tokenizerHash) {
      throw perr('TOKENIZER_MISMATCH', `the draft's tokenizer (${tokenizerHash.slice(0, 16)}…) is not the target's (${info.tokenizerHash.slice(0, 16)}…, ${info.model}); use a draft with the same tokenizer`, undefined, undefined, true);
    }
    conn.ready = true;
    send(conn, { type: 'welcome', protocol: PROTOCOL_VERSION, info });
  }

  function open(conn: Conn, m: OpenMsg): void {
    if (conn.sessions.has(m.session)) throw perr('SESSION_EXISTS', `session ${m.session} is already open on this connection; close it or pick another id`, m.session);
    if (st.sessions >= maxSessions) throw perr('TOO_MANY_SESSIONS', `the gateway holds its maximum of ${maxSessions} sessions`, m.session);
    if (conn.sessions.size >= maxPerConn) throw perr('TOO_MANY_SESSIONS', `this connection holds its maximum of ${maxPerConn} sessions; close one first`, m.session);
    if (sessionsByAddr.get(conn.addr) >= sessionsByAddr.cap) throw perr('TOO_MANY_SESSIONS', `address ${conn.addr} holds its maximum of ${sessionsByAddr.cap} sessions; close one first`, m.session);
    const length = m.prompt.length + (m.resume?.length ?? 1);
    // a resumed transcript must leave room for at least one more token, like a fresh prompt does
    const needed = m.resume ? length + 1 : length;
    if (needed > maxContext) throw perr('CONTEXT_FULL', `prompt${m.resume ? ' + resume' : ''} needs ${needed} positions, over maxContext ${maxContext}`, m.session);
    // a key per open, never reused: a late answer for a closed session can then never touch
    // (close, drop) a new session reopened under the same wire id
    const key = `c${conn.id}s${m.session}o${nextOpenId++}`;
    const s: Session = new Session(key, m.session, m.mode, m.sampling, length, ratePerSec, () => forget(conn, s), () => freeKv(key));
    s.rate();
    s.begin();
    conn.sessions.set(m.session, s);
    liveKeys.set(s.key, s);
    sessionsByAddr.tryAdd(conn.addr);
    st.sessions++;
    const t0 = now();
    batcher
      // an open whose client left (or closed it) while it waited is dropped by the batcher
      // (JobAbandonedError, counted in opensAbandoned): no prefill, the slot is already free
      .open({ sessionId: s.key, prompt: m.prompt, sampling: m.sampling, resume: m.resume }, () => !s.closed, () => openOnVerifier(s.key, m))
      .then(({ firstToken }) => {
        if (!s.settle()) return;
        st.opened++;
        metrics.sessionOpened('ws', m.prompt.length + (m.resume?.length ?? 0), now() - t0);
        send(conn, { type: 'opened', session: m.session, firstToken, length: s.length, prefillMs: now() - t0 });
        maybeCloseDrained(conn);
      })
      .catch((e) => {
        const live = s.settle(false);
        s.drop();
        if (live) fail(conn, e, m.session);
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
    if (!s.rate()) throw perr('RATE_LIMITED', `session ${m.session} exceeds ${ratePerSec} requests per second`, m.session, m.seq);
    s.begin();
    s.nextSeq++;
    st.verifies++;
    batcher
      .verify({ sessionId: s.key, draft: Array.from(m.draft), ...(s.sampling.temperature > 0 ? { draftDists: m.dists } : {}) })
      .then((r) => {
        metrics.verified(k, r.accepted, r.queueMs + r.batchMs);
        if (!s.settle()) return;
        s.length += r.accepted + 1;
        send(conn, { type: 'verdict', session: m.session, seq: m.seq, accepted: r.accepted, token: r.token, verifyMs: r.forwardMs, queueMs: r.queueMs, batch: r.batch });
        maybeCloseDrained(conn);
      })
      .catch((e) => {
        if (!s.settle()) return;
        // The backend's state for this session is unknown now: end it; the client can reopen with its transcript.
        s.end();
        fail(conn, e, m.session, m.seq);
      });
  }

  function generate(conn: Conn, m: GenerateMsg): void {
    const s = liveSession(conn, m.session);
    if (s.busy) throw perr('BUSY', `session ${m.session} has a request in flight; wait for its answer`, m.session);
    if (s.length + m.n - 1 > maxContext) throw perr('CONTEXT_FULL', `generating ${m.n} tokens would reach ${s.length + m.n - 1} positions, over maxContext ${maxContext}`, m.session);
    if (!s.rate()) throw perr('RATE_LIMITED', `session ${m.session} exceeds ${ratePerSec} requests per second`, m.session);
    s.begin();
    void (async () => {
      try {
        for (let i = 0; i < m.n && !s.closed; i++) {
          // every session's baseline step joins the same pass (a k = 0 verify)
          const t = await baselineStep(s.key);
          // closed while that step ran: its token must not reach the client after `closed` (D1)
          if (s.closed) break;
          s.length++;
          st.generatedTokens++;
          send(conn, { type: 'tokens', session: m.session, tokens: [t], done: false });
        }
        if (!s.settle()) return;
        send(conn, { type: 'tokens', session: m.session, tokens: [], done: true });
        maybeCloseDrained(conn);
      } catch (e) {
        if (!s.settle()) return;
        s.end();
        fail(conn, e, m.session);
      }
    })();
  }

  function liveSession(conn: Conn, wire: number, seq?: number): Session {
    const s = conn.sessions.get(wire);
    if (!s || s.closed) throw perr('UNKNOWN_SESSION', `no open session ${wire} on this connection (never opened, or closed); open it (with resume) first`, wire, seq);
    return s;
  }

  /** Forget a session on the gateway side only (Session.forget). */
  function forget(conn: Conn, s: Session): void {
    if (conn.sessions.get(s.wire) === s) conn.sessions.delete(s.wire);
    // only this session's own entry: a late failure of a closed session must not drop the new one under its key
    if (liveKeys.get(s.key) === s && liveKeys.delete(s.key)) {
      st.sessions--;
      sessionsByAddr.remove(conn.addr);
    }
  }

  /** Free a session's target KV (Session.freeKv); nobody awaits it, so a failure is logged and counted. */
  function freeKv(key: string): void {
    void metrics.background('ws_session_close', `close ${key}`, verifier.close(key), log);
  }

  // ---- draining ----

  /** While draining: tell a connection SHUTTING_DOWN once none of its sessions has a request in flight. */
  function maybeCloseDrained(conn: Conn): void {
    if (!draining || conn.drained || conn.gone) return;
    for (const s of conn.sessions.values()) if (s.busy) return;
    conn.drained = true;
    send(conn, errorMessage(new ProtocolError('SHUTTING_DOWN', 'this gateway is draining: reconnect (a load balancer sends you to another gateway) and resume', true)));
    conn.ws.close(1001, 'SHUTTING_DOWN');
    for (const s of [...conn.sessions.values()]) s.end();
  }

  // ---- liveness and idle timeouts ----

  const sweepTimer = setInterval(() => {
    const t = now();
    frameBuckets.sweep((addr) => connsByAddr.get(addr) > 0);
    for (const c of conns) {
      if (c.gone) continue;
      let busy = false;
      for (const s of [...c.sessions.values()]) {
        if (s.busy) busy = true;
        else if (t - s.lastUsed > sessionIdleMs) {
          // the client learns it from `closed`; its next request reopens the session with resume
          s.end();
          send(c, { type: 'closed', session: s.wire });
        }
      }
      if (!busy && t - c.lastFrameAt > idleTimeoutMs) {
        log(`connection ${c.id} (${c.addr}): idle for ${idleTimeoutMs} ms; closing`);
        c.ws.close(1000, 'idle timeout');
        for (const s of [...c.sessions.values()]) s.end();
      }
    }
  }, Math.max(20, Math.min(idleTimeoutMs, sessionIdleMs, 10_000) / 4));
  sweepTimer.unref();

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

  const gateway: Gateway = {
    port,
    url: `http://${hostForUrl}:${port}`,
    wsUrl: `ws://${hostForUrl}:${port}${WS_PATH}`,
    info,
    stats: () => ({
      ...st, errors: { ...st.errors }, batches: batcher.stats.batches, batchedRequests: batcher.stats.batchedRequests, maxBatchSeen: batcher.stats.maxBatchSeen,
      baselineBatches: batcher.stats.baselineBatches, baselineRequests: batcher.stats.baselineRequests, opensAbandoned: batcher.stats.jobsDropped,
      queuedBytes: budget.total, peakQueuedBytes: budget.peak,
    }),
    health,
    async drain(timeoutMs = 30_000) {
      if (closing) return;
      if (!draining) {
        draining = true;
        log(`draining: ${conns.size} connection(s), ${st.sessions} session(s); up to ${timeoutMs} ms`);
        for (const c of [...conns]) maybeCloseDrained(c);
      }
      if (conns.size > 0) {
        await new Promise<void>((r) => {
          const t = setTimeout(r, timeoutMs);
          t.unref();
          drainedAll = () => {
            clearTimeout(t);
            r();
          };
        });
      }
      await gateway.close();
    },
    async close() {
      if (closing) return;
      closing = true;
      clearInterval(pingTimer);
      clearInterval(sweepTimer);
      for (const c of conns) {
        send(c, errorMessage(new ProtocolError('SHUTTING_DOWN', 'the gateway is shutting down; reconnect and resume', true)));
        c.ws.close(1001, 'SHUTTING_DOWN');
        for (const s of [...c.sessions.values()]) s.end();
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
  return gateway;
}
