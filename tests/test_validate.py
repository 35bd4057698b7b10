"""`python -m cft_helpers.data validate`: every bad row named by line and field, a summary, exit code."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from cft_helpers.data.validate import validate_file


def _jsonl(path, rows):
    with path.open("wb") as f:
        for r in rows:
            f.write(r if isinstance(r, bytes) else (json.dumps(r, ensure_ascii=False) + "\n").encode())
    return path


def _kinds(report):
    return {(p["line"], p["field"], p["kind"]) for p in report["problems"]}


def test_every_kind_of_bad_alpaca_row_is_named_by_line_and_field(tmp_path):
    path = _jsonl(tmp_path / "a.jsonl", [
        {"id": 1, "instruction": "Add 2 and 3.", "input": "", "output": "5", "lang": "en"},
        {"id": 1, "instruction": "Say hi", "output": " ", "lang": "xx"},
        {"id": 2, "instruction": 5, "output": "ok"},
        b"{not json\n",
        {"id": 3, "instr": "renamed", "output": "x", "lang": "fr"},
        b"\xff\xfe not utf-8\n",
        {"id": 4, "instruction": "Fine", "output": "ok", "lang": "pt-BR"},
    ])
    report = validate_file(path, "alpaca", lang_column="lang")
    assert _kinds(report) == {
        (2, "output", "empty"), (2, "lang", "unknown_language"), (2, "id", "duplicate_id"),
        (3, "instruction", "wrong_type"), (3, "lang", "missing_language"), (4, None, "malformed_json"),
        (5, "instruction", "missing_field"), (6, None, "not_utf8")}
    assert report["rows_read"] == 7 and report["rows_usable"] == 2 and report["rows_unusable"] == 5
    assert report["problems_by_kind"]["duplicate_id"] == 1


def test_clean_files_in_every_format_pass(tmp_path):
    rows = [{"question": f"q{i}", "response": f"r{i}", "system_prompt": None if i % 2 else "Be brief."}
            for i in range(4)]
    _jsonl(tmp_path / "o.jsonl", rows)
    (tmp_path / "o.json").write_text(json.dumps(rows))
    pd.DataFrame(rows).to_parquet(tmp_path / "o.parquet")
    for name in ("o.jsonl", "o.json", "o.parquet"):
        report = validate_file(tmp_path / name, "orca")
        assert report["rows_read"] == 4 and report["rows_usable"] == 4 and not report["problems"], name


def test_squad_answers_must_sit_in_the_context_and_messages_end_with_the_answer(tmp_path):
    squad = _jsonl(tmp_path / "s.jsonl", [
        {"context": "Paris is in France.", "question": "Where?", "answers": {"text": ["France"], "answer_start": [12]}},
        {"context": "Paris is in France.", "question": "Where?", "answers": {"text": ["France"], "answer_start": [3]}},
        {"context": "x", "question": "y", "answers": {"text": ["a", "b"], "answer_start": [0]}},
    ])
    assert _kinds(validate_file(squad, "squad")) == {(2, "answers[0]", "answer_not_in_context"),
                                                     (3, "answers", "bad_answers")}
    msgs = _jsonl(tmp_path / "m.jsonl", [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"messages": [{"role": "user", "content": "hi"}]},
        {"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}]},
    ])
    assert {(line, kind) for line, _, kind in _kinds(validate_file(msgs, "messages"))} == {
        (2, "bad_messages"), (3, "bad_messages")}
    xlsum = _jsonl(tmp_path / "x.jsonl", [{"text": "long article", "summary": ""}])
    assert _kinds(validate_file(xlsum, "xlsum")) == {(1, "summary", "empty")}


def test_examples_longer_than_max_length_are_flagged(tmp_path):
    from cft_helpers.models import builtin_tokenizer

    tok = builtin_tokenizer(512)
    path = _jsonl(tmp_path / "l.jsonl", [{"instruction": "Add 2 and 3.", "output": "5"},
                                         {"instruction": "word " * 400, "output": "ok"}])
    report = validate_file(path, "alpaca", max_tokens=64, tokenizer=tok)
    assert _kinds(report) == {(2, None, "too_long")}


def test_command_line_prints_problems_and_summary_and_exit_codes(tmp_path):
    bad = _jsonl(tmp_path / "bad.jsonl", [{"instruction": "a", "output": "b"}, {"instruction": "", "output": "b"}])
    good = _jsonl(tmp_path / "good.jsonl", [{"instruction": "a", "output": "b"}])
    run = lambda *a: subprocess.run([sys.executable, "-m", "cft_helpers.data", "validate", *a],  # noqa: E731
                                    capture_output=True, text=True)
    proc = run(str(bad), "--schema", "alpaca", "--json", str(tmp_path / "r.json"))
    assert proc.returncode == 1
    assert f"{bad}:2: field 'instruction': empty" in proc.stdout
    assert "2 rows read, 1 usable, 1 unusable; problems: empty 1" in proc.stdout
    assert json.loads((tmp_path / "r.json").read_text())["rows_unusable"] == 1
    assert run(str(good)).returncode == 0
    proc = run(str(tmp_path / "missing.jsonl"))
    assert proc.returncode == 2 and "no such file" in proc.stderr
    with pytest.raises(ValueError, match="unknown schema"):
        validate_file(good, "csv")


def test_empty_file_bom_and_duplicate_rows(tmp_path):
    """An empty file is an error (the book would stop on it later); a UTF-8 byte-order mark is read
    with a note; a row repeated exactly is a warning naming both lines, not an error."""
    run = lambda *a: subprocess.run([sys.executable, "-m", "cft_helpers.data", "validate", *a],  # noqa: E731
                                    capture_output=True, text=True)
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"\n\n")
    report = validate_file(empty)
    assert report["rows_read"] == 0 and report["problems_by_kind"] == {"no_rows": 1}
    proc = run(str(empty))
    assert proc.returncode == 1 and "no_rows: the file holds no rows" in proc.stdout

    row = {"instruction": "Écris une phrase.", "output": "Voici une phrase."}
    bom = _jsonl(tmp_path / "bom.jsonl", [b"\xef\xbb\xbf" + (json.dumps(row) + "\n").encode(), {"instruction": "b", "output": "c"}])
    report = validate_file(bom)
    assert report["rows_usable"] == 2 and not report["problems"] and "byte-order mark" in report["notes"][0]
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps([row]).encode())
    assert validate_file(tmp_path / "bom.json")["rows_usable"] == 1
    proc = run(str(bom))
    assert proc.returncode == 0 and "note: the file starts with a UTF-8 byte-order mark" in proc.stdout

    dup = _jsonl(tmp_path / "dup.jsonl", [row, {"instruction": "b", "output": "c"}, dict(reversed(row.items())), row])
    report = validate_file(dup)
    assert report["rows_usable"] == 4 and not report["problems"]
    assert [(w["line"], w["kind"], w["message"]) for w in report["warnings"]] == [
        (3, "duplicate_row", "the same row as line 1"), (4, "duplicate_row", "the same row as line 1")]
    proc = run(str(dup))
    assert proc.returncode == 0 and f"{dup}:3: warning: duplicate_row: the same row as line 1" in proc.stdout
    assert proc.stdout.rstrip().endswith("warnings: duplicate_row 2")
