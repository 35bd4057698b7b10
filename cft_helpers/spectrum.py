"""Spectrum's signal-to-noise score of every weight matrix, as upstream computes it (docs/METHODS.md, "Spectrum's score").

Upstream (cognitivecomputations/spectrum) differs from the Marchenko-Pastur edge written in the
paper's appendix D.1; we reproduce upstream:

1. W = the module's weight in float32 (a 1-D weight becomes 1 x N);
2. S = singular values of W, largest first;
3. sigma = (quantile(S, 0.75) - quantile(S, 0.25)) / 1.349;
4. beta = min(n, m) / max(n, m); tau = sigma * (1 + sqrt(beta));
5. signal = sum(S[S > tau]) (0 if none); noise = sum(S[S <= tau]) (1.0 if none);
6. score = (signal / noise) / S[0] (infinite when noise sums to 0, as upstream).

Per module type the matrices are sorted by score, highest first, and the first
floor(count * percent / 100) are *selected*. Upstream trains the selected ones; the paper
freezes them (section 5). Unlike upstream, which holds the whole model in float32, tensors are
read one at a time from safetensors, and a NaN or meta tensor is an error, not a silent NaN score.

Step 2 is computed as the square roots of the eigenvalues of the smaller Gram matrix W Wᵀ or
WᵀW in float64 (numpy), not by an SVD: 2-3x faster per matrix on a CPU, with singular values
within ~1e-6 of float32 ``svdvals`` (tests pin the scores, the benchmark the selection). The
scan needs no torch at all.

    python -m cft_helpers.spectrum MODEL_DIR --percent 50 --output unfrozen.yaml
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path
from typing import Iterable, Sequence

from cft_helpers.checkpoints import read_array, tensor_files

from cft_helpers.files import atomic_write_json, atomic_write_text

# The module types scanned by default: the seven linear projections of a Llama/Mistral block.
DEFAULT_TYPES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Always trainable in upstream's YAML (Axolotl's unfrozen_parameters).
ALWAYS_UNFROZEN = ("^lm_head.weight$", "^model.embed_tokens.weight$")
_LAYER = re.compile(r"^(?P<prefix>.*?layers\.)(?P<index>\d+)\.(?P<rest>.+)$")


class SpectrumError(ValueError):
    pass


def module_type(name: str) -> str | None:
    """``model.layers.3.self_attn.q_proj.weight`` -> ``self_attn.q_proj`` (upstream's type names);
    None for tensors outside the decoder layers or that are not a weight."""
    m = _LAYER.match(name)
    if not m or not name.endswith(".weight"):
        return None
    return m.group("rest")[: -len(".weight")]


def type_matches(kind: str, wanted: Iterable[str]) -> str | None:
    """The entry of ``wanted`` (``q_proj`` or ``self_attn.q_proj``) that names this type."""
    for w in wanted:
        if kind == w or kind.endswith("." + w):
            return w
    return None


def singular_values(w) -> "np.ndarray":
    """Singular values of a 2-D array, largest first, from the float64 Gram matrix's eigenvalues."""
    import numpy as np

    x = np.asarray(w, dtype=np.float64)
    gram = x @ x.T if x.shape[0] <= x.shape[1] else x.T @ x
    return np.sqrt(np.clip(np.linalg.eigvalsh(gram)[::-1], 0.0, None))


def snr_score(weight) -> float:
    """Spectrum's score of one weight (torch tensor or numpy array; module docstring, steps 1-6)."""
    import numpy as np

    if getattr(getattr(weight, "device", None), "type", None) == "meta":
        raise SpectrumError("weight is on the meta device (not loaded); upstream would score it NaN")
    if hasattr(weight, "detach"):  # torch: float32 as upstream, then numpy
        import torch

        weight = weight.detach().to(torch.float32).cpu().numpy()
    w = np.asarray(weight, dtype=np.float32)
    if w.ndim == 1:
        w = w[None, :]
    if w.ndim != 2:
        raise SpectrumError(f"expected a 1-D or 2-D weight, got shape {tuple(w.shape)}")
    if not np.isfinite(w).all():
        raise SpectrumError("weight holds NaN or inf values")
    s = singular_values(w)
    if float(s[0]) == 0.0:
        raise SpectrumError("weight is all zeros: its score is undefined")
    q75, q25 = np.quantile(s, 0.75), np.quantile(s, 0.25)  # linear interpolation, as torch.quantile
    sigma = (q75 - q25) / 1.349
    n, m = w.shape
    tau = sigma * (1 + math.sqrt(min(n, m) / max(n, m)))
    above, below = s[s > tau], s[s <= tau]
    signal = float(above.sum()) if above.size else 0.0
    noise = float(below.sum()) if below.size else 1.0
    if noise == 0.0:  # values at or below tau that are all zero (rank-deficient): upstream gives inf
        return math.inf
    return (signal / noise) / float(s[0])


def scan(checkpoint: Path | str, module_types: Sequence[str] = DEFAULT_TYPES,
         progress: bool = True) -> dict[str, dict]:
    """Score every weight of the given module types in a safetensors checkpoint.

    Returns ``{module name: {"snr": score, "type": type}}`` (module names without ``.weight``,
    as upstream writes them), reading one tensor at a time.
    """
    files = tensor_files(checkpoint)
    todo = [(n, module_type(n)) for n in sorted(files, key=_natural)]
    todo = [(n, k) for n, k in todo if k and type_matches(k, module_types)]
    if not todo:
        raise SpectrumError(f"{checkpoint}: no weights of the types {list(module_types)}; "
                            f"example tensor names: {sorted(files)[:4]}")
    it = todo
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(todo, desc="Spectrum scan", unit="matrix")
    out: dict[str, dict] = {}
    for name, kind in it:
        try:
            score = snr_score(read_array(files[name], name))
        except SpectrumError as exc:
            raise SpectrumError(f"{checkpoint}: {name}: {exc}") from None
        out[name[: -len(".weight")]] = {"snr": score, "type": kind}
    return out


def _natural(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def select(scores: dict[str, dict], percent: float) -> dict[str, list[str]]:
    """Per module type, the top ``floor(count * percent / 100)`` modules by score (upstream's
    selection; ties keep the checkpoint's order)."""
    if not 0 <= percent <= 100:
        raise SpectrumError(f"percent must be within [0, 100], got {percent}")
    by_type: dict[str, list[tuple[str, float]]] = {}
    for name, entry in scores.items():
        by_type.setdefault(entry["type"], []).append((name, entry["snr"]))
    chosen = {}
    for kind, items in by_type.items():
        ranked = sorted(items, key=lambda x: x[1], reverse=True)  # stable: ties keep order
        chosen[kind] = [n for n, _ in ranked[: math.floor(len(items) * percent / 100)]]
    return chosen


def unfrozen_yaml(selected: dict[str, list[str]]) -> str:
    """Axolotl's ``unfrozen_parameters:`` YAML as upstream writes it: the LM head and the
    embeddings, then the selected modules by type (each a prefix pattern of its parameters)."""
    lines = ["unfrozen_parameters:", *[f"- {p}" for p in ALWAYS_UNFROZEN]]
    for kind in sorted(selected):
        lines.append(f"# {kind} layers")
        lines += [f"- {name}" for name in sorted(selected[kind], key=_natural)]
    return "\n".join(lines) + "\n"


def unfrozen_patterns(text: str) -> list[str]:
    """The patterns of an ``unfrozen_parameters:`` YAML."""
    import yaml

    data = yaml.safe_load(text) or {}
    patterns = data.get("unfrozen_parameters")
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise SpectrumError("expected a YAML mapping with a list 'unfrozen_parameters'")
    return patterns


def matches_unfrozen(name: str, patterns: Sequence[str]) -> bool:
    """Whether a parameter name is unfrozen by Axolotl-style patterns: periods are literal and
    a pattern matches from the start of the name (``re.match``)."""
    return any(re.match(p.replace(".", r"\."), name) for p in patterns)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cft_helpers.spectrum",
                                 description="Spectrum SNR scan of a safetensors checkpoint")
    ap.add_argument("model_dir", help="folder with model.safetensors (or a sharded index)")
    ap.add_argument("--percent", type=float, default=50.0, help="top percent per module type (default 50)")
    ap.add_argument("--output", default="unfrozen.yaml", help="Axolotl YAML to write")
    ap.add_argument("--module-types", nargs="+", default=list(DEFAULT_TYPES),
                    help=f"module types to scan (default: {' '.join(DEFAULT_TYPES)})")
    ns = ap.parse_args(argv)
    try:
        scores = scan(ns.model_dir, ns.module_types)
        selected = select(scores, ns.percent)
    except (SpectrumError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(ns.output)
    atomic_write_text(out, unfrozen_yaml(selected))
    snr_file = out.with_name(out.stem + "_snr.json")
    atomic_write_json(snr_file, scores)
    for kind in sorted(selected):
        print(f"{kind}: {len(selected[kind])} of {sum(e['type'] == kind for e in scores.values())} selected")
    print(f"wrote {out} and {snr_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
