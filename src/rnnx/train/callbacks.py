"""Callbacks of a run: resumable state, the budget, and model selection.

* :class:`RunState` makes a run resumable with nothing lost (below);
* :class:`Budget` stops a run when its steps or its wall-clock minutes are spent;
* :class:`ModelSelection` keeps the weights with the best validation metric (within
  its noise) and stops early after ``patience`` validations that fall short of it.

:class:`RunState` writes ``checkpoints/last.safetensors`` every ``every`` optimizer
steps and at the end of an epoch (after its validation) when ``every`` steps have
passed since the last checkpoint, through the trainer (so the file holds
the model, optimizer, scheduler and loop progress) plus its own state: the position
in the data (epoch, batches done) and the RNG states of torch, numpy and Python
(dropout draws from torch's). On resume it puts them back before the first batch, so
the resumed run takes the same batches and the same random numbers as a run that was
never interrupted. It also carries the training time so far (``train_seconds``), so the
time recorded for a resumed run is that of all its attempts together (less the work
lost after the last checkpoint, which was redone).
"""

from __future__ import annotations

import math
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
        self._saved_at = 0  # optimizer step of the last checkpoint
        self._seconds_before = 0.0
        self._t0: float | None = None

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
            self._saved_at = trainer.global_step
            trainer.save_checkpoint(self.path)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # After the epoch's validation: the next batch is the first of the next epoch.
        # (Saving at the last batch instead would make Lightning replay an empty epoch.)
        # Epochs shorter than `every` steps (small data sets under a step budget) are
        # not checkpointed at every end: only once `every` steps have passed since the
        # last checkpoint (a resume from a mid-epoch checkpoint is exact as well), and
        # when the run ends.
        self._epoch, self._done = trainer.current_epoch + 1, 0
        ending = trainer.should_stop or trainer.global_step >= trainer.max_steps > 0
        if ending or not self.every or trainer.global_step - self._saved_at >= self.every:
            self._saved_at = trainer.global_step
            trainer.save_checkpoint(self.path)

    def state_dict(self) -> dict[str, Any]:
        np_state = np.random.get_state()  # noqa: NPY002 (the global state is what we save)
        assert isinstance(np_state, tuple)  # the global MT19937's legacy form
        return {
            "epoch": self._epoch,
            "batches_done": self._done,
            "saved_at": self._saved_at,
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
        self._saved_at = int(state.get("saved_at", 0))
        self._seconds_before = float(state.get("train_seconds", 0.0))
        self.sampler.resume(self._epoch, self._done)


class Budget(L.Callback):
    """The run's budget: ``max_steps`` optimizer steps and ``minutes`` on a clock.

    The clock (``clock="wall"``, the default, or ``"cpu"``: this process's CPU time,
    all its threads, the fair measure on a machine shared with other jobs) counts the
    time spent in ``fit`` (training and its validations), summed over the attempts of
    a resumed run (it is part of the checkpoint). When the minutes are spent, or the
    last step is done, it asks the trainer to stop (``trainer.should_stop``), which
    makes Lightning validate once more before it stops: the last weights are always a
    candidate for model selection. :meth:`fraction` is the part of the budget used,
    ``max(steps done / max_steps, time used / minutes)``; the learning-rate schedule
    follows it (:func:`rnnx.train.module.budget_schedule`), so a run cut by the clock
    still ends its decay at the deadline.
    """

    CLOCKS = ("wall", "cpu")

    def __init__(self, max_steps: int, minutes: float, clock: str = "wall") -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps: expected >= 1, got {max_steps}")
        if minutes < 0:
            raise ValueError(f"budget_minutes: expected >= 0 (0: no limit), got {minutes}")
        if clock not in self.CLOCKS:
            raise ValueError(f"budget_clock: expected 'wall' or 'cpu', got {clock!r}")
        self.max_steps, self.seconds, self.clock = int(max_steps), 60.0 * float(minutes), clock
        self._before = {"wall": 0.0, "cpu": 0.0}  # used by earlier attempts of a resumed run
        self._t0: dict[str, float] | None = None
        self.stopped_by: str | None = None

    @staticmethod
    def _now() -> dict[str, float]:
        import time

        return {"wall": time.monotonic(), "cpu": time.process_time()}

    def used(self) -> dict[str, float]:
        """Seconds used so far on each clock."""
        now = self._now() if self._t0 is not None else None
        return {
            k: self._before[k] + (0.0 if now is None else now[k] - self._t0[k])  # type: ignore[index]
            for k in self.CLOCKS
        }

    def elapsed(self) -> float:
        """Seconds used on the budget's clock."""
        return self.used()[self.clock]

    def time_fraction(self) -> float:
        return self.elapsed() / self.seconds if self.seconds > 0 else 0.0

    def fraction(self, step: int) -> float:
        return min(1.0, max(step / self.max_steps, self.time_fraction()))

    def on_fit_start(self, trainer, pl_module) -> None:
        self._t0 = self._now()

    def on_fit_end(self, trainer, pl_module) -> None:
        self._before, self._t0 = self.used(), None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.max_steps:
            self.stopped_by = self.stopped_by or "steps"
            trainer.should_stop = True
        elif self.seconds > 0 and self.elapsed() >= self.seconds:
            self.stopped_by = "budget_minutes"
            trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"used": self.used(), "stopped_by": self.stopped_by}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._before = {k: float(state["used"][k]) for k in self.CLOCKS}
        self.stopped_by = state.get("stopped_by")


