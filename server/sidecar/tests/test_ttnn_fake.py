"""The ttnn backend on a FAKE card (tests/fake_ttnn: ttnn + tt_transformers on torch, whose
paged_update_cache emulates the tile read-modify-write race: rows of one 32-row tile written
at once, the last writer wins).

The central check, verify vs decode: a k + 1 verify through the runner must give the same logits
and leave the same K/V rows as k + 1 single-token decode steps (one row per session per step,
which cannot race). Tolerance: NMSE <= 1e-9 on logits (the same f32 fake math on the same rows;
observed 0), K/V rows equal to 1e-6 relative. Plus the f64 oracle (tests/util.reference_logits)
on the new code: NMSE <= 1e-4 (the logits are rounded to bf16 by the fake LM head).

Run against another backend file (e.g. the code before the fix, from git) with
  DUET_TTNN_BACKEND_FILE=/tmp/old_ttnn_backend.py /usr/bin/python3 -m unittest discover -s server/sidecar -p 'test_ttnn_fake.py'
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import unittest
from unittest import mock

try:
    import torch
except ImportError as e:
    raise unittest.SkipTest(f"/usr/bin/python3 cannot import torch ({e}); install python3-torch to run the sidecar tests")

from duet_sidecar import protocol
from duet_sidecar.config import parse_config

from .util import nmse, reference_logits, tiny_config, write_model

FAKE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_ttnn")
SIDECAR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNDER_TEST = os.environ.get("DUET_TTNN_BACKEND_FILE")


def load_backend():
    if not UNDER_TEST:
        from duet_sidecar import ttnn_backend

        return ttnn_backend
    spec = importlib.util.spec_from_file_location("duet_sidecar.ttnn_backend_under_test", UNDER_TEST)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


B = load_backend()
NEW = not UNDER_TEST


def purge_fake() -> None:
    for name in list(sys.modules):
        if name in ("ttnn", "models") or name.startswith(("ttnn.", "models.")):
            del sys.modules[name]


class FakeCard:
    """sys.path + environment for one test; every fake module is fresh inside, gone after."""

    def __init__(self, **env):
        self.env = mock.patch.dict(os.environ, {k: str(v) for k, v in env.items()})

    def __enter__(self):
        self.env.start()
        purge_fake()
        sys.path.insert(0, FAKE)
        import ttnn

        return ttnn

    def __exit__(self, *exc):
        sys.path.remove(FAKE)
        purge_fake()
        self.env.stop()


CFG_JSON = tiny_config()
TMP = tempfile.mkdtemp(prefix="duet-ttnn-fake-")
MODEL = os.path.join(TMP, "tiny")
CFG, W = write_model(MODEL, CFG_JSON, seed=13)
V = CFG.vocab_size


def make_runner(**kw):
    return B.TtnnRunner(MODEL, CFG, max_context=kw.pop("max_context", 256), max_sessions=kw.pop("max_sessions", 4), **kw)


# three sessions: the block inside one tile (5..9), across a tile boundary (29..33), across a
# 64-row block boundary (62..66); k = 4
PROMPTS = [[(3 + 5 * i) % V for i in range(n)] for n in (5, 29, 62)]
BLOCKS = [[(11 + 7 * j + 3 * s) % V for j in range(5)] for s in range(3)]
SLOTS = [1, 2, 3]


def cache_rows(runner, slot, positions):
    """(layers, 2, kv_heads, n, head_dim) straight from the fake cache, through the runner's block table."""
    bs = runner.block_size
    table = runner.block_tables[slot]
    out = []
    for layer in runner.kv_cache:
        out.append(torch.stack([torch.stack([c.t[int(table[q // bs]), :, q % bs] for q in positions], 1) for c in layer[:2]]))
    return torch.stack(out)


def prefill_all(runner):
    for slot, p in zip(SLOTS, PROMPTS):
        runner.forward([slot], [0], [p])


def verify_then_decodes(runner):
    """(verify logits, verify cache rows), (single-decode logits, cache rows): fresh prefill before each."""
    lens = [len(p) for p in PROMPTS]
    pos = [list(range(n, n + 5)) for n in lens]
    prefill_all(runner)
    got = runner.forward(SLOTS, lens, BLOCKS)
    got_rows = [cache_rows(runner, s, q) for s, q in zip(SLOTS, pos)]
    prefill_all(runner)
    want = [torch.empty(5, V) for _ in SLOTS]
    for j in range(5):
        out = runner.forward(SLOTS, [n + j for n in lens], [[b[j]] for b in BLOCKS])
        for s in range(3):
            want[s][j] = out[s][0]
    want_rows = [cache_rows(runner, s, q) for s, q in zip(SLOTS, pos)]
    return (got, got_rows), (want, want_rows)


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


class VerifyVsDecodeTest(unittest.TestCase):
    def check_verify_equals_decodes(self, **env):
        with FakeCard(**env):
            runner = make_runner()
            (got, got_rows), (want, want_rows) = verify_then_decodes(runner)
            errs = [(nmse(got[s], want[s]), rel(got_rows[s], want_rows[s])) for s in range(3)]
            for s, (e, c) in enumerate(errs):
                print(f"  session {s} (rows {len(PROMPTS[s])}..{len(PROMPTS[s]) + 4}): verify-vs-decode logits NMSE {e:.3g}, "
                      f"K/V rows max rel err {c:.3g}", file=sys.stderr)
            for s, (e, c) in enumerate(errs):
                self.assertLessEqual(e, 1e-9, f"session {s}: verify logits differ from single decodes (NMSE {e:.3g})")
                self.assertLessEqual(c, 1e-6, f"session {s}: verify left other K/V rows than single decodes (max rel err {c:.3g})")
            return runner

    def test_verify_equals_single_decodes(self):
        self.check_verify_equals_decodes()

    def test_verify_equals_single_decodes_with_fused_update(self):
        self.check_verify_equals_decodes(DUET_FAKE_TT_UPDATE="fused")

    def test_verify_matches_f64_oracle_and_cache_survives(self):
        """Two blocks in a row: the second block's logits prove the first left the cache right."""
        with FakeCard():
            runner = make_runner()
            prefill_all(runner)
            lens = [len(p) for p in PROMPTS]
            first = runner.forward(SLOTS, lens, BLOCKS)
            second_blocks = [[(2 + 9 * j + s) % V for j in range(4)] for s in range(3)]
            second = runner.forward(SLOTS, [n + 5 for n in lens], second_blocks)
            for s in range(3):
                ref = reference_logits(CFG, W, PROMPTS[s] + BLOCKS[s] + second_blocks[s])
                n = lens[s]
                for what, got, want in (("first", first[s], ref[n : n + 5]), ("second", second[s], ref[n + 5 : n + 9])):
                    e = nmse(got, want)
                    self.assertLessEqual(e, 1e-4, f"session {s}, {what} block: NMSE {e:.3g} vs the f64 oracle")

    @unittest.skipUnless(NEW, "uses the new module's row packing")
    def test_unsplit_step_races_under_the_fake(self):
        """The fake does reproduce the race: the old formulation (every row in one unsplit step)
        loses K/V rows, so its logits leave the oracle; the split step on the same rows does not."""
        with FakeCard():
            runner = make_runner(verify="single-decode")
            prefill_all(runner)
            lens = [len(p) for p in PROMPTS]
            (p,) = B.pack_decode_rows(lens, BLOCKS, [runner.block_tables[s] for s in SLOTS], 32, runner.block_tables[0])
            out = runner.generator.decode_forward_text(p.tokens, p.positions, page_table=p.page_table, kv_cache=[runner.kv_cache],
                                                       enable_trace=False, read_from_device=True, sampling_params=None)
            out = out.reshape(32, -1)[:, :V]
            errs = []
            for s in range(3):
                rows = [r for r, (b, _) in enumerate(p.owners) if b == s]
                errs.append(nmse(out[rows], reference_logits(CFG, W, PROMPTS[s] + BLOCKS[s])[lens[s] : lens[s] + 5]))
            self.assertGreater(min(errs), 1e-3, f"the unsplit step should race in every session; NMSE per session {errs}")
            prefill_all(runner)
            split = runner._decode_rows(SLOTS, lens, BLOCKS, B.SPLIT_UPDATE)
            for s in range(3):
                self.assertLessEqual(nmse(split[s], reference_logits(CFG, W, PROMPTS[s] + BLOCKS[s])[lens[s] : lens[s] + 5]), 1e-4)


@unittest.skipUnless(NEW, "the self-test, budget, context rule and env handling are new")
class SelfTestTest(unittest.TestCase):
    def test_passes_and_enables_split_update(self):
        with FakeCard() as ttnn:
            runner = make_runner()
            t = runner.self_test
            self.assertTrue(t["ok"], t)
            self.assertEqual(runner.verify_path, B.SPLIT_UPDATE)
            self.assertEqual(t["lmHeadLogits"], "bfloat16")
            self.assertLessEqual(t["logitsNmse"], 1e-9)
            self.assertLessEqual(t["prefillVsDecodeNmse"], 1e-6)  # the fake's prefill and decode: same f32 math
            json.dumps(t, allow_nan=False)  # it travels in the hello frame
            ops = [o[0] for o in ttnn.OPS]
            self.assertIn("slice", ops)  # the cache rows were read back from the device
            # a verify after start: one decode step for the whole block, its update split in k + 1 calls
            ttnn.OPS.clear()
            prefill_all(runner)
            ttnn.OPS.clear()
            runner.forward(SLOTS, [len(p) for p in PROMPTS], BLOCKS)
            self.assertEqual([o for o in ttnn.OPS if o[0] == "decode"], [("decode", False)])
            updates = [o[1] for o in ttnn.OPS if o[0] == "paged_update_cache"]
            self.assertEqual(updates, [3] * 5 * 2 * CFG.num_layers)  # 5 calls x (K, V) x layers, 3 rows each

    def test_fails_and_falls_back_when_the_split_does_not_split(self):
        """Break the split deliberately (the wrapper passes every update through unsplit): the
        race comes back, the self-test must see it and choose the fallback, which stays exact."""
        def passthrough(self, orig):
            def call(*a, **kw):
                self.calls += 1
                return orig(*a, **kw)
            return call

        with FakeCard(), mock.patch.object(B.SplitCacheUpdates, "_wrap", passthrough):
            runner = make_runner()
        t = runner.self_test
        self.assertFalse(t["ok"])
        self.assertIn("differ from single decodes", t["reason"])
        self.assertGreater(t["logitsNmse"], B.SELF_TEST_NMSE)
        self.assertEqual(runner.verify_path, B.SINGLE_DECODE)

    def test_model_bypassing_the_wrapper_is_refused_and_fallback_is_exact(self):
        with FakeCard(DUET_FAKE_TT_UPDATE="bound") as ttnn:
            runner = make_runner()
            self.assertFalse(runner.self_test["ok"])
            self.assertIn("TtnnSplitError", runner.self_test["reason"])
            self.assertEqual(runner.verify_path, B.SINGLE_DECODE)
            prefill_all(runner)
            ttnn.OPS.clear()
            lens = [len(p) for p in PROMPTS]
            got = runner.forward(SLOTS, lens, BLOCKS)
            self.assertEqual(sum(o[0] == "decode" for o in ttnn.OPS), 5)  # k + 1 steps
            for s in range(3):
                self.assertLessEqual(nmse(got[s], reference_logits(CFG, W, PROMPTS[s] + BLOCKS[s])[lens[s] : lens[s] + 5]), 1e-4)

    def test_forced_single_decode_runs_no_self_test(self):
        with FakeCard() as ttnn:
            runner = make_runner(verify="single-decode")
            self.assertIsNone(runner.self_test)
            self.assertEqual(runner.verify_path, B.SINGLE_DECODE)
            self.assertNotIn("slice", [o[0] for o in ttnn.OPS])

    def test_reports_bfp8_logits_when_the_lm_head_ignores_lm_head_dtype(self):
        with FakeCard(DUET_FAKE_TT_LM_HEAD="ignore"):
            runner = make_runner()
        self.assertEqual(runner.self_test["lmHeadLogits"], "bfloat8_b")
        self.assertTrue(runner.self_test["ok"])  # the paths still agree with each other

    def test_bfp8_grid_detector(self):
        sys.path.insert(0, FAKE)
        try:
            from models.tt_transformers.tt.model import quantize_bfp8
        finally:
            sys.path.remove(FAKE)
            purge_fake()
        g = torch.Generator().manual_seed(3)
        x = torch.randn(7, 4099, generator=g) * 5
        self.assertEqual(B.bfp8_grid_fraction(quantize_bfp8(x[:, :4096])), 1.0)
        self.assertLess(B.bfp8_grid_fraction(x.to(torch.bfloat16).float()), 0.01)
        self.assertLess(B.bfp8_grid_fraction(x), 0.01)


LLAMA_3B = parse_config({
    "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28, "num_attention_heads": 24,
    "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256, "max_position_embeddings": 131072,
    "tie_word_embeddings": True, "rope_theta": 500000.0,
})


@unittest.skipUnless(NEW, "new")
class BudgetAndContextTest(unittest.TestCase):
    def test_kv_and_weight_arithmetic_llama_3b(self):
        b = B.dram_budget(LLAMA_3B, mesh="N150", max_sessions=31, max_context=4096, block_size=64)
        tokens = 31 * 4096 + 64  # + the scratch block
        self.assertAlmostEqual(b.kv_bytes, tokens * 2 * 28 * 8 * 128 * 1088 / 1024, delta=1)
        attn = 3072 * (24 + 16) * 128 + 24 * 128 * 3072
        layer = attn * 1088 / 1024 + 2 * 3072 * 8192 * 576 / 1024 + 8192 * 3072 * 1088 / 1024
        self.assertAlmostEqual(b.weight_bytes, 128256 * 3072 * (2 + 1088 / 1024) + 28 * layer, delta=1)
        self.assertTrue(b.fits)  # the example: ~8 GB KV + ~3.5 GB weights on 12 GiB
        self.assertAlmostEqual(b.kv_bytes / 1e9, 7.74, delta=0.01)
        self.assertAlmostEqual(b.weight_bytes / 1e9, 3.50, delta=0.01)
        b2 = B.dram_budget(LLAMA_3B, mesh="N300", max_sessions=31, max_context=4096, block_size=64)
        self.assertAlmostEqual(b2.kv_bytes * 2, b.kv_bytes, delta=1)

    def test_overflow_names_what_fits(self):
        kw = dict(mesh="N150", max_sessions=64, max_context=4096, block_size=64)
        with self.assertRaises(B.TtnnConfigError) as e:
            B.check_dram_budget(LLAMA_3B, **kw)
        msg = str(e.exception)
        import re

        sessions = int(re.search(r"--max-sessions (\d+) at --max-context 4096", msg).group(1))
        context = int(re.search(r"--max-context (\d+) at --max-sessions 64", msg).group(1))
        self.assertTrue(B.dram_budget(LLAMA_3B, **{**kw, "max_sessions": sessions}).fits)
        self.assertFalse(B.dram_budget(LLAMA_3B, **{**kw, "max_sessions": sessions + 1}).fits)
        self.assertTrue(B.dram_budget(LLAMA_3B, **{**kw, "max_context": context}).fits)
        self.assertEqual(context, 2048)

    def test_budget_refused_before_the_device_opens(self):
        with FakeCard() as ttnn, self.assertRaisesRegex(B.TtnnConfigError, "What fits"):
            make_runner(dram_gib=0.001)
        self.assertEqual(ttnn.OPS, [])

    def test_max_context_rule_against_brute_force(self):
        def pad(n):  # tt_transformers get_padded_prefill_len, written out again
            if n <= 128:
                return 128
            p = 1
            while p < n:
                p *= 2
            return min(p, -(-n // 2048) * 2048)

        for m in list(range(1, 2200, 3)) + [2048, 3000, 4096, 6144, 8192, 10240, 12288, 16384]:
            ok = m >= 128 and m % 64 == 0 and all(pad(n) <= m for n in range(1, m + 1, max(1, m // 512))) and pad(m) <= m
            try:
                B.check_max_context(m, 64)
                accepted = True
            except B.TtnnConfigError as e:
                accepted = False
                self.assertIn("--max-context", str(e))
            self.assertEqual(accepted, ok, f"--max-context {m}")
        with self.assertRaisesRegex(B.TtnnConfigError, "--max-context 2048 or 4096"):
            B.check_max_context(3000, 64)


@unittest.skipUnless(NEW, "new")
class EnvMeshCloseTest(unittest.TestCase):
    def test_model_and_mesh_come_from_the_command_line(self):
        with FakeCard(HF_MODEL="/somewhere/else", MESH_DEVICE="T3K") as ttnn:
            from models.tt_transformers.tt import common

            runner = make_runner(verify="single-decode")
            self.assertEqual(common.LOADED, [os.path.abspath(MODEL)])
            self.assertEqual(os.environ["MESH_DEVICE"], "N150")
            self.assertEqual([o for o in ttnn.OPS if o[0] == "create_tt_model"][0][1:], (os.path.abspath(MODEL), "N150"))
            runner.close()

    def test_n300_sets_up_the_fabric_first_and_releases_it(self):
        with FakeCard(DUET_FAKE_TTNN_DEVICES=2) as ttnn:
            runner = make_runner(mesh="N300", verify="single-decode")
            runner.close()
            runner.close()
            names = [o for o in ttnn.OPS if o[0] in ("set_fabric_config", "open_mesh_device", "close_mesh_device")]
            self.assertEqual(names, [("set_fabric_config", "FABRIC_1D"), ("open_mesh_device", (1, 2)),
                                     ("close_mesh_device",), ("set_fabric_config", "DISABLED")])

    def test_fabric_reset_when_the_mesh_fails_to_open(self):
        with FakeCard(DUET_FAKE_TTNN_DEVICES=2) as ttnn, mock.patch.object(ttnn, "open_mesh_device", side_effect=RuntimeError("busy")):
            with self.assertRaisesRegex(RuntimeError, "busy"):
                make_runner(mesh="N300")
            self.assertEqual(ttnn.OPS, [("set_fabric_config", "FABRIC_1D"), ("set_fabric_config", "DISABLED")])

    def test_n300_refused_clearly(self):
        with FakeCard(DUET_FAKE_TTNN_DEVICES=1) as ttnn:
            with self.assertRaisesRegex(B.TtnnConfigError, "needs 2 Wormhole chip.*--ttnn-mesh N150"):
                make_runner(mesh="N300")
            self.assertEqual(ttnn.OPS, [])
        with FakeCard(DUET_FAKE_TTNN_DEVICES=2, DUET_FAKE_TTNN_NO_FABRIC=1) as ttnn:
            with self.assertRaisesRegex(B.TtnnConfigError, "set_fabric_config"):
                make_runner(mesh="N300")
            self.assertEqual(ttnn.OPS, [])

    def test_device_closed_when_start_up_fails(self):
        with FakeCard() as ttnn, mock.patch.object(B.TtnnRunner, "run_self_test", side_effect=KeyboardInterrupt):
            with self.assertRaises(KeyboardInterrupt):
                make_runner()
            self.assertEqual(ttnn.OPS[-1], ("close_mesh_device",))

    def test_sidecar_process_reports_the_path_and_closes_the_device_on_sigterm(self):
        log = os.path.join(TMP, "ops.log")
        env = {**os.environ, "PYTHONPATH": FAKE, "DUET_FAKE_TTNN_LOG": log, "HF_MODEL": "/wrong"}
        p = subprocess.Popen([sys.executable, os.path.join(SIDECAR, "main.py"), "--backend", "ttnn", "--model", MODEL,
                              "--max-context", "256", "--max-sessions", "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        try:
            line = json.loads(p.stdout.readline())
            with socket.create_connection(("127.0.0.1", line["port"]), timeout=30) as s:
                s.sendall(protocol.encode({"v": 1, "id": 1, "op": "hello", "protocol": 1}))
                h, _, err = protocol.read_frame(s)
            self.assertIsNone(err)
            self.assertEqual(h["verifyPath"], "split-update")
            self.assertTrue(h["selfTest"]["ok"])
            self.assertIn("verify split-update", h["device"])
            # the hard case, made deterministic: the kernel may hand a process-directed SIGTERM to
            # any thread; send it to one that is not the main thread (the main thread sits in
            # accept() and only runs the Python handler once it wakes)
            others = [int(t) for t in os.listdir(f"/proc/{p.pid}/task") if int(t) != p.pid]
            self.assertTrue(others, "the sidecar runs threads besides the main one")
            tgkill(p.pid, others[0], signal.SIGTERM)
            try:
                code = p.wait(timeout=60)  # exits within ~1 s when idle; generous for CI at load 10+
            except subprocess.TimeoutExpired:
                p.kill()
                self.fail(f"the sidecar did not exit within 60 s of SIGTERM; its stderr:\n{p.stderr.read()[-3000:]}")
            self.assertEqual(code, 0)
            with open(log) as f:
                self.assertEqual(f.read().split()[-1], "close_mesh_device")
        finally:
            if p.poll() is None:
                p.kill()
            p.stdout.close()
            p.stderr.close()


def tgkill(pid: int, tid: int, sig: int) -> None:
    """Send sig to one thread of another process (Linux tgkill(2); Python has no wrapper)."""
    import ctypes
    import platform

    nr = {"x86_64": 234, "aarch64": 131}[platform.machine()]
    if ctypes.CDLL(None, use_errno=True).syscall(nr, pid, tid, sig) != 0:
        raise OSError(ctypes.get_errno(), "tgkill failed")


if __name__ == "__main__":
    unittest.main()
