// The `cpu` verifier backend: one copy of the weights (CpuBatchLlama) and one KV cache per
// session; a verifyBatch is ONE forward over every request's k + 1 tokens (k = 0 is a baseline
// decode step), batch-invariant, so a session's text never depends on who shares the pass;
// pass() puts opening sessions' prefills (whole prompts, or chunks of long ones) in that same
// forward as rows beside the verify blocks, so opens under load cost one shared pass each.
// Each session's transcript, RNG and the acceptance rule (src/engine/accept.ts) live in its
// LocalTarget; the pass itself runs here. Exact, needs no hardware; CI and the e2e suite use
// it with the tiny target. `engine: 'reference'` serves with the plain reference forward
// (CpuLlama, one session after the other) instead: the old path, kept for benchmarks.

import type { LlamaConfig } from '../../src/engine/config.ts';
import type { LlamaWeights } from '../../src/engine/weights.ts';
import type { SamplingParams } from '../../src/engine/sampling.ts';
import { CpuLlama } from '../../src/engine/reference.ts';
import { CpuBatchLlama, CpuBatchSession, type CpuRow } from '../../src/engine/cpu-batch.ts';
import { LocalTarget } from '../../src/engine/local-target.ts';
import { VerifyInputError } from '../../src/engine/accept.ts';
import { LocalVerifier, UnknownSessionError, resumeRngState } from './local.ts';
import { PartialBatchError, prefillLength, type OpenRequest, type PassResult, type PrefillChunk, type Verifier, type VerifierInfo, type VerifyRequest, type VerifyResult } from './types.ts';

export interface CpuVerifierOptions {
  config: LlamaConfig;
  weights: LlamaWeights;
  model: string;
  tokenizerHash: string;
  /** KV positions per session. */
  maxContext?: number;
  maxBatch?: number;
  maxDraft?: number;
  /** 'batched' (default): CpuBatchLlama, one pass per batch. 'reference': CpuLlama per session. */
  engine?: 'batched' | 'reference';
}

/** What the cpu backends offer beyond Verifier (tests watch sessions being freed). */
export interface CpuBackend extends Verifier {
  readonly sessionCount: number;
}

const now = (): number => performance.now();

export function createCpuVerifier(o: CpuVerifierOptions): CpuBackend {
  const maxContext = Math.min(o.maxContext ?? 2048, o.config.maxPositionEmbeddings);
  const batched = (o.engine ?? 'batched') === 'batched';
  const info = (device: string): VerifierInfo => ({
    backend: 'cpu', model: o.model, tokenizerHash: o.tokenizerHash, vocabSize: o.config.vocabSize,
    maxContext, maxBatch: o.maxBatch ?? 16, device, resume: true,
  });
  if (!batched) return new LocalVerifier({ info: info('cpu (TypeScript reference)'), makeModel: () => new CpuLlama(o.config, o.weights, maxContext), maxDraft: o.maxDraft ?? 16 });
  const engine = new CpuBatchLlama(o.config, o.weights, maxContext);
  return new CpuVerifier(info(`cpu (batched, ${engine.matmulPath === 'wasm' ? 'WebAssembly SIMD' : 'JavaScript'} matmul)`), engine, o.maxDraft ?? 16);
}

/** A session whose prefill is part-way through (pass() runs it in chunks, beside other work). */
interface Opening {
  target: LocalTarget;
  model: CpuBatchSession;
  /** What the prefill runs from position 0, and how much of it has run. */
  tokens: number[];
  done: number;
  /** A resumed session: its first token is the transcript's last, nothing is sampled. */
  resumeLast?: number;
}

/** One row of a pass and what to do with its logits. */
type Planned =
  | { kind: 'prefill'; id: string; o: Opening; n: number }
  | { kind: 'verify'; req: VerifyRequest; target: LocalTarget; kv: CpuBatchSession['kv']; tokens: number[]; startPos: number };

export class CpuVerifier implements CpuBackend {
  private readonly sessions = new Map<string, { target: LocalTarget; model: CpuBatchSession }>();
  private readonly opening = new Map<string, Opening>();
  /** Passes run, rows (sessions) in them and tokens, for the bench and tests. */
  readonly stats = { passes: 0, rows: 0, tokens: 0, prefillRows: 0 };

