// The one interface every forward-pass backend implements: the CPU reference, the WGSL
// engine (browser worker or Node + Dawn), and anything the verifiers wrap.

import type { LlamaConfig } from './config.ts';

export interface CausalLM {
  readonly config: LlamaConfig;
  /** Most positions the KV cache can hold. */
  readonly maxContext: number;
  /** Tokens currently held in the KV cache. */
  readonly length: number;
  /**
   * Run `tokens` at positions [startPos, startPos + N). The cache is first truncated to
   * startPos (startPos <= length), so a verify after a partial acceptance needs no separate
   * rollback. N = 1 is a decode step, N = k + 1 a verify block, N = prompt length a prefill.
   * Returns logits for every position: (N, vocabSize) row-major.
   */
  forward(tokens: ArrayLike<number>, startPos: number): Promise<Float32Array>;
  /**
   * Optional: forward, returning only the last position's logits (vocabSize). A prefill needs
   * no more, and a backend that skips the other rows' LM head saves most of a long prompt's cost.
   */
  forwardLast?(tokens: ArrayLike<number>, startPos: number): Promise<Float32Array>;
  /** O(1): forget every position >= length. */
  rollback(length: number): void;
  dispose(): void;
}
