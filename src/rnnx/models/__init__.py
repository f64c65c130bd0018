"""Models built from registered layers: blocks, backbones and task heads."""

from rnnx.models.backbone import Backbone, BackboneConfig, Block
from rnnx.models.heads import SequenceClassifier

__all__ = ["Backbone", "BackboneConfig", "Block", "SequenceClassifier"]
