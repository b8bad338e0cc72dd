"""Continuous batching and batch invariance in the sidecar (torch backend, CPU): a baseline step
is a k = 0 verify that samples exactly as the old one-session step did (greedy and T > 0);
one session's greedy text is the same alone and sharing every pass with 1, 7 and 31 others
(mixed k, baseline and speculative rows); concurrent `generate` streams share forwards."""

import unittest

try:
    import torch
except ImportError as e:  # only CI images without python3-torch get here
    raise unittest.SkipTest(f"/usr/bin/python3 cannot import torch ({e}); install python3-torch to run the sidecar tests")

import os
import random

import numpy as np
import socket
import tempfile
import threading

from duet_sidecar import protocol
from duet_sidecar.engine import Engine, VerifyItem
from duet_sidecar.safetensors_io import load_dir
from duet_sidecar.sampling import SamplingParams, sample_row
from duet_sidecar.server import SidecarServer
from duet_sidecar.torch_llama import TorchLlama

from .util import tiny_config, write_model


def old_step(e: Engine, sid: str) -> int:
    """The baseline step as it was before batching: its own forward, then sample_row."""
    s = e.sessions[sid]
    logits = e.runner.forward([s.slot], [s.length], [[s.pending]])[0]
    s.length += 1
    s.pending = sample_row(logits[-1].cpu(), s.sampling, s.rng)
    return s.pending


class BatchingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        d = os.path.join(cls.tmp.name, "m")
        cls.cfg, _ = write_model(d, tiny_config(), seed=7)
        cls.runner = TorchLlama(cls.cfg, load_dir(d), max_slots=40, max_context=128)
        # bfloat16 keeps the checkpoint's (out, in) layout and runs other kernels (oneDNN on
        # the CPU) than float32's x @ W: batch invariance is checked on both
        cls.runner_bf16 = TorchLlama(cls.cfg, load_dir(d), dtype=torch.bfloat16, max_slots=40, max_context=128)
        cls.dir = d

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def engine(self, runner: TorchLlama | None = None) -> Engine:
        return Engine(runner or self.runner, max_batch=32, max_draft=8)

    def test_k0_step_samples_like_the_old_step(self):
        for sp in (SamplingParams(0.0, 0, 1.0, 3), SamplingParams(0.9, 20, 0.95, 11), SamplingParams(1.3, 0, 1.0, 5)):
            e = self.engine()
            e.open("old", [5, 6, 7], sp)
            e.open("new", [5, 6, 7], sp)
            want = [old_step(e, "old") for _ in range(12)]
            got = [e.step_batch(["new"])[0] for _ in range(12)]
            self.assertEqual(got, want, f"temperature {sp.temperature}")
            # and several sessions stepping in one forward each draw their own stream
            e2 = self.engine()
            for i in range(3):
                e2.open(f"s{i}", [5, 6, 7], sp)
            rows = [e2.step_batch(["s0", "s1", "s2"]) for _ in range(12)]
            self.assertEqual([r[1] for r in rows], want)

    def test_greedy_text_alone_equals_text_sharing_every_pass(self):
        greedy = SamplingParams(0.0, 0, 1.0, 0)
        prompt = [3, 14, 15, 92, 65]
        rounds = 14
        rng = random.Random(4)
        ks = [rng.randrange(0, 5) for _ in range(rounds)]

        def run(others: int, runner: TorchLlama) -> list[int]:
            e = self.engine(runner)
            rnd = random.Random(others)
            e.open("me", prompt, greedy)
            for i in range(others):
                e.open(f"o{i}", [rnd.randrange(97) for _ in range(rnd.randrange(1, 9))],
                       SamplingParams(0.0, 0, 1.0, 0) if i % 2 else SamplingParams(0.8, 0, 1.0, i))
            text = [e.sessions["me"].pending]
            for r in range(rounds):
                # my block: k tokens of a draft that is right for a while, then wrong
                me = VerifyItem("me", [rnd.randrange(97) for _ in range(ks[r])])
                items = [me]
                for i in range(others):
                    k = rnd.randrange(0, 6)  # k = 0 is a baseline step
                    s = e.sessions[f"o{i}"]
                    dists = None
                    if not s.sampling.greedy and k:
                        dists = [(np.arange(97, dtype=np.int64), np.full(97, 1 / 97, dtype=np.float32)) for _ in range(k)]
                    items.insert(rnd.randrange(len(items) + 1), VerifyItem(f"o{i}", [rnd.randrange(97) for _ in range(k)], dists))
                results, _, _ = e.verify_batch(items)
                mine = next(x for x in results if x["session"] == "me")
                self.assertNotIn("error", mine)
                text += me.draft[: mine["accepted"]] + [mine["token"]]
            return text

        for name, runner in (("float32", self.runner), ("bfloat16", self.runner_bf16)):
            self.assertEqual(runner.transposed, name == "float32")
            alone = run(0, runner)
            self.assertGreaterEqual(len(alone), rounds + 1)
            for others in (1, 7, 31):
                got = run(others, runner)
                n = min(len(got), len(alone))
                self.assertEqual(got[:n], alone[:n], f"{name}: beside {others} others")

    def test_concurrent_generate_streams_share_forwards(self):
        e = Engine(self.runner, max_batch=8, max_draft=8)
        server = SidecarServer(e, {"backend": "torch", "model": "m", "vocabSize": self.cfg.vocab_size})
        _, port = server.listen("127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.shutdown)
        n, sessions = 10, 6
        socks = []
        for i in range(sessions):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            self.addCleanup(s.close)
            s.sendall(protocol.encode({"id": 1, "op": "open", "session": f"g{i}", "prompt": [1 + i, 2, 3], "sampling": {"temperature": 0}}))
            h, _, err = protocol.read_frame(s)
            self.assertTrue(h["ok"], h)
            socks.append(s)
        # queue every stream's generate before the model thread can take the first step
        for s in socks:
            s.sendall(protocol.encode({"id": 2, "op": "generate", "session": f"g{socks.index(s)}", "n": n}))
        texts = []
        for s in socks:
            h, _, _ = protocol.read_frame(s)
            self.assertTrue(h["ok"], h)
            texts.append(h["tokens"])
        self.assertTrue(all(len(t) == n for t in texts))
        # fewer forwards than steps: streams shared passes (one pass per stream-step would be n * sessions)
        self.assertLess(server.step_passes, n * sessions * 0.6, (server.step_passes, server.step_rows))
        self.assertEqual(server.step_rows, n * sessions)
        # the same text as each session generating alone
        e2 = Engine(self.runner, max_batch=8, max_draft=8)
        for i in range(sessions):
            e2.open("x", [1 + i, 2, 3], SamplingParams(0.0, 0, 1.0, 0))
            self.assertEqual(e2.generate("x", n), texts[i])
            e2.close("x")


if __name__ == "__main__":
    unittest.main()
