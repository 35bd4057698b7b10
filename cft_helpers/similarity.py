"""How similar two phases' datasets are: DES (embeddings) and MPD (parameters), paper section 4.3.

DES (Definition 1, docs/METHODS.md, "Dataset similarity (DES) and parameter distance (MPD)"): embed N randomly sampled rows of each dataset with a
language-agnostic sentence embedder, average, L2-normalise, take the dot product. 1 for a
dataset with itself; higher is more similar. Row embeddings are unit vectors (LaBSE and USE
produce them so; other embedders are normalised to match). We add what the paper does not report: a
bootstrap standard deviation over the sampled rows, so that a difference between two pairs can
be read against the sampling noise.

MPD (Definition 2): for two checkpoints fine-tuned from one base, the mean over named tensors
of the L2 norm of the flattened difference (tied weights counted once); Table 4 divides by the
largest value in the comparison. Checkpoints are streamed from safetensors in pieces of 256k
values per tensor, so peak memory is a few MB whatever the model size, never two models.

    from cft_helpers.similarity import des_matrix, mpd
    des_matrix(params)                                   # Table 3 for every dataset pair
    mpd("runs/default/arms/rev1/model", "runs/default/arms/p1_alpaca/model")

Command line (prints a table, writes JSON):

    python -m cft_helpers.similarity des alpaca multialpaca [--params P] [--embedder NAME] [--n 500] [--seed 0]
    python -m cft_helpers.similarity mpd CKPT_A CKPT_B [CKPT_C ...]   # each against the first
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cft_helpers.jobs import training_notebook
from cft_helpers.checkpoints import array_chunks, tensor_files, tensor_shape
from cft_helpers.data.loaders import load_splits, normalise_rows
from cft_helpers.data.prepare import load_prepared
from cft_helpers.embedders import load_embedder
from cft_helpers.paper_results import paper_des, paper_mpd
from cft_helpers.params import Params, load_params
from cft_helpers.files import stable_hash
from cft_helpers.runs import RunStore, read_saved
from cft_helpers.files import KeyedCache, KeyedFile, atomic_write_json

MPD_DEFINITION = ("MPD = mean over named tensors (tied weights once) of the L2 norm of the "
                  "flattened difference between the two checkpoints")


class SimilarityError(ValueError):
    pass


# --------------------------------------------------------------------------- DES


def row_text(row: dict, text: str = "instruction") -> str:
    """What DES embeds of a normalised row: its user turn(s), its response, or both."""
    user = "\n\n".join(m["content"] for m in row["messages"] if m["role"] == "user")
    response = "\n\n".join(m["content"] for m in row["messages"] if m["role"] == "assistant")
    if text == "instruction":
        return user
    if text == "response":
        return response
    if text == "both":
        return f"{user}\n\n{response}"
    raise SimilarityError(f"text must be 'instruction', 'response' or 'both', got {text!r}")


def sample_rows(rows: Sequence[dict], n: int, seed: int) -> list[dict]:
    """``n`` rows drawn without replacement with ``seed`` (all of them when there are fewer)."""
    if n >= len(rows):
        return list(rows)
    return random.Random(seed).sample(list(rows), n)


def mean_direction(embeddings: np.ndarray) -> np.ndarray:
    """The dataset's embedding E(D): the mean of its row embeddings, L2-normalised."""
    if len(embeddings) == 0:
        raise SimilarityError("cannot take the mean embedding of an empty dataset")
    mean = np.asarray(embeddings, dtype=np.float64).mean(axis=0)
    norm = np.linalg.norm(mean)
    if not np.isfinite(norm) or norm == 0:
        raise SimilarityError("the mean embedding is zero or not finite (empty or NaN embeddings?)")
    return mean / norm


def des_from_embeddings(a: np.ndarray, b: np.ndarray) -> float:
    """DES of two datasets given their row embeddings."""
    return float(mean_direction(a) @ mean_direction(b))


