"""One process or several (``accelerate launch``, ``torchrun``): who writes, and when to wait.

The training core runs unchanged in every process; the engine (accelerate: DDP, FSDP or
DeepSpeed, picked by the launch config) shards the batches and the model. What is ours to get
right is the run store: exactly one process (the main one) begins, writes and finishes a stage,
and the others wait for it at the points where they read what it wrote.

    procs = Processes()
    if procs.is_main: stage.begin()
    procs.wait()
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from typing import Callable, TypeVar

T = TypeVar("T")


class Processes:
    """This process's place in a launch: its rank, the process count, and waits.

    ``timeout_s`` (``runtime.dist_timeout_s``) bounds every collective of the process group: it
    only applies when this is the first object to join the group (the launch's first), as
    torch fixes a group's timeout when it is created; the Trainer's own ``ddp_timeout`` comes
    too late for that, so the training core passes the same value to both."""

    def __init__(self, timeout_s: int | None = None):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self._state = None
        if self.world_size > 1:
            import torch
            from accelerate import PartialState

            kwargs = {} if timeout_s is None else {"timeout": timedelta(seconds=timeout_s)}
            # joins the process group the launcher set up; without CUDA accelerate only forms a
            # CPU group (gloo) when told it is on the CPU
            self._state = PartialState(cpu=not torch.cuda.is_available(), **kwargs)
            self.rank = self._state.process_index

    @property
    def is_main(self) -> bool:
        return self._state is None or self._state.is_main_process

    def wait(self) -> None:
        """Every process waits here until all have arrived (no-op in one process). A collective:
        it fails after ``timeout_s``; for longer, uneven work use :meth:`wait_until`."""
        if self._state is not None:
            self._state.wait_for_everyone()

    def wait_until(self, ready: Callable[[], bool], what: str, poll_s: float = 2.0) -> None:
        """Wait, without any collective, until ``ready()`` (a check of files that other
        processes write) is true. No process-group timeout applies, so one rank may work for
        hours while the others wait here (GR replay generation: its slowest shard). A rank that
        fails ends the launch: torchrun stops the others, so this never waits for a dead rank."""
        if ready():
            return
        t0 = time.monotonic()
        said = 0.0
        while not ready():
            waited = time.monotonic() - t0
            if waited - said >= 300:  # a line every 5 minutes: the log shows why this rank idles
                print(f"rank {self.rank}: waiting {waited / 60:.0f} min for {what}", flush=True)
                said = waited
            time.sleep(poll_s)

    def decide(self, choose: Callable[[], T]) -> T:
        """``choose()`` run by the main process alone, its answer sent to every process (a
        collective). For a choice that reads files another process may be writing (a cache, a
        checkpoint folder, a manifest): each rank reading for itself could choose differently,
        and ranks that then run different collectives hang until the process-group timeout
        (docs/CLUSTER.md, "One choice, every rank")."""
        if self._state is None:
            return choose()
        import torch.distributed as dist

        box = [choose() if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]
