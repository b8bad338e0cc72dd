// The `sidecar` verifier: the gateway's client for Python verifier sidecars
// (server/sidecar/, protocol in server/sidecar/PROTOCOL.md). One or more sidecars form a
// pool: each is either spawned and supervised here (`--sidecar-cmd`: wait for its
// "listening" line, health checks, restart with backoff) or reached at an address
// (`--sidecar-addr host:port`: reconnect with backoff). A session is pinned to the sidecar
// that opened it, placed on the least-loaded live one; a verify batch reaches each sidecar as
// ONE verify_batch frame. When a sidecar dies its sessions fail with SidecarSessionLostError
// (open them again: any live sidecar takes them), and other sidecars keep serving.

import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import net from 'node:net';
import type { SamplingParams, SparseDist } from '../../src/engine/sampling.ts';
import { tokenizerHash as hashTokenizer } from '../../src/engine/tokenizer.ts';
import type { Verifier, VerifierInfo, VerifyRequest, VerifyResult } from './types.ts';

export const SIDECAR_PROTOCOL_VERSION = 1;
const MAX_HEADER_BYTES = 1 << 20;
const MAX_PAYLOAD_BYTES = 256 << 20;

// ---- errors ----

export class SidecarError extends Error {
  override name = 'SidecarError';
}
/** The sidecar answered with a typed error (code as in PROTOCOL.md: BadRequest, UnknownSession, ...). */
export class SidecarRemoteError extends SidecarError {
  override name = 'SidecarRemoteError';
  constructor(readonly code: string, message: string, readonly sidecar: string) {
    super(`sidecar ${sidecar}: ${code}: ${message}`);
  }
}
/** No sidecar could take the request (all down, or the connection dropped mid-call). */
export class SidecarUnavailableError extends SidecarError {
  override name = 'SidecarUnavailableError';
}
/** The session lived on a sidecar that crashed or restarted; its KV cache is gone. */
export class SidecarSessionLostError extends SidecarError {
  override name = 'SidecarSessionLostError';
  constructor(readonly sessionId: string, reason: string) {
    super(`session ${sessionId} was lost: ${reason}; open it again (the client holds the transcript, so a new session can be prefilled from it)`);
  }
}
/** A spawned sidecar exited or stayed silent before it was ready. */
export class SidecarStartError extends SidecarError {
  override name = 'SidecarStartError';
}
/** Pool members serve different models or tokenizers. */
export class SidecarMismatchError extends SidecarError {
  override name = 'SidecarMismatchError';
}
/**
 * Some requests of a verifyBatch failed. `results` holds the ones that succeeded, `failures`
 * the error of every other session: a batcher should resolve the former and reject the latter
 * so one bad session does not fail its batch-mates.
 */
export class SidecarBatchError extends SidecarError {
  override name = 'SidecarBatchError';
  constructor(readonly results: VerifyResult[], readonly failures: Map<string, Error>) {
    super(`${failures.size} of ${failures.size + results.length} verify requests failed: ` +
      [...failures].slice(0, 3).map(([s, e]) => `${s}: ${e.message}`).join('; '));
  }
}

// ---- frames: u32 BE header length | u32 BE payload length | JSON header | payload ----

export interface Frame {
  header: Record<string, unknown>;
  payload: Buffer;
}

export function encodeFrame(header: Record<string, unknown>, payload: Uint8Array = new Uint8Array(0)): Buffer {
  const h = Buffer.from(JSON.stringify({ v: SIDECAR_PROTOCOL_VERSION, ...header }), 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeUInt32BE(h.length, 0);
  prefix.writeUInt32BE(payload.byteLength, 4);
  return Buffer.concat([prefix, h, Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength)]);
}

