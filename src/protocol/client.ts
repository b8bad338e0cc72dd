// The WebSocket client: a TargetLink whose target lives behind a duet gateway. Runs in the
// browser worker (global WebSocket) and in Node (npm `ws`, loaded on demand). It holds the
// session's accepted transcript, so when the socket drops (gateway restarted, network blip)
// it reconnects with backoff — to the same URL or whatever `url()` returns now — reopens the
// session with `resume`, and repeats the request in flight: no token is lost or duplicated.
// Errors reach the caller as ProtocolError with a code (see errors.ts). `rttMs` injects
// network latency, half on the way out and half on the way back, through the engine's
// DelayLine (the same mechanism as the in-process DelayedLink).

import type { SamplingParams, SparseDist } from '../engine/sampling.ts';
import type { Opened, TargetLink, Verdict } from '../engine/target-link.ts';
import { DelayLine } from '../engine/latency.ts';
import { decodeServerFrame, encodeJson, encodeVerify } from './codec.ts';
import { ProtocolError, type ErrorCode } from './errors.ts';
import { PROTOCOL_VERSION, type ClientMessage, type GatewayInfo, type Mode, type ServerMessage, type VerifyMsg } from './messages.ts';

/** The part of the WebSocket API the client uses (browser WebSocket and npm `ws` both fit). */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export type WebSocketFactory = (url: string) => WebSocketLike;

export interface ReconnectOptions {
  /** Reconnect attempts per outage before giving up with CONNECTION_LOST. */
  attempts?: number;
  /** First backoff delay; doubles per attempt up to maxDelayMs. */
  baseDelayMs?: number;
  maxDelayMs?: number;
}

export type ClientEvent =
  | { type: 'connected'; info: GatewayInfo }
  | { type: 'disconnected'; reason: string }
  | { type: 'reconnecting'; attempt: number; delayMs: number }
  | { type: 'resumed'; transcriptLength: number };

export interface RemoteTargetOptions {
  /** ws://host:port/ws; a function is asked again on every (re)connect. */
  url: string | (() => string);
  /** The draft's tokenizerHash; the gateway refuses a mismatch. */
  tokenizerHash: string;
  /** Shared secret of a gateway started with --token. */
  token?: string;
  /** Recorded by the gateway for its accounting; both modes may verify and generate. */
  mode?: Mode;
  /** false: no reconnect. Default: 8 attempts, 100 ms doubling to 2 s. */
  reconnect?: ReconnectOptions | false;
  /** Injected round-trip latency, ms (half before each send, half after each receive). */
  rttMs?: number;
  /** How the injected latency waits (tests pass a fake clock); default setTimeout. */
  delay?: (ms: number) => Promise<void>;
  createWebSocket?: WebSocketFactory;
  /** A request with no answer (or, for a stream, no next token) for this long counts as a lost connection. Default 120 s. */
  timeoutMs?: number;
  onEvent?: (e: ClientEvent) => void;
  clientName?: string;
}

const OPEN = 1;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const now = (): number => globalThis.performance.now();

/** Internal: the socket went away while a request was in flight (retried after resume). */
class Disconnected extends Error {
  override name = 'Disconnected';
  constructor(message: string, readonly timedOut = false) {
    super(message);
  }
}

async function defaultFactory(): Promise<WebSocketFactory> {
  const G = (globalThis as { WebSocket?: new (url: string) => WebSocketLike }).WebSocket;
  if (G) return (url) => new G(url);
  // Node without a global WebSocket: the `ws` package (kept out of static imports so browser bundles never see it)
  const name = 'ws';
  const mod = (await import(/* @vite-ignore */ name)) as { WebSocket: new (url: string) => WebSocketLike };
  return (url) => new mod.WebSocket(url);
}

interface Waiter {
  match: (m: ServerMessage) => boolean;
  onMessage: (m: ServerMessage) => boolean; // true: done
  resolve: () => void;
  reject: (e: unknown) => void;
  /** close() during this request resolves it with what arrived so far (a stream) instead of failing it. */
  endsOnClose?: boolean;
}

