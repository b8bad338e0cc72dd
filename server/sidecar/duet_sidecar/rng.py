"""The session RNG: xoshiro128** exactly as src/engine/sampling.ts `Rng` (same seed -> same
stream), kept free of torch so it is cheap to import and to test against TypeScript."""

from __future__ import annotations

M32 = 0xFFFFFFFF
STREAM_TARGET = 1


def _imul(a: int, b: int) -> int:
    return (a * b) & M32


def _rotl(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & M32


class Rng:
    """xoshiro128**, seeded by splitmix32 from seed XOR imul(stream, 0x9e3779b9) (sampling.ts)."""

    def __init__(self, seed: int, stream: int = 0):
        x = (seed ^ _imul(stream, 0x9E3779B9)) & M32
        s = []
        for _ in range(4):
            x = (x + 0x9E3779B9) & M32
            z = _imul(x ^ (x >> 16), 0x85EBCA6B)
            z = _imul(z ^ (z >> 13), 0xC2B2AE35)
            s.append((z ^ (z >> 16)) & M32)
        if not any(s):
            s[0] = 1
        self.s = s

    def next_u32(self) -> int:
        s0, s1, s2, s3 = self.s
        result = _imul(_rotl(_imul(s1, 5), 7), 9)
        t = (s1 << 9) & M32
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = _rotl(s3, 11)
        self.s = [s0, s1, s2, s3]
        return result

    def uniform(self) -> float:
        a = self.next_u32() >> 5
        b = self.next_u32() >> 6
        return (a * 67108864 + b) / 9007199254740992
