"""Video models on registered layers: next-frame prediction on a stack of spatial layers,
and LRCN classification (a per-frame CNN, then a sequence layer over time).

:class:`VideoPredictor` (the Moving MNIST protocol of OpenSTL, Tan et al. 2023, arXiv
2306.11249; ConvLSTM's encoder-forecaster setting, Shi et al. 2015, arXiv 1506.04214)::

    frames (B, T, C, H, W)
      -> space-to-depth: each p x p square of pixels becomes C p² channels  (B, T, C p², H/p, W/p)
      -> 3x3 convolution to d_model channels                               (B, T, D, H/p, W/p)
      -> n_layers blocks:  x = x + dropout(layer(norm(x)))   any layer of names("spatial")
      -> norm, 3x3 convolution to C p² channels, depth-to-space, sigmoid   (B, T, C, H, W)

Output ``t`` is the prediction of frame ``t + 1``. Training reads the context frames in
parallel (each layer's training mode) and then either the true future frames (teacher
forcing: the whole clip at once) or its own predictions, as at test time;
:meth:`VideoPredictor.rollout` reads the context frames the same way and then predicts
the future one frame at a time with the layers' ``step`` and their states, feeding back
its own predictions (memory constant in the number of frames predicted). The norm is a
LayerNorm (or RMSNorm) over the channels of each pixel of each frame, so nothing mixes
frames but the layers. Space-to-depth (``pixel_unshuffle``) makes the layers run on a
grid ``p`` times smaller per side at no loss of information, as SimVP and the ConvLSTM
baselines of OpenSTL do with their patch size.

:class:`VideoClassifier` (LRCN: Donahue et al., "Long-term Recurrent Convolutional
Networks", arXiv 1411.4389): a small CNN maps every frame to a ``d_model`` vector (three
stride-2 3x3 convolutions with ReLU, then the mean over the pixels), a
:class:`~rnnx.models.backbone.Backbone` of any layer of ``names("sequence")`` (LSTM in
the paper) reads the vectors over time, and a linear layer classifies the mean of its
outputs over the frames (LRCN averages its per-frame predictions) or the last one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import rnnx.layers as layers
from rnnx._checks import require_choice, require_positive_int
from rnnx.models.backbone import Backbone, BackboneConfig, Block, pool

__all__ = [
    "DEFAULT_PATCH_SIZE",
    "SpatialBackbone",
    "SpatialBlock",
    "VideoClassifier",
    "VideoPredictor",
]

#: Side of the space-to-depth squares of :class:`VideoPredictor` when none is given
#: (64x64 frames -> a 16x16 grid): the one default the model, ``build_model``, the run
#: and the recipe share.
DEFAULT_PATCH_SIZE = 4


def require_layer_kind(layer: str, kind: str, *, arg: str = "layer") -> None:
    """One clear error unless the registered ``layer`` is of ``kind`` (``"sequence"`` or
    ``"spatial"``), naming ``arg`` and the layers that are."""
    have = layers.get(layer).kind
    if have == kind:
        return
    what = {
        "spatial": "a layer over frames (B, T, C, H, W)",
        "sequence": "a layer over sequences (B, L, D)",
    }
    raise ValueError(
        f"{arg}: {layer!r} is {what[have]}; this model needs {what[kind]}, one of "
        f"{', '.join(layers.names(kind))}"
    )


class _ChannelNorm(nn.Module):
    """LayerNorm or RMSNorm over the channels of every pixel: ``(..., C, H, W)``."""

    def __init__(self, kind: str, d: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d) if kind == "layer" else nn.RMSNorm(d)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.movedim(-3, -1)).movedim(-1, -3)


class SpatialBlock(nn.Module):
    """Pre-norm residual block around one spatial layer (and an optional per-pixel MLP)."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.norm = _ChannelNorm(cfg.norm, cfg.d_model)
        self.mixer = Block._make_mixer(cfg)  # the sequence blocks' mixer setup and checks
        self.dropout = nn.Dropout(cfg.dropout)
        self.mlp: nn.Module | None = None
        if cfg.mlp_ratio > 0:
            hidden = max(1, round(cfg.mlp_ratio * cfg.d_model))
            self.norm2 = _ChannelNorm(cfg.norm, cfg.d_model)
            self.mlp = nn.Sequential(
                nn.Linear(cfg.d_model, hidden), nn.GELU(), nn.Linear(hidden, cfg.d_model)
            )

    def _mlp(self, x: Tensor) -> Tensor:
        if self.mlp is not None:
            h = self.mlp(self.norm2(x).movedim(-3, -1)).movedim(-1, -3)
            x = x + self.dropout(h)
        return x

    def forward(self, x: Tensor, state=None):
        h, state = self.mixer(self.norm(x), state)
        return self._mlp(x + self.dropout(h)), state

    def step(self, x: Tensor, state):
        h, state = self.mixer.step(self.norm(x), state)
        return self._mlp(x + self.dropout(h)), state


