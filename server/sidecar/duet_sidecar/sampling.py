"""The sampler, its RNG, and the exact speculative acceptance rule: a line-by-line port of
src/engine/sampling.ts (Rng, processedDist, sample) and src/engine/accept.ts (acceptBlock).

p (target) is processed from logits: softmax(logits / T) over the whole vocabulary, keep the
top-k (0 = all), then the shortest prefix whose mass (of the untruncated distribution) reaches
top-p, renormalized, probabilities rounded to f32 as SparseDist holds them. Greedy (T = 0) is
argmax, lowest id on ties, and draws nothing. The RNG is the same xoshiro128** stream
(STREAM_TARGET) seeded the same way, so given identical logits the verdicts are identical;
torch and TypeScript logits differ in the last bits, so sampled runs agree in distribution,
and draw-for-draw except where a draw lands within that rounding of a boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .rng import STREAM_TARGET, Rng  # noqa: F401  (re-exported)

# below this residual mass norm(max(0, p - q)) is rounding noise: sample from p (accept.ts)
RESIDUAL_EPS = 1e-6


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def argmax(row: torch.Tensor) -> int:
    """Lowest id among the maximal logits; NaN never wins (as sampling.ts argmax)."""
    return int(torch.argmax(torch.nan_to_num(row.float(), nan=float("-inf"))).item())


def processed_dist(row: torch.Tensor, sp: SamplingParams) -> tuple[np.ndarray, np.ndarray]:
    """(ids int32, probs f32), most likely first; ties rank the lower id first."""
    if sp.greedy:
        return np.array([argmax(row)], dtype=np.int32), np.array([1.0], dtype=np.float32)
    v = torch.nan_to_num(row.detach().cpu().float(), nan=float("-inf")).double()
    # stable sort keeps equal logits in ascending id order
    vals, ids = torch.sort(v, descending=True, stable=True)
    if sp.top_k > 0:
        vals, ids = vals[: sp.top_k], ids[: sp.top_k]
    inv_t = 1.0 / sp.temperature
    mx = vals[0]
    z = torch.exp((v - mx) * inv_t).sum()  # normalizer over the whole vocabulary
    probs = torch.exp((vals - mx) * inv_t) / z
    keep = len(probs)
    if sp.top_p < 1:
        before = torch.cat((torch.zeros(1, dtype=torch.float64), torch.cumsum(probs, 0)[:-1]))  # mass before each rank
        over = (before >= sp.top_p).nonzero()
        if len(over):
            keep = int(over[0].item())
    probs = probs[:keep]
    probs = (probs / probs.sum()).numpy().astype(np.float32)
    return ids[:keep].numpy().astype(np.int32), probs


def prob_of(ids: np.ndarray, probs: np.ndarray, token: int) -> float:
    hit = np.nonzero(ids == token)[0]
    return float(probs[hit[0]]) if len(hit) else 0.0


def sample(ids: np.ndarray, probs: np.ndarray, rng: Rng) -> int:
    """Inverse-CDF draw with one uniform; unassigned float mass falls to the last token."""
    n = len(ids)
    if n == 0:
        raise ValueError("sample: empty distribution")
    if n == 1:
        return int(ids[0])
    p64 = probs.astype(np.float64)
    u = rng.uniform() * float(p64.sum())
    cum = np.cumsum(p64)
    hit = np.nonzero(u < cum)[0]
    return int(ids[hit[0]]) if len(hit) else int(ids[-1])


def sample_row(row: torch.Tensor, sp: SamplingParams, rng: Rng) -> int:
    if sp.greedy:
        return argmax(row)
    ids, probs = processed_dist(row, sp)
    return sample(ids, probs, rng)


def sample_residual(p: tuple[np.ndarray, np.ndarray], q: tuple[np.ndarray, np.ndarray], rng: Rng) -> int:
    p_ids, p_probs = p
    qmap = dict(zip(q[0].tolist(), q[1].tolist()))
    r = np.array([max(0.0, float(pp) - qmap.get(int(i), 0.0)) for i, pp in zip(p_ids, p_probs)], dtype=np.float32)
    mass = float(r.astype(np.float64).sum())
    if not mass > RESIDUAL_EPS:
        return sample(p_ids, p_probs, rng)
    return sample(p_ids, r, rng)


def accept_block(logits: torch.Tensor, draft: list[int], dists: list[tuple[np.ndarray, np.ndarray]] | None,
                 sp: SamplingParams, rng: Rng) -> tuple[int, int]:
    """(accepted n, token) for logits (k + 1, vocab) of the block [last, d_1..d_k]."""
    k = len(draft)
    if sp.greedy:
        for i in range(k):
            best = argmax(logits[i])
            if best != draft[i]:
                return i, best
        return k, argmax(logits[k])
    if dists is None or len(dists) != k:
        raise ValueError(f"sampled verify needs one draft distribution per draft token: got {0 if dists is None else len(dists)} for k = {k}")
    for i in range(k):
        p = processed_dist(logits[i], sp)
        pd = prob_of(*p, draft[i])
        qd = prob_of(*dists[i], draft[i])
        # u < p/q without the division; q(d) = 0 or p(d) = 0 rejects, p >= q accepts without a draw
        ok = qd > 0 and pd > 0 and (pd >= qd or rng.uniform() * qd < pd)
        if not ok:
            return i, sample_residual(p, dists[i], rng)
    return k, sample(*processed_dist(logits[k], sp), rng)
