"""The Lightning module that trains any rnnx model on any task kind.

Loss and metrics by kind (:data:`rnnx.data.base.KINDS`):

* classification: cross-entropy; accuracy;
* tagging: cross-entropy over the supervised steps (target != -100); accuracy there;
* lm: cross-entropy per token; bits per token (= cross-entropy / ln 2);
* regression: mean squared error; MSE and MAE.
* video_classification: as classification;
* video_prediction: mean squared error of the next-frame predictions, the true frames
  read in parallel (teacher forcing) or, with ``teacher_forcing=False``, the context
  and then the model's own predictions; evaluated on the frames the model predicts from
  its own predictions (:meth:`rnnx.models.VideoPredictor.rollout`), by OpenSTL's
  per-frame MSE and MAE summed over pixels, SSIM and PSNR, each beside the
  copy-last-frame baseline's (:mod:`rnnx.train.video`).

Validation and test metrics are exact sums over the whole split (summed over batches
and, under DDP, over processes), not means of per-batch means.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, cast

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from rnnx.models.video import VideoPredictor

IGNORE = -100

#: The headline metric of each kind and whether higher is better.
MAIN_METRIC = {
    "classification": ("acc", True),
    "tagging": ("acc", True),
    "lm": ("bpc", False),
    "regression": ("mse", False),
    "video_classification": ("acc", True),
    "video_prediction": ("mse", False),
}


def parameter_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases, norms and 1-D parameters; a parameter may
    carry ``_optim = {"lr": ..., "weight_decay": ...}`` to override (the S4 convention
    for the SSM's A and Δ, which want a small learning rate and no decay)."""
    groups: dict[tuple, dict[str, Any]] = {}
    for _name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        hp = {"lr": lr, "weight_decay": weight_decay if p.dim() >= 2 else 0.0}
        hp.update(getattr(p, "_optim", {}))
        key = tuple(sorted(hp.items()))
        groups.setdefault(key, {**hp, "params": []})["params"].append(p)
    return list(groups.values())


def warmup_cosine(warmup_steps: int, total_steps: int):
    """Multiplier of the peak learning rate at step s: linear warm-up, cosine decay to 0."""

    def schedule(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1 + math.cos(math.pi * t))

    return schedule


def budget_schedule(warmup_steps: int, budget):
    """Multiplier of the peak learning rate over a budget of steps and minutes.

    Linear warm-up over the first ``warmup_steps`` steps, then cosine decay to 0 over
    the fraction of the budget used, ``budget.fraction(step)``: the larger of the
    step and wall-clock fractions (:class:`rnnx.train.callbacks.Budget`), so a run
    cut by the clock still ends its decay at the deadline. Without a wall-clock
    limit (or while the steps lead) this is :func:`warmup_cosine`. (A plain function,
    so that the scheduler's checkpoint holds nothing but numbers.)
    """
    warmup_steps = max(1, int(warmup_steps))

    def schedule(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        w = warmup_steps / budget.max_steps
        t = (budget.fraction(step) - w) / max(1e-12, 1 - w)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, t))))

    return schedule


