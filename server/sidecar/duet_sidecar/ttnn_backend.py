"""The `ttnn` backend: the target on a Tenstorrent Wormhole (n150/n300) through tt-metal's
models/tt_transformers Llama. UNTESTED ON HARDWARE (no Wormhole here): the row packing below
is unit-tested on the CPU, the tt-metal calls were written against its public code.

tt-metal API targeted (models/tt_transformers, read at commit 000ec121bba05be4a441d406318338dfff4b70d4
of tenstorrent/tt-metal; README.md says which release to install):
  - tt/common.py   create_tt_model(mesh_device, instruct, max_batch_size, optimizations,
                   max_seq_len, paged_attention_config, dtype) -> (model_args, model, tt_kv_cache, _)
                   PagedAttentionConfig(block_size, max_num_blocks)
  - tt/generator.py Generator([model], [model_args], mesh_device, tokenizer=...)
                   .prefill_forward_text(tokens, page_table, kv_cache, prompt_lens, empty_slots)
                        -> last-token logits (B, 1, vocab); chunks long prompts itself
                   .decode_forward_text(tokens, start_pos, page_table, kv_cache, enable_trace,
                        read_from_device=True, sampling_params=None) -> logits (batch, 1, vocab)
  - tt/model_config.py DecodersPrecision.performance / .accuracy(n_layers, model_name)

How a k + 1 verify is ONE device pass (the batched-decode formulation): the decode step runs
max_batch_size (32) independent "users", each one token at its own position with its own
page-table row. Every verify row (session s, block offset j) becomes one decode user at
position start_s + j whose page-table row is session s's block list: the rows of one session
alias the same physical KV blocks. In each layer tt_transformers' attention writes the new K/V
of all users into the paged cache (paged_update_cache) and only then runs
paged_scaled_dot_product_attention_decode with cur_pos = each user's position, so row j sees
the session's history plus rows 0..j-1 of its own block: exactly causal attention over the
block. Up to 32 rows per pass: e.g. 6 sessions at k = 4 in one pass; more rows take further
passes (in order, so still exact). Rollback needs no device work: a session's length just
shrinks, and positions past it are overwritten by the next block and masked by cur_pos.
The one assumption to confirm on hardware: that update-then-attend holds per layer for all
users of a decode step (it does in attention.py's forward_decode as read).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .config import LlamaConfig


class TtnnUnavailableError(RuntimeError):
    """ttnn/tt-metal is not importable here; the message says how to get it."""


@dataclass
class DecodeRows:
    """One decode pass: row r runs tokens[r] at positions[r] with page_table[r]."""

    tokens: torch.Tensor      # (batch,) int64
    positions: torch.Tensor   # (batch,) int64
    page_table: torch.Tensor  # (batch, blocks_per_session) int32
    owners: list[tuple[int, int]]  # (session index b, offset t) of each real row; pad rows excluded


def pack_decode_rows(starts: list[int], tokens: list[list[int]], block_tables: list[torch.Tensor],
                     batch: int, pad_block_table: torch.Tensor) -> list[DecodeRows]:
    """Flatten every (session, offset) into decode rows, `batch` per pass, in session order.

    A session's rows stay in offset order and, when a session straddles two passes, its
    earlier rows run in the earlier pass, so every row's causal history is already cached.
    Pad rows run token 0 at position 0 of a scratch block nobody reads.
    """
    flat = [(b, t) for b in range(len(tokens)) for t in range(len(tokens[b]))]
    passes = []
    for i in range(0, len(flat), batch):
        chunk = flat[i : i + batch]
        toks = torch.zeros(batch, dtype=torch.long)
        pos = torch.zeros(batch, dtype=torch.long)
        table = pad_block_table.to(torch.int32).repeat(batch, 1)
        for r, (b, t) in enumerate(chunk):
            toks[r] = tokens[b][t]
            pos[r] = starts[b] + t
            table[r] = block_tables[b]
        passes.append(DecodeRows(toks, pos, table, chunk))
    return passes


class TtnnRunner:
    """Engine runner over tt_transformers: forward(slots, starts, tokens) like TorchLlama's."""

    def __init__(self, model_dir: str, config: LlamaConfig, *, max_batch: int = 32, max_context: int = 4096,
                 mesh: str = "N150", block_size: int = 64, max_sessions: int = 31, dtype: str = "bfloat8_b",
                 enable_trace: bool = False):
        try:
            import ttnn  # noqa: F401
            from models.tt_transformers.tt.common import PagedAttentionConfig, create_tt_model
            from models.tt_transformers.tt.generator import Generator
            from models.tt_transformers.tt.model_config import DecodersPrecision
        except ImportError as e:
            raise TtnnUnavailableError(
                f"the ttnn backend needs tt-metal's Python environment ({e}); on a Wormhole host run the sidecar "
                "inside tt-metal's python_env with PYTHONPATH=$TT_METAL_HOME (see server/sidecar/README.md), "
                "or use --backend torch") from None
        import ttnn

        os.environ.setdefault("HF_MODEL", os.path.abspath(model_dir))  # tt_transformers' ModelArgs reads the checkpoint from here
        os.environ.setdefault("MESH_DEVICE", mesh)
        self.config = config
        self.all_logits = False  # prefill returns the last position only: no `logits` op
        self.vocab_size = config.vocab_size
        self.max_context = max_context
        self.batch = 32  # tt_transformers decodes 32 users per device pass
        self.max_batch = min(max_batch, self.batch)
        self.block_size = block_size
        self.blocks_per_session = -(-max_context // block_size)
        # one extra session's worth of blocks: the scratch block table for pad rows (slot 0)
        self.max_slots = max_sessions + 1
        max_num_blocks = self.blocks_per_session * self.max_slots
        self.enable_trace = enable_trace

        mesh_shape = {"N150": (1, 1), "N300": (1, 2), "T3K": (1, 8)}.get(mesh, (1, 1))
        self.mesh_device = ttnn.open_mesh_device(ttnn.MeshShape(*mesh_shape), trace_region_size=30_000_000, num_command_queues=1)
        paged = PagedAttentionConfig(block_size=block_size, max_num_blocks=max_num_blocks)
        self.model_args, self.model, self.kv_cache, _ = create_tt_model(
            self.mesh_device, instruct=False, max_batch_size=self.batch,
            optimizations=lambda a: DecodersPrecision.performance(a.n_layers, a.model_name),
            max_seq_len=max_context, paged_attention_config=paged, dtype=getattr(ttnn, dtype))
        self.generator = Generator([self.model], [self.model_args], self.mesh_device, tokenizer=self.model_args.tokenizer)
        # slot s owns physical blocks [s * blocks_per_session, (s + 1) * blocks_per_session)
        self.block_tables = [torch.arange(s * self.blocks_per_session, (s + 1) * self.blocks_per_session, dtype=torch.int32)
                             for s in range(self.max_slots)]
        self.device_desc = f"ttnn {mesh} wormhole ({dtype} weights, paged KV {max_num_blocks}x{block_size})"

    def forward(self, slots: list[int], starts: list[int], tokens: list[list[int]]) -> list[torch.Tensor]:
        if len(slots) == 1 and starts[0] == 0:
            return [self._prefill(slots[0], tokens[0])]
        rows_out = [torch.empty(len(t), self.vocab_size) for t in tokens]
        pad = self.block_tables[0]
        for p in pack_decode_rows(starts, tokens, [self.block_tables[s] for s in slots], self.batch, pad):
            logits = self.generator.decode_forward_text(
                p.tokens, p.positions, page_table=p.page_table, kv_cache=[self.kv_cache],
                enable_trace=self.enable_trace, read_from_device=True, sampling_params=None)
            logits = logits.reshape(-1, logits.shape[-1])[:, : self.vocab_size].float()
            for r, (b, t) in enumerate(p.owners):
                rows_out[b][t] = logits[r]
        return rows_out

    def _prefill(self, slot: int, toks: list[int]) -> torch.Tensor:
        """Last-position logits only, (1, vocab): all open() needs; the `logits` op is torch-only."""
        t = torch.tensor([toks], dtype=torch.long)
        logits = self.generator.prefill_forward_text(
            t, page_table=self.block_tables[slot][None, :], kv_cache=[self.kv_cache],
            prompt_lens=torch.tensor([len(toks)]), empty_slots=[0])
        return logits.reshape(-1, logits.shape[-1])[-1:, : self.vocab_size].float()