/** Incremental decoder; throws SidecarError on a frame it cannot parse (the stream is then unusable). */
export class FrameDecoder {
  private buf: Buffer = Buffer.alloc(0);
  push(chunk: Buffer): Frame[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const out: Frame[] = [];
    while (this.buf.length >= 8) {
      const hlen = this.buf.readUInt32BE(0);
      const plen = this.buf.readUInt32BE(4);
      if (hlen > MAX_HEADER_BYTES || plen > MAX_PAYLOAD_BYTES) throw new SidecarError(`sidecar sent a frame of ${hlen} + ${plen} bytes; over the limits`);
      if (this.buf.length < 8 + hlen + plen) break;
      const header = JSON.parse(this.buf.subarray(8, 8 + hlen).toString('utf8')) as Record<string, unknown>;
      out.push({ header, payload: Buffer.from(this.buf.subarray(8 + hlen, 8 + hlen + plen)) });
      this.buf = this.buf.subarray(8 + hlen + plen);
    }
    return out;
  }
}

/** Binary draft distributions of a verify request: per position, i32 ids then f32 probs (LE). */
export function encodeDists(dists: SparseDist[]): { lens: number[]; bytes: Buffer } {
  const lens = dists.map((d) => d.ids.length);
  const bytes = Buffer.alloc(lens.reduce((a, n) => a + 8 * n, 0));
  let off = 0;
  for (const d of dists) {
    for (let i = 0; i < d.ids.length; i++) bytes.writeInt32LE(d.ids[i], off + 4 * i);
    off += 4 * d.ids.length;
    for (let i = 0; i < d.probs.length; i++) bytes.writeFloatLE(d.probs[i], off + 4 * i);
    off += 4 * d.probs.length;
  }
  return { lens, bytes };
}

// ---- one connection ----

interface Pending {
  resolve: (f: Frame) => void;
  reject: (e: Error) => void;
  onEvent?: (h: Record<string, unknown>) => void;
  timer?: ReturnType<typeof setTimeout>;
}

export class SidecarConnection {
  private nextId = 1;
  private pending = new Map<number, Pending>();
  private decoder = new FrameDecoder();
  closed = false;
  private closeHandlers: ((reason: string) => void)[] = [];

  private constructor(private readonly socket: net.Socket, readonly label: string) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      let frames: Frame[];
      try {
        frames = this.decoder.push(chunk);
      } catch (e) {
        this.destroy(`unreadable frame from the sidecar (${(e as Error).message})`);
        return;
      }
      for (const f of frames) this.dispatch(f);
    });
    socket.on('error', (e) => this.destroy(`connection error: ${e.message}`));
    socket.on('close', () => this.destroy('connection closed by the sidecar'));
  }

  static connect(host: string, port: number, timeoutMs: number): Promise<SidecarConnection> {
    const label = `${host}:${port}`;
    return new Promise((resolve, reject) => {
      const s = net.createConnection({ host, port });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new SidecarUnavailableError(`sidecar ${label}: no connection within ${timeoutMs} ms`));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(timer);
        s.removeAllListeners('error');
        resolve(new SidecarConnection(s, label));
      });
      s.once('error', (e) => {
        clearTimeout(timer);
        reject(new SidecarUnavailableError(`sidecar ${label}: cannot connect (${e.message}); is it running?`));
      });
    });
  }

  onClose(fn: (reason: string) => void): void {
    this.closeHandlers.push(fn);
  }

  call(op: string, fields: Record<string, unknown> = {}, payload?: Uint8Array, opts: { timeoutMs?: number; onEvent?: (h: Record<string, unknown>) => void } = {}): Promise<Frame> {
    if (this.closed) return Promise.reject(new SidecarUnavailableError(`sidecar ${this.label} is not connected`));
    const id = this.nextId++;
    return new Promise<Frame>((resolve, reject) => {
      const p: Pending = { resolve, reject, onEvent: opts.onEvent };
      if (opts.timeoutMs) {
        p.timer = setTimeout(() => {
          this.pending.delete(id);
          reject(new SidecarUnavailableError(`sidecar ${this.label}: no answer to ${op} within ${opts.timeoutMs} ms`));
        }, opts.timeoutMs);
      }
      this.pending.set(id, p);
      this.socket.write(encodeFrame({ id, op, ...fields }, payload));
    });
  }

  private dispatch(f: Frame): void {
    const id = f.header.id;
    const p = typeof id === 'number' ? this.pending.get(id) : undefined;
    if (!p) {
      // an error with id null answers a frame the sidecar could not parse: a client bug
      if (f.header.ok === false) this.destroy(`sidecar rejected a frame: ${JSON.stringify(f.header.error)}`);
      return;
    }
    if (f.header.event !== undefined) {
      p.onEvent?.(f.header);
      return;
    }
    this.pending.delete(id as number);
    if (p.timer) clearTimeout(p.timer);
    if (f.header.ok === true) p.resolve(f);
    else {
      const err = (f.header.error ?? {}) as { code?: string; message?: string };
      p.reject(new SidecarRemoteError(err.code ?? 'Internal', err.message ?? 'unknown error', this.label));
    }
  }

  destroy(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.destroy();
    for (const [, p] of this.pending) {
      if (p.timer) clearTimeout(p.timer);
      p.reject(new SidecarUnavailableError(`sidecar ${this.label}: ${reason}`));
    }
    this.pending.clear();
    for (const fn of this.closeHandlers) fn(reason);
  }
}