export class RemoteTarget implements TargetLink {
  private ws: WebSocketLike | null = null;
  private gateway: GatewayInfo | null = null;
  private waiter: Waiter | null = null;
  private readonly line: DelayLine;
  private factory: WebSocketFactory | null;
  private prompt: number[] | null = null;
  private sampling: SamplingParams | null = null;
  /** Tokens generated after the prompt; the last one the target has not run yet. */
  private generated: number[] = [];
  private session = 0;
  private sessionOpen = false;
  private prefillMs: number | undefined;
  private helloRttMs = NaN;
  private seq = 0;
  private passes = 0;
  private closedByUser = false;
  /** The gateway ended our session on its own (`closed` we did not ask for: its idle timeout). */
  private expiredByGateway = false;
  private fatal: ProtocolError | null = null;
  /** Times the client reconnected and resumed. */
  reconnects = 0;

  constructor(private readonly opts: RemoteTargetOptions) {
    this.factory = opts.createWebSocket ?? null;
    this.line = new DelayLine(opts.rttMs ?? 0, { now, sleep: opts.delay ?? sleep });
  }

  /** Connect and say hello; resolves with the gateway's info. Called lazily by open() too. */
  async connect(): Promise<GatewayInfo> {
    await this.withResume(() => this.ensureConnected());
    return this.gateway as GatewayInfo;
  }

  get info(): GatewayInfo | null {
    return this.gateway;
  }

  get targetPasses(): number {
    return this.passes;
  }

  /** Prompt + every token the target produced or confirmed so far. */
  get transcript(): number[] {
    return [...(this.prompt ?? []), ...this.generated];
  }

  async open(promptTokens: number[], sampling: SamplingParams): Promise<Opened> {
    if (this.prompt) throw new ProtocolError('SESSION_EXISTS', 'this RemoteTarget already has a session; create another for a new one');
    this.prompt = [...promptTokens];
    this.sampling = { ...sampling };
    await this.withResume(() => this.openSession());
    return { firstToken: this.generated[0], prefillMs: this.prefillMs, ...(Number.isFinite(this.helloRttMs) ? { rttMs: this.helloRttMs } : {}) };
  }

  /** The round trip of the last hello → welcome (no target compute: the network and any injected RTT), ms; NaN before one. */
  get rttMs(): number {
    return this.helloRttMs;
  }

  async verify(draft: number[], draftDists?: SparseDist[]): Promise<Verdict> {
    this.checkSession();
    return this.withResume(async () => {
      const seq = this.seq++;
      const msg: VerifyMsg = { type: 'verify', session: this.session, seq, draft: Int32Array.from(draft), ...(draftDists && draftDists.length ? { dists: draftDists } : {}) };
      let verdict: Verdict | null = null;
      await this.request(encodeVerify(msg), (m) => m.type === 'verdict' && m.session === this.session && m.seq === seq, (m) => {
        if (m.type !== 'verdict') return false;
        if (m.accepted > draft.length) throw new ProtocolError('BAD_FIELD', `gateway accepted ${m.accepted} of ${draft.length} draft tokens`);
        verdict = { accepted: m.accepted, token: m.token, verifyMs: m.verifyMs, queueMs: m.queueMs, batch: m.batch };
        return true;
      });
      const v = verdict as unknown as Verdict;
      this.passes++;
      for (let i = 0; i < v.accepted; i++) this.generated.push(draft[i]);
      this.generated.push(v.token);
      return v;
    });
  }

  async generate(n: number, onToken?: (token: number) => void): Promise<number[]> {
    this.checkSession();
    if (!Number.isInteger(n) || n < 0) throw new ProtocolError('BAD_FIELD', `generate(${n}): expected an integer >= 0`);
    const out: number[] = [];
    await this.withResume(async () => {
      const left = n - out.length;
      if (left <= 0) return;
      await this.request(encodeJson({ type: 'generate', session: this.session, n: left }), (m) => m.type === 'tokens' && m.session === this.session, (m) => {
        if (m.type !== 'tokens') return false;
        for (const t of m.tokens) {
          this.passes++;
          this.generated.push(t);
          out.push(t);
          onToken?.(t);
        }
        return m.done;
      }, true);
    });
    return out;
  }

