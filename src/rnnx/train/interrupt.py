"""Ctrl-C during training: save a checkpoint at a clean point and say how to resume.

:class:`GracefulInterrupt` replaces the SIGINT handler while ``trainer.fit`` runs
(single-process runs, main thread only). The first Ctrl-C only sets a flag; when the
current optimizer step ends (``on_train_batch_end``, after :class:`RunState` has
recorded the data position) the callback writes ``checkpoints/last.safetensors`` and
raises :class:`~rnnx.train.errors.RunInterrupted`, whose message is the ``--resume``
command. A checkpoint taken there is exactly one a periodic save would have written,
so the resumed run continues as if never stopped. A second Ctrl-C raises
``KeyboardInterrupt`` at once (Lightning then stops the run; the last periodic
checkpoint stays and the message says so). A Ctrl-C during validation waits for the
next training step (or the epoch's end); one before training starts or during the final
test stops at once (after training, the end-of-training checkpoint holds the run:
resuming it runs the test).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import lightning as L

from rnnx.train.errors import RunInterrupted


class GracefulInterrupt(L.Callback):
    """The first Ctrl-C stops after the current step, with a checkpoint (module docstring).

    The handler is installed by :meth:`installed` around ``fit`` and ``test``."""

    def __init__(self, ckpt: str | Path, run_dir: str | Path, *, enabled: bool = True) -> None:
        self.ckpt, self.run_dir, self.enabled = Path(ckpt), Path(run_dir), enabled
        self.requested = False
        self.hard = False
        self.training = False
        self.saved_step: int | None = None

    def _handler(self, signum, frame) -> None:
        if self.requested or not self.training:
            raise KeyboardInterrupt  # a second press, or no training step to finish
        self.requested = True
        print(
            "\nrnnx: interrupt: finishing this step and saving a checkpoint "
            "(Ctrl-C again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Own SIGINT inside the block; turn Lightning's exit on a hard interrupt into
        :class:`RunInterrupted`; always put the previous handler back."""
        main = threading.current_thread() is threading.main_thread()
        old = signal.getsignal(signal.SIGINT) if main else None
        if self.enabled and main:
            signal.signal(signal.SIGINT, self._handler)
        try:
            yield
        except SystemExit as exc:
            # Lightning answers a KeyboardInterrupt with sys.exit(1) after its teardown.
            if self.hard:
                raise RunInterrupted(self._message("stopped at once")) from None
            raise exc
        except KeyboardInterrupt:
            raise RunInterrupted(self._message("stopped at once")) from None
        finally:
            if main and old is not None:
                signal.signal(signal.SIGINT, old)  # Lightning leaves SIGINT ignored

    def _message(self, how: str) -> str:
        if self.ckpt.exists():
            step = f" (step {self.saved_step})" if self.saved_step is not None else ""
            return (
                f"interrupted: {how}; the checkpoint {self.ckpt}{step} keeps the run; "
                f"continue with: rnnx train --resume {self.run_dir}"
            )
        return f"interrupted: {how}, before the first checkpoint; nothing to resume"

    def on_train_start(self, trainer, pl_module) -> None:
        self.training = True

    def on_train_end(self, trainer, pl_module) -> None:
        self.training = False

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.saved_step = int(trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # At an epoch's last batch RunState saves after the epoch's validation instead
        # (a checkpoint taken here would make Lightning replay an empty epoch).
        if self.requested and batch_idx + 1 < trainer.num_training_batches:
            trainer.save_checkpoint(self.ckpt)
            raise RunInterrupted(self._message(f"saved at step {trainer.global_step}"))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.requested:  # RunState (earlier in the callback list) has just saved
            raise RunInterrupted(self._message(f"saved at step {trainer.global_step}"))

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.hard = True
