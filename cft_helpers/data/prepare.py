"""Data preparation: every dataset of the params, normalised, split and written to the run store.

    from cft_helpers.data import prepare_datasets, training_examples
    report = prepare_datasets(params)             # skipped when already done for these params
    rows = training_examples(params, ["alpaca", "multialpaca"])   # the mixture arm's data

Outputs under ``<run_dir>/data/``: ``<name>.train.jsonl``, ``<name>.heldout.jsonl`` and
``report.json`` (rows per split and language, a content hash per file, examples; for a hub
dataset the repository, the revision asked for and the commit it was read at; the datasets left
out because their path is not set, and their arms). The content hashes feed the input hash of
every arm trained on the data, so changed data retrains.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

from cft_helpers import hub
from cft_helpers.data.generator import GENERATOR_VERSION, render_in_language
from cft_helpers.data.loaders import load_splits
from cft_helpers.params import HubDataset, Params
from cft_helpers.files import stable_hash
from cft_helpers.runs import RunStore
from cft_helpers.files import atomic_write_json, read_json, read_jsonl, write_jsonl


def _file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def data_input_hash(params: Params) -> str:
    return stable_hash({"datasets": {k: v.model_dump(by_alias=True) for k, v in params.datasets.items()},
                        "seed": params.seed, "generator_version": GENERATOR_VERSION})


def prepare_datasets(params: Params, force: bool = False,
                     progress: bool = True) -> dict[str, Any]:
    """Load, normalise and split every dataset in the params; returns the data report."""
    store = params.store
    stage = store.stage("data", data_input_hash(params))
    if stage.is_done() and not force:
        return read_json(stage.dir / "report.json")
    stage.begin(force=force)
    try:
        report: dict[str, Any] = {"seed": params.seed, "datasets": {}}
        if params.unset_datasets:  # left out with their arms (Params._leave_out_unset_datasets)
            report["left_out"] = {"datasets": params.unset_datasets, "arms": params.disabled_arms}
        names = list(params.datasets)
        it = names
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(names, desc="preparing datasets", unit="dataset")
        for name in it:
            dropped: list[dict] = []
            splits = load_splits(name, params, dropped)
            spec = params.datasets[name]
            entry: dict[str, Any] = {"source": spec.source}
            if isinstance(spec, HubDataset) and hub.is_hub_id(spec.path):
                # what the data was read at: `main` moves, the commit does not
                entry["hub"] = {"repo": spec.path, "revision": spec.revision,
                                "commit": hub.resolved_sha("dataset", spec.path, spec.revision)}
            if params.datasets[name].bad_rows == "drop":  # nothing left out silently
                kinds: dict[str, int] = {}
                for d in dropped:
                    kind = d.get("kind", "other")
                    kinds[kind] = kinds.get(kind, 0) + 1
                entry["dropped"] = {"rows": len(dropped), "by_kind": kinds, "first": dropped[:5]}
            for split, rows in splits.items():
                path = stage.dir / f"{name}.{split}.jsonl"
                write_jsonl(path, rows)
                counts: dict[str, int] = {}
                for r in rows:
                    counts[r["lang"]] = counts.get(r["lang"], 0) + 1
                entry[split] = {"rows": len(rows), "by_lang": dict(sorted(counts.items())),
                                "file": path.name, "sha256": _file_hash(path)}
            report["datasets"][name] = entry
        atomic_write_json(stage.dir / "report.json", report)
        stage.finish({"report": "report.json"})
        return report
    except BaseException as exc:
        stage.fail(exc)
        raise


def load_prepared(store: RunStore, name: str, split: str = "train") -> list[dict]:
    """The prepared rows of one split; refuses a file changed since preparation (its hash feeds
    every arm's input hash, so training on a changed file would be recorded as the old data)."""
    report = store.prepared()
    if name not in report["datasets"]:
        raise KeyError(f"dataset {name!r} was not prepared; prepared: {sorted(report['datasets'])}")
    path = store.data_file(name, split)
    expected = report["datasets"][name][split]["sha256"]
    if not path.exists() or _file_hash(path) != expected:
        raise RuntimeError(f"{path} is missing or changed since it was prepared (sha256 {expected} expected); "
                           "prepare the data again: notebook 01_data_prep with force=True")
    return read_jsonl(path)


def training_examples(store: RunStore, datasets: list[str], seed: int) -> list[dict]:
    """The training rows of an arm: its datasets' train splits concatenated and shuffled.

    With one dataset this is Phase 1 or Phase 2; with two it is the paper's single-phase
    mixture (both datasets, one run, shuffled together).
    """
    rows = [r for name in datasets for r in load_prepared(store, name, "train")]
    random.Random(f"{seed}|{'+'.join(datasets)}").shuffle(rows)
    return rows


def heldout_examples(store: RunStore, datasets: list[str], n: int, seed: int) -> list[dict]:
    """Up to ``n`` held-out rows of the given datasets, spread evenly over them."""
    per = [load_prepared(store, name, "heldout") for name in datasets]
    out: list[dict] = []
    i = 0
    while len(out) < n and any(i < len(p) for p in per):
        out += [p[i] for p in per if i < len(p)]
        i += 1
    return out[:n]


def language_table(report: dict[str, Any]):
    """Rows per dataset, split and language as a pandas DataFrame (notebook 01)."""
    import pandas as pd

    records = []
    for name, entry in report["datasets"].items():
        for split in ("train", "heldout"):
            for lang, count in entry.get(split, {}).get("by_lang", {}).items():
                records.append({"dataset": name, "split": split, "lang": lang, "rows": count})
    df = pd.DataFrame(records)
    if df.empty:
        return df
    return df.pivot_table(index=["dataset", "split"], columns="lang", values="rows",
                          fill_value=0, aggfunc="sum")


def dataset_overview(params: Params):
    """One row per dataset of the params: source, what it is, languages, sizes (notebook 01)."""
    import pandas as pd

    rows = []
    for name, d in params.datasets.items():
        langs = getattr(d, "langs", None) or list(getattr(d, "data_files", None) or []) \
            or [d.lang or f"column {d.lang_column}"]
        rows.append({"dataset": name, "source": d.source,
                     "what": getattr(d, "family", None) or getattr(d, "path", ""),
                     "languages": ", ".join(langs), "train rows": d.n, "held-out rows": d.n_heldout})
    return pd.DataFrame(rows).set_index("dataset")


def task_table(store: RunStore, datasets: list[str], split: str = "train"):
    """Rows per task type and dataset (built-in data carries its task in ``meta``)."""
    import pandas as pd

    records = [{"dataset": name, "task": r.get("meta", {}).get("task", "(external data)")}
               for name in datasets for r in load_prepared(store, name, split)]
    return pd.DataFrame(records).value_counts().unstack(fill_value=0)


def format_example(example: dict) -> str:
    """A normalised example as readable text: id, language, one line per message."""
    lines = [f"--- {example['id']}  [{example['lang']}]"]
    lines += [f"{m['role']:>9}: {m['content']}" for m in example["messages"]]
    return "\n".join(lines)


def first_examples(params: Params) -> str:
    """The first prepared training example of every dataset of the params, as text (notebook 01)."""
    store = params.store
    return "\n".join(format_example(load_prepared(store, name)[0]) for name in params.datasets)


def english_counterpart(params: Params) -> str | None:
    """The first example of the first multilingual built-in dataset, and its English rendering:
    the same task and numbers, which English replay (ER_10) trains on. None when the params have
    no multilingual built-in dataset (external data carries no task to render)."""
    store = params.store
    multilingual = [n for n, d in params.datasets.items()
                    if getattr(d, "family", None) == "general" and d.langs != ["en"]]
    if not multilingual:
        return None
    example = load_prepared(store, multilingual[0])[0]
    english = render_in_language(example["meta"], "en")
    return (f"{format_example(example)}\n"
            f"English counterpart: {english['instruction']} {english['input']} -> {english['output']}")


def report_totals(report: dict[str, Any]) -> str:
    """One sentence: datasets, training and held-out rows, and languages of a preparation report."""
    entries = report["datasets"].values()
    train = sum(e["train"]["rows"] for e in entries)
    held = sum(e["heldout"]["rows"] for e in entries)
    languages = {lang for e in entries for lang in e["train"]["by_lang"]}
    return (f"{len(report['datasets'])} datasets: {train} training rows and {held} held-out "
            f"rows in {len(languages)} languages.")