class SpatialBackbone(nn.Module):
    """Space-to-depth encoder and ``n_layers`` :class:`SpatialBlock` s: frames ``(B, T,
    config.d_input, H, W)`` -> features ``(B, T, d_model, H/p, W/p)`` and the layers'
    states (a list, one per block). ``H`` and ``W`` must be multiples of ``patch_size``."""

    def __init__(self, cfg: BackboneConfig, patch_size: int = DEFAULT_PATCH_SIZE) -> None:
        super().__init__()
        require_layer_kind(cfg.layer, "spatial")
        if cfg.vocab_size is not None or cfg.bidirectional:
            raise ValueError(
                "config: a video backbone reads real-valued frames causally (vocab_size=None, "
                "bidirectional=False)"
            )
        self.config = cfg
        self.patch_size = require_positive_int("patch_size", patch_size)
        self.encoder = nn.Conv2d(cfg.d_input * patch_size**2, cfg.d_model, 3, padding=1)
        self.blocks = nn.ModuleList(SpatialBlock(cfg) for _ in range(cfg.n_layers))
        self.norm = _ChannelNorm(cfg.norm, cfg.d_model)

    def _blocks(self) -> Iterable[SpatialBlock]:
        return cast("Iterable[SpatialBlock]", self.blocks)

    def encode(self, frames: Tensor) -> Tensor:
        """Space-to-depth and the input convolution, with one clear error for bad frames."""
        c, p = self.config.d_input, self.patch_size
        if (
            not isinstance(frames, Tensor)
            or frames.dim() != 5
            or frames.shape[2] != c
            or frames.shape[3] % p
            or frames.shape[4] % p
            or frames.shape[1] < 1
        ):
            shape = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
            raise ValueError(
                f"frames: expected (batch, time >= 1, {c}, height, width) with height and width "
                f"multiples of patch_size={p}, got {shape}"
            )
        B, T = frames.shape[:2]
        u = F.pixel_unshuffle(frames.flatten(0, 1), p)
        return self.encoder(u).unflatten(0, (B, T))

    def forward(self, frames: Tensor, state: list | None = None) -> tuple[Tensor, list]:
        states = [None] * len(self.blocks) if state is None else state
        h = self.encode(frames)
        new = []
        for block, s in zip(self._blocks(), states):
            h, s = block(h, s)
            new.append(s)
        return self.norm(h), new

    def step(self, frames: Tensor, state: list) -> tuple[Tensor, list]:
        h = self.encode(frames)
        new = []
        for block, s in zip(self._blocks(), state):
            h, s = block.step(h, s)
            new.append(s)
        return self.norm(h), new


