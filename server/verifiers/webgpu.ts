// The `webgpu` verifier backend: the same WGSL engine the browser runs (src/engine/gpu), in
// Node on Dawn (npm `webgpu`; SwiftShader where there is no GPU). ONE GpuModel holds the
// weights; each session is a GpuSession (its own KV cache) behind a LocalTarget, which owns
// the transcript and applies the acceptance rule (src/engine/accept.ts). verifyBatch runs the
// k + 1 rows of every request of the batch (k = 0: a baseline step, one row) in ONE
// forwardBatch. Memory is weights + activations once plus one KV cache per session: an open
// whose cache does not fit memoryBudgetBytes (or the device) is refused with
// GpuOutOfMemoryError (needed vs available). The matmuls run batch-invariant, so a session's
// greedy text does not depend on who shares its passes. Sessions, open, generate, close and
// dispose are LocalVerifier's; only verifyBatch is this backend's own.

import { requestDevice, type GpuContext } from '../../src/kernels/gpu.ts';
import type { LlamaConfig } from '../../src/engine/config.ts';
import type { LlamaWeights } from '../../src/engine/weights.ts';
import { LocalTarget } from '../../src/engine/local-target.ts';
import { VerifyInputError } from '../../src/engine/accept.ts';
import { GpuModel, type GpuEngineOptions, type GpuSession, type MemoryReport } from '../../src/engine/gpu/index.ts';
import { LocalVerifier } from './local.ts';
import { PartialBatchError, type VerifierInfo, type VerifyRequest, type VerifyResult } from './types.ts';

export interface WebGpuVerifierOptions {
  config: LlamaConfig;
  weights: LlamaWeights;
  model: string;
  tokenizerHash: string;
  maxContext?: number;
  maxBatch?: number;
  maxDraft?: number;
  maxSessions?: number;
  /** Total GPU bytes the weights and every session's KV cache may use; default: only the device's own limit. */
  memoryBudgetBytes?: number;
  /** An existing device (tests share one). */
  ctx?: GpuContext;
  /**
   * Weight and KV storage. Default f32 for both: the target decides which tokens stand, so
   * by default it computes like the CPU reference; q8/q4 weights or an f16 KV cache trade
   * that for memory.
   */
  format?: GpuEngineOptions['format'];
  kvFormat?: GpuEngineOptions['kvFormat'];
  /** Most rows (Σ k + 1 over the batch) per submission. Default maxBatch · (maxDraft + 1), at most 256. */
  maxRows?: number;
}

const now = (): number => performance.now();

export class WebGpuVerifier extends LocalVerifier {
  constructor(
    readonly model: GpuModel,
    verifierInfo: VerifierInfo,
    maxDraft: number,
    onDispose: () => void,
  ) {
    super({
      info: verifierInfo, maxDraft, makeModel: () => model.openSession(verifierInfo.maxContext),
      onDispose: () => {
        model.dispose();
        onDispose();
      },
    });
  }

  /** GPU bytes by group: weights and activations once, KV for the live sessions. */
  get memory(): MemoryReport {
    return this.model.memory;
  }

  /**
   * One forward over every request's k + 1 rows. A session named twice (never from the
   * gateway, which keeps one request in flight per session) gets its second block in a
   * second forward, after the first one's verdict has moved its transcript on.
   */
  override async verifyBatch(requests: VerifyRequest[]): Promise<VerifyResult[]> {
    const out: VerifyResult[] = [];
    const failures = new Map<string, Error>();
    let rest = requests;
    while (rest.length > 0) {
      const seen = new Set<string>();
      const now_ = rest.filter((r) => (seen.has(r.sessionId) ? false : (seen.add(r.sessionId), true)));
      rest = rest.filter((r) => !now_.includes(r));
      out.push(...(await this.verifyOnce(now_, failures)));
    }
    if (failures.size) throw new PartialBatchError(out, failures);
    return out;
  }

  private async verifyOnce(requests: VerifyRequest[], failures: Map<string, Error>): Promise<VerifyResult[]> {
    const ready: { r: VerifyRequest; target: LocalTarget; tokens: number[]; startPos: number }[] = [];
    for (const r of requests) {
      try {
        const target = this.get(r.sessionId);
        const { tokens, startPos } = target.prepareVerify(r.draft);
        // validate q's before the forward so bad input costs no target pass
        if ((target.sampling?.temperature ?? 0) > 0 && (!r.draftDists || r.draftDists.length !== r.draft.length)) {
          throw new VerifyInputError(`sampled verify needs one draft distribution q per draft token: got ${r.draftDists?.length ?? 0} for k = ${r.draft.length}`);
        }
        ready.push({ r, target, tokens, startPos });
      } catch (e) {
        failures.set(r.sessionId, e as Error);
      }
    }
    if (ready.length === 0) return [];
    const t0 = now();
    let rows: Uint32Array[];
    try {
      rows = await this.model.forwardBatch(ready.map((x) => ({ session: x.target.model as GpuSession, tokens: x.tokens, startPos: x.startPos })), { kind: 'logits' });
    } catch (e) {
      for (const x of ready) failures.set(x.r.sessionId, e as Error);
      return [];
    }
    const ms = now() - t0;
    const out: VerifyResult[] = [];
    ready.forEach((x, i) => {
      try {
        const logits = new Float32Array(rows[i].buffer, rows[i].byteOffset, rows[i].length);
        const v = x.target.applyVerify(logits, x.r.draft, x.r.draftDists, ms);
        out.push({ sessionId: x.r.sessionId, accepted: v.accepted, token: v.token, forwardMs: v.verifyMs });
      } catch (e) {
        failures.set(x.r.sessionId, e as Error);
      }
    });
    return out;
  }
}

export async function createWebGpuVerifier(o: WebGpuVerifierOptions): Promise<WebGpuVerifier> {
  const ctx = o.ctx ?? (await requestDevice());
  const maxContext = Math.min(o.maxContext ?? 2048, o.config.maxPositionEmbeddings);
  const maxBatch = o.maxBatch ?? 16;
  const maxDraft = o.maxDraft ?? 16;
  const format = o.format ?? 'f32';
  const kvFormat = o.kvFormat ?? 'f32';
  try {
    const model = await GpuModel.create(ctx, o.config, o.weights, {
      maxContext, format, kvFormat, invariant: true,
      // the logits of every row must fit one storage binding
      maxBatch: o.maxRows ?? Math.max(1, Math.min(256, maxBatch * (maxDraft + 1), Math.floor(ctx.limits.maxStorageBufferBindingSize / (4 * o.config.vocabSize)))),
      memoryBudgetBytes: o.memoryBudgetBytes,
    });
    return new WebGpuVerifier(model, {
      backend: 'webgpu', model: o.model, tokenizerHash: o.tokenizerHash, vocabSize: o.config.vocabSize,
      maxContext, maxBatch, device: `webgpu: ${ctx.adapterName} (${format} weights, ${kvFormat} KV)`, resume: true,
    }, maxDraft, () => {
      if (!o.ctx) ctx.device.destroy();
    });
  } catch (e) {
    if (!o.ctx) ctx.device.destroy();
    throw e;
  }
}
