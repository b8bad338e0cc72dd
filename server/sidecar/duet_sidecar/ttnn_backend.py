"""The `ttnn` backend: the target on a Tenstorrent Wormhole (n150/n300) through tt-metal's
models/tt_transformers Llama. NEVER RUN ON A CARD (there is none where it was written): the
row planning, the cache-update split, the start-up self-test, the DRAM budget and the env
handling are tested here against a fake `ttnn` (tests/fake_ttnn) that emulates the cache
update's tile read-modify-write; the tt-metal calls were written against its public code.

tt-metal API used (models/tt_transformers; see server/sidecar/README.md for the revision):
  tt/common.py      create_tt_model(mesh_device, instruct, max_batch_size, optimizations, max_seq_len,
                    paged_attention_config, dtype) -> (model_args, model, tt_kv_cache, _); PagedAttentionConfig
  tt/generator.py   Generator.prefill_forward_text(tokens, page_table, kv_cache, prompt_lens, empty_slots)
                    Generator.decode_forward_text(tokens, start_pos, page_table, kv_cache, enable_trace,
                    read_from_device, sampling_params) -> logits (32, 1, vocab): 32 users, one token each
  tt/model_config.py ModelArgs (.lm_head_dtype read by tt/lm_head.py), DecodersPrecision
  ttnn.experimental.paged_update_cache / paged_fused_update_cache (called by tt/attention.py)

Why a verify cannot simply be one decode step with k + 1 "users" per session
------------------------------------------------------------------------------
A decode step runs 32 users, each one token at its own position with its own page-table row.
Putting row j of session s at position start_s + j, with s's page table, makes attention
causal over the block — but the K/V write is not: paged_update_cache dispatches one user per
core, and each core reads the 32-row tile holding its position, patches its row and writes the
whole tile back (reader_/writer_update_cache_interleaved_start_id.cpp). Rows p..p+k of one
session share one or two tiles, so their writes race and the last writer wins: the other
fresh rows are lost, per head, in K and in V. `share_cache` (which serializes cores) is refused
for paged caches ("share_cache not supported with paged cache").

The three candidates, weighed against that code:
  (a) split-update [CHOSEN as the fast path, gated by the self-test]: keep ONE decode step over
      all rows, but replace each paged cache update the model issues by one call per row rank:
      call g passes update_idxs with the position of each session's g-th row and -1 elsewhere.
      -1 is the kernels' documented skip ("Passing update_idx = -1 tells us to skip update for
      this user": the reader skips the read, the writer the write). Within one call every
      active row belongs to a different session, hence to a different physical block and tile:
      no race. The calls run in order on one command queue, so call g+1 reads what g wrote;
      paged SDPA-decode then runs once after all of them, at each row's own position. Cost:
      (k + 1) small update ops per layer instead of one, in an otherwise unchanged step; the
      matmuls, which dominate, run once. It needs no change to tt_transformers: the split is a
      wrapper around ttnn.experimental.paged_update_cache / paged_fused_update_cache for the
      duration of one decode call (attention.py looks them up at call time). That is an
      assumption about tt_transformers' code, so it is checked on the card at start (below),
      and the wrapper also counts the calls it split (zero = the model bypassed it = refused).
      Traced decode is not used for split passes (a trace would replay one unsplit update).
  (b) prefill-style extend: chunked prefill from the block-aligned start below p with a chunk
      page table, re-feeding the tokens from that start (paged_fill_cache writes whole tiles, so
      no race). Rejected: prefill pads to >= 128 tokens and runs one session per call, so a
      batch of sessions costs one ~128-token prefill each instead of one shared decode step;
      Generator.prefill_forward_text returns only the last position's logits, so all k + 1 rows
      would need model internals (ttnn_prefill_forward, get_last_token) that change between
      tt-metal revisions; and its start-position/prefix arguments differ between revisions.
  (c) single-decode [the always-correct fallback]: k + 1 decode steps; step j runs row j of
      every session of the batch (one row per session per step, which is exactly how
      tt_transformers itself decodes). Correct by construction, k + 1 times the cost.

Start-up self-test (on the card, before the sidecar listens): two sessions are prefilled with
short prompts placed so their k + 1 = 5 rows sit inside one tile (positions 5..9) and across a
tile boundary (29..33); the block runs through (a), then again (after a fresh prefill) as
k + 1 single decodes (c), then (a) once more. Logits (NMSE) and the K/V rows of every layer
are compared; (a) is used only if both (a) runs agree with (c), otherwise the sidecar logs why
and uses (c). The outcome is in the sidecar's hello/info (`verifyPath`, `selfTest`) and thus in
the gateway's /api/info (`verifier.verifyPath`). The same run checks whether the LM head really
returns bf16 logits: bfloat8_b logits lie on a grid (one exponent per 16 values, 7-bit
mantissas) that bf16 logits essentially never fill.

Rows and blocks: session slot s (1..N) owns physical blocks [(s-1)B, sB), B = blocks per
session; pad rows of a step run token 0 at position 0 of one scratch block (slot 0) that
nobody reads. Rollback needs no device work: a session's length shrinks; positions past it
are overwritten by the next block and masked by each row's position.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field

import torch

from .config import LlamaConfig


class TtnnUnavailableError(RuntimeError):
    """ttnn/tt-metal is not importable here; the message says how to get it."""


class TtnnConfigError(ValueError):
    """A setting this card (or this tt-metal) cannot serve; the message says what to change."""


class TtnnSplitError(RuntimeError):
    """The split-update verify could not apply (the model bypassed the wrapped cache update)."""


SPLIT_UPDATE = "split-update"
SINGLE_DECODE = "single-decode"
MESHES = {"N150": (1, 1), "N300": (1, 2), "T3K": (1, 8)}
TILE_ROWS = 32  # rows of a ttnn tile: the unit paged_update_cache reads and writes back
DECODE_USERS = 32  # tt_transformers decodes 32 users per device step
# Bytes per element of ttnn's block-float tiles: a 32x32 tile of bfloat8_b is 1088 bytes
# (1024 mantissas + 64 shared exponents), of bfloat4_b 576 bytes.
BYTES = {"bfloat16": 2.0, "bfloat8_b": 1088 / 1024, "bfloat4_b": 576 / 1024}
DRAM_GIB_PER_CHIP = 12.0  # Wormhole n150 and each of n300's two chips: 12 GiB GDDR6
SELF_TEST_NMSE = 1e-3  # logits; (a) vs (c) run the same kernels on the same rows, so expect ~0
SELF_TEST_CACHE_REL = 1e-2  # K/V rows: max |a - c| / max |c|


def log(msg: str) -> None:
    print(f"duet_sidecar: ttnn: {msg}", file=sys.stderr, flush=True)


# ---- context length: tt_transformers' prefill padding ----

def prefill_padded_len(n: int) -> int:
    """The length tt_transformers pads a prefill of n tokens to (common.get_padded_prefill_len)."""
    if n <= 128:
        return 128
    pow2 = 1 << (n - 1).bit_length()
    return min(pow2, 2048 * math.ceil(n / 2048))


def check_max_context(n: int, block_size: int) -> None:
    """Every prompt up to n tokens must pad to at most n (the page table and RoPE tables hold n)."""
    if n >= 128 and prefill_padded_len(n) == n and n % block_size == 0:
        return
    below = next((m for m in range(n - 1, 127, -1) if prefill_padded_len(m) == m and m % block_size == 0), None)
    above = next(m for m in range(max(n + 1, 128), 2 * n + 4096) if prefill_padded_len(m) == m and m % block_size == 0)
    raise TtnnConfigError(
        f"--max-context {n}: a prompt of up to {n} tokens is padded to {prefill_padded_len(max(n, 1))} by tt_transformers' prefill, "
        f"past the cache; use a power of two >= 128 or a multiple of 2048, e.g. "
        + (f"--max-context {below} or {above}" if below else f"--max-context {above}"))


# ---- DRAM budget ----

@dataclass
class Budget:
    chips: int
    kv_bytes: float       # per chip
    weight_bytes: float   # per chip
    reserve_bytes: float
    dram_bytes: float
    per_session_bytes: float  # KV of one session at the given context, per chip

    @property
    def need_bytes(self) -> float:
        return self.kv_bytes + self.weight_bytes + self.reserve_bytes

    @property
    def fits(self) -> bool:
        return self.need_bytes <= self.dram_bytes


def kv_bytes_per_token(c: LlamaConfig) -> float:
    """K and V of every layer for one token in bfloat8_b (tt_transformers' paged cache dtype)."""
    return 2 * c.num_layers * c.num_kv_heads * c.head_dim * BYTES["bfloat8_b"]


def weight_bytes(c: LlamaConfig, precision: str) -> float:
    """Device weights: bf16 embedding, bfloat8_b LM head, per layer wqkv/wo bfloat8_b and the MLP
    in bfloat4_b (w1, w3) + bfloat8_b (w2) for `performance`, all bfloat8_b for `accuracy`."""
    d, f, hd = c.hidden_size, c.intermediate_size, c.head_dim
    attn = d * (c.num_heads + 2 * c.num_kv_heads) * hd + c.num_heads * hd * d
    w13 = BYTES["bfloat4_b"] if precision == "performance" else BYTES["bfloat8_b"]
    layer = attn * BYTES["bfloat8_b"] + 2 * d * f * w13 + f * d * BYTES["bfloat8_b"]
    return c.vocab_size * d * (BYTES["bfloat16"] + BYTES["bfloat8_b"]) + c.num_layers * layer


def dram_budget(c: LlamaConfig, *, mesh: str, max_sessions: int, max_context: int, block_size: int,
                precision: str = "performance", dram_gib: float = DRAM_GIB_PER_CHIP, reserve_gib: float = 1.0) -> Budget:
    """Per-chip estimate: tt_transformers splits KV heads and weights across the chips of a 1xN mesh.
    The reserve covers activations, the trace region, program and dispatch buffers."""
    chips = MESHES[mesh][0] * MESHES[mesh][1]
    bps = -(-max_context // block_size)
    per_token = kv_bytes_per_token(c) / chips
    tokens = (max_sessions * bps + 1) * block_size  # + the scratch block of pad rows
    return Budget(chips, tokens * per_token, weight_bytes(c, precision) / chips, reserve_gib * 2**30,
                  dram_gib * 2**30, bps * block_size * per_token)


def check_dram_budget(c: LlamaConfig, **kw) -> Budget:
    b = dram_budget(c, **kw)
    if b.fits:
        return b
    room = b.dram_bytes - b.weight_bytes - b.reserve_bytes
    fit_sessions = max(0, int((room - kw["block_size"] * kv_bytes_per_token(c) / b.chips) // b.per_session_bytes))
    fit_context = None
    m = kw["max_context"]
    while m >= 128:
        m -= kw["block_size"]
        if m >= 128 and prefill_padded_len(m) == m and m % kw["block_size"] == 0 and dram_budget(c, **{**kw, "max_context": m}).fits:
            fit_context = m
            break
    gib = 2**30
    what = [f"--max-sessions {fit_sessions} at --max-context {kw['max_context']}"] if fit_sessions else []
    if fit_context:
        what.append(f"--max-context {fit_context} at --max-sessions {kw['max_sessions']}")
    raise TtnnConfigError(
        f"{kw['max_sessions']} sessions x {kw['max_context']} tokens need {b.kv_bytes / gib:.2f} GiB of KV cache + "
        f"{b.weight_bytes / gib:.2f} GiB of weights + {b.reserve_bytes / gib:.2f} GiB reserve per chip = "
        f"{b.need_bytes / gib:.2f} GiB > {b.dram_bytes / gib:.2f} GiB ({kw['mesh']}, {b.chips} chip(s)). What fits: "
        + (" or ".join(what) if what else "nothing: the weights alone leave no room; use a larger mesh")
        + " (or --ttnn-dram-gib if your card has more usable DRAM)")


# ---- decode steps ----

@dataclass
class DecodeRows:
    """One decode step: row r runs tokens[r] at positions[r] with page_table[r].

    groups[g] lists the rows that are the g-th row of their session in this step; a split step
    writes the cache once per group (one row per session per write)."""

    tokens: torch.Tensor      # (batch,) int64
    positions: torch.Tensor   # (batch,) int64
    page_table: torch.Tensor  # (batch, blocks_per_session) int32
    owners: list[tuple[int, int]]  # (session index b, offset t) of each real row; pad rows excluded
    groups: list[list[int]] = field(default_factory=list)

    def update_positions(self) -> list[torch.Tensor]:
        """Per group: (batch,) int32 positions with -1 (the kernels' skip) outside the group."""
        out = []
        for g in self.groups:
            pos = torch.full_like(self.positions, -1, dtype=torch.int32)
            pos[g] = self.positions[g].to(torch.int32)
            out.append(pos)
        return out


def _pack(flat: list[tuple[int, int]], starts, tokens, block_tables, batch, pad_block_table) -> DecodeRows:
    toks = torch.zeros(batch, dtype=torch.long)
    pos = torch.zeros(batch, dtype=torch.long)
    table = pad_block_table.to(torch.int32).repeat(batch, 1)
    rank: dict[int, int] = {}
    groups: list[list[int]] = []
    for r, (b, t) in enumerate(flat):
        toks[r] = tokens[b][t]
        pos[r] = starts[b] + t
        table[r] = block_tables[b]
        g = rank[b] = rank.get(b, -1) + 1
        if g == len(groups):
            groups.append([])
        groups[g].append(r)
    return DecodeRows(toks, pos, table, flat, groups)


def pack_decode_rows(starts: list[int], tokens: list[list[int]], block_tables: list[torch.Tensor],
                     batch: int, pad_block_table: torch.Tensor) -> list[DecodeRows]:
    """Every (session, offset) as one decode row, `batch` rows per step, in session order.

    A session's rows stay in offset order and, when a session straddles two steps, its earlier
    rows run in the earlier step, so every row's causal history is cached before it runs.
    """
    flat = [(b, t) for b in range(len(tokens)) for t in range(len(tokens[b]))]
    return [_pack(flat[i : i + batch], starts, tokens, block_tables, batch, pad_block_table) for i in range(0, len(flat), batch)]


def pack_single_decodes(starts: list[int], tokens: list[list[int]], block_tables: list[torch.Tensor],
                        batch: int, pad_block_table: torch.Tensor) -> list[DecodeRows]:
    """Step j runs offset j of every session that has one: one row per session per step."""
    out = []
    for j in range(max(len(t) for t in tokens)):
        rows = [(b, j) for b in range(len(tokens)) if j < len(tokens[b])]
        out += [_pack(rows[i : i + batch], starts, tokens, block_tables, batch, pad_block_table) for i in range(0, len(rows), batch)]
    return out


class SplitCacheUpdates:
    """While active, each paged cache update the model issues with an update_idxs_tensor and a
    page table becomes one call per tensor in `idx_tensors` (each: one row per session, -1
    elsewhere). Other calls pass through. `calls` counts the updates split."""

    NAMES = ("paged_update_cache", "paged_fused_update_cache")

    def __init__(self, experimental, idx_tensors: list):
        self.experimental = experimental
        self.idx_tensors = idx_tensors
        self.calls = 0
        self.saved: dict[str, object] = {}

    def _wrap(self, orig):
        def split(*args, **kw):
            if kw.get("page_table") is None or kw.get("update_idxs_tensor") is None:
                return orig(*args, **kw)
            self.calls += 1
            out = None
            for t in self.idx_tensors:
                out = orig(*args, **{**kw, "update_idxs_tensor": t})
            return out
        return split

    def __enter__(self) -> "SplitCacheUpdates":
        for name in self.NAMES:
            orig = getattr(self.experimental, name, None)
            if orig is not None:
                self.saved[name] = orig
                setattr(self.experimental, name, self._wrap(orig))
        if not self.saved:
            raise TtnnSplitError("this ttnn has neither ttnn.experimental.paged_update_cache nor paged_fused_update_cache")
        return self

    def __exit__(self, *exc) -> None:
        for name, orig in self.saved.items():
            setattr(self.experimental, name, orig)


def bfp8_grid_fraction(logits: torch.Tensor) -> float:
    """Fraction of 16-value groups (along the last dim, aligned at 0) that lie on the bfloat8_b grid
    of their own largest value: multiples of 2^(floor(log2 max) - 6). bfloat8_b output: ~1.0;
    bf16 output: ~0 (its largest value alone is off that grid half the time)."""
    x = logits.double().reshape(-1, logits.shape[-1])
    x = x[:, : x.shape[1] // 16 * 16].reshape(-1, 16)
    m = x.abs().amax(1)
    keep = m > 0
    x, m = x[keep], m[keep]
    if not len(m):
        return 0.0
    step = torch.exp2(torch.floor(torch.log2(m)) - 6)[:, None]
    q = x / step
    return float(((q - q.round()).abs() < 1e-9).all(1).double().mean())


# ---- the runner ----

class TtnnRunner:
    """Engine runner over tt_transformers: forward(slots, starts, tokens) like TorchLlama's."""

    def __init__(self, model_dir: str, config: LlamaConfig, *, max_batch: int = 32, max_context: int = 2048,
                 mesh: str = "N150", block_size: int = 64, max_sessions: int = 31, dtype: str = "bfloat8_b",
                 precision: str = "performance", enable_trace: bool = False, verify: str = "auto",
                 dram_gib: float = DRAM_GIB_PER_CHIP):
        if mesh not in MESHES:
            raise TtnnConfigError(f"--ttnn-mesh {mesh!r}: expected one of {', '.join(MESHES)}")
        if verify not in ("auto", SINGLE_DECODE):
            raise TtnnConfigError(f"--ttnn-verify {verify!r}: expected auto (self-test gates {SPLIT_UPDATE}) or {SINGLE_DECODE}")
        if precision not in ("performance", "accuracy"):
            raise TtnnConfigError(f"--ttnn-precision {precision!r}: expected performance or accuracy")
        # before anything touches the card: a bad setting fails in milliseconds
        check_max_context(max_context, block_size)
        self.budget = check_dram_budget(config, mesh=mesh, max_sessions=max_sessions, max_context=max_context,
                                        block_size=block_size, precision=precision, dram_gib=dram_gib)
        try:
            import ttnn
            from models.tt_transformers.tt.common import PagedAttentionConfig, create_tt_model
            from models.tt_transformers.tt.generator import Generator
            from models.tt_transformers.tt.model_config import DecodersPrecision, ModelArgs
        except ImportError as e:
            raise TtnnUnavailableError(
                f"the ttnn backend needs tt-metal's Python environment ({e}); on a Wormhole host run the sidecar "
                "inside tt-metal's python_env with PYTHONPATH=$TT_METAL_HOME (see server/sidecar/README.md), "
                "or use --backend torch") from None
        self.ttnn = ttnn
        # tt_transformers' ModelArgs reads the checkpoint from HF_MODEL and the mesh from MESH_DEVICE:
        # both follow the command line, whatever the environment held before
        hf = os.path.abspath(model_dir)
        if os.environ.get("HF_MODEL") not in (None, hf):
            log(f"HF_MODEL was {os.environ['HF_MODEL']!r}; serving --model {hf!r}")
        os.environ["HF_MODEL"] = hf
        os.environ["MESH_DEVICE"] = mesh
        self.config = config
        self.all_logits = False  # prefill returns the last position only: no `logits` op
        self.vocab_size = config.vocab_size
        self.max_context = max_context
        self.batch = DECODE_USERS
        self.max_batch = min(max_batch, self.batch)
        self.block_size = block_size
        self.blocks_per_session = -(-max_context // block_size)
        self.max_slots = max_sessions + 1  # slot 0: pad rows (and the engine keeps it free)
        max_num_blocks = self.blocks_per_session * max_sessions + 1
        scratch = max_num_blocks - 1
        self.block_tables = [torch.full((self.blocks_per_session,), scratch, dtype=torch.int32)] + [
            torch.arange((s - 1) * self.blocks_per_session, s * self.blocks_per_session, dtype=torch.int32)
            for s in range(1, self.max_slots)]
        self.enable_trace = enable_trace
        self.mesh_device = None
        self.fabric_set = False
        try:
            self._open_mesh(mesh)  # inside: a failure after the fabric was set still resets it
            # the LM head reads args.lm_head_dtype (default bfloat8_b): exact acceptance needs the
            # target's own distribution, so logits in bf16; set before the model is built (class)
            # and after (instance: a model may have set its own). The self-test checks the result.
            ModelArgs.lm_head_dtype = ttnn.bfloat16
            paged = PagedAttentionConfig(block_size=block_size, max_num_blocks=max_num_blocks)
            pick = DecodersPrecision.performance if precision == "performance" else DecodersPrecision.accuracy
            self.model_args, self.model, self.kv_cache, _ = create_tt_model(
                self.mesh_device, instruct=False, max_batch_size=self.batch,
                optimizations=lambda a: pick(a.n_layers, a.model_name),
                max_seq_len=max_context, paged_attention_config=paged, dtype=getattr(ttnn, dtype))
            self.model_args.lm_head_dtype = ttnn.bfloat16
            self.generator = Generator([self.model], [self.model_args], self.mesh_device, tokenizer=self.model_args.tokenizer)
            gib = 2**30
            log(f"DRAM estimate per chip: {self.budget.weight_bytes / gib:.2f} GiB weights + {self.budget.kv_bytes / gib:.2f} GiB KV "
                f"({max_sessions} sessions x {max_context}) + {self.budget.reserve_bytes / gib:.2f} GiB reserve of {self.budget.dram_bytes / gib:.2f} GiB")
            self.self_test: dict | None = None
            if verify == SINGLE_DECODE:
                self.verify_path = SINGLE_DECODE
                log(f"verify path {SINGLE_DECODE} (forced by --ttnn-verify); no self-test")
            else:
                self.self_test = self.run_self_test()
                self.verify_path = SPLIT_UPDATE if self.self_test["ok"] else SINGLE_DECODE
                log(f"self-test {'passed' if self.self_test['ok'] else 'FAILED: ' + self.self_test['reason']}; "
                    f"verify path {self.verify_path}")
        except BaseException:
            self.close()
            raise
        self.device_desc = (f"ttnn {mesh} wormhole ({dtype} weights, {precision}, paged KV {max_num_blocks}x{block_size}, "
                            f"verify {self.verify_path})")

    def _open_mesh(self, mesh: str) -> None:
        ttnn = self.ttnn
        rows, cols = MESHES[mesh]
        need = rows * cols
        have = ttnn.get_num_devices() if hasattr(ttnn, "get_num_devices") else None
        if have is not None and have < need:
            raise TtnnConfigError(f"--ttnn-mesh {mesh} needs {need} Wormhole chip(s), this host has {have} (see tt-smi); "
                                  f"use --ttnn-mesh {'N150' if have == 1 else 'N300'}")
        if need > 1:
            # tt_transformers' multi-chip collectives run over the fabric, which must be set up
            # before the mesh is opened (tt-metal's conftest.py set_fabric does the same)
            if not hasattr(ttnn, "set_fabric_config"):
                raise TtnnConfigError(f"--ttnn-mesh {mesh}: this ttnn has no set_fabric_config, which the duet sidecar uses to set up "
                                      "the 1D fabric for multi-chip collectives; use a tt-metal revision with it (README) or --ttnn-mesh N150")
            try:
                ttnn.set_fabric_config(ttnn.FabricConfig.FABRIC_1D)
            except Exception as e:
                raise TtnnConfigError(f"--ttnn-mesh {mesh}: configuring the 1D fabric failed ({e}); check the chips with tt-smi "
                                      "(reset with tt-smi -r), or use --ttnn-mesh N150") from None
            self.fabric_set = True
        self.mesh_device = ttnn.open_mesh_device(ttnn.MeshShape(rows, cols), trace_region_size=30_000_000, num_command_queues=1)

    def close(self) -> None:
        """Release the card (idempotent): the mesh device, then the fabric configuration."""
        m, self.mesh_device = self.mesh_device, None
        if m is not None:
            self.ttnn.close_mesh_device(m)
        if self.fabric_set:
            self.fabric_set = False
            self.ttnn.set_fabric_config(self.ttnn.FabricConfig.DISABLED)

    # ---- forward ----
    def forward(self, slots: list[int], starts: list[int], tokens: list[list[int]]) -> list[torch.Tensor]:
        if len(slots) == 1 and starts[0] == 0:
            return [self._prefill(slots[0], tokens[0])]
        return self._decode_rows(slots, starts, tokens, self.verify_path)

    def _decode_rows(self, slots, starts, tokens, path: str) -> list[torch.Tensor]:
        rows_out = [torch.empty(len(t), self.vocab_size) for t in tokens]
        tables = [self.block_tables[s] for s in slots]
        pack = pack_decode_rows if path == SPLIT_UPDATE else pack_single_decodes
        for p in pack(starts, tokens, tables, self.batch, self.block_tables[0]):
            logits = self._step(p)
            for r, (b, t) in enumerate(p.owners):
                rows_out[b][t] = logits[r]
        return rows_out

    def _step(self, p: DecodeRows) -> torch.Tensor:
        """One decode step; split cache updates when a session has several rows in it."""
        kw = dict(page_table=p.page_table, kv_cache=[self.kv_cache], read_from_device=True, sampling_params=None)
        if len(p.groups) <= 1:
            logits = self.generator.decode_forward_text(p.tokens, p.positions, enable_trace=self.enable_trace, **kw)
        else:
            ttnn = self.ttnn
            idx = [ttnn.from_torch(pos, dtype=ttnn.int32, device=self.mesh_device, mesh_mapper=ttnn.ReplicateTensorToMesh(self.mesh_device))
                   for pos in p.update_positions()]
            with SplitCacheUpdates(ttnn.experimental, idx) as split:
                logits = self.generator.decode_forward_text(p.tokens, p.positions, enable_trace=False, **kw)
            for t in idx:
                ttnn.deallocate(t)
            if split.calls == 0:
                raise TtnnSplitError("the decode step issued no paged cache update through ttnn.experimental, so the split-update "
                                     "verify cannot apply on this tt-metal; run with --ttnn-verify single-decode")
        return logits.reshape(-1, logits.shape[-1])[:, : self.vocab_size].float()

    def _prefill(self, slot: int, toks: list[int]) -> torch.Tensor:
        """Last-position logits only, (1, vocab): all open() needs; the `logits` op is torch-only."""
        t = torch.tensor([toks], dtype=torch.long)
        logits = self.generator.prefill_forward_text(
            t, page_table=self.block_tables[slot][None, :], kv_cache=[self.kv_cache],
            prompt_lens=torch.tensor([len(toks)]), empty_slots=[0])
        return logits.reshape(-1, logits.shape[-1])[-1:, : self.vocab_size].float()

    def read_cache_rows(self, slot: int, positions: list[int]) -> torch.Tensor:
        """(layers, 2 [K, V], kv_heads, len(positions), head_dim) from the device cache."""
        ttnn, bs = self.ttnn, self.block_size
        out = []
        for layer in self.kv_cache:
            kv = []
            for cache in layer[:2]:
                shape = list(cache.shape)
                blocks = {}
                for vb in sorted({q // bs for q in positions}):
                    pb = int(self.block_tables[slot][vb])
                    t = ttnn.slice(cache, [pb, 0, 0, 0], [pb + 1, shape[1], shape[2], shape[3]])
                    blocks[vb] = ttnn.to_torch(t, mesh_composer=ttnn.ConcatMeshToTensor(self.mesh_device, dim=1)).float()[0]
                    ttnn.deallocate(t)
                kv.append(torch.stack([blocks[q // bs][:, q % bs] for q in positions], 1))
            out.append(torch.stack(kv))
        return torch.stack(out)

    # ---- start-up self-test ----
    def run_self_test(self, k: int = 4) -> dict:
        """(a) split-update vs (c) single decodes on the card: logits and cache rows. See the header."""
        t0 = time.perf_counter()
        V = self.vocab_size
        # rows 29..33 straddle a tile boundary, rows 5..9 share one tile
        slots, lens = ([self.max_slots - 1, self.max_slots - 2], [29, 5]) if self.max_slots > 2 else ([1], [29])
        prompts = [[(3 + 7 * i + 11 * s) % V for i in range(n)] for s, n in enumerate(lens)]
        blocks = [[(5 + 13 * j + 17 * s) % V for j in range(k + 1)] for s in range(len(slots))]
        positions = [list(range(n, n + k + 1)) for n in lens]

        def run(path: str):
            for slot, prompt in zip(slots, prompts):
                self._prefill(slot, prompt)
            t = time.perf_counter()
            logits = self._decode_rows(slots, lens, blocks, path)
            ms = (time.perf_counter() - t) * 1000
            return torch.cat(logits), [self.read_cache_rows(s, pos) for s, pos in zip(slots, positions)], ms

        result: dict = {"ok": False, "k": k, "positions": positions}
        try:
            fast1, cache1, _ = run(SPLIT_UPDATE)
            ref, cache_ref, ref_ms = run(SINGLE_DECODE)
            fast2, cache2, fast_ms = run(SPLIT_UPDATE)
        except Exception as e:  # the split could not run here: the fallback still can
            result["reason"] = f"{type(e).__name__}: {e}"
            result["seconds"] = round(time.perf_counter() - t0, 2)
            return result
        nmse = max(_nmse(f, ref) for f in (fast1, fast2))
        cache_rel = max(_rel(c, r) for cs in (cache1, cache2) for c, r in zip(cs, cache_ref))
        argmax_same = bool(all((f.argmax(-1) == ref.argmax(-1)).all() for f in (fast1, fast2)))
        grid = bfp8_grid_fraction(ref)
        # diagnostic, not a gate: the last verify row against a prefill of prompt + block (other
        # kernels and precisions: prefill matmuls/SDPA), i.e. how far decode is from prefill here
        vs_prefill = max(_nmse(self._prefill(slot, p + b)[0], ref[i * (k + 1) + k])
                         for i, (slot, p, b) in enumerate(zip(slots, prompts, blocks)))
        result.update(logitsNmse=_json_num(nmse), cacheMaxRelErr=_json_num(cache_rel), argmaxSame=argmax_same,
                      splitMs=round(fast_ms, 2), singleDecodeMs=round(ref_ms, 2),
                      lmHeadLogits="bfloat8_b" if grid > 0.9 else "bfloat16", bfp8GridFraction=round(grid, 4),
                      prefillVsDecodeNmse=_json_num(vs_prefill))
        if not math.isfinite(nmse) or nmse > SELF_TEST_NMSE:
            result["reason"] = f"split-update logits differ from single decodes: NMSE {nmse:.3g} > {SELF_TEST_NMSE}"
        elif not cache_rel <= SELF_TEST_CACHE_REL:
            result["reason"] = f"split-update K/V cache rows differ from single decodes: max rel err {cache_rel:.3g} > {SELF_TEST_CACHE_REL}"
        else:
            result["ok"] = True
            result["reason"] = "split-update agrees with single decodes (logits and K/V rows)"
        if result["lmHeadLogits"] != "bfloat16":
            log("the LM head returns bfloat8_b logits (this tt_transformers ignores ModelArgs.lm_head_dtype): acceptance runs on "
                "a quantized target distribution; see server/sidecar/README.md")
        result["seconds"] = round(time.perf_counter() - t0, 2)
        return result


def _json_num(x: float) -> float | str:
    """JSON has no NaN/Infinity (the gateway parses the hello with JSON.parse)."""
    return float(f"{x:.4g}") if math.isfinite(x) else str(x)


def _nmse(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float(((a - b) ** 2).sum() / (b**2).sum().clamp_min(1e-30))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))
