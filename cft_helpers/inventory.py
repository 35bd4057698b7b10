"""What a run store holds, stage by stage: ``python -m cft_helpers.inventory show RUN_DIR``.

Every file of a store is placed in one stage of the layout that :mod:`cft_helpers.runs`
describes, with what deleting it costs (keep, recomputed, safe); a stage's status (done,
partial, stale, running) is judged from the store alone, reading nothing but its files. A file
no stage writes is listed as unknown.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from cft_helpers.files import read_json, stable_hash
from cft_helpers.lock import KERNEL_LOCK, LOCK_NAME, RunLocked, check_run_lock
from cft_helpers.runs import ARM_FILES, MANIFEST, RunStore


KEEP, RECOMPUTED, SAFE = "keep", "recomputed", "safe"
_ID = r"[^/]+"
# The layout, relative to a store, as RunStore's accessors build it: a name of an arm, model,
# suite, dataset... goes in as a marker and comes out as a regex group.
_S = RunStore("", create=False)
_NAMES = ("arm", "model", "suite", "dataset", "key", "set", "split", "ident")


def _rx(path: Path, tail: str = "") -> str:
    """The regex of a path an accessor built with ``@<name>@`` markers: each becomes a group
    (named for arm, model and suite, the stage labels' fields); ``tail`` is appended as is."""
    rx = re.escape(path.as_posix())
    for name in _NAMES:
        group = f"(?P<{name}>{_ID})" if name in ("arm", "model", "suite") else _ID
        rx = rx.replace(re.escape(f"@{name}@"), group, 1)
    return rx + tail


def _any(*paths: Path) -> str:
    return "(" + "|".join(_rx(p) for p in paths) + ")"


A, M = "@arm@", "@model@"
# (regex over the path relative to the store, stage label (formatted with the groups), delete)
# in the order of runs.py's layout; the first match places a file.
PLACES: tuple[tuple[str, str, str], ...] = (
    (_rx(_S.params_file), "book", SAFE),
    (_rx(_S.lock_file), "book", KEEP),
    (re.escape(KERNEL_LOCK), "book", KEEP),
    (_rx(_S.book_timing), "book", SAFE),
    (_rx(_S.book_log), "book", SAFE),
    (_rx(_S.progress_file), "book", SAFE),
    (_any(_S.data_dir / MANIFEST, _S.data_report, _S.data_file("@dataset@", "@split@")), "data", RECOMPUTED),
    (_rx(_S.arm_dir(A), "/(" + "|".join(re.escape(n) for n in ARM_FILES) + ")"), "arm {arm}", KEEP),
    (_rx(_S.arm_dir(A), "/(" + "|".join(re.escape(p.name) for p in (_S.arm_model_dir(A), _S.arm_adapter_dir(A)))
         + ")/.+"), "arm {arm}", KEEP),
    (_rx(_S.replay_dir(A), "/(" + "|".join(re.escape(p.name) for p in (_S.replay_file(A), _S.replay_summary(A)))
         + r"|generations(\.rank\d+)?\.jsonl)"), "arm {arm}", KEEP),
    (_rx(_S.arm_checkpoints_dir(A), "/.+"), "arm {arm}", KEEP),  # safe once the arm is done
    (_rx(_S.arm_tracker_dir(A), "/.+"), "arm {arm}", SAFE),
    (_rx(_S.eval_summary), "eval summary", RECOMPUTED),
    (_rx(_S.eval_tasks_dir("@suite@"), "/.+"), "eval tasks {suite}", RECOMPUTED),
    (_rx(_S.alpacaeval_dir, f"/(answers-{_ID}\\.jsonl|judge-{_ID}/.+)"), "eval alpacaeval", RECOMPUTED),
    (_rx(_S.eval_samples(M)), "eval {model}", RECOMPUTED),
    (_rx(_S.eval_result(M)), "eval {model}", RECOMPUTED),
    (_any(_S.des_file, _S.mpd_file, _S.similarity_summary), "similarity", RECOMPUTED),
    (_rx(_S.similarity_embeddings("@dataset@", "@key@")), "similarity", RECOMPUTED),
    (_any(_S.representations_summary, _S.representations_file("@set@", "@model@")), "representations", RECOMPUTED),
    (_rx(_S.heldout_loss_file), "held-out loss", RECOMPUTED),
    (_rx(_S.losses_before_training_file), "losses before training", RECOMPUTED),
    (_any(_S.findings_json, _S.findings_md), "findings", RECOMPUTED),
    (_rx(_S.figures_dir, rf"/({_ID}\.(html|png|svg|pdf|jpe?g|webp)|findings\.md|plotly\.min\.js)"), "figures", RECOMPUTED),
    (_rx(_S.notebooks_dir, rf"/{_ID}\.ipynb"), "notebooks", SAFE),
    (_rx(_S.logs_dir, rf"/{_ID}\.log") + "|" + _rx(_S.schedule_file), "logs", SAFE),
    (_rx(_S.submitit_dir, "/.+"), "submitit", KEEP),
)
_PLACES = [(re.compile(p), stage, delete) for p, stage, delete in PLACES]
_RANK = {stage: i for i, (_, stage, _) in reversed(list(enumerate(PLACES)))}  # a stage's first place
_SEED = re.compile(r"seeds/seed-\d+")


def _leftover(rel: str) -> bool:
    """A temporary file of an interrupted atomic write (atomic_write_text, KeyedFile, plots,
    the similarity embeddings of before KeyedFile) or of a final checkpoint (``.model.tmp/``)."""
    name = rel.rsplit("/", 1)[-1]
    return "/.model.tmp/" in f"/{rel}" or (name.startswith(".") and ".tmp" in name) or ".tmp." in name


def place_of(rel: str) -> tuple[str, str] | None:
    """(stage, delete) of a file by its path relative to the store; None for an unknown file.
    (The files of ``seeds/seed-<s>/``, a run store each, are placed relative to that store.)"""
    where = _place(rel)
    return None if where is None else where[:2]


def _place(rel: str) -> tuple[str, str, int] | None:
    """(stage, delete, rank in the layout) of a file; None for an unknown file."""
    if _leftover(rel):
        return "leftovers", SAFE, len(_PLACES)
    for rx, stage, delete in _PLACES:
        m = rx.fullmatch(rel)
        if m:
            return stage.format(**m.groupdict()), delete, _RANK[stage]
    return None


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def inventory(root: Path | str) -> dict[str, Any]:
    """What a run store holds: ``{"root", "stages": {label: {"status", "notes", "files", "bytes",
    "delete": {keep|recomputed|safe: bytes}}}, "unknown": [(path, bytes)], "safe": [(what,
    bytes)]}``; every file is placed in one stage or listed as unknown. Reads only. An extra
    seed's store (``seeds/seed-<s>/``) is inventoried the same way, its labels prefixed."""
    root = Path(root)
    stages: dict[str, dict[str, Any]] = {}
    unknown: list[tuple[str, int]] = []
    files: dict[str, list[tuple[str, int]]] = {}
    seeds: list[str] = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        rel_folder = Path(folder).relative_to(root).as_posix()
        if rel_folder == "seeds":
            seeds += [f"seeds/{d}" for d in dirs if _SEED.fullmatch(f"seeds/{d}")]
            dirs[:] = [d for d in dirs if not _SEED.fullmatch(f"seeds/{d}")]
        for name in sorted(names):
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            size = path.lstat().st_size
            where = _place(rel)
            if where is None:
                unknown.append((rel, size))
                continue
            stage, delete, rank = where
            files.setdefault(stage, []).append((rel, size))
            s = stages.setdefault(stage, {"status": "", "notes": [], "files": 0, "bytes": 0, "delete": {},
                                          "rank": rank})
            s["rank"] = min(s["rank"], rank)
            s["files"] += 1
            s["bytes"] += size
            s["delete"][delete] = s["delete"].get(delete, 0) + size
    stages = dict(sorted(stages.items(), key=lambda kv: (kv[1].pop("rank"), kv[0])))  # the layout's order
    safe = _judge(root, stages, files)
    for seed in seeds:
        inner = inventory(root / seed)
        stages.update({f"{seed} {label}": s for label, s in inner["stages"].items()})
        unknown += [(f"{seed}/{rel}", n) for rel, n in inner["unknown"]]
        safe += [(f"{seed}/{what}", n) for what, n in inner["safe"]]
    return {"root": str(root), "stages": stages, "unknown": unknown, "safe": safe}


def _judge(root: Path, stages: dict[str, dict], files: dict[str, list[tuple[str, int]]]) -> list[tuple[str, int]]:
    """Fill in each stage's status and notes (done / partial / stale where the store alone
    tells); returns what is safe to delete, (relative path or description, bytes)."""
    safe: list[tuple[str, int]] = []
    declared: set[str] | None = None
    if (root / "params.yaml").exists():
        import yaml

        try:
            declared = set((yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8")) or {}).get("arms") or {})
        except (yaml.YAMLError, AttributeError):
            declared = None

    def manifest(path: Path) -> dict[str, Any] | None:
        try:
            return read_json(path) if path.exists() else None
        except (json.JSONDecodeError, OSError):
            return None

    def arm_hash(arm: str) -> str | None:
        m = manifest(root / "arms" / arm / "manifest.json")
        return m.get("input_hash") if m and m.get("status") == "done" else None

    suites_used: set[str] = set()
    for label, s in stages.items():
        kind, _, name = label.partition(" ")
        own = files.get(label, [])
        if label == "data" or kind == "arm":
            m = manifest(root / ("data" if label == "data" else f"arms/{name}") / "manifest.json")
            s["status"] = (m or {}).get("status", "partial (no manifest)")
        if label == "data":
            pass
        elif kind == "arm":
            ckpt = [(p, n) for p, n in own if "/checkpoints/" in p]
            if ckpt and s["status"] == "done":
                s["notes"].append("checkpoints/ left over: safe to delete")
                s["delete"][KEEP] -= sum(n for _, n in ckpt)
                s["delete"][SAFE] = s["delete"].get(SAFE, 0) + sum(n for _, n in ckpt)
                safe.append((f"arms/{name}/checkpoints/", sum(n for _, n in ckpt)))
            elif ckpt:
                s["notes"].append("checkpoints/ resume the interrupted training")
            if declared is not None and name not in declared:
                s["notes"].append("not an arm of params.yaml")
        elif kind == "eval" and not name.startswith("tasks ") and name not in ("summary", "alpacaeval"):
            result = root / "eval" / f"{name}.json"
            record = manifest(result)
            if record is None:
                s["status"] = "partial (answers without results)"
            else:
                suites_used.add(record.get("suite", ""))
                ident = arm_hash(name)
                if (root / "arms" / name).is_dir() and (
                        ident is None or record.get("key") != stable_hash({"model": ident, "suite": record.get("suite")})):
                    s["status"] = "stale"
                    s["notes"].append("the arm was retrained (or is not done) since")
                else:
                    s["status"] = "done"
        elif label in ("similarity", "representations", "findings"):
            need = {"similarity": ["similarity/summary.json"], "representations": ["representations/summary.json"],
                    "findings": ["findings.json", "findings.md"]}[label]
            s["status"] = "done" if all((root / p).exists() for p in need) else "partial"
        elif label == "book":
            s["status"] = "done" if (root / "book_timing.json").exists() else "partial"
            if (root / LOCK_NAME).exists():
                try:
                    check_run_lock(root)
                    s["notes"].append(f"{LOCK_NAME}: its book is gone (stale): safe to delete")
                    safe.append((LOCK_NAME, (root / LOCK_NAME).stat().st_size))
                except RunLocked:
                    s["status"] = "running"
                    s["notes"].append(f"{LOCK_NAME}: a book runs on this store now")
        elif label in ("notebooks", "logs", "leftovers"):
            s["status"] = f"{s['files']} files"
            safe.append((label + ("/" if label != "leftovers" else " (interrupted writes)"), s["bytes"]))
        else:
            s["status"] = "done"
    for label, s in stages.items():  # what needs every evaluation record first
        if label.startswith("eval tasks "):
            suite = label.split(" ", 2)[2]
            s["status"] = "done" if (root / "eval" / "tasks" / suite / "written.json").exists() else "partial"
            if suite not in suites_used:
                s["notes"].append("no evaluation result uses this suite: safe to delete")
                s["delete"] = {SAFE: s["bytes"]}
                safe.append((f"eval/tasks/{suite}/", s["bytes"]))
    if "similarity" in stages:
        by_dataset: dict[str, list[tuple[float, str, int]]] = {}
        for rel, n in files["similarity"]:
            if rel.startswith("similarity/embeddings/"):
                dataset = rel.rsplit("/", 1)[1].rsplit(".", 2)[0]
                by_dataset.setdefault(dataset, []).append(((root / rel).stat().st_mtime, rel, n))
        old = [(rel, n) for entries in by_dataset.values() for _, rel, n in sorted(entries)[:-1]]
        if old:
            stages["similarity"]["notes"].append(f"{len(old)} older embeddings of a dataset: safe to delete")
            safe += old
        _stale_entries(stages["similarity"], root / "similarity" / "mpd.json", arm_hash, ((0, 1), (2, 3)), "MPD")
    if "held-out loss" in stages:
        _stale_entries(stages["held-out loss"], root / "heldout_loss.json", arm_hash, ((0, 1),), "held-out")
    if "losses before training" in stages:
        n = len(manifest(root / "losses_before_training.json") or {})
        stages["losses before training"]["notes"].append(f"{n} entries")
    return safe


def _stale_entries(stage: dict, path: Path, arm_hash, pairs, what: str) -> None:
    """Count the entries of a ``|``-keyed cache (``arm|input hash|...``) whose arm was retrained."""
    if not path.exists():
        return
    try:
        cache = read_json(path) if path.exists() else {}
    except (json.JSONDecodeError, OSError):
        stage["status"] = "partial"
        return
    stale = 0
    for key in cache:
        parts = key.split("|")
        for i, j in pairs:
            if len(parts) > j and arm_hash(parts[i]) not in (None, parts[j]):
                stale += 1
                break
    stage["notes"].append(f"{what}: {len(cache)} entries" + (f", {stale} of arms retrained since" if stale else ""))


def show(root: Path | str) -> str:
    """``inventory`` as text: one line per stage, then what is safe to delete and the unknown files."""
    inv = inventory(root)
    stages = inv["stages"]
    total = sum(s["bytes"] for s in stages.values()) + sum(n for _, n in inv["unknown"])
    width = max([len(k) for k in stages] + [10])
    lines = [f"run store {inv['root']}: {_size(total)} in "
             f"{sum(s['files'] for s in stages.values()) + len(inv['unknown'])} files", "",
             f"{'stage':<{width}}  {'status':<14} {'files':>5} {'size':>9}  if deleted"]
    for label, s in stages.items():
        delete = ", ".join(f"{k} {_size(v)}" if len(s["delete"]) > 1 else k
                           for k, v in s["delete"].items() if v)
        lines.append(f"{label:<{width}}  {s['status']:<14} {s['files']:>5} {_size(s['bytes']):>9}  {delete}")
        lines += [f"{'':<{width}}    {note}" for note in s["notes"]]
    lines += ["", "if deleted: keep = expensive to remake (trained models, the arms' records); recomputed = "
              "the book rebuilds it when missing; safe = never read back"]
    lines += ["", f"safe to delete now ({_size(sum(n for _, n in inv['safe']))}):"]
    lines += [f"  {what} ({_size(n)})" for what, n in inv["safe"]] or ["  nothing"]
    lines += ["", f"unknown ({len(inv['unknown'])}): files no stage of the layout writes"]
    lines += [f"  {rel} ({_size(n)})" for rel, n in inv["unknown"]] or ["  none"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m cft_helpers.inventory", description="The run store's contents.")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("show", help="every stage of a run store: status, size, what is safe to delete")
    p.add_argument("run_dir", help="a run store (params.run_dir, e.g. runs/default)")
    ns = ap.parse_args(argv)
    if not Path(ns.run_dir).is_dir():
        print(f"error: {ns.run_dir} is not a folder", file=sys.stderr)
        return 2
    print(show(ns.run_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