// ---- one pool member: a spawned, supervised process or a remote address ----

export interface SidecarHello {
  protocol: number;
  backend: string;
  model: string;
  vocabSize: number;
  maxContext: number;
  maxBatch: number;
  maxSessions: number;
  device: string;
  tokenizerHash: string;
  /** ttnn backend: the verify its start-up self-test chose, and that test's outcome (server/sidecar/README.md). */
  verifyPath?: string;
  selfTest?: Record<string, unknown> | null;
}

export type MemberState = 'starting' | 'up' | 'down' | 'stopped';

/** Split a command line into argv: whitespace separates, '…' and "…" quote, \ escapes. */
export function splitCommand(cmd: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quote: string | null = null;
  let has = false;
  for (let i = 0; i < cmd.length; i++) {
    const ch = cmd[i];
    if (quote) {
      if (ch === quote) quote = null;
      else if (ch === '\\' && quote === '"' && i + 1 < cmd.length) cur += cmd[++i];
      else cur += ch;
    } else if (ch === "'" || ch === '"') {
      quote = ch;
      has = true;
    } else if (ch === '\\' && i + 1 < cmd.length) {
      cur += cmd[++i];
      has = true;
    } else if (/\s/.test(ch)) {
      if (has || cur) out.push(cur);
      cur = '';
      has = false;
    } else cur += ch;
  }
  if (quote) throw new SidecarError(`--sidecar-cmd: unterminated ${quote} quote in ${JSON.stringify(cmd)}`);
  if (has || cur) out.push(cur);
  return out;
}

export interface SidecarVerifierOptions {
  /** Commands to spawn and supervise, one sidecar each (`--sidecar-cmd`, repeatable). */
  cmds?: (string | string[])[];
  /** Running sidecars to connect to, "host:port" (`--sidecar-addr`, repeatable). */
  addrs?: string[];
  /** Health check period, ms (default 2000). */
  healthIntervalMs?: number;
  /** A health check unanswered this long marks the sidecar down, ms (default 10000). */
  healthTimeoutMs?: number;
  /** How long a spawned sidecar may take to print its listening line, ms (default 180000). */
  startupTimeoutMs?: number;
  connectTimeoutMs?: number;
  /** Restart/reconnect backoff: initial delay, doubling up to max (defaults 250 / 10000 ms). */
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  /** open() waits this long for a sidecar to come up when none is, ms (default 30000). */
  openWaitMs?: number;
  /** Extra environment for spawned sidecars. */
  env?: Record<string, string>;
  /** Log lines (sidecar stderr, restarts); default console.error. */
  log?: (line: string) => void;
}

const DEFAULTS = {
  healthIntervalMs: 2000, healthTimeoutMs: 10_000, startupTimeoutMs: 180_000, connectTimeoutMs: 5000,
  backoffInitialMs: 250, backoffMaxMs: 10_000, openWaitMs: 30_000,
};
type Opts = typeof DEFAULTS & SidecarVerifierOptions & { log: (line: string) => void };

