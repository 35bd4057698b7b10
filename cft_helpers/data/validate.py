"""Check a dataset file before spending GPU hours on it: every problem, with its line and field.

    python -m cft_helpers.data validate FILE [--schema alpaca|orca|messages|squad|xlsum]
                                             [--lang-column lang] [--max-tokens 2048 --tokenizer DIR]

Reads JSONL line by line (a line that is not JSON, or not UTF-8, is reported with its number
and the rest of the file is still checked), a JSON array, or Parquet (rows numbered from 1).
Reports malformed lines, missing fields, wrong types, empty text, duplicate ids, unknown or
missing language codes, broken SQuAD answers, a file without rows and, with a tokenizer,
examples longer than the maximum length; warns about rows that repeat an earlier row exactly;
notes a UTF-8 byte-order mark (as Windows editors write it), which is read as UTF-8 like the
loaders read it. Then a summary (rows read, rows usable, problems by kind, warnings). Exits 1
when any row is unusable or there is none, 0 otherwise. ``validate_file`` returns the same report
as a dict.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Sequence

from cft_helpers.data.schema import DataError, to_messages

from cft_helpers.files import atomic_write_json

SCHEMAS = ("alpaca", "orca", "messages", "squad", "xlsum")
# Required text fields and optional ones per schema (field names as the datasets spell them).
REQUIRED = {"alpaca": ("instruction", "output"), "orca": ("question", "response"), "messages": (),
            "squad": ("context", "question"), "xlsum": ("text", "summary")}
OPTIONAL = {"alpaca": ("input",), "orca": ("system_prompt",), "messages": (), "squad": (), "xlsum": ()}

# ISO 639-1; a code may carry a region or script (pt-BR, zh-Hans, zh_CN).
ISO_639_1 = set("""aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy
da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id
ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg
mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru
rw sa sc sd se sg si sk sl sm sn so sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk
ur uz ve vi vo wa wo xh yi yo za zh zu""".split())
_LANG = re.compile(r"^([a-z]{2}|und|mul)(?:[-_][A-Za-z0-9]{2,8})*$")
SPECIAL = {"und", "mul"}  # BCP 47: undetermined, multiple languages


def _problem(line: int, field: str | None, kind: str, message: str) -> dict[str, Any]:
    return {"line": line, "field": field, "kind": kind, "message": message}


BOM = b"\xef\xbb\xbf"


def read_rows(path: Path) -> Iterator[tuple[int, dict | None, dict | None]]:
    """(line or row number, row, problem): exactly one of row and problem is set. A UTF-8
    byte-order mark at the start of a JSON or JSONL file is skipped."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open("rb") as f:
            for i, raw in enumerate(f, start=1):
                if i == 1 and raw.startswith(BOM):
                    raw = raw[len(BOM):]
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield i, None, _problem(i, None, "not_utf8", f"bytes that are not UTF-8 at column {exc.start + 1}")
                    continue
                if not text.strip():
                    continue
                try:
                    row = json.loads(text)
                except json.JSONDecodeError as exc:
                    yield i, None, _problem(i, None, "malformed_json", f"not JSON: {exc.msg} at column {exc.colno}")
                    continue
                if not isinstance(row, dict):
                    yield i, None, _problem(i, None, "not_an_object", f"expected a JSON object, got {type(row).__name__}")
                    continue
                yield i, row, None
    elif suffix == ".json":
        try:
            data = json.loads(path.read_bytes().decode("utf-8-sig"))
        except UnicodeDecodeError as exc:
            yield 0, None, _problem(0, None, "not_utf8", f"bytes that are not UTF-8 at byte {exc.start}")
            return
        except json.JSONDecodeError as exc:
            yield exc.lineno, None, _problem(exc.lineno, None, "malformed_json",
                                             f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
            return
        if not isinstance(data, list):
            yield 0, None, _problem(0, None, "not_a_list", "a .json dataset must be a list of objects")
            return
        for i, row in enumerate(data, start=1):
            if not isinstance(row, dict):
                yield i, None, _problem(i, None, "not_an_object", f"expected an object, got {type(row).__name__}")
            else:
                yield i, row, None
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(path).to_pylist(), start=1):  # nulls stay None, not NaN
            yield i, row, None
    else:
        raise ValueError(f"{path}: unknown format {suffix!r}; valid: .jsonl, .json, .parquet")


