"""The run store's lock: one book at a time on a run store.

The book takes ``<run_dir>/book.lock`` for as long as it runs (all seeds: their stores lie under
``<run_dir>/seeds/``). The file is created exclusively (``O_CREAT | O_EXCL``, under a short
``flock`` of the run folder, so that its JSON is whole before anyone reads it) and holds::

    {"pid": 4242, "started": "2025-01-01T10:00:00+00:00", "host": "laptop", "token": "9f...",
     "command": "python -m cft_helpers.book --params default", "run_dir": "/abs/runs/default",
     "pid_start": 123456}

A second book on the same store stops at once with :class:`RunLocked`, which names the lock
file and its holder. A lock whose process is gone (the book was killed with SIGKILL, the machine
rebooted) is stale: the next book takes it over with a one-line notice. The holder exports its
token as ``CFT_RUN_LOCK``; its child processes (papermill kernels, scheduler workers, accelerate
launches) inherit it and pass (:func:`check_run_lock`). The lock is released on exit, normal or
by an exception (a context manager).

    with RunLock(params.run_path, command="python -m cft_helpers.book ..."):
        ...   # run the notebooks
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shlex
import socket
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

from cft_helpers.runs import LOCK_NAME  # the lock file's name: runs.py names every file of the store

ENV = "CFT_RUN_LOCK"


class RunLocked(RuntimeError):
    """Another book holds the run store; the message names the lock file and its holder."""


@contextlib.contextmanager
def locked_dir(folder: Path | str) -> Iterator[None]:
    """An exclusive ``flock`` on a folder for a short critical section (every process on this
    machine that takes it waits for the others). A no-op where flock does not exist."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(str(folder), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3 on of /proc/<pid>/stat (Linux), after the command name; None where unknown."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _process_start(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot, to tell a live holder from a new
    process that got the same pid; None where unknown."""
    stat = _proc_stat(pid)
    return stat[19] if stat and len(stat) > 19 else None  # field 22


def _alive(info: dict[str, Any]) -> bool:
    """Whether the holder recorded in a lock may still run (True when it cannot be checked)."""
    if info.get("host") != socket.gethostname():
        return True  # a process on another machine: no way to check it from here
    try:
        pid = int(info["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    stat = _proc_stat(pid)
    if stat and stat[0] in ("Z", "X"):  # killed, not yet reaped by its parent
        return False
    recorded, now = info.get("pid_start"), _process_start(pid)
    return recorded is None or now is None or recorded == now


def read_lock(run_dir: Path | str) -> dict[str, Any] | None:
    """The lock's JSON, {} for a file that is not a whole lock, None when there is none."""
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


def _is_stale(info: dict[str, Any], run_dir: Path) -> bool:
    if not info or not _alive(info):
        return True
    # a lock copied with its run store (cp -r while a book ran) names the other store
    recorded = info.get("run_dir")
    return recorded is not None and Path(recorded) != run_dir.resolve()


def _describe(path: Path, info: dict[str, Any]) -> str:
    return (f"the run store is in use by another book: {path} is held by pid {info.get('pid')} on "
            f"{info.get('host')}, started {info.get('started')}, command: {info.get('command')}. Wait for it "
            f"to finish or stop it; if that process is not a book on this store, delete {path}")


def check_run_lock(run_dir: Path | str) -> None:
    """Raise RunLocked when a live book other than this process's own parent holds the store
    (a process whose ``CFT_RUN_LOCK`` equals the lock's token passes); never takes the lock."""
    run_dir = Path(run_dir)
    info = read_lock(run_dir)
    if info is None or _is_stale(info, run_dir):
        return
    if info.get("token") and info.get("token") == os.environ.get(ENV):
        return
    raise RunLocked(_describe(run_dir / LOCK_NAME, info))


class RunLock:
    """``<run_dir>/book.lock``, held from :meth:`acquire` to :meth:`release` (or a with-block).

    In a process that carries the holder's token (a child of the book) acquiring is a no-op."""

    def __init__(self, run_dir: Path | str, command: str | None = None):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.command = command if command is not None else shlex.join([Path(sys.executable).name, *sys.argv])
        self.token: str | None = None   # set while this object holds the lock
        self._env_before: str | None = None

    def acquire(self) -> "RunLock":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with locked_dir(self.run_dir):  # acquirers one at a time: read, judge, take over, create
            info = read_lock(self.run_dir)
            if info is not None:
                if info.get("token") and info.get("token") == os.environ.get(ENV):
                    return self  # our own book's lock: a child (or the book again) passes
                if not _is_stale(info, self.run_dir):
                    raise RunLocked(_describe(self.path, info))
                print(f"[lock] taking over the stale lock {self.path} (pid {info.get('pid')}, started "
                      f"{info.get('started')}, no longer running)", file=sys.stderr, flush=True)
                self.path.unlink(missing_ok=True)
            token = uuid.uuid4().hex
            info = {"pid": os.getpid(), "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    "host": socket.gethostname(), "token": token, "command": self.command,
                    "run_dir": str(self.run_dir.resolve()), "pid_start": _process_start(os.getpid())}
            fd = os.open(str(self.path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(json.dumps(info, indent=2) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
            except BaseException:
                self.path.unlink(missing_ok=True)
                raise
        self.token = token
        self._env_before = os.environ.get(ENV)
        os.environ[ENV] = token  # inherited by every child process: they pass
        return self

    def release(self) -> None:
        if self.token is None:
            return
        with locked_dir(self.run_dir):
            info = read_lock(self.run_dir)
            if info and info.get("token") == self.token:
                self.path.unlink(missing_ok=True)
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