  constructor(private readonly vinfo: VerifierInfo, readonly engine: CpuBatchLlama, private readonly maxDraft: number) {}

  info(): VerifierInfo {
    return this.vinfo;
  }

  get sessionCount(): number {
    return this.sessions.size + this.opening.size;
  }

  /** A solo open: its whole prefill in one pass of its own. */
  async open(sessionId: string, promptTokens: number[], sampling: SamplingParams, resume?: number[]): Promise<{ firstToken: number }> {
    const open: OpenRequest = { sessionId, prompt: promptTokens, sampling, ...(resume ? { resume } : {}) };
    const r = await this.pass([{ open, tokens: prefillLength(open) }], []);
    const failed = r.failures.get(sessionId);
    if (failed) throw failed;
    return { firstToken: r.opened[0].firstToken };
  }

  /** ONE forward over every valid request; a request that fails validation fails alone. */
  async verifyBatch(requests: VerifyRequest[]): Promise<VerifyResult[]> {
    const r = await this.pass([], requests);
    if (r.failures.size) throw new PartialBatchError(r.verifies, r.failures);
    return r.verifies;
  }

  /**
   * ONE forward over prefill chunks and verify blocks; never throws (failures name the sessions,
   * and an open that failed holds nothing here). A chunk that does not end its prompt
   * computes no logits (it only fills its session's cache); one that ends it samples the first
   * token from the last position's logits, exactly as a solo open would (the rows are
   * independent, so the chunking and the neighbours change nothing).
   */
  async pass(prefills: PrefillChunk[], verifies: VerifyRequest[]): Promise<PassResult> {
    const failures = new Map<string, Error>();
    const plan: Planned[] = [];
    const seen = new Set<string>();
    const once = (id: string): void => {
      if (seen.has(id)) throw new VerifyInputError(`session ${id} appears twice in one pass`);
      seen.add(id);
    };
    for (const c of prefills) {
      const id = c.open.sessionId;
      if (seen.has(id)) {
        failures.set(id, new VerifyInputError(`session ${id} appears twice in one pass`));
        continue;
      }
      seen.add(id);
      try {
        const o = this.opening.get(id) ?? this.beginOpen(c.open);
        const n = Math.min(c.tokens, o.tokens.length - o.done);
        if (!(n >= 1) && o.done < o.tokens.length) throw new RangeError(`prefill chunk of ${c.tokens} tokens: expected at least 1`);
        plan.push({ kind: 'prefill', id, o, n });
      } catch (e) {
        failures.set(id, e as Error);
        this.opening.delete(id);
      }
    }
    for (const req of verifies) {
      try {
        once(req.sessionId);
        const s = this.get(req.sessionId);
        const k = req.draft.length;
        if ((s.target.sampling as SamplingParams).temperature > 0 && k > 0 && req.draftDists?.length !== k) {
          throw new VerifyInputError(`sampled verify needs one draft distribution q per draft token: got ${req.draftDists?.length ?? 0} for k = ${k}`);
        }
        const { tokens, startPos } = s.target.prepareVerify(req.draft);
        plan.push({ kind: 'verify', req, target: s.target, kv: s.model.kv, tokens, startPos });
      } catch (e) {
        failures.set(req.sessionId, e as Error);
      }
    }
    const out: PassResult = { verifies: [], opened: [], failures };
    const rows: CpuRow[] = [];
    const rowOf = new Map<Planned, number>();
    for (const p of plan) {
      if (p.kind === 'verify') {
        rowOf.set(p, rows.length);
        rows.push({ kv: p.kv, tokens: p.tokens, startPos: p.startPos });
      } else if (p.n > 0) {
        const ends = p.o.done + p.n === p.o.tokens.length;
        rowOf.set(p, rows.length);
        rows.push({ kv: p.o.model.kv, tokens: p.o.tokens.slice(p.o.done, p.o.done + p.n), startPos: p.o.done, ...(ends ? { lastOnly: true } : { noLogits: true }) });
      }
    }
    let logits: Float32Array[] = [];
    let ms = 0;
    if (rows.length > 0) {
      const t0 = now();
      try {
        logits = this.engine.forwardBatch(rows);
      } catch (e) {
        // rows are validated above, so this is a defect: fail every session of the pass, keep nothing half-built
        for (const p of plan) {
          if (p.kind === 'prefill') this.opening.delete(p.id);
          failures.set(p.kind === 'prefill' ? p.id : p.req.sessionId, e as Error);
        }
        return out;
      }
      ms = now() - t0;
      this.stats.passes++;
      this.stats.rows += rows.length;
      for (const r of rows) this.stats.tokens += r.tokens.length;
      for (const p of plan) if (p.kind === 'prefill' && p.n > 0) this.stats.prefillRows++;
    }
    for (const p of plan) {
      const row = rowOf.get(p);
      if (p.kind === 'prefill') {
        try {
          const first = this.advanceOpen(p.id, p.o, p.n, row === undefined ? undefined : logits[row]);
          if (first !== undefined) out.opened.push({ sessionId: p.id, firstToken: first });
        } catch (e) {
          this.opening.delete(p.id);
          failures.set(p.id, e as Error);
        }
        continue;
      }
      try {
        const v = p.target.applyVerify(logits[row as number], p.req.draft, p.req.draftDists, ms);
        out.verifies.push({ sessionId: p.req.sessionId, accepted: v.accepted, token: v.token, forwardMs: ms });
      } catch (e) {
        failures.set(p.req.sessionId, e as Error);
      }
    }
    return out;
  }

