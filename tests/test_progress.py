"""The book's progress: stages report events, the book shows one line per running stage."""

from __future__ import annotations

import json
import re
import time

from cft_helpers.progress import ENV, NOTEBOOK_ENV, BookProgress, StageProgress, format_seconds, stage_line


def _events(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_a_stage_reports_at_most_once_a_second_and_its_end(tmp_path, monkeypatch):
    events = tmp_path / "progress.jsonl"
    monkeypatch.setenv(ENV, str(events))
    monkeypatch.setenv(NOTEBOOK_ENV, "02")
    with StageProgress("training p1_alpaca", total=50, unit="step", enabled=False) as bar:
        for _ in range(50):
            bar.update(1)
            time.sleep(0.05)  # 2.5 s of work: about 3 events, not 50
    got = _events(events)
    assert got[0]["done"] == 0 and got[-1]["done"] == 50 and got[-1]["end"]
    assert 3 <= len(got) <= 6 and {e["notebook"] for e in got} == {"02"}
    gaps = [b["t"] - a["t"] for a, b in zip(got[:-2], got[1:-1])]  # the last one may follow at once
    assert all(g >= 0.99 for g in gaps), gaps

    monkeypatch.setenv("RANK", "1")  # another rank of a multi-process stage stays silent
    StageProgress("training p1_alpaca", total=5, unit="step", enabled=False).close()
    assert len(_events(events)) == len(got)


def test_stage_lines_name_the_stage_and_estimate_once_a_rate_is_known():
    first = {"t": 100.0, "done": 0, "total": 6, "unit": "step", "stage": "training p1_alpaca", "notebook": "02"}
    assert stage_line(first, first) == "02 · training p1_alpaca · step 0/6"  # no rate yet: no estimate
    later = {**first, "t": 110.0, "done": 2}
    assert stage_line(later, first) == "02 · training p1_alpaca · step 2/6 · 20 s left"
    assert stage_line({**later, "done": 6, "end": True}, first) == "02 · training p1_alpaca · step 6/6 · done"
    assert format_seconds(75) == "1 min 15 s" and format_seconds(3720) == "1 h 02 min"


def test_the_book_shows_each_stage_at_most_once_a_second(tmp_path, capsys):
    events, logged = tmp_path / "progress.jsonl", []
    shown = BookProgress(events, log=logged.append, live=False, poll_s=0.05)
    shown.estimate = lambda: "book about 3 min left"
    shown.start()
    t = time.time()
    with open(events, "a") as f:  # two workers' stages, five events each within a second
        for k in range(5):
            for pid, stage in ((1, "training p1_alpaca"), (2, "evaluating base · loglikelihood")):
                f.write(json.dumps({"t": t + k * 0.1, "pid": pid, "notebook": "02", "stage": stage,
                                    "done": k, "total": 10, "unit": "step", "end": False}) + "\n")
        f.write(json.dumps({"t": t + 0.6, "pid": 1, "notebook": "02", "stage": "training p1_alpaca",
                            "done": 10, "total": 10, "unit": "step", "end": True}) + "\n")
    time.sleep(0.3)
    shown.stop()
    out = capsys.readouterr().out.splitlines()
    assert out == logged
    assert len(out) == 3  # one line per stage within the second, plus the stage's end
    assert all(re.match(r"^02 · (training p1_alpaca|evaluating base · loglikelihood) · step \d+/10", line) for line in out)
    assert out[-1].startswith("02 · training p1_alpaca · step 10/10 · done")
    assert all(line.endswith("elapsed, book about 3 min left]") for line in out)
