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
from rnnx.models.vision import (
    ImageClassifier,
    PatchEmbed,
    PatchScanBackbone,
    PatchScanBlock,
    PatchScanConfig,
)

__all__ = [
    "GLU",
    "Backbone",
    "BackboneConfig",
    "Block",
    "ImageClassifier",
    "LanguageModel",
    "PatchEmbed",
    "PatchScanBackbone",
    "PatchScanBlock",
    "PatchScanConfig",
    "SequenceClassifier",
    "SequenceRegressor",
    "SpatialBackbone",
    "StepClassifier",
    "VideoClassifier",
    "VideoPredictor",
    "build_model",
    "pool",
]
