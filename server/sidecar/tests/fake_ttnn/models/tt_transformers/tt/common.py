"""Fake tt_transformers common: PagedAttentionConfig, get_padded_prefill_len, create_tt_model.

create_tt_model reads the checkpoint from $HF_MODEL (as the real ModelArgs does) and records
which directory it loaded, so tests can check that --model wins over the environment."""

import math
import os

import torch

import ttnn

from .model import FakeTransformer
from .model_config import ModelArgs

LOADED: list[str] = []


class PagedAttentionConfig:
    def __init__(self, block_size=32, max_num_blocks=1024):
        self.block_size = block_size
        self.max_num_blocks = max_num_blocks


def get_padded_prefill_len(seq_len: int) -> int:
    if seq_len <= 128:
        return 128
    return min(2 ** math.ceil(math.log2(seq_len)), 2048 * math.ceil(seq_len / 2048))


def create_tt_model(mesh_device, instruct, max_batch_size, optimizations, max_seq_len, paged_attention_config=None,
                    dtype=None, state_dict=None, num_layers=None):
    from duet_sidecar.config import load_config
    from duet_sidecar.safetensors_io import load_dir

    model_dir = os.environ["HF_MODEL"]
    LOADED.append(model_dir)
    ttnn.record("create_tt_model", model_dir, os.environ.get("MESH_DEVICE"))
    cfg = load_config(model_dir)
    args = ModelArgs(cfg, model_dir, max_batch_size, max_seq_len)
    optimizations(args)
    weights = load_dir(model_dir)
    model = FakeTransformer(args, weights, paged_attention_config.block_size)
    shape = (paged_attention_config.max_num_blocks, cfg.num_kv_heads, paged_attention_config.block_size, cfg.head_dim)
    kv = [[ttnn.Tensor(torch.zeros(shape), ttnn.bfloat8_b), ttnn.Tensor(torch.zeros(shape), ttnn.bfloat8_b)] for _ in range(cfg.num_layers)]
    return args, model, kv, weights