  async close(): Promise<void> {
    if (this.closedByUser) return;
    this.closedByUser = true;
    const ws = this.ws;
    if (ws && ws.readyState === OPEN && this.sessionOpen) {
      try {
        ws.send(encodeJson({ type: 'close', session: this.session }));
      } catch {
        // the socket is going away anyway; the gateway frees the session on disconnect
      }
    }
    this.sessionOpen = false;
    // a stream (generate) ends with the tokens it has; a verify cannot finish without its verdict
    if (this.waiter?.endsOnClose) this.waiter.resolve();
    else this.failWaiter(new ProtocolError('CONNECTION_LOST', 'the client was closed while a request was in flight'));
    ws?.close(1000, 'client closed');
    this.ws = null;
  }

  // ---- internals ----

  private checkSession(): void {
    if (this.closedByUser) throw new ProtocolError('UNKNOWN_SESSION', 'this RemoteTarget is closed');
    if (!this.prompt || this.generated.length === 0) throw new ProtocolError('UNKNOWN_SESSION', 'call open() first');
  }

  private async openSession(): Promise<void> {
    await this.ensureConnected();
    const resume = this.generated.length > 0 ? [...this.generated] : undefined;
    this.session++;
    this.seq = 0;
    const session = this.session;
    const msg: ClientMessage = { type: 'open', session, prompt: this.prompt as number[], sampling: this.sampling as SamplingParams, mode: this.opts.mode ?? 'speculative', ...(resume ? { resume } : {}) };
    await this.request(encodeJson(msg as Exclude<ClientMessage, VerifyMsg>), (m) => m.type === 'opened' && m.session === session, (m) => {
      if (m.type !== 'opened') return false;
      this.prefillMs = m.prefillMs;
      if (resume && m.firstToken !== resume[resume.length - 1]) throw new ProtocolError('BAD_FIELD', `resume answered token ${m.firstToken}, expected ${resume[resume.length - 1]}`);
      if (!resume) this.generated.push(m.firstToken);
      return true;
    });
    this.passes++;
    this.sessionOpen = true;
    if (resume) this.opts.onEvent?.({ type: 'resumed', transcriptLength: this.prompt!.length + resume.length });
  }

  /** Run op; on a lost connection reconnect with backoff, reopen the session with its transcript and run op again. */
  private async withResume<T>(op: () => Promise<T>): Promise<T> {
    const rc = this.opts.reconnect === false ? null : this.opts.reconnect ?? {};
    const attempts = rc ? rc.attempts ?? 8 : 0;
    let failures = 0;
    for (;;) {
      try {
        if (this.prompt && this.generated.length > 0 && !this.sessionOpen) await this.openSession();
        return await op();
      } catch (e) {
        if (e instanceof ProtocolError && e.code === 'VERIFIER_FAILED') this.sessionOpen = false; // the gateway ended the session; the next call reopens it
        // a request that crossed the gateway's idle-expiry `closed` on the wire: reopen and retry
        const expired = e instanceof ProtocolError && e.code === 'UNKNOWN_SESSION' && this.expiredByGateway;
        this.expiredByGateway = false;
        const retriable = expired || e instanceof Disconnected || (e instanceof ProtocolError && e.code === 'SHUTTING_DOWN');
        if (!retriable || this.closedByUser || this.fatal) throw this.fatal ?? this.surface(e);
        this.sessionOpen = false;
        if (failures >= attempts) {
          const code = e instanceof Disconnected && e.timedOut ? 'TIMEOUT' : 'CONNECTION_LOST';
          throw new ProtocolError(code, attempts ? `lost the gateway and ${attempts} reconnect attempt(s) failed: ${(e as Error).message}` : (e as Error).message, true);
        }
        const delayMs = Math.min(rc!.maxDelayMs ?? 2000, (rc!.baseDelayMs ?? 100) * 2 ** failures);
        failures++;
        this.opts.onEvent?.({ type: 'reconnecting', attempt: failures, delayMs });
        await sleep(delayMs);
        this.reconnects++;
      }
    }
  }

  private surface(e: unknown): unknown {
    if (e instanceof Disconnected) return new ProtocolError(e.timedOut ? 'TIMEOUT' : 'CONNECTION_LOST', e.message, true);
    return e;
  }

  private wsUrl(): string {
    const base = typeof this.opts.url === 'function' ? this.opts.url() : this.opts.url;
    if (!this.opts.token) return base;
    const u = new URL(base);
    u.searchParams.set('token', this.opts.token);
    return u.toString();
  }

