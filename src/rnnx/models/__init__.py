"""Models built from registered layers: blocks, backbones and task heads."""

from rnnx.models.backbone import GLU, Backbone, BackboneConfig, Block, pool
from rnnx.models.heads import (
    LanguageModel,
    SequenceClassifier,
    SequenceRegressor,
    StepClassifier,
    build_model,
)

__all__ = [
    "GLU",
    "Backbone",
    "BackboneConfig",
    "Block",
    "LanguageModel",
    "SequenceClassifier",
    "SequenceRegressor",
    "StepClassifier",
    "build_model",
    "pool",
]