class TaskModule(L.LightningModule):
    """Trains ``model`` (a head from :func:`rnnx.models.build_model`) on a task ``kind``."""

    def __init__(
        self,
        model: nn.Module,
        kind: str,
        *,
        lr: float,
        weight_decay: float,
        warmup: float = 0.05,
        budget=None,
        teacher_forcing: bool = True,
    ) -> None:
        super().__init__()
        if kind not in MAIN_METRIC:
            raise ValueError(f"kind: expected one of {sorted(MAIN_METRIC)}, got {kind!r}")
        self.model, self.kind = model, kind
        self.lr, self.weight_decay, self.warmup = lr, weight_decay, warmup
        self.budget = budget
        """A :class:`rnnx.train.callbacks.Budget` the schedule follows (None: the
        trainer's estimated number of steps)."""
        self.teacher_forcing = teacher_forcing
        """Video prediction: train on the true frames (True) or on the model's own
        predictions after the context (False)."""
        self._sums: dict[str, dict[str, torch.Tensor]] = {}
        self.val_metrics: dict[str, float] = {}
        self.val_count = 0.0

    # ------------------------------------------------------------------ loss

    @staticmethod
    def unpack(batch):
        if len(batch) == 3:
            return batch
        x, y = batch
        return x, y, None

    def loss_and_sums(
        self, batch, *, training: bool = False
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The mean loss of a batch and the sums its metrics are made of (``training``:
        video prediction reads the true frames; otherwise it predicts from its own)."""
        x, y, lengths = self.unpack(batch)
        if self.kind == "video_prediction":
            return self._video_prediction(x, y, training)
        out = self.model(x, lengths)
        if self.kind == "regression":
            err = out.float() - y.float()
            loss = (err**2).mean()
            sums = {
                "sq": (err**2).sum().detach(),
                "abs": err.abs().sum().detach(),
                "n": torch.tensor(float(err.numel())),
            }
            return loss, sums
        logits = out.float()
        if self.kind in ("classification", "video_classification"):
            ce = F.cross_entropy(logits, y, reduction="none")
            correct = logits.argmax(-1) == y
            n = torch.tensor(float(len(y)))
        else:
            flat, target = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
            mask = target != IGNORE
            ce = F.cross_entropy(flat, target, ignore_index=IGNORE, reduction="none")[mask]
            correct = (flat.argmax(-1) == target)[mask]
            n = mask.sum().float()
        loss = ce.sum() / n.clamp(min=1)
        sums = {"ce": ce.sum().detach(), "correct": correct.sum().float(), "n": n}
        return loss, sums

    def _video_prediction(self, x, y, training: bool):
        from rnnx.train.video import video_metric_sums

        if training:
            # every next frame out; in: the true frames (teacher forcing), or the context
            # and then the model's own predictions, as it is tested
            clip = torch.cat([x, y], 1)
            if self.teacher_forcing:
                pred = self.model(clip[:, :-1])
            else:
                model = cast("VideoPredictor", self.model)
                pred = model.rollout(x, y.shape[1], with_context=True)
            err = pred.float() - clip[:, 1:].float()
            loss = (err**2).mean()
            frames = float(err.shape[0] * err.shape[1])
            return loss, {"sq": (err**2).sum().detach(), "n": torch.tensor(frames)}
        pred = cast("VideoPredictor", self.model).rollout(x, y.shape[1])
        loss = ((pred.float() - y.float()) ** 2).mean()
        return loss, video_metric_sums(pred.float(), y.float(), x.float())

    @staticmethod
    def metrics_from_sums(kind: str, s: dict[str, float]) -> dict[str, float]:
        n = max(float(s["n"]), 1.0)
        if kind == "video_prediction":
            return {k: float(v) / n for k, v in s.items() if k != "n"}
        if kind == "regression":
            return {"mse": float(s["sq"]) / n, "mae": float(s["abs"]) / n}
        out = {"loss": float(s["ce"]) / n, "acc": float(s["correct"]) / n}
        if kind == "lm":
            out["bpc"] = out["loss"] / math.log(2)
            del out["acc"]
        return out

    # ------------------------------------------------------------------ steps

    def training_step(self, batch, batch_idx):
        loss, sums = self.loss_and_sums(batch, training=True)
        n = int(sums["n"])
        sync = self._distributed()
        self.log(
            "train_loss",
            loss,
            prog_bar=True,
            on_step=True,
            on_epoch=True,
            batch_size=n,
            sync_dist=sync,
        )
        if "correct" in sums and self.kind != "lm":
            acc = sums["correct"] / sums["n"].clamp(min=1)
            self.log("train_acc", acc, on_step=False, on_epoch=True, batch_size=n, sync_dist=sync)
        return loss

    def _eval_step(self, batch, stage: str) -> None:
        _, sums = self.loss_and_sums(batch)
        acc = self._sums.setdefault(stage, {})
        for k, v in sums.items():
            acc[k] = acc.get(k, 0.0) + v.to(torch.float64)

    def _eval_end(self, stage: str) -> dict[str, float]:
        sums = self._sums.pop(stage, None)
        if not sums:
            return {}
        keys = sorted(sums)
        vec = torch.stack([torch.as_tensor(sums[k], dtype=torch.float64) for k in keys])
        vec = self.trainer.strategy.reduce(vec, reduce_op="sum") if self._distributed() else vec
        totals = dict(zip(keys, vec.tolist()))
        metrics = self.metrics_from_sums(self.kind, totals)
        if stage == "val":
            self.val_count = float(totals["n"])  # items (or scored steps) validated
        for k, v in metrics.items():
            # Already reduced over processes above; rank_zero_only avoids a second reduction.
            self.log(f"{stage}_{k}", v, prog_bar=(stage == "val"), rank_zero_only=True)
        return metrics

    def _distributed(self) -> bool:
        return self.trainer is not None and self.trainer.world_size > 1

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self):
        self.val_metrics = self._eval_end("val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def on_test_epoch_end(self):
        self.test_metrics = self._eval_end("test")

    # ------------------------------------------------------------------ optim

    def configure_optimizers(self):
        opt = torch.optim.AdamW(parameter_groups(self.model, self.lr, self.weight_decay))
        if self.budget is not None:
            warm = max(1, int(self.warmup * self.budget.max_steps))
            schedule = budget_schedule(warm, self.budget)
        else:
            total = max(1, int(self.trainer.estimated_stepping_batches))
            schedule = warmup_cosine(max(1, int(self.warmup * total)), total)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