  private async ensureConnected(): Promise<void> {
    if (this.closedByUser) throw new ProtocolError('CONNECTION_LOST', 'this RemoteTarget is closed');
    if (this.fatal) throw this.fatal;
    if (this.ws && this.ws.readyState === OPEN && this.gateway) return;
    this.factory ??= await defaultFactory();
    const url = this.wsUrl();
    const ws = this.factory(url);
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    let opened = false;
    let refusedStatus: number | null = null;
    ws.onmessage = (ev) => this.arrive(ws, ev.data);
    ws.onerror = (ev) => {
      // npm `ws` reports a refused upgrade as "Unexpected server response: 401"
      const m = /Unexpected server response: (\d+)/.exec(String((ev as { message?: string })?.message ?? ''));
      if (m && !opened) refusedStatus = Number(m[1]);
    };
    ws.onclose = (ev) => {
      if (this.ws === ws) this.ws = null;
      this.gateway = null;
      this.sessionOpen = false;
      this.opts.onEvent?.({ type: 'disconnected', reason: `${ev.code} ${ev.reason}` });
      this.failWaiter(new Disconnected(`connection to ${stripToken(url)} closed (${ev.code}${ev.reason ? ' ' + ev.reason : ''})`));
    };
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => {
        opened = true;
        resolve();
      };
      const prevClose = ws.onclose;
      ws.onclose = (ev) => {
        prevClose?.(ev);
        if (!opened) {
          // Only a browser hides the HTTP status of a refused upgrade; npm `ws` reported it above.
          const isBrowserSocket = typeof (ws as unknown as { on?: unknown }).on !== 'function';
          const status = refusedStatus !== null ? Promise.resolve<number | null>(refusedStatus)
            // a browser hides why (1006 whatever the status): ask the gateway's upgrade check.
            // Only an explicit 401 / 403 there is final; 101 (it would take us now: it has just
            // come back up), 503 or no answer is retried like any lost connection
            : isBrowserSocket && !this.closedByUser && ev.code === 1006 ? checkUpgrade(url).then((c) => c.status) : Promise.resolve(null);
          void status.then((st) => {
            const r = st === null ? null : refusalError(st, url);
            if (r) {
              this.fatal = r;
              reject(r);
            } else reject(new Disconnected(st === 503
              ? `the gateway at ${stripToken(url)} is full or draining (HTTP 503)`
              : `cannot connect to ${stripToken(url)} (${st !== null && st !== 101 ? st : ev.code})`));
          });
        }
      };
    });
    const hello: ClientMessage = { type: 'hello', protocol: PROTOCOL_VERSION, tokenizerHash: this.opts.tokenizerHash, ...(this.opts.clientName ? { client: this.opts.clientName } : {}) };
    // a round trip without target compute: the network plus the injected RTT (request() pays both halves)
    const h0 = now();
    await this.request(encodeJson(hello as Exclude<ClientMessage, VerifyMsg>), (m) => m.type === 'welcome', (m) => {
      if (m.type === 'welcome') this.gateway = m.info;
      return true;
    });
    this.helloRttMs = now() - h0;
    this.opts.onEvent?.({ type: 'connected', info: this.gateway as unknown as GatewayInfo });
  }

  /** Send one frame and feed matching answers to onMessage until it returns true. */
  private async request(frame: string | Uint8Array, match: Waiter['match'], onMessage: Waiter['onMessage'], endsOnClose = false): Promise<void> {
    await this.line.send();
    const ws = this.ws;
    if (!ws || ws.readyState !== OPEN) throw new Disconnected('not connected');
    if (this.waiter) throw new ProtocolError('BUSY', 'a request is already in flight on this RemoteTarget; await it first');
    const timeoutMs = this.opts.timeoutMs ?? 120_000;
    await new Promise<void>((resolve, reject) => {
      // an inactivity timeout: every answer (each streamed token too) restarts it
      const expire = () => {
        // treat silence as a dead link: closing the socket makes withResume reconnect and resume
        this.failWaiter(new Disconnected(`no answer from the gateway within ${timeoutMs} ms`, true));
        ws.close(4000, 'timeout');
      };
      let timer = setTimeout(expire, timeoutMs);
      const done = (f: () => void) => () => {
        clearTimeout(timer);
        this.waiter = null;
        f();
      };
      const onAnswer: Waiter['onMessage'] = (m) => {
        clearTimeout(timer);
        timer = setTimeout(expire, timeoutMs);
        return onMessage(m);
      };
      this.waiter = { match, onMessage: onAnswer, resolve: done(resolve), reject: (e) => done(() => reject(e))(), endsOnClose };
      try {
        ws.send(frame);
      } catch (e) {
        this.waiter.reject(new Disconnected(`send failed: ${(e as Error).message}`));
      }
    });
  }

  private failWaiter(e: unknown): void {
    this.waiter?.reject(e);
  }

  /** Incoming frames, delayed by half the injected RTT each, in arrival order. */
  private arrive(ws: WebSocketLike, data: unknown): void {
    this.line.receive(() => this.dispatch(ws, data));
  }

  private dispatch(ws: WebSocketLike, data: unknown): void {
    if (ws !== this.ws) return;
    let m: ServerMessage;
    try {
      if (typeof data !== 'string') throw new ProtocolError('BAD_FRAME', 'the gateway sent a binary frame; protocol v1 gateways send JSON only');
      m = decodeServerFrame(data, this.gateway?.vocabSize);
    } catch (e) {
      this.failWaiter(e);
      return;
    }
    if (m.type === 'error') {
      const err = new ProtocolError(m.code, m.message, m.fatal, m.session, m.seq);
      if (m.fatal && m.code !== 'SHUTTING_DOWN') this.fatal = err;
      // errors for another session/sequence of ours cannot exist (one request at a time), so any error ends the request
      this.failWaiter(err);
      return;
    }
    const w = this.waiter;
    if (m.type === 'closed' && m.session === this.session && this.sessionOpen && !(w && w.match(m))) {
      // the gateway expired our idle session: the next request reopens it with the transcript
      this.sessionOpen = false;
      this.expiredByGateway = true;
      return;
    }
    if (!w || !w.match(m)) return; // pong, or a stale answer from before a resume
    try {
      if (w.onMessage(m)) w.resolve();
    } catch (e) {
      w.reject(e);
    }
  }
}

