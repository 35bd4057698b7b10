"""Reading checkpoints tensor by tensor from safetensors, and how far two checkpoints are apart.

Two 7B checkpoints do not fit in memory side by side; every comparison here streams one tensor
of each at a time (reopening the file per tensor, since an open ``safe_open`` keeps every page
it has read counted in the process's resident memory; SPEC.md section 8).

    from cft_helpers.checkpoints import weight_change
    weight_change("runs/default/arms/p1_alpaca/model", "runs/default/arms/p2_alpaca/model")
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterator


# safetensors dtype codes -> torch dtypes (the ones model checkpoints use).
_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
           "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def safetensors_header(file: Path | str) -> tuple[dict[str, dict], int]:
    """The header of a safetensors file: {name: {dtype, shape, data_offsets}} and the byte offset
    where tensor data starts. Reads only the header, never the tensors."""
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
    (SPEC.md section 8), so streaming a 7B checkpoint through mmap looks like loading it.
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


def tensor_chunks(file: Path, name: str, chunk_elements: int = 1 << 20):
    """A tensor as consecutive flat pieces of at most ``chunk_elements`` values, read one at a time.

    Every piece is a view of one buffer that the next piece overwrites: copy what you keep. One
    buffer for the whole tensor keeps memory flat (a fresh allocation per piece fragments the
    heap, and resident memory grows with the number of pieces).
    """
    import torch

    info, start = _entry(file, name)
    begin, end = info["data_offsets"]
    dtype = getattr(torch, _DTYPES[info["dtype"]])
    step = chunk_elements * dtype.itemsize
    buffer = bytearray(min(step, end - begin))
    with open(file, "rb") as f:
        f.seek(start + begin)
        for offset in range(begin, end, step):
            size = min(step, end - offset)
            view = memoryview(buffer)[:size]
            if f.readinto(view) != size:
                raise ValueError(f"{file}: tensor {name!r} is truncated")
            yield torch.frombuffer(buffer, dtype=dtype, count=size // dtype.itemsize)


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
