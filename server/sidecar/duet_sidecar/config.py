"""Llama-3.2 configuration from a HF config.json, and the llama3-scaled RoPE frequencies.

Mirrors src/engine/config.ts (parseConfig, ropeInvFreq) field for field, so the sidecar and
the TypeScript engine agree on every model they both load.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass


class ConfigError(Exception):
    def __init__(self, file: str, field: str, message: str):
        super().__init__(f'{file}: field "{field}": {message}')


@dataclass(frozen=True)
class RopeScaling:
    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclass(frozen=True)
class LlamaConfig:
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: RopeScaling | None
    tie_word_embeddings: bool
    vocab_size: int
    max_position_embeddings: int
    bos_token_id: int | None
    eos_token_ids: tuple[int, ...]


def _pos_int(j: dict, file: str, key: str) -> int:
    v = j.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise ConfigError(file, key, f"expected a positive integer, got {json.dumps(v)}")
    return v


def _pos_num(j: dict, file: str, key: str, fallback: float | None = None) -> float:
    v = j.get(key, fallback)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
        raise ConfigError(file, key, f"expected a positive number, got {json.dumps(v)}")
    return float(v)


def parse_config(j: object, file: str = "config.json") -> LlamaConfig:
    if not isinstance(j, dict):
        raise ConfigError(file, "(root)", "expected a JSON object")
    if j.get("model_type", "llama") != "llama":
        raise ConfigError(file, "model_type", f"unsupported model_type {json.dumps(j.get('model_type'))}; duet runs \"llama\" models")
    if j.get("hidden_act", "silu") != "silu":
        raise ConfigError(file, "hidden_act", f"unsupported activation {json.dumps(j.get('hidden_act'))}; expected \"silu\"")
    hidden = _pos_int(j, file, "hidden_size")
    heads = _pos_int(j, file, "num_attention_heads")
    kv_heads = heads if j.get("num_key_value_heads") is None else _pos_int(j, file, "num_key_value_heads")
    if heads % kv_heads:
        raise ConfigError(file, "num_key_value_heads", f"{kv_heads} does not divide num_attention_heads {heads}")
    if j.get("head_dim") is None:
        if hidden % heads:
            raise ConfigError(file, "head_dim", f"hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
        head_dim = hidden // heads
    else:
        head_dim = _pos_int(j, file, "head_dim")
    if head_dim % 2:
        raise ConfigError(file, "head_dim", f"head_dim {head_dim} must be an even integer")
    scaling = None
    rs = j.get("rope_scaling")
    if rs is not None:
        if not isinstance(rs, dict):
            raise ConfigError(file, "rope_scaling", "expected an object or null")
        kind = rs.get("rope_type", rs.get("type"))
        if kind != "llama3":
            raise ConfigError(file, "rope_scaling.rope_type", f"unsupported {json.dumps(kind)}; only \"llama3\" is implemented")
        scaling = RopeScaling(
            factor=_pos_num(rs, file, "factor"),
            low_freq_factor=_pos_num(rs, file, "low_freq_factor"),
            high_freq_factor=_pos_num(rs, file, "high_freq_factor"),
            original_max_position_embeddings=_pos_int(rs, file, "original_max_position_embeddings"),
        )
        if not scaling.high_freq_factor > scaling.low_freq_factor:
            raise ConfigError(file, "rope_scaling.high_freq_factor", "must exceed low_freq_factor")
    eos = j.get("eos_token_id")
    eos_ids = () if eos is None else tuple(int(e) for e in eos) if isinstance(eos, list) else (int(eos),)
    bos = j.get("bos_token_id")
    return LlamaConfig(
        hidden_size=hidden,
        intermediate_size=_pos_int(j, file, "intermediate_size"),
        num_layers=_pos_int(j, file, "num_hidden_layers"),
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        rms_norm_eps=_pos_num(j, file, "rms_norm_eps", 1e-5),
        rope_theta=_pos_num(j, file, "rope_theta", 10000.0),
        rope_scaling=scaling,
        tie_word_embeddings=bool(j.get("tie_word_embeddings", False)),
        vocab_size=_pos_int(j, file, "vocab_size"),
        max_position_embeddings=_pos_int(j, file, "max_position_embeddings"),
        bos_token_id=bos if isinstance(bos, int) else None,
        eos_token_ids=eos_ids,
    )


def load_config(model_dir: str) -> LlamaConfig:
    path = os.path.join(model_dir, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise ConfigError(path, "(file)", "missing; point --model at a Hugging Face model directory") from None
    except json.JSONDecodeError as e:
        raise ConfigError(path, "(file)", f"not valid JSON: {e}") from None
    return parse_config(raw, path)


def rope_inv_freq(c: LlamaConfig) -> list[float]:
    """head_dim/2 inverse frequencies with llama3 scaling, as HF `_compute_llama3_parameters`.

    Computed in f64 and rounded to f32 values, exactly like ropeInvFreq in config.ts.
    """
    import struct

    out = []
    for i in range(c.head_dim // 2):
        f = 1.0 / math.pow(c.rope_theta, (2 * i) / c.head_dim)
        s = c.rope_scaling
        if s is not None:
            low_wavelen = s.original_max_position_embeddings / s.low_freq_factor
            high_wavelen = s.original_max_position_embeddings / s.high_freq_factor
            wavelen = 2 * math.pi / f
            if wavelen > low_wavelen:
                f = f / s.factor
            elif wavelen >= high_wavelen:
                smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
                f = (1 - smooth) * (f / s.factor) + smooth * f
        out.append(struct.unpack("<f", struct.pack("<f", f))[0])
    return out