export class SidecarMember extends EventEmitter {
  state: MemberState = 'down';
  conn: SidecarConnection | null = null;
  hello: SidecarHello | null = null;
  proc: ChildProcess | null = null;
  /** Sessions pinned here. */
  readonly sessions = new Set<string>();
  restarts = 0;
  private backoffMs: number;
  private healthTimer: ReturnType<typeof setInterval> | null = null;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private upSince = 0;
  private healthInFlight = false;
  private stderrTail: string[] = [];
  lastError = '';

  constructor(readonly label: string, private readonly target: { argv: string[] } | { host: string; port: number }, private readonly o: Opts) {
    super();
    this.backoffMs = o.backoffInitialMs;
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  /** Start (spawn + connect, or connect); resolves when up, rejects with the reason otherwise. */
  async start(): Promise<void> {
    if (this.state === 'stopped') throw new SidecarError(`sidecar ${this.label} was disposed`);
    this.state = 'starting';
    try {
      const { host, port } = 'argv' in this.target ? await this.spawnProcess(this.target.argv) : this.target;
      const conn = await SidecarConnection.connect(host, port, this.o.connectTimeoutMs);
      const hello = (await conn.call('hello', { protocol: SIDECAR_PROTOCOL_VERSION }, undefined, { timeoutMs: this.o.healthTimeoutMs })).header;
      if (hello.protocol !== SIDECAR_PROTOCOL_VERSION) {
        conn.destroy('protocol mismatch');
        throw new SidecarError(`sidecar ${this.label} speaks protocol ${String(hello.protocol)}, this gateway ${SIDECAR_PROTOCOL_VERSION}; upgrade one of them`);
      }
      const tokHash = await this.fetchTokenizerHash(conn);
      if (this.state !== 'starting') {
        conn.destroy('disposed while starting');
        throw new SidecarError(`sidecar ${this.label} stopped while starting`);
      }
      this.conn = conn;
      this.hello = { ...(hello as unknown as SidecarHello), tokenizerHash: tokHash };
      conn.onClose((reason) => this.markDown(reason));
      this.state = 'up';
      this.upSince = Date.now();
      this.healthTimer = setInterval(() => void this.checkHealth(), this.o.healthIntervalMs);
      this.healthTimer.unref?.();
      this.emit('up');
    } catch (e) {
      this.lastError = (e as Error).message;
      if ((this.state as MemberState) !== 'stopped') this.markDown(this.lastError);
      throw e;
    }
  }

  private async fetchTokenizerHash(conn: SidecarConnection): Promise<string> {
    try {
      const f = await conn.call('tokenizer', {}, undefined, { timeoutMs: 60_000 });
      return await hashTokenizer(JSON.parse(f.payload.toString('utf8')));
    } catch (e) {
      if (e instanceof SidecarRemoteError && e.code === 'BadRequest') return ''; // model dir without tokenizer.json
      throw e;
    }
  }

  private spawnProcess(argv: string[]): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      this.stderrTail = [];
      const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, DUET_SIDECAR_EXIT_WITH_PARENT: '1', ...this.o.env } });
      this.proc = child;
      let settled = false;
      const fail = (msg: string): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        child.kill('SIGKILL');
        const tail = this.stderrTail.slice(-8).join('\n');
        reject(new SidecarStartError(`sidecar ${this.label} (${argv.join(' ')}) ${msg}${tail ? `; its stderr ended with:\n${tail}` : ''}`));
      };
      const timer = setTimeout(() => fail(`printed no listening line within ${this.o.startupTimeoutMs} ms`), this.o.startupTimeoutMs);
      let out = '';
      child.stdout!.on('data', (b: Buffer) => {
        out += b.toString('utf8');
        let nl: number;
        while ((nl = out.indexOf('\n')) >= 0) {
          const line = out.slice(0, nl).trim();
          out = out.slice(nl + 1);
          if (settled || !line.startsWith('{')) continue;
          try {
            const j = JSON.parse(line) as { event?: string; host?: string; port?: number };
            if (j.event === 'listening' && typeof j.port === 'number') {
              settled = true;
              clearTimeout(timer);
              resolve({ host: j.host ?? '127.0.0.1', port: j.port });
            }
          } catch {
            // not our JSON line: the sidecar's own stdout chatter
          }
        }
      });
      let errBuf = '';
      child.stderr!.on('data', (b: Buffer) => {
        errBuf += b.toString('utf8');
        const lines = errBuf.split('\n');
        errBuf = lines.pop() ?? '';
        for (const l of lines) {
          this.stderrTail.push(l);
          if (this.stderrTail.length > 50) this.stderrTail.shift();
          this.o.log(`[sidecar ${this.label}] ${l}`);
        }
      });
      child.on('error', (e) => fail(`could not be started: ${e.message}`));
      const why = (code: number | null, signal: NodeJS.Signals | null): string => `exited (${signal ? `signal ${signal}` : `code ${code}`})`;
      // before it is ready, wait for 'close' (stdio drained) so the stderr tail is complete
      child.on('close', (code, signal) => {
        if (!settled) fail(why(code, signal));
      });
      child.on('exit', (code, signal) => {
        if (settled && this.proc === child) this.markDown(`the sidecar process ${why(code, signal)}`);
      });
    });
  }

  private async checkHealth(): Promise<void> {
    if (this.state !== 'up' || !this.conn || this.healthInFlight) return;
    this.healthInFlight = true;
    try {
      await this.conn.call('health', {}, undefined, { timeoutMs: this.o.healthTimeoutMs });
      if (Date.now() - this.upSince > 30_000) this.backoffMs = this.o.backoffInitialMs; // stable again
    } catch (e) {
      this.markDown(`health check failed: ${(e as Error).message}`);
    } finally {
      this.healthInFlight = false;
    }
  }

  /** Down: drop the connection, kill a spawned process, lose its sessions, schedule a restart. */
  markDown(reason: string): void {
    if (this.state === 'down' || this.state === 'stopped') return;
    const wasUp = this.state === 'up';
    this.state = 'down';
    this.lastError = reason;
    if (this.healthTimer) clearInterval(this.healthTimer);
    this.healthTimer = null;
    const conn = this.conn;
    this.conn = null;
    conn?.destroy(reason);
    const proc = this.proc;
    this.proc = null;
    if (proc && proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    const lost = [...this.sessions];
    this.sessions.clear();
    if (wasUp) this.o.log(`[sidecar ${this.label}] down: ${reason}; ${lost.length} session(s) lost; retrying in ${this.backoffMs} ms`);
    this.emit('down', reason, lost);
    this.scheduleRestart();
  }

  private scheduleRestart(): void {
    if (this.retryTimer || this.state === 'stopped') return;
    const delay = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, this.o.backoffMaxMs);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (this.state !== 'down') return;
      this.restarts++;
      this.start().catch((e: Error) => this.o.log(`[sidecar ${this.label}] restart failed: ${e.message}`));
    }, delay);
    this.retryTimer.unref?.();
  }

  async stop(): Promise<void> {
    this.state = 'stopped';
    if (this.healthTimer) clearInterval(this.healthTimer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.conn?.destroy('gateway shutting down');
    this.conn = null;
    const proc = this.proc;
    this.proc = null;
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      await new Promise<void>((resolve) => {
        const kill = setTimeout(() => proc.kill('SIGKILL'), 3000);
        proc.once('exit', () => {
          clearTimeout(kill);
          resolve();
        });
        proc.kill('SIGTERM');
      });
    }
  }

  call(op: string, fields: Record<string, unknown>, payload?: Uint8Array, opts?: { timeoutMs?: number; onEvent?: (h: Record<string, unknown>) => void }): Promise<Frame> {
    if (this.state !== 'up' || !this.conn) return Promise.reject(new SidecarUnavailableError(`sidecar ${this.label} is ${this.state}: ${this.lastError}`));
    return this.conn.call(op, fields, payload, opts);
  }
}

