// Sampling parameters shared by the draft (browser/Node) and the verifier (gateway): the
// processed distributions p and q are built from the same parameters by the same code.

export interface SamplingParams {
  /** 0 = greedy (argmax). */
  temperature: number;
  /** 0 = off. */
  topK: number;
  /** 1 = off. */
  topP: number;
  /** Seed of the session's RNG (both sides seed their own stream from it). */
  seed: number;
}

export const GREEDY: SamplingParams = { temperature: 0, topK: 0, topP: 1, seed: 0 };

/** A sparse distribution: the support after top-k/top-p, with probabilities summing to 1. */
export interface SparseDist {
  ids: Int32Array;
  probs: Float32Array;
}
