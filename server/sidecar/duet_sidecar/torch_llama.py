"""Llama-3.2 in PyTorch with a slot-based KV cache: the `torch` backend's forward pass.

One call, `forward(slots, starts, tokens)`, runs any mix of sessions at once: session b
(KV slot slots[b]) runs tokens[b] at positions [starts[b], starts[b] + T_b). Rows are padded
to T = max T_b; pad rows are never written to the cache and their logits are dropped. A
prefill is one session with T = prompt length; a verify batch is B sessions with
T_b = k_b + 1; a decode step is T_b = 1. Writing at starts[b] truncates the session's cache
there, so rollback is just a shorter length on the next call.

Architecture (HF LlamaForCausalLM): embed -> L x [x += o(attn(rope(q), rope(k), v)) on
rmsnorm(x); x += down(silu(gate(h)) * up(h)) on rmsnorm(x)] -> rmsnorm -> tied/untied head.
RoPE is HF's rotate_half convention with llama3 frequency scaling; attention is GQA.
"""

from __future__ import annotations

import torch

from .config import LlamaConfig, rope_inv_freq


class ModelShapeError(Exception):
    """A checkpoint whose tensors do not match config.json."""


def expected_shapes(c: LlamaConfig) -> dict[str, tuple[int, ...]]:
    d, q, kv, h = c.hidden_size, c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.intermediate_size
    m: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (c.vocab_size, d), "model.norm.weight": (d,)}
    for l in range(c.num_layers):
        p = f"model.layers.{l}."
        m.update({
            p + "input_layernorm.weight": (d,), p + "self_attn.q_proj.weight": (q, d),
            p + "self_attn.k_proj.weight": (kv, d), p + "self_attn.v_proj.weight": (kv, d),
            p + "self_attn.o_proj.weight": (d, q), p + "post_attention_layernorm.weight": (d,),
            p + "mlp.gate_proj.weight": (h, d), p + "mlp.up_proj.weight": (h, d), p + "mlp.down_proj.weight": (d, h),
        })
    if not c.tie_word_embeddings:
        m["lm_head.weight"] = (c.vocab_size, d)
    return m