// ---- the pool: the Verifier ----

export interface VerifyWithLogits extends VerifyResult {
  /** (k + 1, vocab) target logits of the block, when requested (tests, debugging). */
  logits?: Float32Array;
}

export class SidecarVerifier implements Verifier {
  readonly events = new EventEmitter();
  /** sessionId → the member it lives on, or the reason it was lost. */
  private readonly placement = new Map<string, SidecarMember | SidecarSessionLostError>();
  private reference: SidecarHello | null = null;

  constructor(readonly members: SidecarMember[], private readonly o: Opts) {
    for (const m of members) {
      m.on('down', (reason: string, lost: string[]) => {
        for (const sid of lost) {
          const err = new SidecarSessionLostError(sid, `sidecar ${m.label} went down (${reason})`);
          this.placement.set(sid, err);
          this.events.emit('session-lost', sid, err);
        }
        this.events.emit('member-down', m.label, reason);
      });
      m.on('up', () => {
        try {
          this.checkSame(m);
          this.events.emit('member-up', m.label);
        } catch (e) {
          this.o.log((e as Error).message);
          m.markDown((e as Error).message);
        }
      });
    }
  }

  private checkSame(m: SidecarMember): void {
    const h = m.hello!;
    const r = (this.reference ??= h);
    for (const key of ['model', 'vocabSize', 'tokenizerHash'] as const) {
      if (h[key] !== r[key]) {
        throw new SidecarMismatchError(`sidecar ${m.label} serves ${key} ${JSON.stringify(h[key])}, the pool ${JSON.stringify(r[key])}; every sidecar of one gateway must serve the same target`);
      }
    }
  }

