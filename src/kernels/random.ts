// The one deterministic PRNG of fixtures and test data (mulberry32): the same stream from the
// same seed everywhere, so random weights, inputs and fuzz cases are reproducible. Not for
// sampling (that is src/engine/sampling.ts's xoshiro128**, shared with the verifier).

/** mulberry32's raw stream: uniform 32-bit unsigned integers. */
export function mulberry32Bits(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/** mulberry32 as uniform numbers in [0, 1) (each a 32-bit draw / 2^32). */
export function mulberry32(seed: number): () => number {
  const next = mulberry32Bits(seed);
  return () => next() / 4294967296;
}
