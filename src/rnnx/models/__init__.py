"""Models built from registered layers: blocks, backbones, task heads and video models."""

from rnnx.models.backbone import GLU, Backbone, BackboneConfig, Block, pool
from rnnx.models.heads import (
    LanguageModel,
    SequenceClassifier,
    SequenceRegressor,
    StepClassifier,
    build_model,
)
from rnnx.models.video import SpatialBackbone, VideoClassifier, VideoPredictor

__all__ = [
    "GLU",
    "Backbone",
    "BackboneConfig",
    "Block",
    "LanguageModel",
    "SequenceClassifier",
    "SequenceRegressor",
    "SpatialBackbone",
    "StepClassifier",
    "VideoClassifier",
    "VideoPredictor",
    "build_model",
    "pool",
]
