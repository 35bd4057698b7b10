"""Named kill points: where a Slurm kill or a lost node can stop a run, made deterministic.

``CFT_KILL_AT=<point>`` in the environment SIGKILLs the process the moment it reaches that point,
so that ``scripts/fault_injection.py`` (and the tests) can hit windows a kill after a random delay
almost never lands in: between writing an arm's last file and marking its stage done, say. Unset
(always, outside fault injection), a kill point costs one environment lookup.

``CFT_KILL_SIGNAL=USR2`` sends that signal instead of SIGKILL: what Slurm sends before it
preempts a job or at its time limit, on which submitit requeues the job (cft_helpers.executors).

Points: ``train:metrics-written`` (final model and metrics.json written, stage still running),
``train:before-finish`` (the same, in train_arm), ``train:finished`` (stage done, checkpoints
not yet removed).
"""

from __future__ import annotations

import os
import signal

KILL_AT_ENV = "CFT_KILL_AT"
SIGNAL_ENV = "CFT_KILL_SIGNAL"
POINTS = ("train:metrics-written", "train:before-finish", "train:finished")


def kill_point(name: str) -> None:
    """SIGKILL this process here when ``CFT_KILL_AT`` names ``name`` (fault injection only), or
    send it ``CFT_KILL_SIGNAL``."""
    if os.environ.get(KILL_AT_ENV) == name:
        sig = getattr(signal, "SIG" + os.environ.get(SIGNAL_ENV, "KILL").removeprefix("SIG"))
        print(f"{KILL_AT_ENV}={name}: sending {sig.name} to process {os.getpid()}", flush=True)
        os.kill(os.getpid(), sig)
