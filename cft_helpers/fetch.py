"""One download step before a multi-GPU launch: every hub model and dataset a parameter set uses.

    python -m cft_helpers.fetch --params params/paper/mistral7b.yaml            # download, print commits
    python -m cft_helpers.fetch --params params/paper/mistral7b.yaml --prepare  # ... and prepare the data
    python -m cft_helpers.fetch --params params/paper/mistral7b.yaml --dry-run  # only list what it would fetch

Each repository is downloaded once (a repository two entries share, e.g. OpenOrca for ``openorca``
and ``openorca_replay``, once for both) into the Hugging Face cache (``HF_HOME`` /
``HF_HUB_CACHE``: put it on a file system every node sees), through the same
:func:`cft_helpers.hub.snapshot` request the loaders make, so that later processes, the 8 ranks of
a launch included, find the files offline (``HF_HUB_OFFLINE=1``). It prints the commit sha each
revision resolved to, and the ``revision:`` lines that pin them, and records them in
``<cache_dir>/hub/fetch-<params name>.json``.

What it fetches: the ``models:`` entries with ``source: hub``; the ``datasets:`` entries with a hub
id (not a local folder; an entry without a path is left out by the params, with a note); the
representation prompts and parallel sentences when they are on the hub; a hub DES embedder
(``similarity.embedder``). With ``--benchmarks`` (default on) it also builds the lm-eval tasks of
the ``lm_eval`` and ``cft`` benchmarks once, which downloads their datasets into the ``datasets``
cache, and loads a hub AlpacaEval reference: those follow the revisions lm-eval's task configs
name. ``--prepare`` then prepares the data (notebook 01's stage), so that no rank of a launch has
to. A gated repository (Llama-3, FLORES+) without a token fails naming it, ``HF_TOKEN`` and
``hf auth login``; every other item is still fetched, and the exit code is 1.

The evaluation harness and lm-eval (torch) are imported inside :func:`fetch_benchmarks`, so that
``--no-benchmarks`` and ``--dry-run`` start without them.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from typing import Sequence

from huggingface_hub import constants

from cft_helpers import hub
from cft_helpers.data.loaders import dataset_request
from cft_helpers.data.prepare import prepare_datasets, report_totals
from cft_helpers.hub import HubRequest
from cft_helpers.models import hub_request
from cft_helpers.params import HubDataset, HubModel, HubParallel, HubPrompts, Params, ParamsError, load_params
from cft_helpers.files import atomic_write_json

# A sentence-transformers model's files (modules, pooling and dense layers, tokenizer, safetensors),
# not its ONNX / OpenVINO exports.
EMBEDDER_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*", "1_Pooling/*", "2_Dense/*")
BUILTIN_EMBEDDERS = ("use-multilingual-v3",)


@dataclass
class Item:
    """One download and the params keys that need it (``models.base``, ``datasets.openorca``, ...)."""

    request: HubRequest
    keys: list[str] = field(default_factory=list)
    # (key, revision field) pairs to pin with the resolved commit
    pins: list[str] = field(default_factory=list)


def hub_items(params: Params) -> list[Item]:
    """Every hub download of the params, one per repository and revision (allowed files merged)."""
    items: dict[tuple[str, str, str | None], Item] = {}

    def add(req: HubRequest, key: str, pin: str | None) -> None:
        k = (req.repo_type, req.repo_id, req.revision)
        if k in items:
            old = items[k].request
            # two entries of one repository: the union of their files (None: all of them)
            merged = None if old.allow_patterns is None or req.allow_patterns is None else \
                tuple(sorted(set(old.allow_patterns) | set(req.allow_patterns)))
            items[k].request = HubRequest(req.repo_id, req.repo_type, req.revision, merged)
        else:
            items[k] = Item(req)
        items[k].keys.append(key)
        if pin:
            items[k].pins.append(pin)

    for name, m in params.models.items():
        if isinstance(m, HubModel):
            add(hub_request(m), f"models.{name}", f"models.{name}.revision")
    for name, d in params.datasets.items():
        if isinstance(d, HubDataset) and d.path and hub.is_hub_id(d.path):
            add(dataset_request(d.path, d.revision, (d.data_files or {}).values()), f"datasets.{name}",
                f"datasets.{name}.revision")
    rep = params.representations
    if isinstance(rep.prompts, HubPrompts) and hub.is_hub_id(rep.prompts.path):
        add(dataset_request(rep.prompts.path, rep.prompts.revision), "representations.prompts",
            "representations.prompts.revision")
    if isinstance(rep.parallel, HubParallel) and hub.is_hub_id(rep.parallel.path):
        add(dataset_request(rep.parallel.path, rep.parallel.revision, (rep.parallel.data_files or {}).values()),
            "representations.parallel", "representations.parallel.revision")
    emb = params.similarity.embedder
    if emb not in BUILTIN_EMBEDDERS and hub.is_hub_id(emb):
        add(HubRequest(emb, "model", None, EMBEDDER_PATTERNS), "similarity.embedder", None)
    return list(items.values())


def fetch(params: Params, say=print) -> tuple[list[dict], list[str]]:
    """Download every hub item of the params; returns (records, errors). A failure does not stop
    the others: one run names every gated repository at once."""
    records, errors = [], []
    for item in hub_items(params):
        req = item.request
        try:
            snap = hub.snapshot(req)
        except hub.HubError as exc:
            errors.append(str(exc))
            say(f"FAILED {req.label()} ({', '.join(item.keys)}): {exc}")
            continue
        records.append({"repo_id": req.repo_id, "repo_type": req.repo_type, "revision": req.revision,
                        "commit": snap.sha, "folder": str(snap.folder), "for": item.keys, "pins": item.pins})
        say(f"fetched {req.label()} -> commit {snap.sha}  ({', '.join(item.keys)})  {snap.folder}")
    return records, errors


def fetch_benchmarks(params: Params, say=print) -> list[str]:
    """Build the lm-eval tasks of the ``lm_eval`` and ``cft`` benchmarks once (each downloads its
    dataset into the ``datasets`` cache as an evaluation would) and load a hub AlpacaEval reference;
    returns the names done."""
    from cft_helpers.evaluation.harness import task_plan, write_suite  # lm-eval and torch: only when asked

    done: list[str] = []
    plan = task_plan(params)
    benches = params.evaluation.benchmarks
    names = [t for b, tasks in plan.items() if benches[b].source in ("lm_eval", "cft") for t, _ in tasks]
    if names:
        from lm_eval.tasks import TaskManager

        folder = write_suite(params)  # the cft tasks' YAML
        include = [str(folder), *(str(params.path(p)) for p in params.evaluation.include_paths)]
        manager = TaskManager(include_path=include,
                              include_defaults=any(b.source == "lm_eval" for b in benches.values()))
        built = manager.load(names)["tasks"]  # each task's __init__ downloads its dataset
        say(f"benchmarks: {len(built)} lm-eval tasks built, their datasets cached ({', '.join(names)})")
        done += names
    ae = benches.get("alpacaeval")
    if ae is not None and ae.source == "alpaca_eval" and ae.reference is not None and ae.reference.source == "hub":
        from cft_helpers.evaluation.alpacaeval import reference_rows

        rows = reference_rows(ae.reference, params.cache, params.path("."))
        say(f"benchmarks: AlpacaEval reference {ae.reference.path}: {len(rows)} instructions cached")
        done.append("alpacaeval")
    return done


def pin_lines(records: list[dict]) -> list[str]:
    """``--set key=<commit>`` for every fetched entry whose revision is not already that commit."""
    return [f"--set {pin}={r['commit']}" for r in records if r["commit"] and r["revision"] != r["commit"]
            for pin in r["pins"]]


def record_path(params: Params):
    return params.cache.fetch_record(params.name)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cft_helpers.fetch",
                                 description="Download every hub model and dataset of a parameter set once, "
                                             "into the Hugging Face cache, and print the commits they resolved to.")
    ap.add_argument("--params", required=True, help="params YAML file or preset name")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="override, e.g. datasets.mopenorca.path=org/name (repeatable)")
    ap.add_argument("--dry-run", action="store_true", help="list what would be fetched, download nothing")
    ap.add_argument("--benchmarks", action=argparse.BooleanOptionalAction, default=True,
                    help="also cache the lm-eval / cft benchmark datasets and a hub AlpacaEval reference")
    ap.add_argument("--prepare", action="store_true",
                    help="then prepare the data into the run store (notebook 01's stage)")
    ns = ap.parse_args(argv)
    try:
        params = load_params(ns.params, overrides=ns.overrides)
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    items = hub_items(params)
    if ns.dry_run:
        for item in items:
            print(f"would fetch {item.request.label()}  ({', '.join(item.keys)})")
        if not items:
            print("nothing on the hub in these params")
        return 0
    if constants.HF_HUB_OFFLINE:  # read at import: the variable as this process started
        print("note: HF_HUB_OFFLINE is set: nothing can be downloaded, this only checks that the HF "
              "cache holds everything (unset it to fetch)", file=sys.stderr)
    records, errors = fetch(params)
    if ns.benchmarks and not errors:
        try:
            fetch_benchmarks(params)
        except Exception as exc:  # the models and data are fetched; say what is missing and go on
            errors.append(f"benchmarks: {type(exc).__name__}: {exc}")
            print(f"FAILED benchmarks: {type(exc).__name__}: {exc}")
    out = record_path(params)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, {"params": params.source_path, "overrides": params.overrides,
                            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "fetched": records,
                            "errors": errors})
    print(f"{len(records)} of {len(items)} repositories fetched; record: {out}")
    pins = pin_lines(records)
    if pins:
        print("to pin these commits (reproducible reruns), set the revisions in the params file or pass:\n  "
              + " \\\n  ".join(pins))
    if errors:
        print(f"{len(errors)} failed; see the messages above", file=sys.stderr)
        return 1
    if ns.prepare:
        report = prepare_datasets(params)
        print(f"data prepared in {params.store.data_dir}: {report_totals(report)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
