// Test fixtures for speculative decoding: a random-weight target and a draft that is the
// target plus noise, so the draft is correlated but imperfect (partial acceptance, real
// rejections). Used by the engine's exactness tests and the gateway's. Also a target whose
// passes cost injected virtual time (CostedTarget), for cost-model tests on a VirtualClock.

import { type LlamaConfig, syntheticConfig } from './config.ts';
import { type LlamaWeights, mulberry32, randomWeights } from './weights.ts';
import { CpuLlama } from './reference.ts';
import { argmax, type SamplingParams, type SparseDist } from './sampling.ts';
import type { Clock } from './clock.ts';
import type { Opened, TargetLink, Verdict } from './target-link.ts';

export interface PairOptions {
  seed?: number;
  /** Relative noise added to every draft weight (0 = the draft is the target). */
  noise?: number;
  config?: Partial<LlamaConfig>;
}

export interface ModelPair {
  config: LlamaConfig;
  target: LlamaWeights;
  draft: LlamaWeights;
  /** A fresh CpuLlama over the target (draft) weights, with its own KV cache. */
  newTarget(maxContext?: number): CpuLlama;
  newDraft(maxContext?: number): CpuLlama;
}

function perturb(a: Float32Array, noise: number, rand: () => number): Float32Array {
  const out = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] * (1 + noise * (rand() * 2 - 1) * Math.sqrt(3));
  return out;
}

export function tinyPair(opts: PairOptions = {}): ModelPair {
  const config = syntheticConfig('tiny', opts.config ?? {});
  const target = randomWeights(config, opts.seed ?? 1);
  const rand = mulberry32((opts.seed ?? 1) * 7919 + 17);
  const noise = opts.noise ?? 0.3;
  const draft: LlamaWeights = {
    embed: perturb(target.embed, noise, rand),
    layers: target.layers.map((l) => Object.fromEntries(Object.entries(l).map(([k, v]) => [k, perturb(v, noise, rand)])) as unknown as typeof l),
    finalNorm: perturb(target.finalNorm, noise, rand),
    lmHead: target.lmHead && perturb(target.lmHead, noise, rand),
  };
  return {
    config,
    target,
    draft,
    newTarget: (maxContext = 256) => new CpuLlama(config, target, maxContext),
    newDraft: (maxContext = 256) => new CpuLlama(config, draft, maxContext),
  };
}

/** Prompts of 1..maxLen random ids (deterministic from seed), avoiding the eos ids. */
export function randomPrompts(n: number, vocab: number, seed = 3, maxLen = 9, avoid: number[] = []): number[][] {
  const rand = mulberry32(seed);
  return Array.from({ length: n }, () => {
    const len = 1 + Math.floor(rand() * maxLen);
    return Array.from({ length: len }, () => {
      let t: number;
      do t = Math.floor(rand() * vocab);
      while (avoid.includes(t));
      return t;
    });
  });
}

/**
 * Oracle greedy continuation with no KV-cache reuse: every step reruns the whole sequence on
 * a fresh cache, so cache truncation/rollback bugs in the code under test cannot hide here.
 */
export function greedyOracle(model: CpuLlama, prompt: number[], n: number): number[] {
  const seq = [...prompt];
  const vocab = model.config.vocabSize;
  for (let i = 0; i < n; i++) {
    const logits = model.forwardSync(seq, 0);
    seq.push(argmax(logits, (seq.length - 1) * vocab, vocab));
  }
  return seq.slice(prompt.length);
}

/**
 * A target whose passes cost virtual time on `clock`: a pass over m positions takes
 * fixedMs + perPositionMs·m (a verify of k is m = k + 1, a streamed token m = 1), the prefill
 * prefillMs. verifyMs reports the injected cost, so the controller's cost model sees exactly it.
 * With a VirtualClock, tokens per second become a deterministic function of the injected costs.
 */
export class CostedTarget implements TargetLink {
  constructor(
    readonly inner: TargetLink,
    readonly clock: Clock,
    readonly cost: { fixedMs: number; perPositionMs: number; prefillMs?: number; queueMs?: number; batch?: number },
  ) {}

  get targetPasses(): number {
    return this.inner.targetPasses;
  }

  private passMs(positions: number): number {
    return this.cost.fixedMs + this.cost.perPositionMs * positions + (this.cost.queueMs ?? 0);
  }

  async open(prompt: number[], sampling: SamplingParams): Promise<Opened> {
    const prefillMs = this.cost.prefillMs ?? this.passMs(prompt.length);
    await this.clock.sleep(prefillMs);
    const r = await this.inner.open(prompt, sampling);
    return { ...r, prefillMs };
  }

  async verify(draft: number[], draftDists?: SparseDist[]): Promise<Verdict> {
    const ms = this.passMs(draft.length + 1);
    await this.clock.sleep(ms);
    const v = await this.inner.verify(draft, draftDists);
    return { ...v, verifyMs: ms - (this.cost.queueMs ?? 0), queueMs: this.cost.queueMs, batch: this.cost.batch };
  }

  async generate(n: number, onToken?: (token: number) => void): Promise<number[]> {
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      await this.clock.sleep(this.passMs(1));
      const [t] = await this.inner.generate(1);
      out.push(t);
      onToken?.(t);
    }
    return out;
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
