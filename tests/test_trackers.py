"""Experiment trackers: training.report_to reaches the Trainer, TensorBoard's curves land in the
arm's folder of the run store with the losses of train_log.jsonl, and neither report_to nor
run_name changes what an arm is (its input hash)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from cft_helpers.params import TRACKERS, ParamsError, load_params
from cft_helpers.runs import RunStore
from cft_helpers.inventory import place_of

ROOT = Path(__file__).resolve().parents[1]


def test_a_tensorboard_arm_leaves_event_files_with_its_losses_in_the_arm_folder(prepared):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from cft_helpers.train import train_arm

    params = load_params(prepared.source_path, overrides={"training.report_to": "tensorboard",
                                                          "training.max_steps": 3})
    store = params.store
    metrics = train_arm(params, "p1_alpaca", progress=False)
    assert metrics["steps"] == 3

    tracker = store.arm_tracker_dir("p1_alpaca")
    # one file for training, one more for the held-out evaluation after it (the Trainer's writer
    # closes when training ends): one TensorBoard run, the arm's folder
    events = sorted(tracker.glob("events.out.tfevents.*"))
    assert events and sorted(f for f in tracker.rglob("*") if f.is_file()) == events
    # not transformers' default under output_dir: the checkpoints folder is gone once the arm is done
    assert not store.arm_checkpoints_dir("p1_alpaca").exists()
    for f in tracker.rglob("*"):
        if f.is_file():
            assert place_of(f.relative_to(store.root).as_posix()) == ("arm p1_alpaca", "safe"), f

    acc = EventAccumulator(str(tracker), size_guidance={"scalars": 0, "tensors": 0})  # all its files
    acc.Reload()
    logged = [json.loads(line) for line in store.arm_file("p1_alpaca", "train_log.jsonl").read_text().splitlines()]
    want = [(e["step"], e["loss"]) for e in logged if "loss" in e]
    assert len(want) == 3  # logging_steps 1 (smoke), 3 steps
    got = [(s.step, s.value) for s in acc.Scalars("train/loss")]
    assert [s for s, _ in got] == [s for s, _ in want]
    # TensorBoard stores float32
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6)

    # the held-out loss before and after training, as metrics.json has them
    heldout = [s.value for s in acc.Scalars("eval/heldout_loss")]
    assert heldout == pytest.approx([metrics["eval_loss_before"], metrics["eval_loss_after"]], rel=1e-6)

    # the run's name reached the Trainer (its arguments are logged as text)
    args_text = acc.Tensors("args/text_summary")[0].tensor_proto.string_val[0].decode()
    assert json.loads(args_text)["run_name"] == "smoke-s0-p1_alpaca"


def test_an_unknown_tracker_is_refused_with_the_valid_values(smoke_params):
    with pytest.raises(ParamsError) as err:
        load_params(smoke_params.source_path, overrides={"training.report_to": "comet"})
    msg = str(err.value)
    assert "training.report_to" in msg and "'comet'" in msg
    for name in TRACKERS:
        assert f"'{name}'" in msg, name


def test_run_name_is_filled_in_per_arm_and_checked(smoke_params):
    t = smoke_params.training
    assert t.report_to == "none"  # the default: logs nowhere
    assert t.tracker_run_name(smoke_params.name, smoke_params.seed, "p1_alpaca") == "smoke-s0-p1_alpaca"
    mine = load_params(smoke_params.source_path, overrides={"training.run_name": "exp7-{arm}-seed{seed}"})
    assert mine.training.tracker_run_name("smoke", 3, "rev1") == "exp7-rev1-seed3"
    for bad, says in (("{name}-{lr}", "['lr']"), ("{name", "not a valid template")):
        with pytest.raises(ParamsError) as err:
            load_params(smoke_params.source_path, overrides={"training.run_name": bad})
        assert says in str(err.value) and "{arm}" in str(err.value)


def test_sft_config_passes_the_tracker_and_the_run_name(smoke_params, tmp_path):
    from cft_helpers.train import sft_config

    t = load_params(smoke_params.source_path, overrides={"training.report_to": "mlflow"}).training
    args = sft_config(t, tmp_path, "cpu", progress=False, run_name="smoke-s0-p1_alpaca", project="smoke")
    assert args.report_to == ["mlflow"] and args.run_name == "smoke-s0-p1_alpaca" and args.project == "smoke"
    assert sft_config(smoke_params.training, tmp_path, "cpu", progress=False).report_to == []  # "none"


def test_tracker_settings_leave_the_arm_input_hash_unchanged(prepared):
    from cft_helpers.train import arm_input_hash

    # pinned in tests/test_mitigation.py (HASHES_KEPT): run stores made before trackers stay valid
    assert arm_input_hash(prepared, "p1_instruct") == "c9033bb62c26dcc3"
    for overrides in ({"training.report_to": "tensorboard"}, {"training.report_to": "wandb"},
                      {"training.run_name": "mine-{arm}"}):
        other = load_params(prepared.source_path, overrides=overrides)
        assert arm_input_hash(other, "p1_instruct") == "c9033bb62c26dcc3", overrides
    changed = load_params(prepared.source_path, overrides={"training.learning_rate": 1e-3})
    assert arm_input_hash(changed, "p1_instruct") != "c9033bb62c26dcc3"  # a real setting does


def test_tracker_folder_is_a_place_of_the_layout(tmp_path):
    store = RunStore(tmp_path / "run")
    f = store.arm_tracker_dir("a") / "events.out.tfevents.1.host.1.0"
    assert f.relative_to(store.root).as_posix() == "arms/a/tracker/events.out.tfevents.1.host.1.0"
    assert place_of(f.relative_to(store.root).as_posix()) == ("arm a", "safe")


def test_the_track_extra_pins_every_tracker_and_dev_brings_tensorboard():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    track = dict(d.split("==") for d in extras["track"])
    assert set(track) == {"tensorboard", "wandb", "mlflow-skinny", "trackio"}
    assert all(v and v[0].isdigit() for v in track.values()), track
    assert f"tensorboard=={track['tensorboard']}" in extras["dev"]  # the offline test above needs it