  info(): VerifierInfo {
    const up = this.members.filter((m) => m.hello);
    const h = this.reference ?? up[0]?.hello;
    if (!h) throw new SidecarUnavailableError('no sidecar has come up yet');
    return {
      backend: 'sidecar',
      model: h.model,
      tokenizerHash: h.tokenizerHash,
      vocabSize: h.vocabSize,
      maxContext: Math.min(...up.map((m) => m.hello!.maxContext)),
      maxBatch: up.reduce((a, m) => a + m.hello!.maxBatch, 0),
      device: [...new Set(up.map((m) => m.hello!.device))].join(' + ') + (this.members.length > 1 ? ` (${this.members.length} sidecars)` : ''),
      ...verifyOutcome(up),
    };
  }

  /** Least-loaded live member, waiting up to openWaitMs for one to come up. */
  private async place(): Promise<SidecarMember> {
    const deadline = Date.now() + this.o.openWaitMs;
    for (;;) {
      const up = this.members.filter((m) => m.state === 'up');
      if (up.length) return up.reduce((best, m) => (m.sessions.size < best.sessions.size ? m : best));
      if (Date.now() >= deadline) {
        const why = this.members.map((m) => `${m.label}: ${m.state} (${m.lastError})`).join('; ');
        throw new SidecarUnavailableError(`no sidecar is up (${why}); check the sidecar command/addresses and their logs`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  private memberOf(sessionId: string): SidecarMember {
    const p = this.placement.get(sessionId);
    if (p instanceof SidecarSessionLostError) throw p;
    if (!p) throw new SidecarRemoteError('UnknownSession', `session ${sessionId} is not open`, 'pool');
    return p;
  }

  async open(sessionId: string, promptTokens: number[], sampling: SamplingParams): Promise<{ firstToken: number }> {
    const m = await this.place();
    if (this.placement.get(sessionId) instanceof SidecarMember) {
      throw new SidecarRemoteError('SessionExists', `session ${sessionId} is already open; close it first`, 'pool');
    }
    m.sessions.add(sessionId); // counts toward load while the prefill runs
    this.placement.set(sessionId, m);
    try {
      const f = await m.call('open', {
        session: sessionId, prompt: promptTokens,
        sampling: { temperature: sampling.temperature, topK: sampling.topK, topP: sampling.topP, seed: sampling.seed },
      });
      return { firstToken: f.header.firstToken as number };
    } catch (e) {
      m.sessions.delete(sessionId);
      if (this.placement.get(sessionId) === m) this.placement.delete(sessionId);
      throw e;
    }
  }

  verifyBatch(requests: VerifyRequest[]): Promise<VerifyResult[]> {
    return this.verifyBatchDetailed(requests, false);
  }

  /** verifyBatch, optionally with each block's logits: one verify_batch frame per sidecar (per maxBatch). */
  async verifyBatchDetailed(requests: VerifyRequest[], returnLogits: boolean): Promise<VerifyWithLogits[]> {
    const failures = new Map<string, Error>();
    const groups = new Map<SidecarMember, VerifyRequest[]>();
    for (const r of requests) {
      try {
        const m = this.memberOf(r.sessionId);
        groups.set(m, [...(groups.get(m) ?? []), r]);
      } catch (e) {
        failures.set(r.sessionId, e as Error);
      }
    }
    const results = new Map<string, VerifyWithLogits>();
    const calls: Promise<void>[] = [];
    for (const [m, reqs] of groups) {
      const per = m.hello?.maxBatch ?? reqs.length;
      for (let i = 0; i < reqs.length; i += per) calls.push(this.verifyOn(m, reqs.slice(i, i + per), returnLogits, results, failures));
    }
    await Promise.all(calls);
    const ok = requests.filter((r) => results.has(r.sessionId)).map((r) => results.get(r.sessionId)!);
    if (failures.size) throw new SidecarBatchError(ok, failures);
    return ok;
  }

  private async verifyOn(m: SidecarMember, reqs: VerifyRequest[], returnLogits: boolean, results: Map<string, VerifyWithLogits>, failures: Map<string, Error>): Promise<void> {
    const blobs: Buffer[] = [];
    const wire = reqs.map((r) => {
      const w: Record<string, unknown> = { session: r.sessionId, draft: r.draft };
      if (r.draftDists && r.draftDists.length) {
        const { lens, bytes } = encodeDists(r.draftDists);
        w.distLens = lens;
        blobs.push(bytes);
      }
      return w;
    });
    let f: Frame;
    try {
      f = await m.call('verify_batch', { requests: wire, ...(returnLogits ? { returnLogits: true } : {}) }, Buffer.concat(blobs));
    } catch (e) {
      const err = e instanceof SidecarUnavailableError ? this.lostOr(reqs[0].sessionId, e) : (e as Error);
      for (const r of reqs) failures.set(r.sessionId, e instanceof SidecarUnavailableError ? this.lostOr(r.sessionId, e) : err);
      return;
    }
    const forwardMs = f.header.forwardMs as number;
    const rows = (f.header.logitsRows as number[] | undefined) ?? [];
    const vocab = (f.header.vocab as number | undefined) ?? 0;
    let off = 0;
    (f.header.results as Record<string, unknown>[]).forEach((res, i) => {
      const sid = reqs[i].sessionId;
      const e = res.error as { code: string; message: string } | undefined;
      if (e) failures.set(sid, new SidecarRemoteError(e.code, e.message, m.label));
      else {
        const out: VerifyWithLogits = { sessionId: sid, accepted: res.accepted as number, token: res.token as number, forwardMs };
        if (returnLogits && rows[i]) {
          const n = rows[i] * vocab;
          out.logits = new Float32Array(f.payload.buffer.slice(f.payload.byteOffset + off, f.payload.byteOffset + off + 4 * n));
          off += 4 * n;
        }
        results.set(sid, out);
      }
    });
  }

  /** The session's lost error if its sidecar went down meanwhile, else e. */
  private lostOr(sessionId: string, e: Error): Error {
    const p = this.placement.get(sessionId);
    return p instanceof SidecarSessionLostError ? p : e;
  }

  async generate(sessionId: string, n: number, onToken?: (token: number) => void): Promise<number[]> {
    const m = this.memberOf(sessionId);
    try {
      const f = await m.call('generate', { session: sessionId, n, stream: !!onToken }, undefined, {
        onEvent: (h) => onToken?.(h.token as number),
      });
      return f.header.tokens as number[];
    } catch (e) {
      throw e instanceof SidecarUnavailableError ? this.lostOr(sessionId, e) : e;
    }
  }

  async close(sessionId: string): Promise<void> {
    const p = this.placement.get(sessionId);
    this.placement.delete(sessionId);
    if (!(p instanceof SidecarMember)) return;
    p.sessions.delete(sessionId);
    if (p.state === 'up') await p.call('close', { session: sessionId }).catch(() => undefined);
  }

  /** Logits of a fresh sequence on the first live sidecar (golden tests). (N, vocab) row-major. */
  async logits(tokens: number[]): Promise<Float32Array> {
    const m = await this.place();
    const f = await m.call('logits', { tokens });
    return new Float32Array(f.payload.buffer.slice(f.payload.byteOffset, f.payload.byteOffset + f.payload.byteLength));
  }

  /** Per-member status for `duet serve` logs, health endpoints and tests. */
  status(): { label: string; state: MemberState; addr?: string; sessions: number; restarts: number; pid?: number; lastError: string }[] {
    return this.members.map((m) => ({ label: m.label, state: m.state, addr: m.conn?.label, sessions: m.sessions.size, restarts: m.restarts, pid: m.pid, lastError: m.lastError }));
  }

  async dispose(): Promise<void> {
    await Promise.all(this.members.map((m) => m.stop()));
  }
}

/** The ttnn members' verify path and self-test outcome, for /api/info; nothing for other backends. */
function verifyOutcome(up: SidecarMember[]): Pick<VerifierInfo, 'verifyPath' | 'selfTest'> {
  const paths = [...new Set(up.flatMap((m) => (m.hello!.verifyPath === undefined ? [] : [m.hello!.verifyPath])))];
  if (!paths.length) return {};
  return { verifyPath: paths.join(' + '), selfTest: up.map((m) => ({ sidecar: m.label, ...(m.hello!.selfTest ?? {}) })) };
}

function parseAddr(a: string): { host: string; port: number } {
  const i = a.lastIndexOf(':');
  const port = Number(a.slice(i + 1));
  if (i <= 0 || !Number.isInteger(port) || port <= 0 || port > 65535) {
    throw new SidecarError(`--sidecar-addr ${JSON.stringify(a)}: expected host:port, e.g. 127.0.0.1:7070`);
  }
  return { host: a.slice(0, i).replace(/^\[|\]$/g, ''), port };
}

/**
 * Start (or connect to) every sidecar and resolve once all are up. A sidecar that fails to
 * start fails the call (with its stderr tail) so a misconfigured `duet serve` stops at once;
 * after that, failures are handled by restart/reconnect with backoff.
 */
export async function createSidecarVerifier(opts: SidecarVerifierOptions): Promise<SidecarVerifier> {
  const given = Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) as SidecarVerifierOptions;
  const o: Opts = { ...DEFAULTS, ...given, log: opts.log ?? ((l) => console.error(l)) };
  const members: SidecarMember[] = [];
  (opts.cmds ?? []).forEach((c, i) => {
    const argv = typeof c === 'string' ? splitCommand(c) : c;
    if (!argv.length) throw new SidecarError('--sidecar-cmd is empty');
    members.push(new SidecarMember(`cmd#${i}`, { argv }, o));
  });
  for (const a of opts.addrs ?? []) members.push(new SidecarMember(a, parseAddr(a), o));
  if (!members.length) throw new SidecarError('the sidecar verifier needs --sidecar-cmd CMD or --sidecar-addr HOST:PORT (repeatable)');
  const v = new SidecarVerifier(members, o);
  try {
    await Promise.all(members.map((m) => m.start()));
    const bad = members.find((m) => m.state !== 'up');
    if (bad) throw new SidecarMismatchError(bad.lastError);
  } catch (e) {
    await v.dispose();
    throw e;
  }
  return v;
}
