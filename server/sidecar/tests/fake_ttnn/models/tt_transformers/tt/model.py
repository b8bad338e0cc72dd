"""Fake tt_transformers Transformer: Llama in f32 torch over the paged KV cache, shaped like
tt/attention.py's forward_decode — per layer: QKV, RoPE at each row's position, the K/V
written with ttnn.experimental.paged_update_cache (looked up at call time, as attention.py
does), THEN paged attention for each row over positions 0..pos through its page-table row.
Prefill writes whole tiles (paged_fill_cache: one writer per tile, no race), padded positions
included, and returns the last position's logits.

Knobs (environment, read when the model is built):
  DUET_FAKE_TT_UPDATE  separate (default): two paged_update_cache calls per layer
                       fused: one paged_fused_update_cache call per layer
                       bound: the op is captured when the model is built (a wrapper installed
                       later is bypassed: what the self-test must catch)
  DUET_FAKE_TT_LM_HEAD honour (default): logits in args.lm_head_dtype (bfloat8_b if unset)
                       ignore: always bfloat8_b (an LM head that does not read lm_head_dtype)
"""

import math
import os

import torch

import ttnn
from duet_sidecar.config import rope_inv_freq


def _rms(x, w, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def quantize_bfp8(x: torch.Tensor) -> torch.Tensor:
    """bfloat8_b along the last dim: 16 values share the exponent of the largest, 7-bit mantissas."""
    shape = x.shape
    g = x.double().reshape(-1, 16)
    m = g.abs().amax(1, keepdim=True)
    step = torch.where(m > 0, torch.exp2(torch.floor(torch.log2(m.clamp_min(1e-300))) - 6), torch.ones_like(m))
    return ((g / step).round().clamp(-127, 127) * step).reshape(shape).float()


class FakeTransformer:
    def __init__(self, args, weights, block_size):
        self.args = args
        self.c = c = args.config
        self.block_size = block_size
        self.w = {k: v.float() for k, v in weights.items()}
        self.head = self.w["model.embed_tokens.weight"] if c.tie_word_embeddings else self.w["lm_head.weight"]
        self.inv = torch.tensor(rope_inv_freq(c), dtype=torch.float64)
        self.update_mode = os.environ.get("DUET_FAKE_TT_UPDATE", "separate")
        self.lm_head_mode = os.environ.get("DUET_FAKE_TT_LM_HEAD", "honour")
        self.bound_update = ttnn.experimental.paged_update_cache

    def _rope(self, x, pos):  # x (N, heads, hd), pairs (i, i + hd/2) as HF
        ang = pos.double()[:, None] * self.inv[None]
        cos, sin = ang.cos().float()[:, None], ang.sin().float()[:, None]
        h = x.shape[-1] // 2
        a, b = x[..., :h], x[..., h:]
        return torch.cat((a * cos - b * sin, b * cos + a * sin), -1)

    def _qkv(self, l, h, pos):
        c, p, n = self.c, f"model.layers.{l}.", h.shape[0]
        q = (h @ self.w[p + "self_attn.q_proj.weight"].T).view(n, c.num_heads, c.head_dim)
        k = (h @ self.w[p + "self_attn.k_proj.weight"].T).view(n, c.num_kv_heads, c.head_dim)
        v = (h @ self.w[p + "self_attn.v_proj.weight"].T).view(n, c.num_kv_heads, c.head_dim)
        return self._rope(q, pos), self._rope(k, pos), v

    def _mlp_out(self, l, x):
        p = f"model.layers.{l}."
        h = _rms(x, self.w[p + "post_attention_layernorm.weight"], self.c.rms_norm_eps)
        g = h @ self.w[p + "mlp.gate_proj.weight"].T
        return x + (g * torch.sigmoid(g) * (h @ self.w[p + "mlp.up_proj.weight"].T)) @ self.w[p + "mlp.down_proj.weight"].T

    def _logits(self, x):
        x = _rms(x, self.w["model.norm.weight"], self.c.rms_norm_eps)
        logits = x @ self.head.T
        pad = self.args.padded_vocab_size - logits.shape[-1]
        logits = torch.nn.functional.pad(logits, (0, pad))
        dt = getattr(self.args, "lm_head_dtype", ttnn.bfloat8_b) if self.lm_head_mode == "honour" else ttnn.bfloat8_b
        return logits.to(torch.bfloat16).float() if dt is ttnn.bfloat16 else quantize_bfp8(logits)

    def _attend(self, q, keys, values, n, table_row):  # q (heads, hd) over cached positions 0..n-1
        c, bs = self.c, self.block_size
        idx = torch.arange(n)
        blk, off = table_row[idx // bs].long(), idx % bs
        K = keys[blk, :, off].repeat_interleave(c.num_heads // c.num_kv_heads, 1)  # (n, heads, hd)
        V = values[blk, :, off].repeat_interleave(c.num_heads // c.num_kv_heads, 1)
        att = torch.softmax(torch.einsum("hd,nhd->hn", q, K) / math.sqrt(c.head_dim), -1)
        return torch.einsum("hn,nhd->hd", att, V).reshape(-1)

    def decode(self, tokens, pos, table, kv_cache, cur_tt, table_tt):
        x = self.w["model.embed_tokens.weight"][tokens]  # (32, dim)
        for l in range(self.c.num_layers):
            keys, values = kv_cache[l]
            h = _rms(x, self.w[f"model.layers.{l}.input_layernorm.weight"], self.c.rms_norm_eps)
            q, k, v = self._qkv(l, h, pos)
            kt, vt = ttnn.Tensor(k[None]), ttnn.Tensor(v[None])  # (1, B, kv_heads, hd) as nlp_create_qkv_heads_decode
            if self.update_mode == "fused":
                ttnn.experimental.paged_fused_update_cache(keys, kt, values, vt, update_idxs_tensor=cur_tt, page_table=table_tt)
            elif self.update_mode == "bound":
                self.bound_update(keys, kt, update_idxs_tensor=cur_tt, page_table=table_tt)
                self.bound_update(values, vt, update_idxs_tensor=cur_tt, page_table=table_tt)
            else:
                ttnn.experimental.paged_update_cache(keys, kt, update_idxs_tensor=cur_tt, page_table=table_tt)
                ttnn.experimental.paged_update_cache(values, vt, update_idxs_tensor=cur_tt, page_table=table_tt)
            att = torch.stack([self._attend(q[b], keys.t, values.t, int(pos[b]) + 1, table[b]) for b in range(len(tokens))])
            x = self._mlp_out(l, x + att @ self.w[f"model.layers.{l}.self_attn.o_proj.weight"].T)
        return self._logits(x)

    def prefill(self, toks, n, table_row, kv_cache):
        T, bs = len(toks), self.block_size
        pos = torch.arange(T)
        x = self.w["model.embed_tokens.weight"][toks]
        causal = torch.triu(torch.full((T, T), float("-inf")), 1)
        blk, off = table_row[pos // bs].long(), pos % bs
        group = self.c.num_heads // self.c.num_kv_heads
        for l in range(self.c.num_layers):
            keys, values = kv_cache[l]
            h = _rms(x, self.w[f"model.layers.{l}.input_layernorm.weight"], self.c.rms_norm_eps)
            q, k, v = self._qkv(l, h, pos)
            keys.t[blk, :, off] = k
            values.t[blk, :, off] = v
            K, V = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
            att = torch.softmax(torch.einsum("thd,shd->hts", q, K) / math.sqrt(self.c.head_dim) + causal, -1)
            o = torch.einsum("hts,shd->thd", att, V).reshape(T, -1)
            x = self._mlp_out(l, x + o @ self.w[f"model.layers.{l}.self_attn.o_proj.weight"].T)
        return self._logits(x[n - 1 : n])[0]