def noise_tolerance(metric: str, value: float, n: float) -> float:
    """How far a validation ``metric`` may fall short of ``value`` and still count as
    equally good: for an accuracy ``p`` over ``n`` items, its standard error
    ``sqrt(p (1 - p) / n)`` and at least one item ``1 / n``; 0 for other metrics."""
    if metric != "acc" or n <= 0:
        return 0.0
    return max(1.0 / n, math.sqrt(max(value * (1 - value), 0.0) / n))


class ModelSelection(L.Callback):
    """Keeps the weights with the best validation metric, within its noise, and stops
    after ``patience`` validations in a row that fall short of it.

    The peak is the best validation metric so far (higher accuracy, lower bits per
    character or MSE). A validation accuracy over n items is uncertain by about its
    standard error (:func:`noise_tolerance`): checkpoints within that of the peak are
    indistinguishable on this validation split, and of those the latest is kept — it
    has trained longest and, under the decaying learning rate, settled most (the
    one-standard-error rule of Breiman et al. 1984, choosing among the equally good).
    On the small validation splits of small data sets this keeps the end of training
    unless the validation split shows it is worse; a strictly best checkpoint there
    is mostly noise (measured: docs/training.md). Metrics without a noise model (bits
    per character, MSE) keep the strictly best, ties going to the later.

    A validation that falls short counts towards ``patience`` (0: never stop). The
    kept weights live in memory and in the training checkpoint (this callback's
    state), so a resumed run selects exactly what an uninterrupted one would.
    :meth:`restore` loads them into the model (call it after ``fit``).
    """

    def __init__(self, metric: str, higher_is_better: bool, patience: int) -> None:
        self.metric, self.higher, self.patience = metric, bool(higher_is_better), int(patience)
        self.peak: dict[str, float] | None = None
        self.best: dict[str, float] | None = None
        self.best_step = -1
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.tolerance = 0.0
        self.bad = 0
        self.history: list[dict[str, float]] = []
        self.early_stopped = False

    def _gap(self, metrics: dict[str, float]) -> float:
        """How much worse than the peak ``metrics`` are (negative: better)."""
        assert self.peak is not None
        d = float(self.peak[self.metric]) - float(metrics[self.metric])
        return d if self.higher else -d

    def on_validation_end(self, trainer, pl_module) -> None:
        # (after the module's on_validation_epoch_end, which computed val_metrics)
        if trainer.sanity_checking:
            return
        metrics = getattr(pl_module, "val_metrics", None)
        if not metrics or self.metric not in metrics:
            return
        step = int(trainer.global_step)
        if self.history and self.history[-1]["step"] == step:
            return  # validated twice at one step (the end of fit): nothing new
        self.history.append({"step": step, **metrics})
        if self.peak is None or self._gap(metrics) < 0:
            self.peak = dict(metrics)
        n = float(getattr(pl_module, "val_count", 0.0))
        self.tolerance = noise_tolerance(self.metric, float(self.peak[self.metric]), n)
        if self._gap(metrics) <= self.tolerance + 1e-12:
            self.best, self.best_step, self.bad = dict(metrics), step, 0
            self.best_weights = {
                k: v.detach().clone() for k, v in pl_module.model.state_dict().items()
            }
        else:
            self.bad += 1
            if self.patience and self.bad >= self.patience:
                self.early_stopped = True
                trainer.should_stop = True

    def restore(self, model: torch.nn.Module) -> bool:
        """Load the best weights into ``model``; False if there was no validation."""
        if self.best_weights is None:
            return False
        model.load_state_dict(self.best_weights)
        return True

    def state_dict(self) -> dict[str, Any]:
        return {
            "peak": self.peak,
            "tolerance": self.tolerance,
            "best": self.best,
            "best_step": self.best_step,
            "bad": self.bad,
            "history": self.history,
            "early_stopped": self.early_stopped,
            "best_weights": self.best_weights,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.peak, self.tolerance = state["peak"], float(state["tolerance"])
        self.best, self.best_step = state["best"], int(state["best_step"])
        self.bad, self.history = int(state["bad"]), list(state["history"])
        self.early_stopped = bool(state.get("early_stopped", False))
        self.best_weights = state["best_weights"]