function stripToken(url: string): string {
  return url.replace(/([?&]token=)[^&]*/, '$1***');
}

function refusalError(status: number, url: string): ProtocolError | null {
  if (status === 401) return new ProtocolError('UNAUTHORIZED', `the gateway at ${stripToken(url)} refused the token; pass the gateway's --token secret`, true);
  if (status === 403) return new ProtocolError('ORIGIN_REFUSED', `the gateway at ${stripToken(url)} refused this page's origin; add it with --allow-origin`, true);
  // 503 (full, or draining) is not final: the caller retries with backoff and reports CONNECTION_LOST when out of attempts
  return null;
}

/**
 * GET /api/upgrade-check for a ws(s):// URL (its ?token= included) from this page's origin:
 * `answered` false when nothing answered at all (no gateway there, a bad host), else the
 * status the upgrade would get (101 = taken; null when what answered is not a duet gateway).
 * Needs no draft and opens no socket: a page can tell a wrong gateway URL at once.
 */
export async function checkUpgrade(url: string): Promise<{ answered: boolean; status: number | null }> {
  if (typeof fetch !== 'function') return { answered: false, status: null };
  let res: Response;
  try {
    const ws = new URL(url);
    const u = new URL(ws.href);
    u.protocol = ws.protocol === 'wss:' ? 'https:' : 'http:';
    u.pathname = '/api/upgrade-check';
    u.search = '';
    const origin = (globalThis as { location?: { origin?: string } }).location?.origin;
    if (origin && origin !== 'null') u.searchParams.set('origin', origin);
    const token = ws.searchParams.get('token');
    if (token !== null) u.searchParams.set('token', token);
    res = await fetch(u.toString(), { cache: 'no-store' });
  } catch {
    return { answered: false, status: null };
  }
  try {
    if (!res.ok) return { answered: true, status: null };
    const r = (await res.json()) as { status?: unknown };
    return { answered: true, status: typeof r.status === 'number' ? r.status : null };
  } catch {
    return { answered: true, status: null };
  }
}

/** Connect a RemoteTarget and fetch the gateway's info in one step. */
export async function connectGateway(opts: RemoteTargetOptions): Promise<RemoteTarget> {
  const t = new RemoteTarget(opts);
  await t.connect();
  return t;
}

export type { ErrorCode };
