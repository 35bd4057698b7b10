"""Which parameters a layer-freezing strategy freezes in Phase 2 (SPEC.md section 2).

- **LF_H1**: a seeded random set of N decoder layers, whole blocks.
- **LF_H2**: for each of q_proj, k_proj and v_proj separately, the N layers whose projection
  changed most from the base to the Phase-1 model (Frobenius norm of the difference, read one
  tensor at a time); that projection is frozen in those layers. The paper selects "layers
  separately for Key, Query, and Value"; ``scope: layer`` freezes the whole blocks instead.
- **Spectrum**: upstream's SNR score (cft_helpers.spectrum) on the Phase-1 model; per module
  type the top percent is selected and, as in the paper, frozen (``direction: train_selected``
  trains only them, plus embeddings and LM head, as upstream does).

Each returns a :class:`FreezePlan`: the exact parameter names frozen and trainable, and what
led to them; the training core saves it with the arm (``freeze.json``).
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


@dataclass
class FreezePlan:
    strategy: str
    frozen: list[str]
    trainable: list[str]
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "n_frozen": len(self.frozen), "n_trainable": len(self.trainable)}


def layer_of(name: str) -> int | None:
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


def n_layers_of(names: Sequence[str]) -> int:
    layers = {layer_of(n) for n in names} - {None}
    if not layers:
        raise ValueError("no decoder layers ('layers.<i>.') among the parameter names")
    return max(layers) + 1


def _plan(strategy: str, names: Sequence[str], frozen: set[str], details: dict) -> FreezePlan:
    unknown = frozen - set(names)
    if unknown:
        raise ValueError(f"{strategy}: names not among the model's parameters: {sorted(unknown)[:5]}")
    if len(frozen) == len(names):
        raise ValueError(f"{strategy}: every parameter would be frozen; nothing left to train")
    return FreezePlan(strategy, [n for n in names if n in frozen], [n for n in names if n not in frozen],
                      details)


def lf_h1(names: Sequence[str], n_layers: int, seed: int) -> FreezePlan:
    """Freeze ``n_layers`` whole decoder blocks chosen at random with ``seed``."""
    total = n_layers_of(names)
    if not 0 < n_layers < total:
        raise ValueError(f"LF_H1: n_layers must be between 1 and {total - 1} for a {total}-layer model, "
                         f"got {n_layers}")
    layers = sorted(random.Random(seed).sample(range(total), n_layers))
    frozen = {n for n in names if layer_of(n) in layers}
    return _plan("LF_H1", names, frozen, {"layers": layers, "seed": seed, "n_layers_model": total})


def projection_changes(base: Path | str, phase1: Path | str,
                       projections: Sequence[str] = ("q_proj", "k_proj", "v_proj")) -> dict[str, dict[int, float]]:
    """{projection: {layer: ||W_phase1 - W_base||_F}}, streaming one tensor pair at a time."""
    import torch

    from cft_helpers.checkpoints import read_tensor, tensor_files

    fa, fb = tensor_files(base), tensor_files(phase1)
    out: dict[str, dict[int, float]] = {p: {} for p in projections}
    for name in fb:
        layer = layer_of(name)
        proj = next((p for p in projections if name.endswith(f".{p}.weight")), None)
        if layer is None or proj is None:
            continue
        if name not in fa:
            raise ValueError(f"LF_H2: {name} is in the Phase-1 checkpoint {phase1} but not in the base {base}")
        a, b = read_tensor(fa[name], name), read_tensor(fb[name], name)
        if a.shape != b.shape:
            raise ValueError(f"LF_H2: {name} has shape {tuple(a.shape)} in the base, {tuple(b.shape)} in Phase 1")
        out[proj][layer] = float(torch.linalg.vector_norm((b.double() - a.double())))
    for p, per_layer in out.items():
        if not per_layer:
            raise ValueError(f"LF_H2: no '{p}' weights in {phase1}")
    return out


def lf_h2(names: Sequence[str], changes: dict[str, dict[int, float]], n_layers: int,
          scope: str = "projection") -> FreezePlan:
    """Per projection, freeze it in the ``n_layers`` layers where it changed most in Phase 1."""
    top: dict[str, list[int]] = {}
    for proj, per_layer in changes.items():
        if not 0 < n_layers <= len(per_layer):
            raise ValueError(f"LF_H2: n_layers must be between 1 and {len(per_layer)}, got {n_layers}")
        ranked = sorted(per_layer, key=lambda i: (-per_layer[i], i))
        top[proj] = sorted(ranked[:n_layers])
    if scope == "projection":
        frozen = {n for n in names for proj, layers in top.items()
                  if layer_of(n) in layers and re.search(rf"\.{proj}\.(weight|bias)$", n)}
    elif scope == "layer":
        union = set().union(*top.values())
        frozen = {n for n in names if layer_of(n) in union}
    else:
        raise ValueError(f"LF_H2: scope must be 'projection' or 'layer', got {scope!r}")
    return _plan("LF_H2", names, frozen, {"layers": top, "scope": scope, "changes": {
        p: {str(i): v for i, v in sorted(c.items())} for p, c in changes.items()}})


def spectrum_plan(names: Sequence[str], scores: dict[str, dict], percent: float,
                  direction: str = "freeze_selected") -> FreezePlan:
    """Freeze (paper) or train only (upstream) the modules Spectrum selects."""
    from cft_helpers.spectrum import ALWAYS_UNFROZEN, matches_unfrozen, select

    selected = select(scores, percent)
    chosen = {f"{m}.weight" for mods in selected.values() for m in mods}
    if chosen and not chosen & set(names):
        raise ValueError(f"Spectrum: none of the selected modules is a parameter of the model (e.g. "
                         f"{sorted(chosen)[0]!r}); were the scores computed on another architecture?")
    if direction == "freeze_selected":
        frozen = chosen & set(names)
    elif direction == "train_selected":
        patterns = list(ALWAYS_UNFROZEN) + sorted(m for mods in selected.values() for m in mods)
        frozen = {n for n in names if not matches_unfrozen(n, patterns)}
    else:
        raise ValueError(f"Spectrum: direction must be 'freeze_selected' or 'train_selected', got {direction!r}")
    return _plan("Spectrum", names, frozen, {"percent": percent, "direction": direction,
                                             "selected": selected})


def apply(model, plan: FreezePlan) -> int:
    """Set requires_grad from the plan; returns the number of trainable values."""
    frozen = set(plan.frozen)
    names = {n for n, _ in model.named_parameters()}
    if not frozen <= names:
        raise ValueError(f"freeze plan names not in the model: {sorted(frozen - names)[:5]}")
    for name, p in model.named_parameters():
        p.requires_grad_(name not in frozen)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
