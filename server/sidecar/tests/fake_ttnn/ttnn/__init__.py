"""A FAKE `ttnn` for the sidecar's tests (no Wormhole here): the handful of calls the duet ttnn
backend and the fake tt_transformers beside it make, on torch tensors, recording every op.

What it emulates on purpose is the one property the verify depends on:
ttnn.experimental.paged_update_cache dispatches one batch row per core and each core reads the
32-row tile holding its position, patches its one row and writes the whole tile back
(tt-metal's reader_/writer_update_cache_interleaved_start_id.cpp). So here every active row
first reads its tile, then the rows write back in row order: rows that share a tile race and
the LAST WRITER WINS. A position of -1 skips the row (the kernels' documented skip).
share_cache is refused with a page table, as TT_FATAL does there.

Knobs (environment, read at call time so a spawned sidecar can be configured too):
  DUET_FAKE_TTNN_DEVICES   chips on the host (default 1)
  DUET_FAKE_TTNN_NO_FABRIC 1 = this ttnn has no set_fabric_config
  DUET_FAKE_TTNN_LOG       file to append each recorded op name to (one per line)
"""

from __future__ import annotations

import os
import sys
import types

import torch

OPS: list[tuple] = []


def record(name: str, *detail) -> None:
    OPS.append((name, *detail))
    path = os.environ.get("DUET_FAKE_TTNN_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(name + "\n")


class DataType:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"ttnn.{self.name}"


bfloat16, bfloat8_b, bfloat4_b, int32, uint32 = (DataType(n) for n in ("bfloat16", "bfloat8_b", "bfloat4_b", "int32", "uint32"))
ROW_MAJOR_LAYOUT, TILE_LAYOUT = "ROW_MAJOR", "TILE"


class FabricConfig:
    DISABLED, FABRIC_1D, FABRIC_1D_RING = "DISABLED", "FABRIC_1D", "FABRIC_1D_RING"


class MeshShape:
    def __init__(self, rows: int, cols: int):
        self.rows, self.cols = rows, cols


class MeshDevice:
    def __init__(self, shape: MeshShape):
        self.shape = shape
        self.open = True

    def get_num_devices(self) -> int:
        return self.shape.rows * self.shape.cols


class Tensor:
    """A device tensor: a torch tensor with the ttnn dtype it claims to have."""

    def __init__(self, t: torch.Tensor, dtype=None):
        self.t = t
        self.dtype = dtype

    @property
    def shape(self) -> tuple:
        return tuple(self.t.shape)


def _fabric_present() -> bool:
    return os.environ.get("DUET_FAKE_TTNN_NO_FABRIC") != "1"


def get_num_devices() -> int:
    return int(os.environ.get("DUET_FAKE_TTNN_DEVICES", "1"))


def _set_fabric_config(config, *rest) -> None:
    record("set_fabric_config", config)


def __getattr__(name: str):  # set_fabric_config exists only when the knob says so
    if name == "set_fabric_config" and _fabric_present():
        return _set_fabric_config
    raise AttributeError(name)


def open_mesh_device(shape: MeshShape, trace_region_size: int = 0, num_command_queues: int = 1) -> MeshDevice:
    n = shape.rows * shape.cols
    if n > get_num_devices():
        raise RuntimeError(f"fake ttnn: a {shape.rows}x{shape.cols} mesh needs {n} devices, {get_num_devices()} present")
    record("open_mesh_device", (shape.rows, shape.cols))
    return MeshDevice(shape)


def close_mesh_device(m: MeshDevice) -> None:
    m.open = False
    record("close_mesh_device")


def ReplicateTensorToMesh(mesh):  # noqa: N802 (ttnn's spelling)
    return ("replicate", mesh)


def ConcatMeshToTensor(mesh, dim: int):  # noqa: N802
    return ("concat", mesh, dim)


def from_torch(t: torch.Tensor, dtype=None, layout=None, device=None, mesh_mapper=None, memory_config=None) -> Tensor:
    if dtype is int32:
        t = t.to(torch.int32)
    return Tensor(t.clone(), dtype)


def to_torch(t: Tensor, mesh_composer=None) -> torch.Tensor:
    return t.t.clone()


def slice(t: Tensor, start, end) -> Tensor:  # noqa: A001 (ttnn's name)
    record("slice")
    import builtins

    return Tensor(t.t[tuple(builtins.slice(a, b) for a, b in zip(start, end))].clone(), t.dtype)


def deallocate(t: Tensor) -> None:
    pass


def _paged_update_cache(cache_tensor: Tensor, input_tensor: Tensor, *, update_idxs=None, update_idxs_tensor=None,
                        share_cache=None, page_table=None, batch_offset=0, compute_kernel_config=None, **_):
    if page_table is not None and share_cache:
        raise RuntimeError("TT_FATAL: share_cache not supported with paged cache")
    cache = cache_tensor.t                    # (blocks, kv_heads, block_size, head_dim)
    rows = input_tensor.t.reshape(-1, cache.shape[1], cache.shape[3])  # (batch, kv_heads, head_dim)
    idx = update_idxs_tensor.t
    table = page_table.t
    bs = cache.shape[2]
    reads = []
    for b in range(rows.shape[0]):  # every core reads its tile ...
        pos = int(idx[b])
        if pos == -1:
            continue
        block, r0 = int(table[b, pos // bs]), (pos % bs) // 32 * 32
        reads.append((b, block, r0, pos % bs - r0, cache[block, :, r0 : r0 + 32].clone()))
    for b, block, r0, row, tile in reads:  # ... then writes it back whole: the last writer wins
        tile[:, row] = rows[b]
        cache[block, :, r0 : r0 + 32] = tile
    record("paged_update_cache", len(reads))
    return cache_tensor


def _paged_fused_update_cache(cache1: Tensor, input1: Tensor, cache2: Tensor, input2: Tensor, **kw):
    _paged_update_cache(cache1, input1, **kw)
    _paged_update_cache(cache2, input2, **kw)
    OPS[-2:] = [("paged_fused_update_cache", OPS[-2][1])]
    return cache1, cache2


experimental = types.ModuleType("ttnn.experimental")
experimental.paged_update_cache = _paged_update_cache
experimental.paged_fused_update_cache = _paged_fused_update_cache
sys.modules["ttnn.experimental"] = experimental
