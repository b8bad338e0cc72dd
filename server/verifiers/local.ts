// A Verifier over any in-process CausalLM (the `cpu` reference, the `webgpu` engine on Dawn):
// one LocalTarget per session, so the acceptance rule is src/engine/accept.ts and nothing
// else. These backends have no batched forward across sessions, so verifyBatch runs the
// batch's sessions one after the other; the batcher still groups them so a backend that can
// batch (the sidecar) gets one call. A backend with a batched forward (webgpu) extends this
// class and replaces verifyBatch only: sessions, open, generate, close and dispose are these.

import type { CausalLM } from '../../src/engine/model.ts';
import type { SamplingParams } from '../../src/engine/sampling.ts';
import { LocalTarget } from '../../src/engine/local-target.ts';
import { Rng, STREAM_TARGET } from '../../src/engine/sampling.ts';
import { PartialBatchError, type Verifier, type VerifierInfo, type VerifyRequest, type VerifyResult } from './types.ts';

export class UnknownSessionError extends Error {
  override name = 'UnknownSessionError';
}

export interface LocalVerifierOptions {
  info: VerifierInfo;
  /** A fresh model (own KV cache; weights shared where the backend can) for each session. */
  makeModel: () => CausalLM | Promise<CausalLM>;
  /** Longest draft block. */
  maxDraft: number;
  onDispose?: () => void | Promise<void>;
}

/** The RNG state a resumed sampled session continues from: a stream keyed by the resume point. */
export function resumeRngState(seed: number, transcriptLength: number): [number, number, number, number] {
  return new Rng((seed + Math.imul(transcriptLength, 0x9e3779b1)) >>> 0, STREAM_TARGET).getState();
}

export class LocalVerifier implements Verifier {
  private readonly sessions = new Map<string, LocalTarget>();

  constructor(private readonly opts: LocalVerifierOptions) {}

  info(): VerifierInfo {
    return this.opts.info;
  }

  /** Sessions holding a KV cache now (tests check that disconnects free them). */
  get sessionCount(): number {
    return this.sessions.size;
  }

  async open(sessionId: string, promptTokens: number[], sampling: SamplingParams, resume?: number[]): Promise<{ firstToken: number }> {
    if (this.sessions.has(sessionId)) throw new Error(`session ${sessionId} is already open`);
    const target = new LocalTarget(await this.opts.makeModel(), { maxDraft: this.opts.maxDraft });
    try {
      if (resume && resume.length > 0) {
        const transcript = [...promptTokens, ...resume];
        await target.resume(transcript, sampling, resumeRngState(sampling.seed, transcript.length));
        this.sessions.set(sessionId, target);
        return { firstToken: resume[resume.length - 1] };
      }
      const { firstToken } = await target.open(promptTokens, sampling);
      this.sessions.set(sessionId, target);
      return { firstToken };
    } catch (e) {
      target.model.dispose();
      throw e;
    }
  }

  async verifyBatch(requests: VerifyRequest[]): Promise<VerifyResult[]> {
    const out: VerifyResult[] = [];
    const failures = new Map<string, Error>();
    for (const r of requests) {
      try {
        const v = await this.get(r.sessionId).verify(r.draft, r.draftDists);
        out.push({ sessionId: r.sessionId, accepted: v.accepted, token: v.token, forwardMs: v.verifyMs });
      } catch (e) {
        failures.set(r.sessionId, e as Error);
      }
    }
    if (failures.size) throw new PartialBatchError(out, failures);
    return out;
  }

  async generate(sessionId: string, n: number, onToken?: (token: number) => void): Promise<number[]> {
    return this.get(sessionId).generate(n, onToken);
  }

  async close(sessionId: string): Promise<void> {
    const t = this.sessions.get(sessionId);
    if (!t) return;
    this.sessions.delete(sessionId);
    await t.close();
    t.model.dispose();
  }

  async dispose(): Promise<void> {
    for (const id of [...this.sessions.keys()]) await this.close(id);
    await this.opts.onDispose?.();
  }

  protected get(sessionId: string): LocalTarget {
    const t = this.sessions.get(sessionId);
    if (!t) throw new UnknownSessionError(`no open session ${sessionId} on this verifier`);
    return t;
  }
}
