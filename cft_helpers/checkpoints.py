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
    from safetensors import safe_open

    with safe_open(str(single), framework="pt") as f:
        return {name: single for name in f.keys()}


def read_tensor(file: Path, name: str):
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as f:
        return f.get_tensor(name)


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