def _text_problems(row: dict, line: int, field: str, optional: bool) -> list[dict]:
    if field not in row or row[field] is None:
        return [] if optional else [_problem(line, field, "missing_field",
                                             f"missing field {field!r} (row has {sorted(row)})")]
    value = row[field]
    if not isinstance(value, str):
        return [_problem(line, field, "wrong_type", f"field {field!r} must be text, got {type(value).__name__}")]
    if not optional and not value.strip():
        return [_problem(line, field, "empty", f"field {field!r} is empty")]
    return []


def row_problems(row: dict, line: int, schema: str) -> list[dict]:
    """Every problem of one row under ``schema``."""
    out = [p for f in REQUIRED[schema] for p in _text_problems(row, line, f, optional=False)]
    out += [p for f in OPTIONAL[schema] for p in _text_problems(row, line, f, optional=True)]
    if schema == "messages":
        if "messages" not in row:
            out.append(_problem(line, "messages", "missing_field", f"missing field 'messages' (row has {sorted(row)})"))
        else:
            try:
                msgs = to_messages(row, "messages", where=f"line {line}")
                empty = [i for i, m in enumerate(msgs) if not m["content"].strip()]
                out += [_problem(line, f"messages[{i}].content", "empty", f"messages[{i}] is empty") for i in empty]
            except DataError as exc:
                out.append(_problem(line, "messages", "bad_messages", str(exc).split(": ", 1)[-1]))
    if schema == "squad":
        out += _squad_problems(row, line)
    return out


def _squad_problems(row: dict, line: int) -> list[dict]:
    answers = row.get("answers")
    if not isinstance(answers, dict) or not isinstance(answers.get("text"), list) \
            or not isinstance(answers.get("answer_start"), list):
        return [_problem(line, "answers", "wrong_type", "answers must be {text: [..], answer_start: [..]}")]
    if len(answers["text"]) != len(answers["answer_start"]) or not answers["text"]:
        return [_problem(line, "answers", "bad_answers", f"{len(answers['text'])} texts but "
                                                         f"{len(answers['answer_start'])} starts")]
    context = row.get("context") if isinstance(row.get("context"), str) else ""
    out = []
    for k, (text, start) in enumerate(zip(answers["text"], answers["answer_start"])):
        if not isinstance(text, str) or not isinstance(start, int):
            out.append(_problem(line, f"answers[{k}]", "wrong_type", "answer text must be text, start an integer"))
        elif context[start:start + len(text)] != text:
            out.append(_problem(line, f"answers[{k}]", "answer_not_in_context",
                                f"answer {text[:40]!r} is not at character {start} of the context"))
    return out


def language_problem(row: dict, line: int, column: str) -> dict | None:
    code = row.get(column)
    if code is None or code == "":
        return _problem(line, column, "missing_language", f"no language code in {column!r}")
    if not isinstance(code, str):
        return _problem(line, column, "wrong_type", f"language code must be text, got {type(code).__name__}")
    m = _LANG.match(code)
    if not m or (m.group(1) not in ISO_639_1 and m.group(1) not in SPECIAL):
        return _problem(line, column, "unknown_language", f"unknown language code {code!r} (ISO 639-1 expected)")
    return None


def _example_text(row: dict, schema: str) -> str:
    if schema == "messages":
        return "\n".join(str(m.get("content", "")) for m in row.get("messages", []) if isinstance(m, dict))
    return "\n".join(str(row.get(f) or "") for f in (*REQUIRED[schema], *OPTIONAL[schema]))


