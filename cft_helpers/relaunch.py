"""Relaunching this process's work in several processes under ``accelerate launch``.

Training and evaluation both relaunch themselves when ``runtime.processes`` is above 1: the
process a user started (a notebook, a CLI, a scheduler worker) builds the command, runs it and
waits; the launched processes load the same params file with the same overrides (passed as
``--set key=<JSON>``; JSON is YAML) and do the work (docs/CLUSTER.md, "Scaling out").

- Training: ``python -m cft_helpers.train`` in ``runtime.processes`` processes, with the
  params' ``runtime.launch_config`` (FSDP, ZeRO-3) where one is set (:func:`launch_arm`).
- Evaluation: ``python -m cft_helpers.evaluate``, always with accelerate's plain multi-process
  launcher: a launch config shards training's optimizer state, which evaluation has none of
  (:func:`launch_evaluation`).

Without a config file, ``--multi_gpu`` selects accelerate's torchrun launcher, which also serves
CPU-only machines (gloo): accelerate's ``--cpu`` would start a single process there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Sequence

from cft_helpers.params import Params

_ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch"]
_PLAIN = ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]


def launched() -> bool:
    """Whether this process is one of several started by ``accelerate launch`` / ``torchrun``."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def override_args(params: Params) -> list[str]:
    """``--set key=<JSON>`` for each override the params were loaded with (JSON is YAML), so
    that a child process loads the same parameter set."""
    return [x for key, value in params.overrides.items() for x in ("--set", f"{key}={json.dumps(value)}")]


def launch_command(params: Params, arm: str, force: bool = False) -> list[str]:
    """``accelerate launch`` of the training CLI for one arm, with the params' processes and config."""
    cmd = [*_ACCELERATE, "--num_processes", str(params.runtime.processes), "--num_machines", "1"]
    if params.runtime.launch_config:
        cmd += ["--config_file", str(params.path(params.runtime.launch_config))]
    else:
        cmd += _PLAIN
    cmd += ["-m", "cft_helpers.train", "--params", str(params.source_path), "--arm", arm, *override_args(params)]
    return cmd + (["--force"] if force else [])


def launch_arm(params: Params, arm: str, force: bool = False) -> None:
    """Train one arm in ``runtime.processes`` processes; raises naming the arm if it fails."""
    cmd = launch_command(params, arm, force)
    proc = subprocess.run(cmd, cwd=params.root or None)
    if proc.returncode != 0:
        raise RuntimeError(f"arm {arm!r}: `{' '.join(cmd)}` exited with {proc.returncode}; its output is above")


def evaluate_command(params: Params, names: Sequence[str], force: bool = False) -> list[str]:
    """``accelerate launch`` of the evaluation CLI on ``names`` in ``runtime.processes`` processes."""
    if params.source_path is None:
        raise ValueError("evaluation in several processes needs params loaded from a file (load_params)")
    cmd = [*_ACCELERATE, "--num_processes", str(params.runtime.processes), "--num_machines", "1", *_PLAIN,
           "-m", "cft_helpers.evaluate", "--params", str(params.source_path)]
    cmd += [x for n in names for x in ("--model", n)] + override_args(params)
    return cmd + (["--force"] if force else [])


def launch_evaluation(params: Params, names: Sequence[str], force: bool = False) -> None:
    """Evaluate ``names`` in ``runtime.processes`` processes; raises if the launch fails."""
    cmd = evaluate_command(params, names, force)
    # (the launched processes print nothing of their own: this process reports)
    proc = subprocess.run(cmd, cwd=params.root or None, env={**os.environ, "CFT_EVALUATE_QUIET": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"evaluation of {', '.join(names)}: `{' '.join(cmd)}` exited with {proc.returncode}; "
                           "its output is above")