class VideoPredictor(nn.Module):
    """Next-frame prediction with any spatial layer (module docstring).

    Args:
        config: the backbone: ``layer`` (one of ``rnnx.layers.names("spatial")``),
            ``d_model``, ``n_layers``, ``d_input`` (the frames' channels C),
            ``layer_kwargs``, ``mode``, ``backend``, ``mlp_ratio``, ``dropout``, ``norm``.
        patch_size: side p of the squares of pixels stacked as channels; the frames'
            height and width must be multiples of it.

    Shapes: :meth:`forward` ``(B, T, C, H, W)`` -> ``(B, T, C, H, W)`` in (0, 1), output
    t predicting frame t + 1; :meth:`rollout` ``(B, T, C, H, W)`` -> ``(B, n_frames, C,
    H, W)``, the frames after the context.
    """

    def __init__(self, config: BackboneConfig, patch_size: int = DEFAULT_PATCH_SIZE) -> None:
        super().__init__()
        self.config = config
        self.backbone = SpatialBackbone(config, patch_size)
        self.patch_size = patch_size
        self.decoder = nn.Conv2d(config.d_model, config.d_input * patch_size**2, 3, padding=1)

    def decode(self, h: Tensor) -> Tensor:
        """Features ``(B, T, d_model, h, w)`` -> frames ``(B, T, C, h p, w p)`` in (0, 1)."""
        B, T = h.shape[:2]
        logits = F.pixel_shuffle(self.decoder(h.flatten(0, 1)), self.patch_size)
        return torch.sigmoid(logits).unflatten(0, (B, T))

    def forward(self, frames: Tensor, state: list | None = None) -> Tensor:
        """The prediction of the frame after each frame of ``frames``: ``(B, T, C, H, W)``."""
        return self.predict(frames, state)[0]

    def predict(self, frames: Tensor, state: list | None = None) -> tuple[Tensor, list]:
        """``(next-frame predictions, the layers' states after the last frame)``."""
        h, state = self.backbone(frames, state)
        return self.decode(h), state

    def rollout(self, context: Tensor, n_frames: int, *, with_context: bool = False) -> Tensor:
        """The ``n_frames`` frames after ``context`` ``(B, T >= 1, C, H, W)``, each predicted
        from the previous prediction (the context is read in parallel, then one ``step``
        per frame: memory does not grow with ``n_frames``). Returns ``(B, n_frames, C, H,
        W)``; with ``with_context``, the predictions of context frames 2..T before them,
        ``(B, T - 1 + n_frames, C, H, W)`` (training on the model's own predictions)."""
        require_positive_int("n_frames", n_frames)
        pred, state = self.predict(context)
        frame = pred[:, -1:]
        out = [pred if with_context else frame]
        for _ in range(n_frames - 1):
            h, state = self.backbone.step(frame, state)
            frame = self.decode(h)
            out.append(frame)
        return torch.cat(out, 1)


class VideoClassifier(nn.Module):
    """LRCN video classification with any sequence layer (module docstring).

    Args:
        config: the sequence backbone (``layer`` one of ``rnnx.layers.names("sequence")``;
            ``d_input`` is the frames' channels C; with ``bidirectional=True`` it reads
            the clip both ways, LRCN reads it forwards).
        n_classes: number of classes.
        pooling: ``"mean"`` over frames (default, as LRCN averages) or ``"last"``.
        cnn_width: channels of the first convolution (then 2x, then ``d_model``).

    Shapes: ``(B, T, C, H, W)`` -> logits ``(B, n_classes)``.
    """

    def __init__(
        self,
        config: BackboneConfig,
        n_classes: int,
        pooling: str = "mean",
        cnn_width: int = 16,
    ) -> None:
        super().__init__()
        require_layer_kind(config.layer, "sequence")
        require_positive_int("n_classes", n_classes)
        require_positive_int("cnn_width", cnn_width)
        self.pooling = require_choice("pooling", pooling, ("mean", "last"))
        self.config = config
        c, w, d = config.d_input, cnn_width, config.d_model
        self.cnn = nn.Sequential(
            nn.Conv2d(c, w, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * w, d, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.backbone = Backbone(dataclasses.replace(config, d_input=d))
        self.head = nn.Linear(d, n_classes)

    def forward(self, frames: Tensor, lengths: Tensor | None = None) -> Tensor:
        c = self.config.d_input
        if not isinstance(frames, Tensor) or frames.dim() != 5 or frames.shape[2] != c:
            shape = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
            raise ValueError(f"frames: expected (batch, time, {c}, height, width), got {shape}")
        B, T = frames.shape[:2]
        feats = self.cnn(frames.flatten(0, 1)).mean((-2, -1)).unflatten(0, (B, T))  # (B, T, d)
        h, _ = self.backbone(feats, lengths=lengths)
        return self.head(pool(h, lengths, self.pooling))