def validate_file(path: str | Path, schema: str = "alpaca", lang_column: str | None = None,
                  id_column: str = "id", max_tokens: int | None = None, tokenizer=None) -> dict[str, Any]:
    """The report of :mod:`cft_helpers.data.validate` for one file (see the module docstring)."""
    if schema not in SCHEMAS:
        raise ValueError(f"unknown schema {schema!r}; valid: {list(SCHEMAS)}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    problems: list[dict] = []
    warnings: list[dict] = []
    notes: list[str] = []
    if path.suffix.lower() in (".jsonl", ".json"):
        with path.open("rb") as f:
            if f.read(len(BOM)) == BOM:
                notes.append("the file starts with a UTF-8 byte-order mark; read as UTF-8 without it")
    read, unusable, seen_ids, seen_rows = 0, set(), {}, {}
    for line, row, problem in read_rows(path):
        read += 1
        if problem is not None:
            problems.append(problem)
            unusable.add(line)
            continue
        found = row_problems(row, line, schema)
        if lang_column:
            lp = language_problem(row, line, lang_column)
            found += [lp] if lp else []
        if id_column in row:
            key = json.dumps(row[id_column], sort_keys=True, default=str)
            if key in seen_ids:
                found.append(_problem(line, id_column, "duplicate_id",
                                      f"id {row[id_column]!r} already used on line {seen_ids[key]}"))
            else:
                seen_ids[key] = line
        whole = json.dumps(row, sort_keys=True, ensure_ascii=False, default=str)
        if whole in seen_rows:  # kept (a dataset may repeat a row on purpose), but worth a look
            warnings.append(_problem(line, None, "duplicate_row",
                                     f"the same row as line {seen_rows[whole]}"))
        else:
            seen_rows[whole] = line
        if max_tokens is not None and tokenizer is not None and not found:
            n = len(tokenizer(_example_text(row, schema))["input_ids"])
            if n > max_tokens:
                found.append(_problem(line, None, "too_long", f"{n} tokens, more than max_length {max_tokens}"))
        if found:
            unusable.add(line)
            problems += found
    if not read:
        problems.append(_problem(0, None, "no_rows", "the file holds no rows"))
    return {"file": str(path), "schema": schema, "rows_read": read, "rows_usable": read - len(unusable),
            "rows_unusable": len(unusable), "problems_by_kind": dict(Counter(p["kind"] for p in problems)),
            "problems": problems, "warnings": warnings, "notes": notes}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cft_helpers.data validate",
                                 description="Check a dataset file: every problem with its line and field.")
    ap.add_argument("file")
    ap.add_argument("--schema", choices=SCHEMAS, default="alpaca")
    ap.add_argument("--lang-column", help="column holding an ISO 639-1 language code, checked on every row")
    ap.add_argument("--id-column", default="id", help="column whose values must be unique (if present)")
    ap.add_argument("--max-tokens", type=int, help="flag examples longer than this (needs --tokenizer)")
    ap.add_argument("--tokenizer", help="a local tokenizer folder for --max-tokens")
    ap.add_argument("--json", help="also write the report to this file")
    ns = ap.parse_args(argv)
    tok = None
    if ns.max_tokens is not None:
        if not ns.tokenizer:
            ap.error("--max-tokens needs --tokenizer (a local folder with the model's tokenizer)")
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(ns.tokenizer)
    try:
        report = validate_file(ns.file, ns.schema, ns.lang_column, ns.id_column, ns.max_tokens, tok)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for note in report["notes"]:
        print(f"{report['file']}: note: {note}")
    for label, entries in (("", report["problems"]), ("warning: ", report["warnings"])):
        for p in entries:
            where = report["file"] + (f":{p['line']}" if p["line"] else "") + (f": field {p['field']!r}" if p["field"] else "")
            print(f"{where}: {label}{p['kind']}: {p['message']}")
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(report["problems_by_kind"].items())) or "none"
    warned = Counter(w["kind"] for w in report["warnings"])
    print(f"{report['file']} ({report['schema']}): {report['rows_read']} rows read, {report['rows_usable']} usable, "
          f"{report['rows_unusable']} unusable; problems: {kinds}"
          + (f"; warnings: {', '.join(f'{k} {v}' for k, v in sorted(warned.items()))}" if warned else ""))
    if ns.json:
        atomic_write_json(Path(ns.json), report)
    return 1 if report["rows_unusable"] or not report["rows_read"] else 0
