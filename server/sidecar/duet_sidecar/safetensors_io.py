"""A small reader/writer for the safetensors format (the `safetensors` package is absent here).

Format: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape,
data_offsets: [begin, end]}, "__metadata__": {...}}, then the raw little-endian data.
Only the dtypes Llama checkpoints use are supported: F32, F16, BF16.
"""

from __future__ import annotations

import glob
import json
import os
import struct

import numpy as np
import torch


class WeightsFormatError(Exception):
    """A checkpoint file that is not valid safetensors, or has an unsupported dtype/shape."""


_NP_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.int16}
_ITEM_BYTES = {"F32": 4, "F16": 2, "BF16": 2}


def read_header(path: str) -> tuple[dict, int]:
    """(tensor table, byte offset of the data section)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise WeightsFormatError(f"{path}: too short to be safetensors")
        (n,) = struct.unpack("<Q", raw)
        if n > 100 * 2**20:
            raise WeightsFormatError(f"{path}: header length {n} is implausible; is this a safetensors file?")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise WeightsFormatError(f"{path}: header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise WeightsFormatError(f"{path}: header is not a JSON object")
    header.pop("__metadata__", None)
    return header, 8 + n


def load_file(path: str, names: set[str] | None = None) -> dict[str, torch.Tensor]:
    """Tensors of one file as CPU torch tensors in their stored dtype (BF16 stays bfloat16)."""
    header, base = read_header(path)
    size = os.path.getsize(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    out: dict[str, torch.Tensor] = {}
    for name, meta in header.items():
        if names is not None and name not in names:
            continue
        dtype = meta.get("dtype")
        if dtype not in _NP_DTYPES:
            raise WeightsFormatError(f"{path}: tensor {name} has dtype {dtype}; supported: F32, F16, BF16 (convert the checkpoint)")
        shape = [int(d) for d in meta["shape"]]
        begin, end = (int(x) for x in meta["data_offsets"])
        count = int(np.prod(shape)) if shape else 1
        if end - begin != count * _ITEM_BYTES[dtype] or base + end > size:
            raise WeightsFormatError(f"{path}: tensor {name} offsets [{begin}, {end}) do not match shape {shape} x {dtype} (file truncated?)")
        arr = np.frombuffer(mm, dtype=_NP_DTYPES[dtype], count=count, offset=base + begin).reshape(shape)
        t = torch.from_numpy(arr.copy())
        if dtype == "BF16":
            t = t.view(torch.bfloat16)
        out[name] = t
    return out


def load_dir(model_dir: str) -> dict[str, torch.Tensor]:
    """Every tensor of every *.safetensors file of a HF model directory (sharded or not)."""
    files = sorted(glob.glob(os.path.join(model_dir, "*.safetensors")))
    if not files:
        raise WeightsFormatError(f"{model_dir}: no *.safetensors files; point --model at a Hugging Face model directory")
    out: dict[str, torch.Tensor] = {}
    for f in files:
        out.update(load_file(f))
    return out


def save_file(tensors: dict[str, torch.Tensor], path: str, dtype: str = "F32") -> None:
    """Write tensors as one safetensors file in dtype F32, F16 or BF16 (tests and tools)."""
    if dtype not in _NP_DTYPES:
        raise ValueError(f"dtype {dtype}: expected F32, F16 or BF16")
    header: dict = {}
    blobs: list[bytes] = []
    offset = 0
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        if dtype == "F32":
            b = t.to(torch.float32).numpy().tobytes()
        elif dtype == "F16":
            b = t.to(torch.float16).numpy().tobytes()
        else:
            b = t.to(torch.bfloat16).view(torch.int16).numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    hb = json.dumps(header).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)
