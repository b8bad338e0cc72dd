#!/usr/bin/python3
"""Quick self-checks of the training code on tiny random models (seconds, no data needed):
KV-cache inference equals a full forward, speculative decoding equals greedy decoding, the
llama3 RoPE table matches a direct transcription of HF's rule, and safetensors round-trip.
  /usr/bin/python3 tools/train/selfcheck.py"""
import math
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export  # noqa: E402
import report  # noqa: E402
from model import Config, Llama, rope_inv_freq  # noqa: E402

torch.set_num_threads(1)
torch.manual_seed(0)
C = Config(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
           head_dim=16, vocab_size=53)


def check_cache():
    m = Llama(C).eval()
    ids = torch.randint(0, C.vocab_size, (1, 13))
    with torch.no_grad():
        full = m(ids)
        c = m.new_cache()
        a, b = m(ids[:, :5], c, 0), m(ids[:, 5:9], c, 5)
        m(torch.randint(0, C.vocab_size, (1, 3)), c, 9)  # a rejected block, overwritten next
        d = m(ids[:, 9:], c, 9)
    err = (full - torch.cat((a, b, d), 1)).abs().max().item()
    assert err < 1e-5, err
    print(f"kv cache vs full forward: max |diff| {err:.2e}")


def check_speculate():
    t, d = Llama(C).eval(), Llama(C).eval()
    with torch.no_grad():
        for p in list(t.parameters()) + list(d.parameters()):
            p.mul_(8)  # peaky distributions, so argmaxes are not near-ties
    ids = [1, 2, 3, 4, 5]
    for draft, name, expect_rounds in ((t, "draft = target", 8), (d, "unrelated draft", None)):
        out, rounds, acc = report.speculate(draft, t, ids, 40, set())
        ref = report.greedy(t, ids, len(out) - len(ids), set())
        assert out == ref, name
        assert expect_rounds is None or rounds == expect_rounds, (name, rounds)
        print(f"speculate == greedy ({name}): {rounds} rounds, {acc} accepted")
    torch.manual_seed(1)
    s = report.sample(t, ids, 12, set(), temperature=0.7)
    assert len(s) == len(ids) + 12 and all(0 <= i < C.vocab_size for i in s)


def check_rope():
    c = Config(head_dim=64, rope_theta=500000.0, rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    got = rope_inv_freq(c)
    for i in range(32):
        f = 1 / 500000.0 ** (2 * i / 64)
        wl = 2 * math.pi / f
        if wl > 8192:
            f /= 32
        elif wl >= 8192 / 4:
            s = (8192 / wl - 1) / (4 - 1)
            f = (1 - s) * f / 32 + s * f
        assert abs(got[i].item() - f) <= 1e-6 * f, (i, got[i].item(), f)
    print("llama3 rope table matches the rule (Llama-3.2 constants)")


def check_safetensors():
    m = Llama(C)
    with tempfile.TemporaryDirectory() as d:
        for dt in ("bf16", "f16", "f32"):
            p = os.path.join(d, f"{dt}.safetensors")
            export.save_safetensors(export.hf_state(m), p, dt)
            back = export.load_safetensors(p)
            with open(p, "rb") as f:
                n = int.from_bytes(f.read(8), "little")
            assert (8 + n) % 8 == 0
            for k, v in export.hf_state(m).items():
                assert torch.equal(back[k], v.to(export.DTYPES[dt][0]).float()), (dt, k)
    print("safetensors round-trip (bf16, f16, f32)")


if __name__ == "__main__":
    check_cache()
    check_speculate()
    check_rope()
    check_safetensors()
    print("ok")
