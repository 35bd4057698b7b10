"""Loaders: every source schema from local files, normalised to one conversational schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cft_helpers.data.loaders import load_splits
from cft_helpers.data.schema import DataError, prompt_completion
from cft_helpers.params import load_params

ALPACA_ROWS = [
    {"instruction": "Give three tips for staying healthy.", "input": "", "output": "Eat well, sleep, move."},
    {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
    {"instruction": "Name a colour.", "input": "", "output": "Blue"},
]
ORCA_ROWS = [
    {"id": "a1", "system_prompt": "You are a helpful assistant.", "question": "What is 2+2?", "response": "4"},
    {"id": "a2", "system_prompt": "", "question": "Capital of Peru?", "response": "Lima"},
]
MESSAGES_ROWS = [
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}], "language": "en"},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Salut"},
                  {"role": "assistant", "content": "Salut !"}], "language": "fr"},
]


def _params(tmp_path: Path, datasets: dict):
    import yaml

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params" / "smoke.yaml").read_text())
    raw["datasets"].update(datasets)
    raw["run_dir"] = str(tmp_path / "run")
    raw["cache_dir"] = str(tmp_path / "cache")
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(raw))
    return load_params(p)


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def test_alpaca_json_array_with_and_without_input(tmp_path):
    f = tmp_path / "alpaca.json"
    f.write_text(json.dumps(ALPACA_ROWS))
    p = _params(tmp_path, {"mine": {"source": "local", "path": str(f), "schema": "alpaca", "lang": "en"}})
    rows = load_splits("mine", p)["train"]
    assert len(rows) == 4
    by_out = {r["messages"][-1]["content"]: r for r in rows}
    assert by_out["Bonjour"]["messages"] == [
        {"role": "user", "content": "Translate to French.\n\nGood morning"},
        {"role": "assistant", "content": "Bonjour"}]
    assert by_out["Blue"]["messages"][0] == {"role": "user", "content": "Name a colour."}
    assert all(r["lang"] == "en" for r in rows)


def test_orca_jsonl_system_prompt_only_when_present(tmp_path):
    f = _jsonl(tmp_path / "orca.jsonl", ORCA_ROWS)
    p = _params(tmp_path, {"orca": {"source": "local", "path": str(f), "schema": "orca", "lang": "en"}})
    rows = load_splits("orca", p)["train"]
    assert rows[0]["messages"][0] == {"role": "system", "content": "You are a helpful assistant."}
    assert [m["role"] for m in rows[1]["messages"]] == ["user", "assistant"]
    pc = prompt_completion(rows[0])
    assert pc["completion"] == [{"role": "assistant", "content": "4"}]
    assert [m["role"] for m in pc["prompt"]] == ["system", "user"]


def test_messages_jsonl_with_language_column(tmp_path):
    f = _jsonl(tmp_path / "chat.jsonl", MESSAGES_ROWS)
    p = _params(tmp_path, {"chat": {"source": "local", "path": str(f), "schema": "messages",
                                    "lang_column": "language"}})
    rows = load_splits("chat", p)["train"]
    assert [r["lang"] for r in rows] == ["en", "fr"]
    assert rows[1]["messages"][0]["role"] == "system"


def test_parquet_with_column_mapping(tmp_path):
    import pandas as pd

    f = tmp_path / "renamed.parquet"
    pd.DataFrame([{"prompt": r["instruction"], "context": r["input"], "answer": r["output"], "lg": "en"}
                  for r in ALPACA_ROWS]).to_parquet(f)
    p = _params(tmp_path, {"pq": {"source": "local", "path": str(f), "schema": "alpaca", "lang_column": "lg",
                                  "columns": {"instruction": "prompt", "input": "context", "output": "answer"}}})
    rows = load_splits("pq", p)["train"]
    assert sorted(r["messages"][-1]["content"] for r in rows) == sorted(r["output"] for r in ALPACA_ROWS)


def test_hub_layout_folder_with_one_file_per_language(tmp_path):
    """MULTIALPACA ships <lang>.jsonl per language: the hub loader tags rows by file."""
    repo = tmp_path / "multialpaca_repo"
    _jsonl(repo / "fr.jsonl", [{"instruction": "Ajoutez 2 et 3.", "input": "", "output": "5"}] * 3)
    _jsonl(repo / "th.jsonl", [{"instruction": "บวก 2 กับ 3", "input": "", "output": "5"}] * 2)
    p = _params(tmp_path, {"ma": {"source": "hub", "path": str(repo), "schema": "alpaca",
                                  "data_files": {"fr": "fr.jsonl", "th": "th.jsonl"}}})
    rows = load_splits("ma", p)["train"]
    assert sorted(r["lang"] for r in rows) == ["fr"] * 3 + ["th"] * 2
    assert all(r["source"] == f"hub:{repo}" for r in rows)


def test_hub_layout_folder_like_tatsu_alpaca(tmp_path):
    """tatsu-lab/alpaca is a parquet file under data/; load_dataset reads the folder the same way."""
    import pandas as pd

    repo = tmp_path / "alpaca_repo"
    (repo / "data").mkdir(parents=True)
    pd.DataFrame(ALPACA_ROWS).to_parquet(repo / "data" / "train-00000-of-00001.parquet")
    p = _params(tmp_path, {"al": {"source": "hub", "path": str(repo), "schema": "alpaca", "lang": "en",
                                  "n": 2, "n_heldout": 2}})
    splits = load_splits("al", p)
    assert len(splits["train"]) == 2 and len(splits["heldout"]) == 2
    train_ids = {r["id"] for r in splits["train"]}
    assert not train_ids & {r["id"] for r in splits["heldout"]}


def test_heldout_rows_are_set_aside_before_the_training_rows(tmp_path):
    rows = [{"instruction": f"Say {i}.", "input": "", "output": str(i)} for i in range(20)]
    f = _jsonl(tmp_path / "many.jsonl", rows)
    p = _params(tmp_path, {"m": {"source": "local", "path": str(f), "schema": "alpaca", "lang": "en",
                                 "n_heldout": 5}})
    s = load_splits("m", p)
    assert len(s["heldout"]) == 5 and len(s["train"]) == 15
    outs = [r["messages"][-1]["content"] for r in s["train"] + s["heldout"]]
    assert sorted(outs, key=int) == [str(i) for i in range(20)]
    p2 = _params(tmp_path, {"m": {"source": "local", "path": str(f), "schema": "alpaca", "lang": "en",
                                  "n_heldout": 5, "n": 30}})
    with pytest.raises(DataError, match="only 15 rows remain"):
        load_splits("m", p2)


def test_missing_field_names_row_and_field(tmp_path):
    f = _jsonl(tmp_path / "bad.jsonl", [{"instruction": "x", "input": "", "output": "y"},
                                        {"instruction": "x", "input": "", "outptu": "y"}])
    p = _params(tmp_path, {"bad": {"source": "local", "path": str(f), "schema": "alpaca", "lang": "en"}})
    with pytest.raises(DataError) as e:
        load_splits("bad", p)
    assert "row 1" in str(e.value) and "'output'" in str(e.value)


def test_mapping_to_an_absent_column_and_empty_response_fail(tmp_path):
    f = _jsonl(tmp_path / "a.jsonl", ALPACA_ROWS)
    p = _params(tmp_path, {"a": {"source": "local", "path": str(f), "schema": "alpaca", "lang": "en",
                                 "columns": {"output": "answer"}}})
    with pytest.raises(DataError, match="'answer'"):
        load_splits("a", p)
    f2 = _jsonl(tmp_path / "e.jsonl", [{"instruction": "x", "input": "", "output": "   "}])
    p2 = _params(tmp_path, {"e": {"source": "local", "path": str(f2), "schema": "alpaca", "lang": "en"}})
    with pytest.raises(DataError, match="empty"):
        load_splits("e", p2)


def test_builtin_splits_match_the_params(prepared):
    from cft_helpers.data import load_prepared

    store = prepared.store
    for name, spec in prepared.datasets.items():
        train, held = load_prepared(store, name, "train"), load_prepared(store, name, "heldout")
        assert len(train) == spec.n and len(held) == spec.n_heldout
        assert {r["lang"] for r in train} == set(spec.langs)
        assert not {r["meta"]["key"] for r in train} & {r["meta"]["key"] for r in held}


def test_bad_rows_drop_policy_leaves_them_out_and_counts_them(tmp_path):
    from cft_helpers.data import prepare_datasets

    rows = ALPACA_ROWS + [{"instruction": "x", "input": "", "output": "  "},      # empty response
                          {"instruction": 7, "input": "", "output": "y"},          # wrong type
                          {"instruction": "x", "input": ""}]                      # missing output
    f = _jsonl(tmp_path / "mixed.jsonl", rows)
    with f.open("a") as fh:
        fh.write('{"instruction": "cut off by a full disk", "outp\n')            # line 8: not JSON
    spec = {"source": "local", "path": str(f), "schema": "alpaca", "lang": "en"}
    with pytest.raises(DataError, match=r"mixed.jsonl:8: not JSON"):             # default: stop, name the line
        load_splits("mixed", _params(tmp_path, {"mixed": spec}))
    p = _params(tmp_path, {"mixed": {**spec, "bad_rows": "drop", "n_heldout": 1}})
    report = prepare_datasets(p, progress=False)["datasets"]["mixed"]
    assert report["train"]["rows"] + report["heldout"]["rows"] == len(ALPACA_ROWS)
    assert report["dropped"]["rows"] == 4
    assert report["dropped"]["by_kind"] == {"malformed_json": 1, "empty": 1, "wrong_type": 1,
                                            "missing_field": 1}


def test_a_prepared_file_changed_after_preparation_is_refused(prepared):
    from cft_helpers.data import load_prepared

    store = prepared.store
    path = store.data_dir / "alpaca.train.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))          # a truncated file, e.g. a disk that filled up
    with pytest.raises(RuntimeError, match="changed since it was prepared"):
        load_prepared(store, "alpaca")


def test_unknown_language_codes_and_duplicate_ids_are_named_or_dropped(tmp_path):
    from cft_helpers.data import prepare_datasets

    rows = [{"id": "a", "question": "q1", "response": "r1", "lang": "fr"},
            {"id": "b", "question": "q2", "response": "r2", "lang": "xx"},       # not a language
            {"id": "a", "question": "q3", "response": "r3", "lang": "de"},       # id used on row 0
            {"id": "c", "question": "q4", "response": "r4", "lang": "pt-BR"}]    # region subtags are fine
    f = _jsonl(tmp_path / "m.jsonl", rows)
    spec = {"source": "local", "path": str(f), "schema": "orca", "lang_column": "lang"}
    with pytest.raises(DataError, match=r"row 1: field 'lang': unknown language code 'xx'"):
        load_splits("m", _params(tmp_path, {"m": spec}))
    report = prepare_datasets(_params(tmp_path, {"m": {**spec, "bad_rows": "drop"}}), progress=False)["datasets"]["m"]
    assert report["dropped"]["by_kind"] == {"unknown_language": 1, "duplicate_id": 1}
    assert report["train"]["by_lang"] == {"fr": 1, "pt-BR": 1}


def test_hub_id_is_read_from_the_hf_cache_offline_at_the_commit_it_resolved_to(tmp_path, monkeypatch):
    """After `python -m cft_helpers.fetch`, a process with HF_HUB_OFFLINE=1 (a rank of the launch)
    reads a hub dataset from the HF cache through the real snapshot_download: `main` through the
    cache's refs, a pinned sha directly; the data report records the commit; an uncached
    repository names the fetch step."""
    import huggingface_hub.constants as c

    from cft_helpers.data import prepare_datasets

    hf = tmp_path / "hf"
    repo = hf / "datasets--tiny-org--multi"
    commits = {"main": "89abcdef0123456789abcdef0123456789abcdef", "old": "0123456789abcdef0123456789abcdef01234567"}
    for ref, sha in commits.items():
        _jsonl(repo / "snapshots" / sha / "fr.jsonl",
               [{"instruction": f"{ref} {i}", "input": "", "output": str(i)} for i in range(3)])
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commits["main"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(hf))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    spec = {"source": "hub", "path": "tiny-org/multi", "schema": "alpaca", "data_files": {"fr": "fr.jsonl"}}
    p = _params(tmp_path, {"m": spec})
    assert {r["messages"][0]["content"] for r in load_splits("m", p)["train"]} == {"main 0", "main 1", "main 2"}
    pinned = _params(tmp_path, {"m": {**spec, "revision": commits["old"]}})
    assert load_splits("m", pinned)["train"][0]["messages"][0]["content"] == "old 0"
    report = prepare_datasets(p, progress=False)["datasets"]["m"]
    assert report["hub"] == {"repo": "tiny-org/multi", "revision": None, "commit": commits["main"]}
    missing = _params(tmp_path, {"m": {**spec, "path": "tiny-org/not-fetched"}})
    with pytest.raises(DataError, match=r"tiny-org/not-fetched.*python -m cft_helpers.fetch"):
        load_splits("m", missing)
