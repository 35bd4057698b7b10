"""The run store's layout (runs.py): every file of a finished store has its place, ``runs show``
names what it holds and what may be deleted, and the keyed caches compute a key once."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cft_helpers.files import stable_hash
from cft_helpers.runs import RunStore
from cft_helpers.files import KeyedCache, KeyedFile
from cft_helpers.inventory import inventory, place_of


ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- a finished store


def test_every_file_of_a_finished_smoke_store_has_its_place(book_run):
    params, _ = book_run
    inv = inventory(params.run_path)
    assert inv["unknown"] == []
    stages = inv["stages"]
    assert stages["data"]["status"] == "done"
    for arm in params.arms:
        assert stages[f"arm {arm}"]["status"] == "done", arm
    for model in params.evaluated_models():
        assert stages[f"eval {model}"]["status"] == "done", model
    for label in ("similarity", "representations", "findings", "held-out loss", "notebooks", "eval summary"):
        assert label in stages, label
    assert stages["findings"]["status"] == "done"
    # the trained models are to keep; the executed notebooks are never read back
    assert set(stages["arm p1_alpaca"]["delete"]) == {"keep"}
    assert ("notebooks/", stages["notebooks"]["bytes"]) in inv["safe"]
    assert sum(s["files"] for s in stages.values()) == sum(1 for p in params.run_path.rglob("*") if p.is_file())


def test_runs_show_reports_a_planted_unknown_file(book_run):
    params, _ = book_run
    planted = [params.run_path / "notes.txt", params.run_path / "arms" / "p1_alpaca" / "extra.bin",
               params.run_path / "eval" / "stray.jsonl"]
    try:
        for p in planted:
            p.write_text("x")
        proc = subprocess.run([sys.executable, "-m", "cft_helpers.inventory", "show", str(params.run_path)],
                              capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert proc.returncode == 0, proc.stderr
        unknown = proc.stdout.split("\nunknown (", 1)[1]
        assert unknown.startswith("3)")
        for rel in ("notes.txt", "arms/p1_alpaca/extra.bin", "eval/stray.jsonl"):
            assert f"  {rel} (1 B)" in unknown, rel
        assert "arm p1_alpaca" in proc.stdout and "safe to delete now" in proc.stdout
    finally:
        for p in planted:
            p.unlink(missing_ok=True)


# --------------------------------------------------------------------------- statuses, without a book


def _store(tmp_path: Path) -> Path:
    """A hand-made store: one done arm with left-over checkpoints, its evaluation on suite s1, a
    retrained arm's stale evaluation, an unused suite, two embeddings of one dataset."""
    root = tmp_path / "run"
    store = RunStore(root)
    files = {
        "params.yaml": "arms:\n  a: {}\n  b: {}\n",
        "arms/a/manifest.json": json.dumps({"status": "done", "input_hash": "h_a"}),
        "arms/a/model/model.safetensors": "w" * 100,
        "arms/a/checkpoints/checkpoint-2/optimizer.pt": "o" * 50,
        "arms/b/manifest.json": json.dumps({"status": "done", "input_hash": "h_b_new"}),
        "arms/c/manifest.json": json.dumps({"status": "running", "input_hash": "h_c"}),
        "arms/c/checkpoints/checkpoint-1/trainer_state.json": "{}",
        "eval/a.json": json.dumps({"key": stable_hash({"model": "h_a", "suite": "s1"}), "suite": "s1"}),
        "eval/a.samples.jsonl": "{}\n",
        "eval/b.json": json.dumps({"key": stable_hash({"model": "h_b_old", "suite": "s1"}), "suite": "s1"}),
        "eval/c.samples.jsonl": "{}\n",
        "eval/tasks/s1/written.json": "{}",
        "eval/tasks/s0/written.json": "{}",
        "similarity/embeddings/alpaca.0123456789abcdef.npy": "old",
        "similarity/embeddings/alpaca.fedcba9876543210.npy": "new",
        "heldout_loss.json": json.dumps({"a|h_a|alpaca|d|4": 1.0, "b|h_b_old|alpaca|d|4": 2.0}),
        "figures/.fig1.tmp.png": "",
        "seeds/seed-1/data/manifest.json": json.dumps({"status": "failed"}),
        "seeds/seed-1/stray.txt": "?",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    import os
    import time

    old = root / "similarity/embeddings/alpaca.0123456789abcdef.npy"
    os.utime(old, (time.time() - 100, time.time() - 100))
    assert store.eval_result("a") == root / "eval/a.json"
    return root


def test_statuses_and_what_is_safe_to_delete(tmp_path):
    root = _store(tmp_path)
    inv = inventory(root)
    st = inv["stages"]
    manifest = (root / "arms/a/manifest.json").stat().st_size
    assert st["arm a"]["status"] == "done" and st["arm a"]["delete"] == {"keep": 100 + manifest, "safe": 50}
    assert st["arm c"]["status"] == "running" and "resume" in " ".join(st["arm c"]["notes"])
    assert "not an arm of params.yaml" in st["arm c"]["notes"]
    assert st["eval a"]["status"] == "done"
    assert st["eval b"]["status"] == "stale"          # its arm's input hash changed since
    assert st["eval c"]["status"].startswith("partial")
    assert "1 of arms retrained since" in " ".join(st["held-out loss"]["notes"])
    assert st["seeds/seed-1 data"]["status"] == "failed"
    safe = dict(inv["safe"])
    assert safe["arms/a/checkpoints/"] == 50 and "arms/c/checkpoints/" not in safe
    assert "eval/tasks/s0/" in safe and "eval/tasks/s1/" not in safe
    assert "similarity/embeddings/alpaca.0123456789abcdef.npy" in safe
    assert "similarity/embeddings/alpaca.fedcba9876543210.npy" not in safe
    assert "leftovers (interrupted writes)" in safe
    assert inv["unknown"] == [("seeds/seed-1/stray.txt", 1)]


def test_place_of_each_accessor_path(tmp_path):
    """Every path an accessor names is a known place of the layout (the two cannot drift)."""
    store = RunStore(tmp_path / "run")
    paths = [store.params_file, store.lock_file, store.book_timing, store.data_file("alpaca", "heldout"),
             store.data_report, store.arm_file("a", "freeze.json"), store.arm_model_dir("a") / "config.json",
             store.arm_adapter_dir("a") / "adapter_config.json", store.arm_checkpoints_dir("a") / "x" / "y",
             store.replay_file("a"), store.replay_summary("a"), store.replay_generations("a"),
             store.eval_result("m"), store.eval_samples("m"), store.eval_summary,
             store.eval_tasks_dir("s") / "t.yaml", store.alpacaeval_answers("m", "0123456789abcdef"),
             store.alpacaeval_dir / "judge-j" / "annotations.json", store.similarity_embeddings("d", "0123456789abcdef"),
             store.des_file, store.mpd_file, store.similarity_summary, store.representations_file("prompts", "m"),
             store.representations_summary, store.heldout_loss_file, store.losses_before_training_file,
             store.findings_json, store.findings_md, store.figures_dir / "fig1.png", store.notebooks_dir / "01.ipynb",
             store.logs_dir / "train-a.log", store.schedule_file]
    for p in paths:
        assert place_of(p.relative_to(store.root).as_posix()) is not None, p
    seed_file = store.seed_dir(1) / "data" / "report.json"
    assert seed_file.relative_to(store.root).as_posix() == "seeds/seed-1/data/report.json"
    with pytest.raises(ValueError):
        store.arm_file("a", "model.safetensors")


# --------------------------------------------------------------------------- keyed caches


def test_keyed_json_file_computes_once_and_keeps_the_format(tmp_path):
    path = tmp_path / "eval" / "m.json"
    calls = []

    def compute():
        calls.append(1)
        return {"model": "m", "key": "k1", "score": 0.5}

    cache = KeyedFile(path)
    assert cache.get("k1", compute) == {"model": "m", "key": "k1", "score": 0.5}
    assert cache.get("k1", compute)["score"] == 0.5 and len(calls) == 1   # read back
    # the file is what atomic_write_json wrote before: existing run stores stay valid
    assert path.read_text() == json.dumps({"model": "m", "key": "k1", "score": 0.5}, indent=2) + "\n"
    assert cache.read("k2") is None                                       # another key: a miss
    cache.get("k2", lambda: {"score": 1.0})
    assert json.loads(path.read_text()) == {"score": 1.0, "key": "k2"}
    assert cache.get("k2", compute, force=True)["key"] == "k2" and len(calls) == 2


def test_keyed_npz_and_npy_files(tmp_path):
    acts = np.arange(6, dtype=np.float32).reshape(2, 3)
    npz = KeyedFile(tmp_path / "prompts" / "m.npz")
    npz.write("k", {"activations": acts, "key": "k", "dtype": np.array("float32")})
    with np.load(tmp_path / "prompts" / "m.npz") as z:   # as representations.py read it before
        assert str(z["key"]) == "k" and z["activations"].tolist() == acts.tolist()
    assert npz.read("k")["activations"].tolist() == acts.tolist() and npz.read("other") is None
    npy = KeyedFile(tmp_path / "emb" / "d.abc.npy")
    assert npy.read("abc") is None
    npy.write("abc", acts)
    assert npy.read("abc").tolist() == acts.tolist()
    with pytest.raises(ValueError, match="name"):
        npy.write("xyz", acts)   # a .npy holds no key: its name must
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["d.abc.npy", "emb", "m.npz", "prompts"]  # no temp files


def _add_keys(path: str, prefix: str, n: int) -> None:
    cache = KeyedCache(path)
    for i in range(n):
        cache.add({f"{prefix}{i}": i})


def test_keyed_cache_merges_keys_of_parallel_processes(tmp_path):
    path = tmp_path / "losses.json"
    calls = []
    cache = KeyedCache(path)
    assert cache.get("a", lambda: calls.append(1) or 1.5) == 1.5
    assert cache.get("a", lambda: calls.append(1) or 9.9) == 1.5 and len(calls) == 1
    got = cache.get_many({"x": "a", "y": "b"}, lambda missing: {name: 2.5 for name in missing})
    assert got == {"x": 1.5, "y": 2.5}
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_add_keys, args=(str(path), p, 25)) for p in ("p", "q")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    data = json.loads(path.read_text())
    assert {f"{p}{i}" for p in "pq" for i in range(25)} | {"a", "b"} == set(data)  # none lost
