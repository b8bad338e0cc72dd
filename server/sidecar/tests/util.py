"""Test fixtures: random Llama checkpoints and an independent f64 reference forward."""

from __future__ import annotations

import json
import math
import os

import torch

from duet_sidecar.config import LlamaConfig, parse_config
from duet_sidecar.safetensors_io import save_file
from duet_sidecar.torch_llama import expected_shapes


def tiny_config(**over) -> dict:
    j = {
        "model_type": "llama", "hidden_act": "silu", "hidden_size": 48, "intermediate_size": 67,
        "num_hidden_layers": 2, "num_attention_heads": 6, "num_key_value_heads": 2, "head_dim": 8,
        "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 64},
        "tie_word_embeddings": True, "vocab_size": 97, "max_position_embeddings": 256, "bos_token_id": 1, "eos_token_id": 2,
    }
    j.update(over)
    return j


def random_tensors(c: LlamaConfig, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in expected_shapes(c).items():
        if len(shape) == 1:
            out[name] = 0.8 + 0.4 * torch.rand(shape, generator=g)
        else:
            a = math.sqrt(3 / shape[1]) * (0.05 * math.sqrt(shape[1]) if "embed" in name else 1.0)
            out[name] = (torch.rand(shape, generator=g) * 2 - 1) * a
    return out


def write_model(d: str, cfg_json: dict, seed: int = 1, dtype: str = "F32") -> tuple[LlamaConfig, dict[str, torch.Tensor]]:
    """A HF model dir; returns the config and the weights as stored (rounded to dtype) in f64."""
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg_json, f)
    c = parse_config(cfg_json)
    t = random_tensors(c, seed)
    save_file(t, os.path.join(d, "model.safetensors"), dtype)
    tdt = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[dtype]
    return c, {k: v.to(tdt).double() for k, v in t.items()}


def reference_logits(c: LlamaConfig, w: dict[str, torch.Tensor], tokens: list[int]) -> torch.Tensor:
    """Full-sequence causal forward in f64, no cache, heads looped one by one: the oracle.

    Written from the HF modeling_llama equations independently of torch_llama.py (which
    batches, caches, pads and groups heads).
    """
    T, hd = len(tokens), c.head_dim
    inv = []
    for i in range(hd // 2):
        f = 1.0 / c.rope_theta ** (2 * i / hd)
        s = c.rope_scaling
        if s is not None:
            lw, hw = s.original_max_position_embeddings / s.low_freq_factor, s.original_max_position_embeddings / s.high_freq_factor
            wl = 2 * math.pi / f
            if wl > lw:
                f /= s.factor
            elif wl >= hw:
                sm = (s.original_max_position_embeddings / wl - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
                f = (1 - sm) * f / s.factor + sm * f
        inv.append(f)
    inv_t = torch.tensor(inv, dtype=torch.float64)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv_t[None]
    cos, sin = ang.cos(), ang.sin()

    def rope(v):  # v (T, hd): pairs (i, i + hd/2)
        a, b = v[:, : hd // 2], v[:, hd // 2 :]
        return torch.cat((a * cos - b * sin, b * cos + a * sin), 1)

    def norm(x, wt):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + c.rms_norm_eps) * wt

    x = w["model.embed_tokens.weight"][tokens]
    causal = torch.triu(torch.full((T, T), float("-inf"), dtype=torch.float64), 1)
    group = c.num_heads // c.num_kv_heads
    for l in range(c.num_layers):
        p = f"model.layers.{l}."
        h = norm(x, w[p + "input_layernorm.weight"])
        q, k, v = h @ w[p + "self_attn.q_proj.weight"].T, h @ w[p + "self_attn.k_proj.weight"].T, h @ w[p + "self_attn.v_proj.weight"].T
        heads = []
        for hh in range(c.num_heads):
            kv = hh // group
            qh = rope(q[:, hh * hd : (hh + 1) * hd])
            kh = rope(k[:, kv * hd : (kv + 1) * hd])
            vh = v[:, kv * hd : (kv + 1) * hd]
            att = torch.softmax(qh @ kh.T / math.sqrt(hd) + causal, -1)
            heads.append(att @ vh)
        x = x + torch.cat(heads, 1) @ w[p + "self_attn.o_proj.weight"].T
        h = norm(x, w[p + "post_attention_layernorm.weight"])
        g = h @ w[p + "mlp.gate_proj.weight"].T
        x = x + (g * torch.sigmoid(g) * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    x = norm(x, w["model.norm.weight"])
    head = w["model.embed_tokens.weight"] if c.tie_word_embeddings else w["lm_head.weight"]
    return x @ head.T


def nmse(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float(((a - b) ** 2).sum() / (b**2).sum())
