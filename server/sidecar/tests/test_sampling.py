"""Sampler and acceptance rule: semantics on hand-checked cases, and a chi-square test that
speculative sampling reproduces p exactly (and detects a broken rule)."""

import unittest

try:
    import torch  # noqa: F401
except ImportError as e:  # only CI images without python3-torch get here
    raise unittest.SkipTest(f"/usr/bin/python3 cannot import torch ({e}); install python3-torch to run the sidecar tests")

import math

import numpy as np
import torch

from duet_sidecar.sampling import Rng, SamplingParams, accept_block, argmax, processed_dist, sample


def chi2_pvalue(counts: np.ndarray, probs: np.ndarray) -> float:
    n = counts.sum()
    exp = probs * n
    stat = float(((counts - exp) ** 2 / exp).sum())
    df = len(probs) - 1
    # Wilson-Hilferty: (X/df)^(1/3) is ~ normal(1 - 2/(9df), 2/(9df))
    z = ((stat / df) ** (1 / 3) - (1 - 2 / (9 * df))) / math.sqrt(2 / (9 * df))
    return 0.5 * math.erfc(z / math.sqrt(2))


class SamplerSemantics(unittest.TestCase):
    def test_argmax_lowest_id_on_ties(self):
        self.assertEqual(argmax(torch.tensor([0.0, 3.0, 1.0, 3.0])), 1)
        self.assertEqual(argmax(torch.tensor([float("nan"), -1.0, -1.0])), 1)

    def test_temperature_topk_topp(self):
        logits = torch.tensor([1.0, 2.0, 3.0, 3.0, 0.5], dtype=torch.float32)
        full = torch.softmax(logits.double() / 0.5, 0).numpy()
        ids, probs = processed_dist(logits, SamplingParams(0.5, 0, 1.0, 0))
        self.assertEqual(ids.tolist(), [2, 3, 1, 0, 4])  # equal logits: lower id first
        np.testing.assert_allclose(probs, full[[2, 3, 1, 0, 4]], rtol=1e-6)
        ids, probs = processed_dist(logits, SamplingParams(0.5, 3, 1.0, 0))
        self.assertEqual(ids.tolist(), [2, 3, 1])
        np.testing.assert_allclose(probs, full[[2, 3, 1]] / full[[2, 3, 1]].sum(), rtol=1e-6)
        # top-p against the untruncated distribution: the token that crosses the mass is kept
        top2 = full[2] + full[3]
        ids, _ = processed_dist(logits, SamplingParams(0.5, 0, float(top2) - 1e-6, 0))
        self.assertEqual(ids.tolist(), [2, 3])
        ids, _ = processed_dist(logits, SamplingParams(0.5, 0, float(top2) + 1e-6, 0))
        self.assertEqual(ids.tolist(), [2, 3, 1])
        ids, probs = processed_dist(logits, SamplingParams(0, 0, 1.0, 0))
        self.assertEqual((ids.tolist(), probs.tolist()), ([2], [1.0]))

    def test_rng_is_uniform_and_seeded(self):
        a, b = Rng(7, 1), Rng(7, 1)
        xs = [a.uniform() for _ in range(20000)]
        self.assertEqual(xs[:5], [b.uniform() for _ in range(5)])
        self.assertNotEqual(xs[:5], [Rng(7, 2).uniform() for _ in range(5)])
        counts = np.histogram(xs, bins=10, range=(0, 1))[0]
        self.assertGreater(chi2_pvalue(counts, np.full(10, 0.1)), 1e-3)


class AcceptanceIsExact(unittest.TestCase):
    """One-position blocks: the first emitted token must be distributed as p whatever q is."""

    def run_trials(self, broken: bool, trials: int = 6000) -> float:
        logits = torch.tensor([[2.0, 1.0, 0.2, -0.5, 1.5, 0.0], [0.0] * 6])
        sp = SamplingParams(1.0, 0, 1.0, 0)
        p_ids, p_probs = processed_dist(logits[0], sp)
        p = np.zeros(6)
        p[p_ids] = p_probs
        q = np.array([0.05, 0.4, 0.3, 0.1, 0.05, 0.1], dtype=np.float32)
        q_dist = (np.arange(6, dtype=np.int32), q)
        rng = Rng(123, 1)
        draft_rng = Rng(123, 2)
        counts = np.zeros(6)
        for _ in range(trials):
            d = sample(*q_dist, draft_rng)
            n, tok = accept_block(logits, [d], [q_dist], sp, rng)
            if broken and n == 0:
                tok = sample(p_ids, p_probs, rng)  # resampling from p instead of max(0, p - q)
            counts[d if n == 1 else tok] += 1
        return chi2_pvalue(counts, p)

    def test_exact_rule_matches_p(self):
        self.assertGreater(self.run_trials(False), 0.01)

    def test_broken_rule_is_detected(self):
        self.assertLess(self.run_trials(True), 0.01)


if __name__ == "__main__":
    unittest.main()
