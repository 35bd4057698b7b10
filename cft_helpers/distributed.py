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


class Processes:
    def __init__(self):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self._state = None
        if self.world_size > 1:
            import torch
            from accelerate import PartialState

            # joins the process group the launcher set up; without CUDA accelerate only forms a
            # CPU group (gloo) when told it is on the CPU
            self._state = PartialState(cpu=not torch.cuda.is_available())

    @property
    def is_main(self) -> bool:
        return self._state is None or self._state.is_main_process

    def wait(self) -> None:
        """Every process waits here until all have arrived (no-op in one process)."""
        if self._state is not None:
            self._state.wait_for_everyone()
