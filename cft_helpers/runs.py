"""The run store: one folder per run, one sub-folder per stage (data, each arm), never lost work.

Layout under ``params.run_dir`` (e.g. ``runs/default/``)::

    params.yaml               the resolved parameter set of the last book run
    data/                     prepared datasets (<name>.train.jsonl, <name>.heldout.jsonl),
                              report.json (rows per language, hashes), manifest.json
    arms/<arm>/               manifest.json  status, input hash, git commit, versions, times
                              params.json    the resolved arm (start, datasets, training)
                              train_log.jsonl, metrics.json
                              checkpoints/   intermediate Trainer checkpoints (resume)
                              model/         the final checkpoint (safetensors + tokenizer)
    notebooks/                executed notebooks of the book

A stage is *done* only when its manifest says ``status: done`` with the same input hash as now;
the manifest is written atomically (write, then rename) and only after every output is in place,
so a crash or a kill at any point leaves the stage not done. Rerunning a stage whose inputs are
unchanged and complete is skipped; ``force=True`` reruns it from scratch.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import subprocess
import tempfile
import traceback
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "transformers", "trl", "datasets", "peft", "accelerate", "tokenizers")


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
    """The folder of one run (``params.run_dir``)."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def arm_dir(self, arm: str) -> Path:
        return self.root / "arms" / arm

    def stage(self, relpath: str, input_hash: str) -> Stage:
        return Stage(self.root / relpath, input_hash)

    def arm_manifest(self, arm: str) -> dict[str, Any] | None:
        p = self.arm_dir(arm) / "manifest.json"
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
        p = self.arm_dir(arm) / "metrics.json"
        return read_json(p) if p.exists() else {}

    def save_params(self, resolved: dict[str, Any]) -> None:
        import yaml

        atomic_write_text(self.root / "params.yaml",
                          yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True))
