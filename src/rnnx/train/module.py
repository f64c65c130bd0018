"""The Lightning module that trains any :class:`~rnnx.models.SequenceClassifier`."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn


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


class ClassificationModule(L.LightningModule):
    """Cross-entropy training of a sequence classifier; logs loss and accuracy."""

    def __init__(self, model: nn.Module, *, lr: float, weight_decay: float, warmup: float = 0.05):
        super().__init__()
        self.model = model
        self.lr, self.weight_decay, self.warmup = lr, weight_decay, warmup

    def _batch(self, batch):
        if len(batch) == 3:
            x, y, lengths = batch
        else:
            (x, y), lengths = batch, None
        return x, y, lengths

    def _step(self, batch, stage: str):
        x, y, lengths = self._batch(batch)
        logits = self.model(x, lengths)
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(-1) == y).float().mean()
        on_step = stage == "train"
        self.log(
            f"{stage}_loss", loss, prog_bar=True, on_step=on_step, on_epoch=True, batch_size=len(y)
        )
        self.log(
            f"{stage}_acc", acc, prog_bar=True, on_step=False, on_epoch=True, batch_size=len(y)
        )
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def configure_optimizers(self):
        opt = torch.optim.AdamW(parameter_groups(self.model, self.lr, self.weight_decay))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warm = max(1, int(self.warmup * total))

        def schedule(step: int) -> float:  # linear warm-up, cosine decay to 0
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