  /** Validate an open and start its session's transcript; its prefill runs in later rows. */
  private beginOpen(o: OpenRequest): Opening {
    if (this.sessions.has(o.sessionId) || this.opening.has(o.sessionId)) throw new Error(`session ${o.sessionId} is already open`);
    const model = new CpuBatchSession(this.engine);
    const target = new LocalTarget(model, { maxDraft: this.maxDraft });
    let opening: Opening;
    if (o.resume && o.resume.length > 0) {
      const transcript = [...o.prompt, ...o.resume];
      const { tokens } = target.prepareResume(transcript, o.sampling, resumeRngState(o.sampling.seed, transcript.length));
      opening = { target, model, tokens, done: 0, resumeLast: o.resume[o.resume.length - 1] };
    } else {
      opening = { target, model, tokens: target.prepareOpen(o.prompt, o.sampling).tokens, done: 0 };
    }
    this.opening.set(o.sessionId, opening);
    return opening;
  }

  /** After a chunk of n tokens ran: the first token once the whole prefill has (the session is then open). */
  private advanceOpen(id: string, o: Opening, n: number, logits: Float32Array | undefined): number | undefined {
    o.done += n;
    if (o.done < o.tokens.length) return undefined;
    let first: number;
    if (o.resumeLast !== undefined) {
      o.target.applyResume(o.tokens.length);
      first = o.resumeLast;
    } else {
      first = o.target.applyOpen(logits as Float32Array);
    }
    this.opening.delete(id);
    this.sessions.set(id, { target: o.target, model: o.model });
    return first;
  }

  /** Baseline: n decode steps, each a k = 0 verify (the same sampling as LocalTarget.generate). */
  async generate(sessionId: string, n: number, onToken?: (token: number) => void): Promise<number[]> {
    if (!Number.isInteger(n) || n < 0) throw new VerifyInputError(`generate(${n}): expected an integer >= 0`);
    this.get(sessionId);
    const toks: number[] = [];
    for (let i = 0; i < n; i++) {
      let r: VerifyResult;
      try {
        [r] = await this.verifyBatch([{ sessionId, draft: [] }]);
      } catch (e) {
        throw e instanceof PartialBatchError ? [...e.failures.values()][0] : e;
      }
      toks.push(r.token);
      onToken?.(r.token);
    }
    return toks;
  }

  /** Also drops a session whose prefill is part-way through (an open abandoned between chunks). */
  async close(sessionId: string): Promise<void> {
    const o = this.opening.get(sessionId);
    if (o) {
      this.opening.delete(sessionId);
      await o.target.close();
      return;
    }
    const s = this.sessions.get(sessionId);
    if (!s) return;
    this.sessions.delete(sessionId);
    await s.target.close();
  }

  async dispose(): Promise<void> {
    for (const id of [...this.opening.keys(), ...this.sessions.keys()]) await this.close(id);
  }

  private get(sessionId: string): { target: LocalTarget; model: CpuBatchSession } {
    const s = this.sessions.get(sessionId);
    if (!s) throw new UnknownSessionError(`no open session ${sessionId} on this verifier`);
    return s;
  }
}
