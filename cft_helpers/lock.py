"""The run store's lock: one book at a time on a run store.

The book holds a kernel lock (``flock``, through the ``filelock`` library) on
``<run_dir>/.book.flock`` for as long as it runs (all seeds: their stores lie under
``<run_dir>/seeds/``). The kernel releases it when its holder dies, whatever kills it: a
SIGKILLed book leaves nothing to detect, and the next book just takes the lock. Beside it, the
holder writes who it is to ``<run_dir>/book.lock``, for as long as it holds the lock::

    {"pid": 4242, "started": "2025-01-01T10:00:00+00:00", "host": "laptop", "token": "9f...",
     "command": "python -m cft_helpers.book --params default", "run_dir": "/abs/runs/default"}

A second book on the same store stops at once with :class:`RunLocked`, which names that file and
its holder. A ``book.lock`` whose kernel lock nobody holds is what a killed book left: the next
book replaces it with a one-line notice. The holder exports its token as ``CFT_RUN_LOCK``; its
child processes (papermill kernels, scheduler workers, accelerate launches) inherit it and pass
(:func:`check_run_lock`). Jobs that are no children of the book (a Slurm job) pass the same way:
their submitter hands them the token (docs/CLUSTER.md, "The run store's lock on a cluster").

    with RunLock(params.run_path, command="python -m cft_helpers.book ..."):
        ...   # run the notebooks
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import socket
import sys
import uuid
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

ENV = "CFT_RUN_LOCK"
LOCK_NAME = "book.lock"        # who holds the store: JSON, present while a book runs
KERNEL_LOCK = ".book.flock"    # the flock itself (filelock leaves the empty file in place)
ACQUIRE_S = 2.0                # a checker holds the kernel lock for microseconds: wait that out


# The kernel locks this process holds, by store: held until released or until the process ends,
# whether or not the caller keeps its RunLock (filelock releases a lock its object is collected).
_HELD: dict[Path, FileLock] = {}


class RunLocked(RuntimeError):
    """Another book holds the run store; the message names the lock file and its holder."""


def read_lock(run_dir: Path | str) -> dict[str, Any] | None:
    """The holder's JSON, {} for a file that is not whole, None when there is none."""
    path = Path(run_dir) / LOCK_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        info = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return info if isinstance(info, dict) else {}


def _kernel_lock(run_dir: Path) -> FileLock:
    # thread_local=False: the holder is the process; is_singleton=False: a fresh descriptor, so
    # that a check from the holding process itself sees the lock as taken
    return FileLock(run_dir / KERNEL_LOCK, thread_local=False)


def held(run_dir: Path | str) -> bool:
    """Whether a live process holds the store's kernel lock (this one included)."""
    run_dir = Path(run_dir)
    if not (run_dir / KERNEL_LOCK).exists():
        return False
    probe = _kernel_lock(run_dir)
    try:
        probe.acquire(timeout=0)
    except Timeout:
        return True
    probe.release()
    return False


def _describe(path: Path, info: dict[str, Any]) -> str:
    return (f"the run store is in use by another book: {path} is held by pid {info.get('pid')} on "
            f"{info.get('host')}, started {info.get('started')}, command: {info.get('command')}. Wait for it "
            f"to finish or stop it")


def check_run_lock(run_dir: Path | str) -> None:
    """Raise RunLocked when a live book other than this process's own parent holds the store
    (a process whose ``CFT_RUN_LOCK`` equals the holder's token passes); never takes the lock."""
    run_dir = Path(run_dir)
    if not held(run_dir):
        return
    info = read_lock(run_dir) or {}
    if info.get("token") and info.get("token") == os.environ.get(ENV):
        return
    raise RunLocked(_describe(run_dir / LOCK_NAME, info))


class RunLock:
    """The store's lock, held from :meth:`acquire` to :meth:`release` (or a with-block).

    In a process that carries the holder's token (a child of the book) acquiring is a no-op."""

    def __init__(self, run_dir: Path | str, command: str | None = None):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.command = command if command is not None else shlex.join([Path(sys.executable).name, *sys.argv])
        self.token: str | None = None   # set while this object holds the lock
        self._env_before: str | None = None

    def acquire(self) -> "RunLock":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        info = read_lock(self.run_dir)
        if info and info.get("token") and info.get("token") == os.environ.get(ENV):
            return self  # our own book's lock: a child (or the book again) passes
        kernel = _kernel_lock(self.run_dir)
        try:
            kernel.acquire(timeout=ACQUIRE_S)
        except Timeout:
            raise RunLocked(_describe(self.path, read_lock(self.run_dir) or {})) from None
        try:
            old = read_lock(self.run_dir)
            if old is not None:  # its writer died holding the lock: the kernel let it go
                print(f"[lock] replacing the stale lock {self.path} (pid {old.get('pid')}, started "
                      f"{old.get('started')}, no longer running)", file=sys.stderr, flush=True)
            token = uuid.uuid4().hex
            info = {"pid": os.getpid(), "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    "host": socket.gethostname(), "token": token, "command": self.command,
                    "run_dir": str(self.run_dir.resolve())}
            tmp = self.path.with_name(f".{LOCK_NAME}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, self.path)  # whole before anyone reads it
        except BaseException:
            kernel.release()
            raise
        _HELD[self.run_dir.resolve()] = kernel
        self.token = token
        self._env_before = os.environ.get(ENV)
        os.environ[ENV] = token  # inherited by every child process: they pass
        return self

    def release(self) -> None:
        if self.token is None:
            return
        info = read_lock(self.run_dir)
        if info and info.get("token") == self.token:
            self.path.unlink(missing_ok=True)
        kernel = _HELD.pop(self.run_dir.resolve(), None)
        if kernel is not None:
            kernel.release()
        if os.environ.get(ENV) == self.token:
            if self._env_before is None:
                os.environ.pop(ENV, None)
            else:
                os.environ[ENV] = self._env_before
        self.token = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def refuse_if_locked(run_dir: Path | str) -> int | None:
    """For a CLI's ``main``: 1 (after printing why) when a book other than this process's parent
    holds the store (:func:`check_run_lock`), else None."""
    try:
        check_run_lock(run_dir)
    except RunLocked as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return None
