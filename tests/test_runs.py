"""The run store: done means done, a crash is never done, inputs decide what reruns."""

from __future__ import annotations

import pytest

from cft_helpers.runs import RunStore
from cft_helpers.files import atomic_write_json, read_json


def test_stage_lifecycle(tmp_path):
    store = RunStore(tmp_path)
    s = store.stage("arms/a", "hash1")
    assert s.status() == "missing" and not s.is_done()
    assert s.begin() is False
    assert s.status() == "running" and not s.is_done()
    (s.dir / "out.txt").write_text("x")
    s.finish({"checkpoint": "model"})
    assert s.is_done() and s.outputs() == {"checkpoint": "model"}
    m = s.manifest()
    assert m["git"].keys() == {"commit", "dirty"} and "torch" in m["versions"]
    # same stage, other inputs: stale, not done
    assert store.stage("arms/a", "hash2").status() == "stale"


def test_crashed_stage_is_not_done_and_resumes_with_its_checkpoints(tmp_path):
    store = RunStore(tmp_path)
    s = store.stage("arms/a", "h")
    s.begin()
    (s.dir / "checkpoints").mkdir()
    (s.dir / "checkpoints" / "checkpoint-2").mkdir()
    (s.dir / "metrics.json").write_text("{}")
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt as e:
        s.fail(e)
    assert s.status() == "failed" and not s.is_done()
    assert "KeyboardInterrupt" in s.manifest()["error"]
    s2 = store.stage("arms/a", "h")
    assert s2.begin() is True  # resumable
    assert (s2.dir / "checkpoints" / "checkpoint-2").is_dir()
    assert not (s2.dir / "metrics.json").exists()  # outputs of the failed attempt are gone
    assert s2.manifest()["attempts"] == 2


def test_killed_stage_left_running_is_not_done(tmp_path):
    """A SIGKILL leaves status 'running': never taken as done, resumable on the next run."""
    s = RunStore(tmp_path).stage("x", "h")
    s.begin()
    assert not s.is_done()
    assert RunStore(tmp_path).stage("x", "h").begin() is True


def test_force_and_changed_inputs_wipe_partial_work(tmp_path):
    store = RunStore(tmp_path)
    s = store.stage("a", "h")
    s.begin()
    (s.dir / "checkpoints").mkdir()
    s.fail(RuntimeError("boom"))
    assert store.stage("a", "h").begin(force=True) is False
    assert not (s.dir / "checkpoints").exists()
    s.begin()
    (s.dir / "checkpoints").mkdir()
    assert store.stage("a", "other").begin() is False
    assert not (s.dir / "checkpoints").exists()


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    atomic_write_json(tmp_path / "m.json", {"a": 1})
    atomic_write_json(tmp_path / "m.json", {"a": 2})
    assert read_json(tmp_path / "m.json") == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_arm_checkpoint_of_unfinished_arm_says_what_to_run(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(RuntimeError, match="not done"):
        store.arm_checkpoint("p1_alpaca")


def test_a_moved_run_store_finds_its_checkpoints(tmp_path):
    import shutil

    from cft_helpers.runs import RunStore

    store = RunStore(tmp_path / "a")
    model = store.arm_dir("p1") / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    stage = store.stage("arms/p1", "hash")
    stage.finish({"checkpoint": str(model)})
    assert store.arm_checkpoint("p1") == model
    shutil.move(tmp_path / "a", tmp_path / "b")   # the whole run_dir renamed
    moved = RunStore(tmp_path / "b")
    assert moved.arm_checkpoint("p1") == tmp_path / "b" / "arms" / "p1" / "model"


def test_shared_caches_merge_where_the_file_system_refuses_flock(tmp_path, monkeypatch):
    """NFS without a lock daemon, Lustre without -o flock: flock raises; the keyed cache still
    merges (unlocked, with one warning per folder) instead of failing the job."""
    import errno
    import fcntl

    from cft_helpers import files
    from cft_helpers.files import KeyedCache, update_json

    def refuse(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", refuse)
    monkeypatch.setattr(files, "_UNLOCKED_WARNED", set())
    cache = KeyedCache(tmp_path / "losses.json")
    with pytest.warns(UserWarning, match="no flock on .*No locks available") as caught:
        assert cache.get("a", lambda: 1.5) == 1.5
        update_json(tmp_path / "losses.json", {"b": 2.5})
        assert cache.get("a", lambda: 9.0) == 1.5  # the entry was kept: no recomputation
    assert len(caught) == 1 and read_json(tmp_path / "losses.json") == {"a": 1.5, "b": 2.5}
