"""Which parameters a layer-freezing strategy freezes in Phase 2 (docs/METHODS.md, "Mitigation strategies").

- **LF_H1**: a seeded random set of N decoder layers, whole blocks.
- **LF_H2**: for each of q_proj, k_proj and v_proj separately, the N layers whose projection
  changed most from the base to the Phase-1 model (Frobenius norm of the difference, read one
  tensor at a time); that projection is frozen in those layers. The paper selects "layers
  separately for Key, Query, and Value"; ``scope: layer`` freezes the whole blocks instead.
  ``granularity: head`` reads the rest of that sentence ("for each attention head"): per
  projection *and head*, the N layers where that head's rows changed most; those rows are
  frozen with a gradient mask (:func:`apply`), the rest of the tensor trains.
- **Spectrum**: upstream's SNR score (cft_helpers.spectrum) on the Phase-1 model; per module
  type the top percent is selected and, as in the paper, frozen (``direction: train_selected``
  trains only them, plus embeddings and LM head, as upstream does).

Each returns a :class:`FreezePlan`: the exact parameter names frozen and trainable (and, for
head granularity, the tensors frozen in part: their heads and row ranges), and what led to
them; the training core saves it with the arm (``freeze.json``).
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from cft_helpers.checkpoints import read_tensor, tensor_files

from cft_helpers.spectrum import ALWAYS_UNFROZEN, matches_unfrozen, select

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
HEAD_PROJECTIONS = ("q_proj", "k_proj", "v_proj")


@dataclass
class FreezePlan:
    strategy: str
    frozen: list[str]
    trainable: list[str]
    details: dict[str, Any] = field(default_factory=dict)
    # Tensors frozen in part (LF_H2 at head granularity): name -> {"heads": [h, ...],
    # "head_dim": d, "rows": [[start, end), ...]} along dim 0. They are also in ``trainable``
    # (requires_grad stays on; a gradient mask zeroes the listed rows).
    masked: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = {**asdict(self), "n_frozen": len(self.frozen), "n_trainable": len(self.trainable)}
        if self.masked:
            out["n_masked"] = len(self.masked)
        else:  # plans without masks are written as before
            out.pop("masked")
        return out

    def frozen_values(self, shapes: Mapping[str, Sequence[int]]) -> int:
        """Values held fixed: every value of the frozen tensors and the masked rows of the others."""
        whole = sum(math.prod(shapes[n]) for n in self.frozen)
        return whole + sum(masked_rows(m) * math.prod(shapes[n][1:]) for n, m in self.masked.items())


def masked_rows(entry: Mapping[str, Any]) -> int:
    return sum(b - a for a, b in entry["rows"])


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


def _projection_pairs(base: Path | str, phase1: Path | str, projections: Sequence[str]):
    """(projection, layer, name, base tensor, Phase-1 tensor), one pair in memory at a time."""
    fa, fb = tensor_files(base), tensor_files(phase1)
    seen = set()
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
        seen.add(proj)
        yield proj, layer, name, a, b
        del a, b
    for p in projections:
        if p not in seen:
            raise ValueError(f"LF_H2: no '{p}' weights in {phase1}")


def projection_changes(base: Path | str, phase1: Path | str,
                       projections: Sequence[str] = ("q_proj", "k_proj", "v_proj")) -> dict[str, dict[int, float]]:
    """{projection: {layer: ||W_phase1 - W_base||_F}}, streaming one tensor pair at a time."""
    import torch

    out: dict[str, dict[int, float]] = {p: {} for p in projections}
    for proj, layer, _, a, b in _projection_pairs(base, phase1, projections):
        out[proj][layer] = float(torch.linalg.vector_norm((b.double() - a.double())))
    return out


def head_layout(config: Any) -> dict[str, tuple[int, int]]:
    """{projection: (heads, head_dim)} of q_proj, k_proj, v_proj from a transformers config (object
    or dict): q has ``num_attention_heads`` heads, k and v ``num_key_value_heads`` (grouped-query
    attention; all heads when absent), each ``head_dim`` rows (hidden_size / heads when absent).
    Head h owns rows [h * head_dim, (h + 1) * head_dim) of the weight (and bias): HF's Llama /
    Mistral layout, whose rotary permutation of q and k stays within each head."""
    cfg = dict(config) if isinstance(config, Mapping) else config.to_dict()
    if "num_attention_heads" not in cfg and isinstance(cfg.get("text_config"), Mapping):
        cfg = dict(cfg["text_config"])
    heads = cfg.get("num_attention_heads")
    if not heads:
        raise ValueError("LF_H2 at head granularity: the model config has no num_attention_heads")
    kv = cfg.get("num_key_value_heads") or heads
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    return {"q_proj": (heads, head_dim), "k_proj": (kv, head_dim), "v_proj": (kv, head_dim)}


def _check_head_projections(projections: Sequence[str]) -> None:
    bad = [p for p in projections if p not in HEAD_PROJECTIONS]
    if bad:
        raise ValueError(f"mitigation.layer_freezing.projections: {bad} cannot be split into attention heads "
                         f"by rows; with granularity 'head' use some of {list(HEAD_PROJECTIONS)}")


def head_changes(base: Path | str, phase1: Path | str, layout: Mapping[str, tuple[int, int]],
                 projections: Sequence[str] = HEAD_PROJECTIONS) -> dict[str, dict[int, dict[int, float]]]:
    """{projection: {head: {layer: ||W_phase1[rows of head] - W_base[rows of head]||_F}}}, streaming
    one tensor pair at a time as :func:`projection_changes` does. ``layout``: :func:`head_layout`."""
    import torch

    _check_head_projections(projections)
    out: dict[str, dict[int, dict[int, float]]] = {p: {h: {} for h in range(layout[p][0])} for p in projections}
    for proj, layer, name, a, b in _projection_pairs(base, phase1, projections):
        heads, head_dim = layout[proj]
        if a.ndim != 2 or a.shape[0] != heads * head_dim:
            raise ValueError(f"LF_H2 at head granularity: {name} has shape {tuple(a.shape)}, not "
                             f"{heads} heads x {head_dim} rows as the model config says")
        norms = torch.linalg.vector_norm((b.double() - a.double()).reshape(heads, -1), dim=1)
        for h in range(heads):
            out[proj][h][layer] = float(norms[h])
    return out


def _top_layers(per_layer: Mapping[int, float], n_layers: int, what: str) -> list[int]:
    if not 0 < n_layers <= len(per_layer):
        raise ValueError(f"LF_H2: n_layers must be between 1 and {len(per_layer)}{what}, got {n_layers}")
    ranked = sorted(per_layer, key=lambda i: (-per_layer[i], i))  # ties: the lower layer first
    return sorted(ranked[:n_layers])


def _row_ranges(heads: Sequence[int], head_dim: int) -> list[list[int]]:
    """Contiguous [start, end) row ranges covering the given heads."""
    out: list[list[int]] = []
    for h in sorted(heads):
        if out and out[-1][1] == h * head_dim:
            out[-1][1] = (h + 1) * head_dim
        else:
            out.append([h * head_dim, (h + 1) * head_dim])
    return out


def lf_h2_heads(names: Sequence[str], changes: Mapping[str, Mapping[int, Mapping[int, float]]], n_layers: int,
                layout: Mapping[str, tuple[int, int]]) -> FreezePlan:
    """Per projection and attention head, freeze that head's rows in the ``n_layers`` layers where
    they changed most in Phase 1 (``changes``: :func:`head_changes`). Nothing is frozen whole: each
    touched q/k/v weight (and bias) is listed in ``masked`` with its frozen heads and rows."""
    top: dict[str, dict[int, list[int]]] = {}
    per_tensor: dict[str, set[int]] = {}
    for proj, per_head in changes.items():
        heads, head_dim = layout[proj]
        if sorted(per_head) != list(range(heads)):
            raise ValueError(f"LF_H2: changes of {proj} cover heads {sorted(per_head)}, the model has {heads}")
        top[proj] = {h: _top_layers(per_layer, n_layers, f" (layers with {proj} head {h})")
                     for h, per_layer in per_head.items()}
        for h, layers in top[proj].items():
            for layer in layers:
                hit = [n for n in names if layer_of(n) == layer and re.search(rf"\.{proj}\.(weight|bias)$", n)]
                if not any(n.endswith(".weight") for n in hit):
                    raise ValueError(f"LF_H2: layer {layer} has no {proj}.weight among the model's parameters")
                for n in hit:
                    per_tensor.setdefault(n, set()).add(h)
    masked = {}
    for n in names:  # in the model's order
        if n in per_tensor:
            proj = next(p for p in top if f".{p}." in n)
            head_dim = layout[proj][1]
            masked[n] = {"heads": sorted(per_tensor[n]), "head_dim": head_dim,
                         "rows": _row_ranges(per_tensor[n], head_dim)}
    details = {"granularity": "head", "scope": "projection", "n_layers": n_layers,
               "heads": {p: layout[p][0] for p in top}, "head_dim": {p: layout[p][1] for p in top},
               "layers": {p: {str(h): ls for h, ls in per_head.items()} for p, per_head in top.items()},
               "changes": {p: {str(h): {str(i): v for i, v in sorted(c.items())} for h, c in per_head.items()}
                           for p, per_head in changes.items()}}
    return FreezePlan("LF_H2", [], list(names), details, masked)


def check_masking(weight_decay: float, arm: str = "") -> None:
    """Gradient masks hold rows bit-identical only under an optimizer whose step is exactly zero
    for a gradient that has always been zero: AdamW (both moments stay 0, so the update is
    0 / (0 + eps) = 0) *with weight decay 0* (Table A1's setting). AdamW's decoupled decay
    multiplies every row by (1 - lr * decay) whatever its gradient, so it would move them."""
    if weight_decay != 0:
        raise ValueError(f"LF_H2 with mitigation.layer_freezing.granularity 'head'{f' (arm {arm!r})' if arm else ''}: "
                         f"training.weight_decay is {weight_decay}, but frozen heads are held by gradient masks, "
                         "which decoupled weight decay would still move; set training.weight_decay to 0 (the "
                         "paper's Table A1) or use granularity 'projection'")


def lf_h2(names: Sequence[str], changes: dict[str, dict[int, float]], n_layers: int,
          scope: str = "projection") -> FreezePlan:
    """Per projection, freeze it in the ``n_layers`` layers where it changed most in Phase 1."""
    top = {proj: _top_layers(per_layer, n_layers, "") for proj, per_layer in changes.items()}
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
    """Set requires_grad from the plan and mask the frozen rows of ``plan.masked``; returns the
    number of trainable values (masked rows not counted).

    A masked tensor keeps requires_grad and gets a tensor hook (``Tensor.register_hook``) that
    returns its gradient with the frozen rows zeroed. The hook runs before the gradient is
    accumulated into ``.grad``, so every accumulation micro-step is masked, and under DDP before
    the gradient reaches the reducer's all-reduce (each process sends zeros for those rows). It
    also runs for gradients computed in activation-checkpointing recomputation. Verified
    (tests/test_lf_h2_heads.py, on CPU): the single-process Trainer, activation checkpointing,
    DDP over gloo in two processes. Unverified: CUDA with bf16 autocast and torch.compile
    (expected to hold: hooks sit on the fp32 leaf parameters; the check after training would
    fail the arm otherwise); refused by the training core: FSDP (FSDP1 flattens parameters into
    FlatParameters, so hooks on the original parameters need not see the gradient; FSDP2's
    DTensor shards are untested) and DeepSpeed ZeRO.
    With zero gradients AdamW leaves the rows bit-identical only at weight decay 0
    (:func:`check_masking`); :func:`masked_rows_moved` checks after training.
    """
    frozen = set(plan.frozen)
    params = dict(model.named_parameters())
    missing = (frozen | set(plan.masked)) - set(params)
    if missing:
        raise ValueError(f"freeze plan names not in the model: {sorted(missing)[:5]}")
    for name, p in params.items():
        p.requires_grad_(name not in frozen)
    handles = {}
    for name, entry in plan.masked.items():
        p = params[name]
        rows = [(int(a), int(b)) for a, b in entry["rows"]]
        if not rows or rows[-1][1] > p.shape[0] or any(a >= b or a < 0 for a, b in rows):
            raise ValueError(f"freeze plan: rows {entry['rows']} do not fit {name} of shape {tuple(p.shape)}")
        handles[name] = p.register_hook(_zero_rows(rows))
    model.cft_grad_masks = handles  # kept with the model (hooks live as long as their parameter)
    masked = sum(masked_rows(m) * math.prod(params[n].shape[1:]) for n, m in plan.masked.items())
    return sum(values(p) for p in params.values() if p.requires_grad) - masked


def values(p) -> int:
    """A parameter's number of values, also where ZeRO-3 has partitioned it: its ``.data`` is then
    empty (``numel()`` 0) and DeepSpeed keeps the full count in ``ds_numel``."""
    return int(p.ds_numel) if hasattr(p, "ds_numel") else p.numel()


def _zero_rows(rows: Sequence[tuple[int, int]]):
    def hook(grad):
        grad = grad.clone()
        for a, b in rows:
            grad[a:b] = 0  # assignment, not a product: a NaN gradient row is zeroed too
        return grad
    return hook


def masked_rows_moved(model, plan: FreezePlan, checkpoint: Path | str) -> list[str]:
    """The masked tensors of ``plan`` whose frozen rows in ``model`` differ (bitwise, after the
    checkpoint's dtype is cast to the parameter's) from ``checkpoint``, read one tensor at a time."""
    import torch

    files = tensor_files(checkpoint)
    params = dict(model.named_parameters())
    moved = []
    for name, entry in plan.masked.items():
        start = read_tensor(files[name], name)
        p = params[name].detach()
        for a, b in entry["rows"]:
            if not torch.equal(p[a:b].cpu(), start[a:b].to(p.dtype)):
                moved.append(name)
                break
    return moved
