"""The callback that makes a run resumable with nothing lost.

:class:`RunState` writes ``checkpoints/last.safetensors`` every ``every`` optimizer
steps and at the end of every epoch (after its validation), through the trainer (so the file holds
the model, optimizer, scheduler and loop progress) plus its own state: the position
in the data (epoch, batches done) and the RNG states of torch, numpy and Python
(dropout draws from torch's). On resume it puts them back before the first batch, so
the resumed run takes the same batches and the same random numbers as a run that was
never interrupted. It also carries the training time so far (``train_seconds``), so the
time recorded for a resumed run is that of all its attempts together (less the work
lost after the last checkpoint, which was redone).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from rnnx.train.sampler import ShardedBatchSampler


class RunState(L.Callback):
    """Periodic atomic checkpoints and the data/RNG state they need (module docstring)."""

    def __init__(self, sampler: ShardedBatchSampler, path: str | Path, every: int) -> None:
        self.sampler, self.path, self.every = sampler, Path(path), int(every)
        self._epoch, self._done = 0, 0
        self._seconds_before, self._t0 = 0.0, None

    @property
    def train_seconds(self) -> float:
        """Seconds of training of this run, over all attempts (module docstring)."""
        now = time.perf_counter()
        return self._seconds_before + (now - self._t0 if self._t0 is not None else 0.0)

    def on_train_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        self._seconds_before, self._t0 = self.train_seconds, None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        # Lightning's own set_epoch call reaches samplers, not batch samplers; this hook
        # runs before the epoch's iterator is created (not at all when a run restarts
        # mid-epoch: then ShardedBatchSampler.resume has set the epoch).
        self.sampler.set_epoch(trainer.current_epoch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._epoch, self._done = trainer.current_epoch, batch_idx + 1
        last = self._done >= trainer.num_training_batches
        if not last and self.every and trainer.global_step % self.every == 0:
            trainer.save_checkpoint(self.path)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # After the epoch's validation: the next batch is the first of the next epoch.
        # (Saving at the last batch instead would make Lightning replay an empty epoch.)
        self._epoch, self._done = trainer.current_epoch + 1, 0
        trainer.save_checkpoint(self.path)

    def state_dict(self) -> dict[str, Any]:
        np_state = np.random.get_state()  # noqa: NPY002 (the global state is what we save)
        return {
            "epoch": self._epoch,
            "batches_done": self._done,
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": [np_state[0], [int(v) for v in np_state[1]], *np_state[2:]],
            "python_rng": random.getstate(),
            "train_seconds": self.train_seconds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch_rng"])
        name, keys, *rest = state["numpy_rng"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))  # noqa: NPY002
        version, internal, gauss = state["python_rng"]
        random.setstate((version, tuple(internal), gauss))
        self._epoch, self._done = int(state["epoch"]), int(state["batches_done"])
        self._seconds_before = float(state.get("train_seconds", 0.0))
        self.sampler.resume(self._epoch, self._done)