def des_spread(a: np.ndarray, b: np.ndarray, n_boot: int = 200, seed: int = 0) -> float:
    """Bootstrap standard deviation of DES, resampling the rows of both datasets (NaN if n_boot 0).

    A noise scale to read differences between pairs against. (Not a percentile interval: DES of
    a resample is biased low, since fewer distinct rows give a noisier, shorter mean vector.)
    """
    if n_boot <= 0:
        return float("nan")
    rng = np.random.default_rng(seed)
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    values = [des_from_embeddings(a[rng.integers(0, len(a), len(a))], b[rng.integers(0, len(b), len(b))])
              for _ in range(n_boot)]
    return float(np.std(values, ddof=1))


def embed_rows(rows: Sequence[dict], embedder, *, n: int, seed: int, text: str = "instruction",
               batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """Embeddings of ``n`` sampled rows (see ``sample_rows``)."""
    texts = [row_text(r, text) for r in sample_rows(rows, n, seed)]
    return embedder.encode(texts, batch_size=batch_size, progress=progress)


def des(rows_a: Sequence[dict], rows_b: Sequence[dict], embedder, *, n: int = 500, seed: int = 0,
        text: str = "instruction", batch_size: int = 64, n_bootstrap: int = 200,
        progress: bool = True) -> dict[str, Any]:
    """DES of two lists of normalised rows, with its bootstrap sd and what was used."""
    ea = embed_rows(rows_a, embedder, n=n, seed=seed, text=text, batch_size=batch_size, progress=progress)
    eb = embed_rows(rows_b, embedder, n=n, seed=seed, text=text, batch_size=batch_size, progress=progress)
    return {"des": des_from_embeddings(ea, eb), "sd": des_spread(ea, eb, n_bootstrap, seed), "n_a": len(ea), "n_b": len(eb),
            "n": n, "seed": seed, "text": text, "embedder": embedder.name}


def dataset_embeddings(params: Params, names: Sequence[str],
                       embedder=None, progress: bool = True) -> dict[str, np.ndarray]:
    """Row embeddings of the train split of each prepared dataset, cached in the run store.

    The cache key holds the embedder, N, seed, text field and the data's content hash, so a
    change to any of them re-embeds only the datasets concerned.
    """
    store = params.store
    cfg = params.similarity
    seed = params.seed if cfg.seed is None else cfg.seed
    out: dict[str, np.ndarray] = {}
    embedder_id = embedder.name if embedder is not None else cfg.embedder  # a passed embedder wins
    for name in names:
        key = stable_hash({"embedder": embedder_id, "n": cfg.n, "seed": seed, "text": cfg.text,
                           "data": store.data_hash(name, "train")})
        cache = KeyedFile(store.similarity_embeddings(name, key))  # the key in its name
        cached = cache.read(key)
        if cached is not None:
            out[name] = cached
            continue
        if embedder is None:
            embedder = load_embedder(cfg.embedder, threads=params.runtime.thread_count(),
                                     device=params.runtime.device, cache_folder=params.cache.embedders)
        emb = embed_rows(load_prepared(store, name, "train"), embedder, n=cfg.n, seed=seed,
                         text=cfg.text, batch_size=cfg.batch_size, progress=progress)
        cache.write(key, emb)  # atomic: a half-written cache file is never read back
        out[name] = emb
    return out


def des_matrix(params: Params, names: Sequence[str] | None = None,
               embedder=None, progress: bool = True) -> dict[str, Any]:
    """DES for every pair of the given datasets (default: all in the params), Table 3's numbers.

    Returns ``{"matrix": {a: {b: des}}, "sd": {a: {b: bootstrap sd}}, "rows": {name: n}, ...}`` and
    writes it to ``<run_dir>/similarity/des.json``.
    """
    store = params.store
    names = list(names or params.datasets)
    cfg = params.similarity
    seed = params.seed if cfg.seed is None else cfg.seed
    emb = dataset_embeddings(params, names, embedder, progress)
    matrix = {a: {b: des_from_embeddings(emb[a], emb[b]) for b in names} for a in names}
    sd = {a: {a: 0.0} for a in names}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            sd[a][b] = sd[b][a] = des_spread(emb[a], emb[b], cfg.n_bootstrap, seed)
    result = {"matrix": matrix, "sd": sd, "rows": {k: len(v) for k, v in emb.items()},
              "embedder": cfg.embedder, "n": cfg.n, "seed": seed, "text": cfg.text,
              "n_bootstrap": cfg.n_bootstrap}
    atomic_write_json(store.des_file, result)
    return result


def des_table(result: dict[str, Any]):
    """The DES matrix as a pandas DataFrame (rows and columns: datasets)."""
    import pandas as pd

    return pd.DataFrame(result["matrix"]).T


def phase_pairs_table(params: Params, result: dict[str, Any]):
    """Table 3's shape: one row per Phase-2 arm with its two phases' datasets, their DES and
    bootstrap sd, and the paper's value for the pair its label names (None where it has none)."""
    import pandas as pd

    rows = []
    for arm in params.arms_in_phase("phase2"):
        spec = params.arms[arm]
        d1 = params.phase1_dataset(spec.start) if spec.start in params.arms else None
        d2 = spec.datasets[0] if len(spec.datasets) == 1 else None
        ok = d1 in result["matrix"] and d2 in result["matrix"]
        rows.append({"arm": arm, "pair": spec.label or arm, "D1": d1, "D2": d2,
                     "des": result["matrix"][d1][d2] if ok else float("nan"),
                     "bootstrap_sd": result["sd"][d1][d2] if ok else float("nan"),
                     "paper_des": paper_des(spec.label)})
    return pd.DataFrame(rows).set_index("arm")


# --------------------------------------------------------------------------- MPD


def _config(checkpoint: Path) -> dict:
    path = Path(checkpoint) / "config.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _check_same_architecture(a: Path, b: Path) -> None:
    ca, cb = _config(a), _config(b)
    for key in ("model_type", "architectures", "hidden_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "intermediate_size", "vocab_size"):
        if key in ca and key in cb and ca[key] != cb[key]:
            raise SimilarityError(f"MPD needs two checkpoints of one architecture (fine-tuned from one "
                                  f"base): {key} is {ca[key]!r} in {a} but {cb[key]!r} in {b}")


def _tied_duplicates(checkpoint: Path, names: set[str]) -> set[str]:
    """Names that are a tied copy of another tensor (counted once): the tied LM head."""
    if _config(checkpoint).get("tie_word_embeddings") and "lm_head.weight" in names and any(
            n.endswith("embed_tokens.weight") for n in names):
        return {"lm_head.weight"}
    return set()


def _l2_of_difference(file_a: Path, file_b: Path, name: str, chunk: int = 1 << 18) -> float:
    """||a - b||_2 of one named tensor, accumulated in float64, both read piece by piece from
    disk into buffers allocated once (memory stays flat however large the tensor)."""
    import numpy as np

    d = np.empty(chunk, dtype=np.float64)
    total = 0.0
    for pa, pb in zip(array_chunks(file_a, name, chunk), array_chunks(file_b, name, chunk)):
        x = d[: pa.size]
        np.subtract(pa, pb, out=x, dtype=np.float64)  # the float32 values widened, then subtracted
        total += float(np.dot(x, x))
    return math.sqrt(total)


def mpd(a: Path | str, b: Path | str, progress: bool = False) -> dict[str, Any]:
    """MPD between two checkpoints (folders with safetensors), streamed piece by piece.

    Returns ``{"mpd", "tensors", "elements", "skipped_tied", "largest": (name, l2)}``. Raises
    SimilarityError when the architectures, tensor names or shapes differ, or a tensor is not
    finite.
    """
    a, b = Path(a), Path(b)
    _check_same_architecture(a, b)
    try:
        fa, fb = tensor_files(a), tensor_files(b)
    except FileNotFoundError as exc:
        raise SimilarityError(str(exc)) from exc
    skip = _tied_duplicates(a, set(fa)) | _tied_duplicates(b, set(fb))
    na, nb = set(fa) - skip, set(fb) - skip
    if na != nb:
        raise SimilarityError(f"MPD needs the same parameter names in both checkpoints: only in {a}: "
                              f"{sorted(na - nb)[:5]}; only in {b}: {sorted(nb - na)[:5]}")
    names = sorted(na)
    it = names
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(names, desc="MPD", unit="tensor")
    total = 0.0
    elements = 0
    largest = ("", -1.0)
    for name in it:
        shape_a, shape_b = tensor_shape(fa[name], name), tensor_shape(fb[name], name)
        if shape_a != shape_b:
            raise SimilarityError(f"tensor {name!r}: shape {shape_a} in {a} vs {shape_b} in {b}")
        l2 = _l2_of_difference(fa[name], fb[name], name)
        if not math.isfinite(l2):
            raise SimilarityError(f"tensor {name!r}: the difference is not finite (NaN or inf weights)")
        total += l2
        elements += math.prod(shape_a)
        if l2 > largest[1]:
            largest = (name, l2)
    if not names:
        raise SimilarityError(f"no tensors in {a}")
    return {"mpd": total / len(names), "tensors": len(names), "elements": elements,
            "skipped_tied": sorted(skip), "largest": list(largest), "definition": MPD_DEFINITION}


def mpd_table(reference: Path | str, others: dict[str, Path | str], progress: bool = True):
    """Table 4: MPD of each checkpoint in ``others`` against ``reference``, and normalised by the
    largest value in the comparison. A pandas DataFrame indexed by the keys of ``others``."""
    import pandas as pd

    if not others:
        raise SimilarityError("mpd_table needs at least one checkpoint to compare with the reference")
    rows = {}
    for label, path in others.items():
        r = mpd(reference, path, progress=progress)
        rows[label] = {"mpd": r["mpd"], "tensors": r["tensors"], "checkpoint": str(path)}
    df = pd.DataFrame.from_dict(rows, orient="index")
    top = df["mpd"].max()
    df.insert(1, "mpd_normalised", df["mpd"] / top if top > 0 else float("nan"))
    return df


def mpd_reference_arm(params: Params) -> str:
    """The arm whose checkpoint Table 4 measures against (the paper: the model fine-tuned on the
    Phase-2 data, MULTIALPACA, from the base). ``similarity.mpd_reference`` or found in the arms."""
    if params.similarity.mpd_reference:
        return params.similarity.mpd_reference
    phase2 = params.arms_in_phase("phase2")
    if phase2:
        p2 = params.arms[phase2[0]]
        first = params.arms.get(p2.start)
        base = first.start if first else p2.start
        for name, arm in params.arms.items():
            if arm.start == base and arm.datasets == p2.datasets:
                return name
    raise SimilarityError("no arm is trained from the base model on the Phase-2 data, so MPD has no "
                          "reference; add one (phase: reverse1) or set similarity.mpd_reference")


def mpd_arms(params: Params) -> tuple[str, list[str]]:
    """The reference arm and the arms compared with it (Table 4's Theta_2: the ALPACA, Instruct
    and OPENORCA models): arms trained from the same start model on one dataset, and Phase-1
    models used as is (an off-the-shelf Instruct model fine-tuned from the same base)."""
    ref = mpd_reference_arm(params)
    base = params.arms[ref].start
    others = [a for a, arm in params.arms.items() if a != ref and (
        (arm.start == base and len(arm.datasets) == 1) or (arm.phase == "phase1" and not arm.datasets))]
    return ref, others


def mpd_run_table(params: Params, progress: bool = True):
    """Table 4 for the run: MPD of every single-dataset arm from the base against the reference.

    Cached in ``<run_dir>/similarity/mpd.json`` keyed by the arms' input hashes."""
    import pandas as pd

    store = params.store
    ref, others = mpd_arms(params)
    if not others:
        raise SimilarityError(f"no arm to compare with the MPD reference {ref!r}: Table 4 needs arms trained "
                              "from the same start model on one dataset each")
    trained = store.finished_arms([ref, *others])
    missing = [a for a in [ref, *others] if a not in trained]
    if missing:
        run = sorted({training_notebook(params, a) for a in missing})
        raise SimilarityError(f"MPD needs the trained arms {missing}; run {' and '.join(run)} first")
    cache = KeyedCache(store.mpd_file)
    ref_hash = store.arm_manifest(ref)["input_hash"]
    rows = {}
    for arm in others:
        key = f"{ref}|{ref_hash}|{arm}|{store.arm_manifest(arm)['input_hash']}"
        value = cache.get(key, lambda: mpd(store.arm_checkpoint(ref), store.arm_checkpoint(arm), progress=progress))
        rows[arm] = {"D2": " + ".join(params.arms[arm].datasets), "label": params.arms[arm].label or arm,
                     "mpd": value["mpd"], "tensors": value["tensors"]}
    df = pd.DataFrame.from_dict(rows, orient="index")
    df["mpd_normalised"] = df["mpd"] / df["mpd"].max()
    df["paper_mpd_normalised"] = [paper_mpd(label) for label in df["label"]]
    df.attrs["reference"] = ref
    return df


# --------------------------------------------------------------------------- forgetting


def similarity_vs_forgetting(params: Params, des_result: dict[str, Any], mpd_df, change_df):
    """One row per Phase-2 arm: its phases' DES, the MPD of its Phase-1 model against the
    reference (Table 4), and the change in English (``change_df["change"]``, indexed by arm; its
    interval too where ``change_df`` has ``change_low`` / ``change_high``).

    DES or MPD is NaN where the run does not define it (say, a Phase-1 model used as is without a
    stand-in dataset), with the reason in ``note``.
    """
    import pandas as pd

    rows = []
    for arm in params.arms_in_phase("phase2"):
        spec = params.arms[arm]
        p1 = spec.start
        d1 = params.phase1_dataset(p1) if p1 in params.arms else None
        d2 = spec.datasets[0] if len(spec.datasets) == 1 else None
        notes = []
        if d1 is None:
            notes.append(f"no dataset for {p1!r} (set similarity.stand_ins)")
        value = float("nan")
        if d1 and d2:
            if d1 in des_result["matrix"] and d2 in des_result["matrix"]:
                value = des_result["matrix"][d1][d2]
            else:
                notes.append("DES not computed for this pair")
        m = float("nan")
        if mpd_df is not None and p1 in mpd_df.index:
            m = float(mpd_df.loc[p1, "mpd_normalised"])
        elif mpd_df is not None:
            notes.append(f"{p1!r} is not in the MPD comparison")
        rows.append({"arm": arm, "label": spec.label or arm, "D1": d1, "D2": d2, "des": value, "mpd": m,
                     "english_change": float(change_df.loc[arm, "change"]) if arm in change_df.index
                     else float("nan"), "note": "; ".join(notes),
                     # the change's interval, where the caller has one (notebook 08: the findings')
                     **{c: float(change_df.loc[arm, c]) if arm in change_df.index else float("nan")
                        for c in ("change_low", "change_high") if c in change_df}})
    return pd.DataFrame(rows).set_index("arm") if rows else pd.DataFrame(
        columns=["label", "D1", "D2", "des", "mpd", "english_change", "note"])


MIN_POINTS_FOR_CORRELATION = 4


def correlation(x: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
    """Pearson and Spearman correlation of paired values, NaN pairs dropped; with fewer than
    MIN_POINTS_FOR_CORRELATION points it says so instead of giving a number."""
    pairs = [(float(a), float(b)) for a, b in zip(x, y) if np.isfinite(a) and np.isfinite(b)]
    out: dict[str, Any] = {"n": len(pairs), "pearson": None, "spearman": None}
    if len(pairs) < MIN_POINTS_FOR_CORRELATION:
        out["verdict"] = (f"{len(pairs)} point(s): too few to estimate a correlation (needs at least "
                          f"{MIN_POINTS_FOR_CORRELATION}); read the points one by one")
        return out
    xs, ys = np.array(pairs).T
    if np.ptp(xs) == 0 or np.ptp(ys) == 0:
        out["verdict"] = "one of the two variables is constant: no correlation to estimate"
        return out
    from scipy.stats import pearsonr, spearmanr

    out["pearson"] = float(pearsonr(xs, ys).statistic)
    out["spearman"] = float(spearmanr(xs, ys).statistic)
    out["verdict"] = f"{len(pairs)} points: Pearson r = {out['pearson']:+.2f}, Spearman rho = {out['spearman']:+.2f}"
    return out


def save_similarity_summary(store: RunStore, **tables) -> Path:
    """Write the notebook's tables (DataFrames or dicts) to ``<run_dir>/similarity/summary.json``,
    where the paper-figures notebook reads them back."""
    out = {}
    for name, t in tables.items():
        out[name] = json.loads(t.to_json(orient="index")) if hasattr(t, "to_json") else t
    path = store.similarity_summary
    atomic_write_json(path, out)
    return path


def load_similarity_summary(store: RunStore) -> dict[str, Any]:
    """What notebook 05 saved (read only); raises ``MissingArtifact`` when it has not run."""
    return read_saved(store.similarity_summary, "similarity tables", "05_similarity")


def forgetting_correlations(points) -> dict[str, dict[str, Any]]:
    """``correlation`` of DES and of MPD with the English change, over the rows of
    ``similarity_vs_forgetting``: "des" -> result, "mpd" -> result."""
    return {key: correlation(points[key], points["english_change"]) for key in ("des", "mpd")}


def paper_forgetting_correlation(paper: Sequence[dict]) -> dict[str, Any]:
    """``correlation`` of DES with the change in EA over the paper's own points
    (``paper_results.similarity_forgetting_points``) that have a DES."""
    with_des = [p for p in paper if p["des"] is not None]
    return correlation([p["des"] for p in with_des], [p["ea_change"] for p in with_des])


def correlation_report(ours: dict[str, dict[str, Any]], paper: dict[str, Any], change: str) -> str:
    """The verdicts of ``forgetting_correlations`` (against ``change``, what our English change
    measures) and of ``paper_forgetting_correlation``, one line each."""
    lines = [f"{key.upper()} vs {change}: {v['verdict']}" for key, v in ours.items()]
    return "\n".join([*lines, f"paper, DES vs change in EA: {paper['verdict']}"])


# --------------------------------------------------------------------------- CLI


def _rows_for(spec: str, params: Params | None) -> tuple[str, list[dict]]:
    """A dataset given as a name in the params or as a local JSON / JSONL / Parquet file."""
    path = Path(spec)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            import pandas as pd

            raw = pd.read_parquet(path).to_dict("records")
        elif suffix == ".jsonl":
            raw = [json.loads(line) for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
        else:
            raw = json.loads(path.read_text(encoding="utf-8-sig"))  # -sig: a byte-order mark is skipped
            if not isinstance(raw, list):
                raise SimilarityError(f"{path}: a JSON file must hold a list of rows")
        if not raw:
            raise SimilarityError(f"{path}: no rows")
        keys = set(raw[0])
        schema = ("messages" if "messages" in keys else "orca" if "question" in keys
                  else "alpaca" if "instruction" in keys else None)
        if schema is None:
            raise SimilarityError(f"{path}: cannot tell the schema from its columns {sorted(keys)}; "
                                  "expected 'instruction' (alpaca), 'question' (orca) or 'messages'")
        return path.stem, normalise_rows(raw, name=path.stem, schema=schema, lang="und",
                                         source=f"local:{path}")
    if params is None or spec not in params.datasets:
        valid = sorted(params.datasets) if params else []
        raise SimilarityError(f"{spec!r} is neither a file nor a dataset of the params; datasets: {valid}")
    return spec, load_splits(spec, params)["train"]


def _print_table(df) -> None:
    import pandas as pd

    with pd.option_context("display.width", 120, "display.float_format", "{:.4f}".format):
        print(df.to_string())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cft_helpers.similarity", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("des", help="Dataset Embedding Similarity of datasets (every pair)")
    d.add_argument("datasets", nargs="+", help="dataset names from the params, or JSON/JSONL/Parquet files")
    d.add_argument("--params", default="params/default.yaml")
    d.add_argument("--embedder", default=None, help="default: similarity.embedder of the params")
    d.add_argument("--n", type=int, default=None, help="rows sampled per dataset (paper: 500)")
    d.add_argument("--seed", type=int, default=None)
    d.add_argument("--text", choices=["instruction", "response", "both"], default=None)
    d.add_argument("--output", default="des.json")
    m = sub.add_parser("mpd", help="Model Parameter Difference of checkpoints against the first")
    m.add_argument("checkpoints", nargs="+", help="model folders with safetensors; the first is the reference")
    m.add_argument("--output", default="mpd.json")
    args = parser.parse_args(argv)

    try:
        if args.command == "des":
            return _des_cli(args)
        return _mpd_cli(args)
    except (SimilarityError, FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def distinct_names(names: Sequence[str], given: Sequence[str]) -> list[str]:
    """One name per dataset of the command line: its name (a file's stem) where that is unique,
    else the argument as given (two files of one name in two folders), and a position where the
    same argument comes twice (``des data.jsonl data.jsonl``, whose DES is 1)."""
    from collections import Counter

    first = [n if Counter(names)[n] == 1 else g for n, g in zip(names, given)]
    counts, seen = Counter(first), Counter()
    out = []
    for name in first:
        seen[name] += 1
        out.append(f"{name} #{seen[name]}" if counts[name] > 1 else name)
    return out


def _des_cli(args) -> int:
    if len(args.datasets) < 2:
        raise SimilarityError("des needs at least two datasets")
    params = load_params(args.params)
    cfg = params.similarity
    n = args.n if args.n is not None else cfg.n
    seed = args.seed if args.seed is not None else (params.seed if cfg.seed is None else cfg.seed)
    text = args.text or cfg.text
    if n < 1:
        raise SimilarityError(f"--n must be at least 1, got {n}")
    embedder = load_embedder(args.embedder or cfg.embedder, threads=params.runtime.thread_count(),
                             device=params.runtime.device, cache_folder=params.cache.embedders)
    loaded = [_rows_for(s, params) for s in args.datasets]
    names = distinct_names([name for name, _ in loaded], args.datasets)
    emb = {name: embed_rows(rows, embedder, n=n, seed=seed, text=text, batch_size=cfg.batch_size)
           for name, (_, rows) in zip(names, loaded)}
    names = list(emb)
    pairs = [{"a": a, "b": b, "des": des_from_embeddings(emb[a], emb[b]),
              "sd": des_spread(emb[a], emb[b], cfg.n_bootstrap, seed)}
             for i, a in enumerate(names) for b in names[i + 1:]]
    result = {"pairs": pairs, "rows": {k: len(v) for k, v in emb.items()}, "embedder": embedder.name,
              "n": n, "seed": seed, "text": text}
    import pandas as pd

    _print_table(pd.DataFrame([{"A": p["a"], "B": p["b"], "DES": p["des"], "bootstrap_sd": p["sd"]}
                               for p in pairs]).set_index(["A", "B"]))
    print(f"embedder {embedder.name}, rows sampled {result['rows']} (n={n}, seed={seed}, text={text})")
    atomic_write_json(Path(args.output), result)
    print(f"wrote {args.output}")
    return 0


def _mpd_cli(args) -> int:
    if len(args.checkpoints) < 2:
        raise SimilarityError("mpd needs at least two checkpoints")
    ref, others = args.checkpoints[0], args.checkpoints[1:]
    df = mpd_table(ref, {c: c for c in others})
    _print_table(df[["mpd", "mpd_normalised", "tensors"]])
    print(f"reference {ref}; {MPD_DEFINITION}; normalised by the largest value")
    atomic_write_json(Path(args.output), {"reference": ref, "definition": MPD_DEFINITION,
                                          "rows": df.to_dict("records")})
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