def rmsnorm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    # statistics in f32 whatever the activation dtype, as HF LlamaRMSNorm does
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return w * y.to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class TorchLlama:
    def __init__(self, config: LlamaConfig, tensors: dict[str, torch.Tensor], *, device: str = "cpu",
                 dtype: torch.dtype = torch.float32, max_slots: int = 64, max_context: int = 2048):
        """Takes the checkpoint's tensors out of `tensors` (the dict is emptied of them)."""
        self.config = c = config
        self.device = torch.device(device)
        self.dtype = dtype
        self.max_slots = max_slots
        self.max_context = max_context
        self.vocab_size = c.vocab_size
        shapes = expected_shapes(c)
        for name, shape in shapes.items():
            if name not in tensors:
                raise ModelShapeError(f"tensor {name} is missing from the checkpoint (config.json says {c.num_layers} layers, tie_word_embeddings={c.tie_word_embeddings})")
            if tuple(tensors[name].shape) != shape:
                raise ModelShapeError(f"tensor {name} has shape {tuple(tensors[name].shape)}, config.json implies {shape}")

        # the checkpoint's tensors are taken from `tensors` as they are converted, so the
        # converted copies never sit beside a whole second copy of the model
        def w(name: str) -> torch.Tensor:
            return tensors.pop(name).to(device=self.device, dtype=dtype).contiguous()

        # Projections as (in, out), x @ W, where that is faster: float32 on the CPU, where
        # OpenBLAS ran 11-25% faster that way than x @ W.T over the checkpoint's (out, in) rows
        # at 1B layer shapes, at 1 to 80 rows (decode, verify and batched passes). Other dtypes
        # and devices keep the checkpoint's (out, in) rows for F.linear: bfloat16 on a CPU with
        # AVX512-BF16 runs oneDNN's kernels, 1.4-1.8x faster over (out, in) than x @ W at 1 to
        # 16 rows on this project's CPU box, and (out, in) is cuBLAS's usual layout. One copy
        # of each weight either way.
        self.transposed = dtype == torch.float32 and self.device.type == "cpu"

        def wt(name: str) -> torch.Tensor:
            t = tensors.pop(name).to(device=self.device, dtype=dtype)
            return (t.t() if self.transposed else t).contiguous()

        # the head in the projections' layout; a tied checkpoint's embedding is looked up in it,
        # so the vocab x dim table is held once
        self.head = wt("model.embed_tokens.weight" if c.tie_word_embeddings else "lm_head.weight")
        self.embed = None if c.tie_word_embeddings else w("model.embed_tokens.weight")  # (vocab, dim)
        self.final_norm = w("model.norm.weight")                   # (dim)
        self.layers = []
        for l in range(c.num_layers):
            p = f"model.layers.{l}."
            self.layers.append({
                "attn_norm": w(p + "input_layernorm.weight"),         # (dim)
                # shapes given as (in, out); (out, in) where not self.transposed
                "wq": wt(p + "self_attn.q_proj.weight"),              # (dim, qDim)
                "wk": wt(p + "self_attn.k_proj.weight"),              # (dim, kvDim)
                "wv": wt(p + "self_attn.v_proj.weight"),
                "wo": wt(p + "self_attn.o_proj.weight"),              # (qDim, dim)
                "ffn_norm": w(p + "post_attention_layernorm.weight"), # (dim)
                "wg": wt(p + "mlp.gate_proj.weight"),                 # (dim, hidden)
                "wu": wt(p + "mlp.up_proj.weight"),
                "wd": wt(p + "mlp.down_proj.weight"),                 # (hidden, dim)
            })
        # f64 so angle = pos * invFreq is as exact as the TypeScript reference's
        self.inv_freq = torch.tensor(rope_inv_freq(c), dtype=torch.float64, device=self.device)
        # KV cache, (layer, slot, kvHeads, maxContext, headDim)
        shape = (c.num_layers, max_slots, c.num_kv_heads, max_context, c.head_dim)
        self.k_cache = torch.zeros(shape, dtype=dtype, device=self.device)
        self.v_cache = torch.zeros(shape, dtype=dtype, device=self.device)

    @torch.no_grad()
    def forward(self, slots: list[int], starts: list[int], tokens: list[list[int]]) -> list[torch.Tensor]:
        """Logits (T_b, vocab) in f32 for every session b, from ONE batched pass."""
        c = self.config
        B = len(slots)
        if not (B == len(starts) == len(tokens)) or B == 0:
            raise ValueError("forward: slots, starts and tokens must be non-empty and of equal length")
        lens = [len(t) for t in tokens]
        T = max(lens)
        for b in range(B):
            if lens[b] == 0 or starts[b] < 0 or starts[b] + lens[b] > self.max_context:
                raise ValueError(f"forward: session {b} runs {lens[b]} tokens at {starts[b]}; context holds {self.max_context}")
        dev = self.device
        tok = torch.zeros((B, T), dtype=torch.long)
        valid = torch.zeros((B, T), dtype=torch.bool)
        for b in range(B):
            tok[b, : lens[b]] = torch.tensor(tokens[b], dtype=torch.long)
            valid[b, : lens[b]] = True
        tok, valid = tok.to(dev), valid.to(dev)
        start_t = torch.tensor(starts, dtype=torch.long, device=dev)
        pos = start_t[:, None] + torch.arange(T, device=dev)[None, :]          # (B, T)
        slot_t = torch.tensor(slots, dtype=torch.long, device=dev)
        # the (b, t) cells that are real tokens: where their K/V go in the cache
        vb, vt = valid.nonzero(as_tuple=True)
        w_slot, w_pos = slot_t[vb], pos[vb, vt]
        Lk = max(s + n for s, n in zip(starts, lens))                          # keys 0..Lk-1
        # query (b, t) sees key j iff j <= its position: causal within the block, and the
        # session's own history before it; keys past a session's end are never visible
        allowed = torch.arange(Lk, device=dev)[None, None, :] <= pos[:, :, None]  # (B, T, Lk)
        mask = torch.zeros((B, T, Lk), dtype=torch.float32, device=dev).masked_fill(~allowed, float("-inf"))
        mask = mask[:, None, None]                                               # (B, 1, 1, T, Lk)

        angle = pos.double()[..., None] * self.inv_freq                         # (B, T, hd/2)
        cos = torch.cat((angle.cos(), angle.cos()), -1).to(self.dtype)[:, None]  # (B, 1, T, hd)
        sin = torch.cat((angle.sin(), angle.sin()), -1).to(self.dtype)[:, None]

        H, Hkv, hd = c.num_heads, c.num_kv_heads, c.head_dim
        G = H // Hkv
        scale = 1.0 / (hd ** 0.5)
        mm = (lambda a, W: a @ W) if self.transposed else torch.nn.functional.linear
        if self.embed is not None:
            x = self.embed[tok]                                                  # (B, T, dim)
        else:
            x = self.head[:, tok].permute(1, 2, 0) if self.transposed else self.head[tok]
        for l, lw in enumerate(self.layers):
            h = rmsnorm(x, lw["attn_norm"], c.rms_norm_eps)
            q = mm(h, lw["wq"]).view(B, T, H, hd).transpose(1, 2)               # (B, H, T, hd)
            k = mm(h, lw["wk"]).view(B, T, Hkv, hd).transpose(1, 2)             # (B, Hkv, T, hd)
            v = mm(h, lw["wv"]).view(B, T, Hkv, hd).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            kc, vc = self.k_cache[l], self.v_cache[l]                            # (slots, Hkv, ctx, hd)
            kc[w_slot, :, w_pos] = k.transpose(1, 2)[vb, vt]                     # (N, Hkv, hd)
            vc[w_slot, :, w_pos] = v.transpose(1, 2)[vb, vt]
            K = kc[:, :, :Lk].index_select(0, slot_t)                            # (B, Hkv, Lk, hd)
            V = vc[:, :, :Lk].index_select(0, slot_t)
            # GQA without copying K/V per head: query head h = kvh * G + g reads KV head kvh
            qg = q.reshape(B, Hkv, G, T, hd)
            att = (qg @ K[:, :, None].transpose(-1, -2)).float() * scale + mask  # (B, Hkv, G, T, Lk)
            att = torch.softmax(att, dim=-1).to(self.dtype)
            o = (att @ V[:, :, None]).reshape(B, H, T, hd).transpose(1, 2).reshape(B, T, H * hd)
            x = x + mm(o, lw["wo"])
            h = rmsnorm(x, lw["ffn_norm"], c.rms_norm_eps)
            x = x + mm(torch.nn.functional.silu(mm(h, lw["wg"])) * mm(h, lw["wu"]), lw["wd"])
        x = rmsnorm(x, self.final_norm, c.rms_norm_eps)
        logits = mm(x[vb, vt], self.head).float()                            # (N, vocab)
        return list(torch.split(logits, lens))
