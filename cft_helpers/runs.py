"""The run store: one folder per run, one sub-folder per stage (data, each arm), never lost work.

``RunStore`` owns the layout: every module asks it for a path by name (``store.eval_result(m)``,
``store.heldout_loss_file``, ...) and builds none itself. ``python -m cft_helpers.runs show
RUN_DIR`` prints what a store holds, stage by stage, with status, size and what may be deleted.

Layout under ``params.run_dir`` (e.g. ``runs/default/``). *Delete*: **keep** (expensive or the
record of the run), **recomputed** (a result or cache the book rebuilds when it is missing, at
the cost named), **safe** (never read back)::

    params.yaml                    book.py: the resolved params of the last book run      safe
    book.lock                      lock.py: held while a book runs (stale once its        keep while
                                   process is gone: the next book takes it over)          a book runs
    book_timing.json               book.py: wall seconds per notebook                     safe
    book.log                       book.py: every line the book showed, with the time     safe
    progress.jsonl                 progress.py: the running stages' progress events       safe
    data/                          data/prepare.py (notebook 01), a stage:                recomputed
      manifest.json                  status and input hash                                (seconds; arms
      report.json                    rows per language, a content hash per file           stay valid)
      <dataset>.train.jsonl, <dataset>.heldout.jsonl
    arms/<arm>/                    train.py (notebooks 02, 03, 04), a stage per arm:
      manifest.json                  status, input hash, git commit, versions, times      keep
      params.json, metrics.json      the resolved arm; its losses, steps, parameters      keep
      train_log.jsonl                the Trainer's log history                            keep
      model/                         the final checkpoint (safetensors + tokenizer)       keep: hours of
                                                                                          training
      adapter/                       LoRA: the adapter (model/ holds it merged)           keep
      freeze.json                    LF_H1 / LF_H2 / Spectrum: the tensors frozen         keep
      spectrum_snr.json, unfrozen.yaml  Spectrum: SNR per tensor, the tensors it trains   keep
      replay/                        replay.py (GR_5, GR_10, ER_10): replay.jsonl,        keep
                                     summary.json, generations.jsonl (GR: Phase-1 answers;
                                     generations.rank<k>.jsonl: process k's share in a launch)
      checkpoints/                   Trainer checkpoints to resume a killed run,          safe once the
                                     eval_before.json; removed when the arm is done       arm is done
      tracker/                       training.report_to tensorboard: its event files      safe (the
                                     (events.out.tfevents.*), the curves of the arm       losses are in
                                                                                          train_log.jsonl)
    eval/                          evaluation/harness.py (notebook 06):
      <model>.json                   every metric of one model, keyed (``key``) by the    recomputed
                                     model's identity and the suite's hash                (the suite's run)
      <model>.samples.jsonl          per-item answers and scores (findings read these)    recomputed
      summary.json                   EA, MA, combined per model                           recomputed
      tasks/<suite hash>/            the suite's offline task files, written.json last    recomputed
      alpacaeval/                    evaluation/alpacaeval.py: answers-<model>-<id>.jsonl recomputed (a
                                     (generation cache), judge-<id>/ (judge verdicts)     judge's API calls)
    similarity/                    similarity.py (notebook 05): des.json, mpd.json        recomputed
                                   (keyed by the arms' input hashes), summary.json,
                                   embeddings/<dataset>.<key>.npy (an older key of the    safe
                                   same dataset is never read again)
    representations/               representations.py (notebook 07):                      recomputed
      <set>/<model>.npz              activations per prompt set, keyed (``key``) by the   (one pass per
                                     model, texts and settings                            model)
      summary.json                   what notebook 08 draws
    heldout_loss.json              heldout.py (notebook 03): key -> loss                  recomputed
    losses_before_training.json    train.py: key -> loss before training, shared by the   recomputed
                                   arms that start from one model (merged under a lock)   (on retraining)
    findings.json, findings.md     findings.py (notebook 09)                              recomputed
    figures/                       plots.py (notebook 08) when ``figures.dir`` is unset:  recomputed
                                   HTML, PNG, SVG, and plotly.min.js the HTML files load
    notebooks/                     book.py: the executed notebooks                        safe
    logs/                          schedule.py: <kind>-<name>.log per job, schedule.json  safe
    seeds/seed-<s>/                book.py --seeds: one whole run store per extra seed    as above

A leftover of an interrupted write (``.<name>.<random>.tmp``, ``.<name>.tmp.<ext>``,
``.model.tmp/``) is safe to delete when no book runs.

A stage is *done* only when its manifest says ``status: done`` with the same input hash as now;
the manifest is written atomically (write, then rename) and only after every output is in place,
so a crash or a kill at any point leaves the stage not done. Rerunning a stage whose inputs are
unchanged and complete is skipped; ``force=True`` reruns it from scratch.

Every other skip-if-done is a *keyed cache*: a result is reused while its key (a hash of what it
depends on) is the one asked for. ``KeyedFile`` holds one result per file, its key inside
(``eval/<model>.json``: field ``key``; ``representations/<set>/<model>.npz``: array ``key``) or
in its name (``similarity/embeddings/<dataset>.<key>.npy``); ``KeyedCache`` holds many in one
JSON file, key -> value, merged under a lock so that parallel workers lose none
(``heldout_loss.json``, ``losses_before_training.json``, ``similarity/mpd.json``).

Imports :mod:`cft_helpers.lock` and :mod:`cft_helpers.params` inside functions: lock imports this
module, and params imports it through the strategy registry (params -> mitigation -> spectrum).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "transformers", "trl", "datasets", "peft", "accelerate", "tokenizers")
LOCK_NAME = "book.lock"  # the book's lock (lock.py), held while a book runs on the store
# The files of an arm's folder (folders apart: model/, adapter/, checkpoints/, replay/, tracker/).
ARM_FILES = ("manifest.json", "params.json", "metrics.json", "train_log.jsonl", "freeze.json",
             "spectrum_snr.json", "unfrozen.yaml")


class MissingArtifact(FileNotFoundError):
    """Something a read-only step needs is not in the run store; the message says what is
    missing and which notebook writes it."""


class DiskSpaceError(OSError):
    """Not enough free disk for what is about to be written; says how much is needed."""


def ensure_free_space(path: Path | str, need_bytes: float, what: str) -> None:
    """Refuse to start writing ``what`` under ``path`` when the disk has less than ``need_bytes``
    free: an hour of training must not end in a half-written checkpoint."""
    import shutil as _shutil

    path = Path(path)
    probe = path
    while not probe.exists():
        probe = probe.parent
    free = _shutil.disk_usage(probe).free
    if free < need_bytes:
        raise DiskSpaceError(f"{what} needs about {need_bytes / 1e9:.2f} GB under {path}, but only "
                             f"{free / 1e9:.2f} GB are free there; free space or point run_dir elsewhere")


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so that readers see the old content or the new one, never a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def update_json(path: Path, updates: dict[str, Any]) -> dict[str, Any]:
    """Merge ``updates`` into the JSON object in ``path`` (created if absent) and return it. The
    read and the write happen under a lock of the folder, so processes that add their own keys
    to one shared file at the same time (arms trained in parallel) lose none."""
    from cft_helpers.lock import locked_dir

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked_dir(path.parent):
        current = read_json(path) if path.exists() else {}
        current.update(updates)
        atomic_write_json(path, current)
    return current


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# --------------------------------------------------------------------------- keyed caches


class KeyedFile:
    """One cached result in one file, valid while its key is the one asked for.

    Where the key lives depends on the format (the formats of the run stores written so far):

    - ``.json``: a JSON object with a field ``key`` (``eval/<model>.json``);
    - ``.npz``: an array named ``key`` beside the result's arrays (``representations/...npz``);
    - any other suffix (``.npy``): the key is part of the file name
      (``similarity/embeddings/<dataset>.<key>.npy``), so the file's existence is its validity.

    Writes are atomic (a temporary file, then a rename): a reader sees the old result or the new
    one, and a killed write leaves no torn file that would read as valid."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.kind = {".json": "json", ".npz": "npz"}.get(self.path.suffix, "name")

    def read(self, key: str) -> Any | None:
        """The cached result for ``key``: the JSON object, a dict of the ``.npz`` arrays (``key``
        included) or the ``.npy`` array; None when the file is absent or holds another key."""
        if not self.path.exists():
            return None
        if self.kind == "json":
            record = read_json(self.path)
            return record if isinstance(record, dict) and record.get("key") == key else None
        import numpy as np

        if self.kind == "npz":
            with np.load(self.path, allow_pickle=False) as z:
                if "key" not in z.files or str(z["key"]) != key:
                    return None  # the key first: a stale file's large arrays are never read
                return {name: z[name] for name in z.files}
        self._check_name(key)
        return np.load(self.path, allow_pickle=False)

    def write(self, key: str, value: Any) -> Any:
        """Store ``value`` under ``key`` and return what was stored: a dict for ``.json`` (its
        ``key`` field set) and for ``.npz`` (name -> array; ``key`` stays where the dict has it,
        else it comes last), an array for a file whose name holds the key."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.kind == "json":
            value = {**value, "key": key}  # (a "key" already there keeps its place)
            atomic_write_json(self.path, value)
            return value
        import numpy as np

        suffix = ".tmp.npz" if self.kind == "npz" else ".tmp" + self.path.suffix
        if self.kind == "name":
            self._check_name(key)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.stem}.", suffix=suffix)
        os.close(fd)
        try:
            if self.kind == "npz":
                value = {**value, "key": np.array(key)}
                np.savez(tmp, **value)
            else:
                np.save(tmp, value, allow_pickle=False)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return value

    def get(self, key: str, compute, force: bool = False) -> Any:
        """The result for ``key``: read back when cached (and not ``force``), else ``compute()``d
        once and written."""
        if not force:
            hit = self.read(key)
            if hit is not None:
                return hit
        return self.write(key, compute())

    def _check_name(self, key: str) -> None:
        if key not in self.path.name:
            raise ValueError(f"{self.path}: a {self.path.suffix} file holds no key, so its name must: "
                             f"{key!r} is not in it")


class KeyedCache:
    """Many cached results in one JSON object, key -> value (``heldout_loss.json``,
    ``losses_before_training.json``, ``similarity/mpd.json``).

    Values are added by a read-merge-write under a lock of the folder (``update_json``), so
    processes that compute different keys at the same time (the book's parallel workers) all
    keep theirs. A value is computed once per key; a key already present is never recomputed."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def load(self) -> dict[str, Any]:
        """Every cached key and value (a snapshot: other processes may add keys later)."""
        return read_json(self.path) if self.path.exists() else {}

    def lookup(self, keys) -> dict[str, Any]:
        """The cached values among ``keys`` (absent keys are left out)."""
        cache = self.load()
        return {k: cache[k] for k in keys if k in cache}

    def add(self, values: dict[str, Any]) -> dict[str, Any]:
        """Merge ``values`` into the file (others' keys kept); returns the whole cache."""
        return update_json(self.path, values) if values else self.load()

    def get(self, key: str, compute) -> Any:
        """The value of ``key``: cached, or ``compute()``d once and added."""
        got = self.lookup([key])
        if key in got:
            return got[key]
        value = compute()
        self.add({key: value})
        return value

    def get_many(self, keys: dict[str, str], compute) -> dict[str, Any]:
        """name -> value for ``keys`` (name -> key): the cached ones read back, the others from
        one ``compute(missing names)`` call (which returns name -> value) and added together."""
        got = self.lookup(keys.values())
        missing = [name for name, k in keys.items() if k not in got]
        if missing:
            computed = compute(missing)
            new = {keys[name]: computed[name] for name in missing}
            self.add(new)
            got.update(new)
        return {name: got[k] for name, k in keys.items()}


def git_commit(root: Path | str | None = None) -> dict[str, Any]:
    """The commit the code ran at, and whether the work tree had uncommitted changes."""
    root = str(root or Path(__file__).resolve().parents[1])
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip() != ""
        return {"commit": sha or None, "dirty": dirty if sha else None}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def package_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for p in PACKAGES:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = None
    return out


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class Stage:
    """One unit of work in the run store with an input hash and a status.

    Typical use::

        stage = store.stage("arms/p1_alpaca", input_hash)
        if stage.is_done() and not force:
            return stage.outputs()
        stage.begin(force=force)          # wipes stale outputs if the inputs changed
        try:
            ...                            # write into stage.dir
            stage.finish({"metric": 1.0})  # status: done (atomic)
        except BaseException as e:
            stage.fail(e)                  # status: failed, with the traceback
            raise
    """

    def __init__(self, directory: Path, input_hash: str, commit_root: Path | None = None):
        self.dir = Path(directory)
        self.input_hash = input_hash
        self.manifest_path = self.dir / "manifest.json"
        self._commit_root = commit_root

    @property
    def name(self) -> str:
        return self.dir.name

    def manifest(self) -> dict[str, Any] | None:
        if not self.manifest_path.exists():
            return None
        try:
            return read_json(self.manifest_path)
        except (json.JSONDecodeError, OSError):
            return None  # a torn manifest can only come from outside: treat as not done

    def status(self) -> str:
        m = self.manifest()
        if m is None:
            return "missing"
        if m.get("input_hash") != self.input_hash:
            return "stale"
        return m.get("status", "unknown")

    def is_done(self) -> bool:
        return self.status() == "done"

    def outputs(self) -> dict[str, Any]:
        m = self.manifest() or {}
        return m.get("outputs", {})

    def begin(self, force: bool = False, keep: tuple[str, ...] = ("checkpoints",)) -> bool:
        """Mark the stage running. Returns True when earlier partial work can be resumed.

        With ``force`` or changed inputs the folder is emptied first; otherwise partial work
        named in ``keep`` (Trainer checkpoints) stays, so training resumes where it stopped.
        """
        m = self.manifest()
        resumable = (not force and m is not None and m.get("input_hash") == self.input_hash
                     and m.get("status") in ("running", "failed"))
        if not resumable and self.dir.exists():
            for child in self.dir.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        elif resumable:
            for child in self.dir.iterdir():  # outputs of the failed attempt, except what resumes
                if child.name not in keep and child.name != "manifest.json":
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        self.dir.mkdir(parents=True, exist_ok=True)
        attempts = (m or {}).get("attempts", 0) + 1 if resumable else 1
        self._write(status="running", started=_now(), attempts=attempts)
        return resumable

    def finish(self, outputs: dict[str, Any] | None = None) -> None:
        m = self.manifest() or {}
        self._write(status="done", started=m.get("started"), finished=_now(),
                    attempts=m.get("attempts", 1), outputs=outputs or {})

    def fail(self, error: BaseException) -> None:
        m = self.manifest() or {}
        self._write(status="failed", started=m.get("started"), failed=_now(),
                    attempts=m.get("attempts", 1),
                    error="".join(traceback.format_exception_only(type(error), error)).strip())

    def _write(self, **fields: Any) -> None:
        manifest = {"stage": self.dir.name, "input_hash": self.input_hash, **fields,
                    "git": git_commit(self._commit_root), "versions": package_versions()}
        atomic_write_json(self.manifest_path, manifest)


class RunStore:
    """The folder of one run (``params.run_dir``) and the one place that names its paths (the
    module docstring draws the layout). The accessors only name paths; writers create folders."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    # ---- the book
    @property
    def params_file(self) -> Path:
        return self.root / "params.yaml"

    @property
    def lock_file(self) -> Path:
        return self.root / LOCK_NAME

    @property
    def book_timing(self) -> Path:
        return self.root / "book_timing.json"

    @property
    def book_log(self) -> Path:
        return self.root / "book.log"

    @property
    def progress_file(self) -> Path:
        return self.root / "progress.jsonl"

    @property
    def notebooks_dir(self) -> Path:
        return self.root / "notebooks"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def schedule_file(self) -> Path:
        return self.logs_dir / "schedule.json"

    @property
    def figures_dir(self) -> Path:
        """Where the figures go when ``figures.dir`` is unset (``Params.figures_path``)."""
        return self.root / "figures"

    def seed_dir(self, seed: int) -> Path:
        """The run store of an extra seed of the study (``Params.seed_overrides``)."""
        return self.root / "seeds" / f"seed-{seed}"

    # ---- data and arms (stages)
    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def data_file(self, dataset: str, split: str = "train") -> Path:
        return self.data_dir / f"{dataset}.{split}.jsonl"

    @property
    def data_report(self) -> Path:
        return self.data_dir / "report.json"

    @property
    def arms_dir(self) -> Path:
        return self.root / "arms"

    def arm_dir(self, arm: str) -> Path:
        return self.arms_dir / arm

    def arm_file(self, arm: str, name: str) -> Path:
        """One of an arm's files by its name in the layout: manifest.json, params.json,
        metrics.json, train_log.jsonl, freeze.json, spectrum_snr.json, unfrozen.yaml."""
        if name not in ARM_FILES:
            raise ValueError(f"{name!r} is not a file of an arm's folder; known: {sorted(ARM_FILES)}")
        return self.arm_dir(arm) / name

    def arm_model_dir(self, arm: str) -> Path:
        """The final checkpoint an arm writes (read it through ``arm_checkpoint``, which also
        knows the arms used as is and stores moved since)."""
        return self.arm_dir(arm) / "model"

    def arm_adapter_dir(self, arm: str) -> Path:
        return self.arm_dir(arm) / "adapter"

    def arm_checkpoints_dir(self, arm: str) -> Path:
        return self.arm_dir(arm) / "checkpoints"

    def arm_tracker_dir(self, arm: str) -> Path:
        """Where the experiment tracker of ``training.report_to`` writes the arm's curves
        (TensorBoard's event files), so ``tensorboard --logdir <run_dir>/arms`` shows every arm."""
        return self.arm_dir(arm) / "tracker"

    def replay_dir(self, arm: str) -> Path:
        return self.arm_dir(arm) / "replay"

    def replay_file(self, arm: str) -> Path:
        """The replay rows mixed into an arm's Phase-2 data (GR_5, GR_10, ER_10)."""
        return self.replay_dir(arm) / "replay.jsonl"

    def replay_summary(self, arm: str) -> Path:
        return self.replay_dir(arm) / "summary.json"

    def replay_generations(self, arm: str, rank: int = 0) -> Path:
        """The Phase-1 model's answers that GR replays (a resumable generation cache); in a
        launch of several processes, process ``rank`` > 0 caches its share in a file of its own."""
        return self.replay_dir(arm) / ("generations.jsonl" if rank == 0 else f"generations.rank{rank}.jsonl")

    def replay_generation_files(self, arm: str) -> list[Path]:
        """Every generation cache of ``arm``: the main one and those of other processes."""
        folder = self.replay_dir(arm)
        return sorted(folder.glob("generations*.jsonl")) if folder.is_dir() else []

    # ---- evaluation
    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    def eval_result(self, model: str) -> Path:
        return self.eval_dir / f"{model}.json"

    def eval_samples(self, model: str) -> Path:
        return self.eval_dir / f"{model}.samples.jsonl"

    @property
    def eval_summary(self) -> Path:
        return self.eval_dir / "summary.json"

    def eval_tasks_dir(self, suite: str) -> Path:
        """The offline task files of one evaluation suite (named by its hash)."""
        return self.eval_dir / "tasks" / suite

    @property
    def alpacaeval_dir(self) -> Path:
        return self.eval_dir / "alpacaeval"

    def alpacaeval_answers(self, model: str, ident: str) -> Path:
        """A model's AlpacaEval answers (a resumable generation cache), named by its identity."""
        return self.alpacaeval_dir / f"answers-{model}-{ident[:12]}.jsonl"

    # ---- similarity, representations, losses, findings
    @property
    def similarity_dir(self) -> Path:
        return self.root / "similarity"

    def similarity_embeddings(self, dataset: str, key: str) -> Path:
        return self.similarity_dir / "embeddings" / f"{dataset}.{key}.npy"

    @property
    def des_file(self) -> Path:
        return self.similarity_dir / "des.json"

    @property
    def mpd_file(self) -> Path:
        return self.similarity_dir / "mpd.json"

    @property
    def similarity_summary(self) -> Path:
        return self.similarity_dir / "summary.json"

    @property
    def representations_dir(self) -> Path:
        return self.root / "representations"

    def representations_file(self, set_name: str, model: str) -> Path:
        return self.representations_dir / set_name / f"{model}.npz"

    @property
    def representations_summary(self) -> Path:
        return self.representations_dir / "summary.json"

    @property
    def heldout_loss_file(self) -> Path:
        return self.root / "heldout_loss.json"

    @property
    def losses_before_training_file(self) -> Path:
        return self.root / "losses_before_training.json"

    @property
    def findings_json(self) -> Path:
        return self.root / "findings.json"

    @property
    def findings_md(self) -> Path:
        return self.root / "findings.md"

    # ---- stages and arms' records
    def stage(self, relpath: str, input_hash: str) -> Stage:
        return Stage(self.root / relpath, input_hash)

    def arm_manifest(self, arm: str) -> dict[str, Any] | None:
        p = self.arm_file(arm, "manifest.json")
        return read_json(p) if p.exists() else None

    def arm_checkpoint(self, arm: str) -> Path:
        """The final checkpoint folder of a finished arm; raises if the arm is not done."""
        m = self.arm_manifest(arm)
        if not m or m.get("status") != "done":
            status = (m or {}).get("status", "missing")
            raise RuntimeError(f"arm {arm!r} is not done (status: {status}); run its training first "
                               f"(notebooks 02/03 or cft_helpers.train.train_arm)")
        recorded = Path(m["outputs"]["checkpoint"])
        # A run store may have moved since (a renamed or copied run_dir): the checkpoint is then
        # the same folder under this store's arm directory.
        here = self.arm_dir(arm) / recorded.name
        return here if here.exists() else recorded

    def finished_arms(self, arms) -> list[str]:
        """The arms among ``arms`` whose training is done, in the given order."""
        return [a for a in arms if (self.arm_manifest(a) or {}).get("status") == "done"]

    def arm_metrics(self, arm: str) -> dict[str, Any]:
        p = self.arm_file(arm, "metrics.json")
        return read_json(p) if p.exists() else {}

    def save_params(self, resolved: dict[str, Any]) -> None:
        import yaml

        atomic_write_text(self.params_file,
                          yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True))


# --------------------------------------------------------------------------- what a store holds

KEEP, RECOMPUTED, SAFE = "keep", "recomputed", "safe"
_ID = r"[^/]+"
# (regex over the path relative to the store, stage label (formatted with the groups), delete)
# in the order of the docstring's layout; the first match places a file.
PLACES: tuple[tuple[str, str, str], ...] = (
    (r"params\.yaml", "book", SAFE),
    (r"book\.lock", "book", KEEP),
    (r"book_timing\.json", "book", SAFE),
    (r"book\.log", "book", SAFE),
    (r"progress\.jsonl", "book", SAFE),
    (rf"data/(manifest\.json|report\.json|{_ID}\.(train|heldout)\.jsonl)", "data", RECOMPUTED),
    (rf"arms/(?P<arm>{_ID})/({'|'.join(re.escape(n) for n in ARM_FILES)})", "arm {arm}", KEEP),
    (rf"arms/(?P<arm>{_ID})/(model|adapter)/.+", "arm {arm}", KEEP),
    (rf"arms/(?P<arm>{_ID})/replay/(replay\.jsonl|summary\.json|generations(\.rank\d+)?\.jsonl)", "arm {arm}", KEEP),
    (rf"arms/(?P<arm>{_ID})/checkpoints/.+", "arm {arm}", KEEP),  # safe once the arm is done
    (rf"arms/(?P<arm>{_ID})/tracker/.+", "arm {arm}", SAFE),
    (r"eval/summary\.json", "eval summary", RECOMPUTED),
    (rf"eval/tasks/(?P<suite>{_ID})/.+", "eval tasks {suite}", RECOMPUTED),
    (rf"eval/alpacaeval/(answers-{_ID}\.jsonl|judge-{_ID}/.+)", "eval alpacaeval", RECOMPUTED),
    (rf"eval/(?P<model>{_ID})\.samples\.jsonl", "eval {model}", RECOMPUTED),
    (rf"eval/(?P<model>{_ID})\.json", "eval {model}", RECOMPUTED),
    (r"similarity/(des|mpd|summary)\.json", "similarity", RECOMPUTED),
    (rf"similarity/embeddings/{_ID}\.[0-9a-f]{{16}}\.npy", "similarity", RECOMPUTED),
    (rf"representations/(summary\.json|{_ID}/{_ID}\.npz)", "representations", RECOMPUTED),
    (r"heldout_loss\.json", "held-out loss", RECOMPUTED),
    (r"losses_before_training\.json", "losses before training", RECOMPUTED),
    (r"findings\.(json|md)", "findings", RECOMPUTED),
    (rf"figures/({_ID}\.(html|png|svg|pdf|jpe?g|webp)|findings\.md|plotly\.min\.js)", "figures", RECOMPUTED),
    (rf"notebooks/{_ID}\.ipynb", "notebooks", SAFE),
    (rf"logs/({_ID}\.log|schedule\.json)", "logs", SAFE),
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
    from cft_helpers.params import stable_hash

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
                from cft_helpers.lock import RunLocked, check_run_lock

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

    ap = argparse.ArgumentParser(prog="python -m cft_helpers.runs", description="The run store's contents.")
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
