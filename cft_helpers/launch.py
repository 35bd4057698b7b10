"""Training arms from a shell, and in several processes under ``accelerate launch``.

    python -m cft_helpers.train --params params/default.yaml --arm p1_alpaca   # one arm
    python -m cft_helpers.train --params smoke --arm phase2 --set training.epochs=2

(``python -m cft_helpers.launch`` is the same command.) With ``runtime.processes`` above 1,
:func:`cft_helpers.train.train_arms` trains each arm by :func:`launch_arm`: ``accelerate launch``
of this CLI in that many processes (docs/ENGINEERING.md, "Scaling out").

The training core imports this module for :func:`launch_arm`; :func:`main` imports the training
core when it runs, so that neither import is a cycle at module level.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Sequence

from cft_helpers.lock import refuse_if_locked
from cft_helpers.params import Params, load_params


def override_args(params: Params) -> list[str]:
    """``--set key=<JSON>`` for each override the params were loaded with (JSON is YAML), so
    that a child process loads the same parameter set."""
    return [x for key, value in params.overrides.items() for x in ("--set", f"{key}={json.dumps(value)}")]


def launch_command(params: Params, arm: str, force: bool = False) -> list[str]:
    """``accelerate launch`` of the training CLI for one arm, with the params' processes and config.

    The launched processes load the same params file with the same overrides (passed as
    ``--set key=<JSON>``; JSON is YAML). Without a config file, ``--multi_gpu`` selects
    accelerate's torchrun launcher, which also serves CPU-only machines (gloo): accelerate's
    ``--cpu`` would start a single process there."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(params.runtime.processes),
           "--num_machines", "1"]
    if params.runtime.launch_config:
        cmd += ["--config_file", str(params.path(params.runtime.launch_config))]
    else:
        cmd += ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += ["-m", "cft_helpers.train", "--params", str(params.source_path), "--arm", arm, *override_args(params)]
    return cmd + (["--force"] if force else [])


def launch_arm(params: Params, arm: str, force: bool = False) -> None:
    """Train one arm in ``runtime.processes`` processes; raises naming the arm if it fails."""
    cmd = launch_command(params, arm, force)
    proc = subprocess.run(cmd, cwd=params.root or None)
    if proc.returncode != 0:
        raise RuntimeError(f"arm {arm!r}: `{' '.join(cmd)}` exited with {proc.returncode}; its output is above")


def arms_named(params: Params, names: Sequence[str]) -> list[str]:
    """The arms ``--arm`` names: arms, phases (their arms) and ``all`` (every arm); an unknown
    name is an error that lists the valid ones."""
    phases = {a.phase for a in params.arms.values()}
    out: list[str] = []
    for name in names:
        if name in params.arms:
            picked = [name]
        elif name == "all":
            picked = list(params.arm_order())
        elif name in phases:
            picked = params.arms_in_phase(name)
        elif name in params.disabled_arms:
            ds = params.disabled_arms[name]
            raise SystemExit(f"error: arm {name!r} is left out of {params.name}: it needs dataset {ds!r}, whose "
                             f"path is not set (--set datasets.{ds}.path=ORG/NAME)")
        else:
            raise SystemExit(f"error: --arm {name!r} is no arm, phase or 'all' of {params.name}; arms: "
                             f"{sorted(params.arms)}; phases: {sorted(phases)}")
        out += [a for a in picked if a not in out]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cft_helpers.train``: train arms (or every arm of a phase) of a parameter set."""
    from cft_helpers.train import train_arms  # the training core imports this module

    ap = argparse.ArgumentParser(prog="python -m cft_helpers.train",
                                 description="The training core: one arm of the grid, full fine-tuning with "
                                             "TRL's SFTTrainer.")
    ap.add_argument("--params", required=True, help="params YAML file or preset name")
    ap.add_argument("--arm", required=True, action="append",
                    help="arm to train, a phase (phase1, phase2, ...: its arms), or all (every arm, in "
                         "dependency order); repeatable")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="override, e.g. training.learning_rate=1e-4 (repeatable)")
    ap.add_argument("--force", action="store_true", help="retrain even if done")
    ns = ap.parse_args(argv)
    params = load_params(ns.params, overrides=ns.overrides)
    if refuse_if_locked(params.run_path):  # a book running on this store: only its own children pass
        return 1
    arms = arms_named(params, ns.arm)
    for name, m in train_arms(params, arms, force=ns.force).items():
        print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in m.items() if k in (
            "steps", "train_loss", "loss_first", "loss_last", "eval_loss_before", "eval_loss_after",
            "wall_s", "checkpoint")))
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # launched: leave the process group cleanly
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
