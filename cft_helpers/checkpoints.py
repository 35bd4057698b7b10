"""Reading checkpoints tensor by tensor from safetensors, and how far two checkpoints are apart.

Two 7B checkpoints do not fit in memory side by side; every comparison here streams one tensor
of each at a time (reopening the file per tensor, since an open ``safe_open`` keeps every page
it has read counted in the process's resident memory; docs/ENGINEERING.md, "The stack and its pins").

    from cft_helpers.checkpoints import weight_change
    weight_change("runs/default/arms/p1_alpaca/model", "runs/default/arms/p2_alpaca/model")
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Iterator


# safetensors dtype codes -> torch dtypes (the ones model checkpoints use).
_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
           "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def safetensors_header(file: Path | str) -> tuple[dict[str, dict], int]:
    """The header of a safetensors file: {name: {dtype, shape, data_offsets}} and the byte offset
    where tensor data starts. Reads only the header, never the tensors (parsed once per file
    version: streaming reads every tensor's entry, and a 7B header has ~300 of them)."""
    import os

    st = os.stat(file)
    header, start = _header(str(file), st.st_mtime_ns, st.st_size)
    return dict(header), start


@functools.lru_cache(maxsize=64)
def _header(file: str, mtime_ns: int, size: int) -> tuple[dict[str, dict], int]:
    import struct

    with open(file, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{file}: not a safetensors file (shorter than 8 bytes)")
        (size,) = struct.unpack("<Q", raw)
        if size > 100_000_000:
            raise ValueError(f"{file}: not a safetensors file (header length {size})")
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    return header, 8 + size


def tensor_files(checkpoint: Path | str) -> dict[str, Path]:
    """Tensor name -> safetensors file, for single-file and sharded checkpoints."""
    folder = Path(checkpoint)
    index = folder / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {name: folder / file for name, file in weight_map.items()}
    single = folder / "model.safetensors"
    if not single.exists():
        raise FileNotFoundError(f"{folder}: no model.safetensors or model.safetensors.index.json")
    return {name: single for name in safetensors_header(single)[0]}


def _entry(file: Path, name: str) -> tuple[dict, int]:
    header, start = safetensors_header(file)
    if name not in header:
        raise KeyError(f"{file}: no tensor {name!r}")
    info = header[name]
    if info["dtype"] not in _DTYPES:
        raise ValueError(f"{file}: tensor {name!r} has dtype {info['dtype']}, which we do not read")
    return info, start


def read_tensor(file: Path, name: str):
    """One tensor, read with plain file reads into fresh memory.

    Not through a memory map: mapped pages stay counted in the process's resident memory
    (docs/ENGINEERING.md, "The stack and its pins"), so streaming a 7B checkpoint through mmap looks like loading it.
    """
    import torch

    info, start = _entry(file, name)
    begin, end = info["data_offsets"]
    out = torch.empty(info["shape"], dtype=getattr(torch, _DTYPES[info["dtype"]]))
    view = memoryview(out.view(-1).view(torch.uint8).numpy()) if out.numel() else memoryview(b"")
    with open(file, "rb") as f:
        f.seek(start + begin)
        if f.readinto(view) != end - begin:
            raise ValueError(f"{file}: tensor {name!r} is truncated")
    return out


def _numpy_storage(file: Path, name: str, dtype: str):
    """The numpy dtype a floating-point safetensors dtype is read as (bfloat16: its raw uint16)."""
    import numpy as np

    raw = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16}.get(dtype)
    if raw is None:
        raise ValueError(f"{file}: tensor {name!r} has dtype {dtype}, not a floating-point weight")
    return raw


def read_array(file: Path, name: str):
    """One floating-point tensor as a float32 numpy array, read like :func:`read_tensor` but
    without torch (bfloat16 widened exactly: its bits are the high half of a float32)."""
    import numpy as np

    info, start = _entry(file, name)
    begin, end = info["data_offsets"]
    raw = _numpy_storage(file, name, info["dtype"])
    out = np.empty((end - begin) // np.dtype(raw).itemsize, dtype=raw)
    with open(file, "rb") as f:
        f.seek(start + begin)
        if f.readinto(memoryview(out).cast("B")) != end - begin:
            raise ValueError(f"{file}: tensor {name!r} is truncated")
    if info["dtype"] == "BF16":
        out = (out.astype(np.uint32) << 16).view(np.float32)
    return out.astype(np.float32, copy=False).reshape(info["shape"])


def array_chunks(file: Path, name: str, chunk_elements: int = 1 << 20):
    """A floating-point tensor as consecutive flat float32 numpy pieces of at most
    ``chunk_elements`` values, read one at a time (no torch: MPD need not pay its import).

    Every piece is a view of buffers that the next piece overwrites: copy what you keep. Buffers
    allocated once for the whole tensor keep memory flat (a fresh allocation per piece fragments
    the heap, and resident memory grows with the number of pieces).
    """
    import numpy as np

    info, start = _entry(file, name)
    begin, end = info["data_offsets"]
    raw = _numpy_storage(file, name, info["dtype"])
    itemsize = np.dtype(raw).itemsize
    n_total = (end - begin) // itemsize
    buffer = np.empty(min(chunk_elements, n_total), dtype=raw)
    wide = np.empty(buffer.size, dtype=np.float32) if info["dtype"] in ("BF16", "F16") else None
    with open(file, "rb") as f:
        f.seek(start + begin)
        for offset in range(0, n_total, chunk_elements):
            k = min(chunk_elements, n_total - offset)
            if f.readinto(memoryview(buffer[:k]).cast("B")) != k * itemsize:
                raise ValueError(f"{file}: tensor {name!r} is truncated")
            if info["dtype"] == "BF16":  # bfloat16 bits are the high half of a float32
                np.left_shift(buffer[:k], 16, out=wide[:k].view(np.uint32), dtype=np.uint32)
                yield wide[:k]
            elif wide is not None:
                wide[:k] = buffer[:k]
                yield wide[:k]
            else:
                yield buffer[:k]


def checkpoint_numel(checkpoint: Path | str) -> int:
    """Number of values stored in a checkpoint (from the headers alone; tied copies not stored)."""
    import math

    return sum(math.prod(tensor_shape(f, n)) for n, f in tensor_files(checkpoint).items())


def tensor_shape(file: Path, name: str) -> tuple[int, ...]:
    return tuple(_entry(file, name)[0]["shape"])


def iter_tensor_pairs(a: Path | str, b: Path | str) -> Iterator[tuple[str, "object", "object"]]:
    """(name, tensor of a, tensor of b) for every tensor, one pair in memory at a time.

    Raises ValueError when the two checkpoints do not have the same tensor names and shapes.
    """
    fa, fb = tensor_files(a), tensor_files(b)
    if set(fa) != set(fb):
        only_a, only_b = sorted(set(fa) - set(fb))[:5], sorted(set(fb) - set(fa))[:5]
        raise ValueError(f"checkpoints differ in tensor names: only in {a}: {only_a}; only in {b}: {only_b}")
    for name in sorted(fa):
        ta, tb = read_tensor(fa[name], name), read_tensor(fb[name], name)
        if ta.shape != tb.shape:
            raise ValueError(f"tensor {name!r}: shape {tuple(ta.shape)} in {a} vs {tuple(tb.shape)} in {b}")
        yield name, ta, tb


def weight_change(a: Path | str, b: Path | str) -> dict:
    """How much checkpoint ``b`` differs from ``a``.

    Returns ``relative_l2`` = ||b - a|| / ||a|| over all weights flattened together,
    ``tensors_changed`` (out of ``tensors``) and ``max_abs_diff``.
    """
    diff_sq = ref_sq = 0.0
    changed = total = 0
    max_abs = 0.0
    for _, ta, tb in iter_tensor_pairs(a, b):
        d = (tb.double() - ta.double())
        diff_sq += float((d * d).sum())
        ref_sq += float((ta.double() ** 2).sum())
        m = float(d.abs().max()) if d.numel() else 0.0
        max_abs = max(max_abs, m)
        changed += m > 0
        total += 1
    return {"relative_l2": math.sqrt(diff_sq) / math.sqrt(ref_sq) if ref_sq else float("nan"),
            "tensors_changed": changed, "tensors": total, "max_abs_diff": max_abs}
