"""Progress of the book's stages, where the user runs the book.

A training, an evaluation, the activations or the held-out losses run inside a papermill kernel
or a scheduler worker, whose output the terminal never sees. Each stage reports through
:func:`stage_progress`::

    with stage_progress("training p1_alpaca", total=6, unit="step", enabled=progress) as bar:
        ...
        bar.update(1)

Outside the book (JupyterLab, a script) that is a tqdm bar, as before. Inside the book, whose
process sets ``CFT_PROGRESS`` to ``<run_dir>/progress.jsonl``, each stage also appends events
to that file: at most one a second per stage, and the last. The book's process reads them
(:class:`BookProgress`) and shows one line per running stage, e.g.
``02 · training p1_alpaca · step 3/6 · 41 s left``, with the elapsed time and an estimate of
what is left of the book. Only the main process of a multi-process (``accelerate launch``)
stage reports.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

ENV = "CFT_PROGRESS"          # the events file of the running book
NOTEBOOK_ENV = "CFT_NOTEBOOK"  # the notebook a stage belongs to ("02"), set by the book and the scheduler
MIN_INTERVAL_S = 1.0          # at most one event (and one printed line) a second per stage


def _main_process() -> bool:
    return os.environ.get("RANK", "0") in ("", "0") and os.environ.get("LOCAL_RANK", "0") in ("", "0")


class StageProgress:
    """A stage's progress: a tqdm bar when ``enabled``, events for the book when it runs one."""

    def __init__(self, stage: str, total: int | None, unit: str = "it", enabled: bool = True,
                 events: str | None = None):
        self.stage, self.total, self.unit, self.n = stage, total, unit, 0
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=stage, unit=unit)
        path = os.environ.get(ENV) if events is None else events
        self._events = Path(path) if path and _main_process() else None
        self._last = 0.0
        self._emit(force=True)

    def _emit(self, force: bool = False, end: bool = False) -> None:
        if self._events is None:
            return
        now = time.time()
        if not force and now - self._last < MIN_INTERVAL_S:
            return
        self._last = now
        event = {"t": round(now, 3), "pid": os.getpid(), "notebook": os.environ.get(NOTEBOOK_ENV, ""),
                 "stage": self.stage, "done": self.n, "total": self.total, "unit": self.unit, "end": end}
        try:  # one short append per event: lines of parallel processes do not interleave
            with open(self._events, "a", encoding="utf-8") as f:
                f.write(json.dumps(event) + "\n")
        except OSError:  # progress must never stop the work it reports
            self._events = None

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        self._emit()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._emit(force=True, end=True)
        self._events = None

    def __enter__(self) -> "StageProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def stage_progress(stage: str, total: int | None, unit: str = "it", enabled: bool = True) -> StageProgress:
    return StageProgress(stage, total, unit, enabled)


def format_seconds(s: float) -> str:
    s = max(0, int(round(s)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def stage_line(event: dict[str, Any], first: dict[str, Any] | None) -> str:
    """``02 · training p1_alpaca · step 3/6 · 41 s left``: the estimate from the stage's own rate
    since its first event, once it has done something."""
    parts = [event.get("notebook") or "book", event["stage"]]
    done, total = event["done"], event.get("total")
    parts.append(f"{event['unit']} {done}/{total}" if total else f"{done} {event['unit']}")
    if event.get("end"):
        parts.append("done")
    elif first is not None and total and done > first["done"] and event["t"] > first["t"]:
        rate = (done - first["done"]) / (event["t"] - first["t"])
        parts.append(f"{format_seconds((total - done) / rate)} left")
    return " · ".join(parts)


class BookProgress:
    """The book's side: reads the stages' events and shows one line per running stage.

    On a terminal, each running stage is a live tqdm line; elsewhere (a log, CI) each update is a
    printed line, at most one a second per stage. Every line also goes to ``log`` (book.log).
    ``estimate`` returns what is left of the book as text ("book about 9 min left"), or None
    while it is unknown."""

    def __init__(self, events: Path, log: Callable[[str], None], show: bool = True,
                 live: bool | None = None, poll_s: float = 0.5):
        self.events, self.log, self.show = Path(events), log, show
        self.live = sys.stdout.isatty() if live is None else live
        self.poll_s = poll_s
        self.t0 = time.time()
        self.estimate: Callable[[], str | None] | None = None
        self._offset = 0
        self._first: dict[tuple, dict] = {}
        self._printed: dict[tuple, float] = {}
        self._bars: dict[tuple, Any] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "BookProgress":
        self.events.parent.mkdir(parents=True, exist_ok=True)
        self._offset = self.events.stat().st_size if self.events.exists() else 0
        self._thread = threading.Thread(target=self._loop, name="book-progress", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.poll()
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll()
            except Exception as exc:  # the display must never stop the book
                self.log(f"[progress] stopped showing stage lines: {exc!r}")
                return

    def _read(self) -> list[dict]:
        try:
            with open(self.events, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next poll
        self._offset += end
        out = []
        for line in data[:end].splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def poll(self) -> None:
        for event in self._read():
            key = (event["pid"], event["stage"])
            first = self._first.setdefault(key, event)
            line = stage_line(event, first)
            now = time.time()
            if not event.get("end") and now - self._printed.get(key, 0.0) < MIN_INTERVAL_S:
                continue
            self._printed[key] = now
            elapsed = format_seconds(now - self.t0)
            left = self.estimate() if self.estimate else None
            tail = f"[{elapsed} elapsed" + (f", {left}]" if left else "]")
            self.log(f"{line} {tail}")
            if not self.show:
                continue
            if self.live:
                self._draw(key, event, line, tail)
            else:
                print(f"{line} {tail}", flush=True)

    def _draw(self, key: tuple, event: dict, line: str, tail: str) -> None:
        from tqdm import tqdm

        bar = self._bars.get(key)
        if bar is None:
            bar = self._bars[key] = tqdm(total=event.get("total") or None, bar_format="{desc}", leave=False,
                                         position=len(self._bars))
        bar.set_description_str(f"{line} {tail}", refresh=True)
        if event.get("end"):
            bar.close()
            del self._bars[key]
