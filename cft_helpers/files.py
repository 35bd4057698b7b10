"""Crash-safe file I/O and keyed caches: what every stage of the run store writes through.

``atomic_write_text`` / ``atomic_write_json`` write a file so that a reader sees the old content
or the new one, never a torn file; ``update_json`` merges keys into a shared JSON file under a
lock of its folder; ``KeyedFile`` holds one result per file and ``KeyedCache`` many in one JSON
file, each valid while its key (a :func:`stable_hash` of what it depends on) is the one asked
for. docs/ENGINEERING.md, "The run store", says which stage uses which.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel


def stable_hash(obj: Any) -> str:
    """SHA-256 of canonical JSON: equal inputs give equal hashes across runs and machines."""
    if isinstance(obj, BaseModel):  # the params, or a section of them: their aliased JSON
        obj = json.loads(obj.model_dump_json(by_alias=True))
    data = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()[:16]


_UNLOCKED_WARNED: set[str] = set()


@contextlib.contextmanager
def locked_dir(folder: Path | str) -> Iterator[None]:
    """An exclusive ``flock`` on a folder for a short critical section (every process that takes
    it waits for the others). Where the file system refuses flock (NFS without a lock daemon,
    Lustre mounted without ``flock``) the section runs unlocked, with one warning per folder:
    what it guards are keyed caches written by atomic renames, whose worst case unlocked is an
    entry lost to a concurrent writer and computed again, never a torn or wrong one
    (docs/CLUSTER.md, "The grid on Slurm")."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(str(folder), os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            if str(folder) not in _UNLOCKED_WARNED:
                _UNLOCKED_WARNED.add(str(folder))
                warnings.warn(f"no flock on {folder} ({exc.strerror}): its shared caches are merged unlocked; "
                              "an entry another process writes at the same moment may be computed again")
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


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
