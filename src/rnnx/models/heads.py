"""Task heads on top of a :class:`~rnnx.models.backbone.Backbone`."""

from __future__ import annotations

from torch import Tensor, nn

from rnnx._checks import require_choice, require_positive_int
from rnnx.models.backbone import Backbone, BackboneConfig, pool


class SequenceClassifier(nn.Module):
    """One label per sequence: backbone, pooling over time (masked by ``lengths``), linear.

    Args:
        config: the backbone.
        n_classes: number of classes.
        pooling: ``"mean"`` (default) or ``"last"`` (the last valid step).
    """

    def __init__(self, config: BackboneConfig, n_classes: int, pooling: str = "mean") -> None:
        super().__init__()
        require_positive_int("n_classes", n_classes)
        self.pooling = require_choice("pooling", pooling, ("mean", "last"))
        self.backbone = Backbone(config)
        self.head = nn.Linear(config.d_model, n_classes)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        h, _ = self.backbone(x, lengths=lengths)
        return self.head(pool(h, lengths, self.pooling))
