"""Moving digits: two handwritten digits bouncing on a canvas, for video prediction and
video classification, generated here from scikit-learn's bundled 8x8 digits.

The Moving MNIST protocol (Srivastava, Mansimov, Salakhutdinov 2015, arXiv 1502.04681;
the benchmark setting of OpenSTL, Tan et al. 2023, arXiv 2306.11249): two digits move
on a 64x64 canvas with constant speed, each in its own direction, and bounce off the
edges; a model sees 10 frames and predicts the next 10. Here the digits are
scikit-learn's 8x8 images (``sklearn.datasets.load_digits``, 16 grey levels, CC BY 4.0,
shipped with scikit-learn, so nothing is downloaded), upsampled bilinearly to
``digit_size`` pixels (28 by default, MNIST's size). Two digits that overlap combine by
the pixelwise maximum.

Motion (:func:`bouncing_trajectories`): a digit's top-left corner starts uniformly in
``[0, canvas - digit_size]²`` with a direction uniform on the circle and moves
``speed`` pixels per frame (3.6 by default: a tenth of the free range of a 28-pixel
digit on a 64-pixel canvas, as in the Moving MNIST generator); a coordinate that would
leave the range is reflected at the edge and its velocity flips sign, so the digit
stays wholly inside the canvas. Positions are rounded to whole pixels when drawn.

Splits and seeds: the digit images of the test split come from the fixed stratified 25%
test split of the ``digits`` task (seed 0), those of train and val from the rest, so a
test video never shows a digit image seen in training. Which images and which motions
each split gets are drawn from one random stream per ``(seed, split)``, as in
:mod:`rnnx.data.synthetic`: the data depend on ``seed`` alone, and the test set does not
depend on the training set's size.

Frames are stored as bytes (``uint8``, value = 255 * intensity; the resolution of a
video file) to keep a few thousand videos in memory; a split's items are float32 in
[0, 1]. Shapes, with ``C = 1`` channel:

* ``moving_digits`` (kind ``video_prediction``): ``x`` ``(N, frames_in, 1, H, W)``, the
  frames seen; ``y`` ``(N, frames_out, 1, H, W)``, the frames that follow.
  ``frames_in = frames_out = 50`` (``--task-arg frames_in=50 --task-arg
  frames_out=50``) is the long version.
* ``moving_digits_cls`` (kind ``video_classification``): ``x`` ``(N, frames, 1, H, W)``;
  the label is the unordered pair of the two digits' classes, one of 55 classes
  (:func:`pair_label`: ``{a, b}`` with ``a <= b``, ordered ``{0,0}, {0,1}, ..., {0,9},
  {1,1}, ..., {9,9}``): "which digits move".
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rnnx.data.base import TaskData, register_task, require_package, stratified_split

__all__ = [
    "FrameDataset",
    "bouncing_trajectories",
    "digit_images",
    "moving_digits",
    "moving_digits_cls",
    "pair_label",
    "pair_of",
    "render",
]

#: Classes of ``moving_digits_cls``: unordered pairs of digit classes.
N_PAIRS = 55


def pair_label(a: int | np.ndarray, b: int | np.ndarray) -> Any:
    """The class of the unordered pair of digits ``{a, b}`` (0..54, see the module
    docstring): ``a' = min(a, b)``, ``b' = max(a, b)``, label ``10 a' - a'(a'-1)/2 + b' - a'``."""
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    return 10 * lo - lo * (lo - 1) // 2 + hi - lo


def pair_of(label: int) -> tuple[int, int]:
    """The pair ``(a, b)``, ``a <= b``, of a ``moving_digits_cls`` label."""
    if not 0 <= int(label) < N_PAIRS:
        raise ValueError(f"label: expected an int in [0, {N_PAIRS}), got {label!r}")
    for a in range(10):
        for b in range(a, 10):
            if pair_label(a, b) == label:
                return a, b
    raise AssertionError("unreachable")  # every label in range has a pair


def digit_images(digit_size: int = 28) -> tuple[Tensor, Tensor, Tensor]:
    """``(images, labels, is_test)``: scikit-learn's 1,797 digits upsampled bilinearly to
    ``(N, digit_size, digit_size)`` float32 in [0, 1], their classes, and whether each
    belongs to the fixed test split of the ``digits`` task (stratified 25%, seed 0)."""
    datasets = require_package(
        "sklearn.datasets",
        task="moving_digits",
        install="pip install 'rnnx[data]' (scikit-learn)",
    )
    bunch = datasets.load_digits()
    small = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0  # (N, 1, 8, 8)
    big = F.interpolate(small, size=(digit_size, digit_size), mode="bilinear", align_corners=False)
    labels = torch.tensor(bunch.target, dtype=torch.long)
    _, test_idx = stratified_split(labels, 0.25, seed=0)
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    is_test[test_idx] = True
    return big[:, 0].clamp(0.0, 1.0), labels, is_test


def bouncing_trajectories(
    n: int,
    n_frames: int,
    *,
    n_digits: int = 2,
    limit: int,
    speed: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Top-left corners ``(n, n_digits, n_frames, 2)`` (row, column; float64) of digits
    moving ``speed`` pixels per frame in a random direction and bouncing inside
    ``[0, limit]`` (``limit = canvas - digit_size``; module docstring)."""
    pos = rng.uniform(0.0, limit, size=(n, n_digits, 2))
    theta = rng.uniform(0.0, 2 * math.pi, size=(n, n_digits))
    vel = speed * np.stack([np.sin(theta), np.cos(theta)], axis=-1)
    out = np.empty((n, n_digits, n_frames, 2))
    for t in range(n_frames):
        out[:, :, t] = pos
        pos = pos + vel
        low, high = pos < 0, pos > limit
        # reflect at the edge: the part of the step beyond it goes back inside
        pos = np.where(low, -pos, np.where(high, 2 * limit - pos, pos))
        vel = np.where(low | high, -vel, vel)
    return out


def render(images: np.ndarray, corners: np.ndarray, canvas: int) -> np.ndarray:
    """Frames ``(n, T, canvas, canvas)`` uint8 of ``images`` ``(n, n_digits, s, s)`` (float
    in [0, 1]) drawn at ``corners`` ``(n, n_digits, T, 2)`` (rounded), combined by max."""
    n, n_digits, s, _ = images.shape
    n_frames = corners.shape[2]
    frames = np.zeros((n, n_frames, canvas, canvas), dtype=np.float32)
    ij = np.rint(corners).astype(np.int64)
    item = np.arange(n)[:, None, None]
    offset = np.arange(s)
    for d in range(n_digits):
        for t in range(n_frames):
            # every video's s x s window at its own corner, by advanced indexing
            rows = (ij[:, d, t, 0, None] + offset)[:, :, None]  # (n, s, 1)
            cols = (ij[:, d, t, 1, None] + offset)[:, None, :]  # (n, 1, s)
            frames[item, t, rows, cols] = np.maximum(frames[item, t, rows, cols], images[:, d])
    return np.rint(frames * 255.0).astype(np.uint8)


class FrameDataset(torch.utils.data.Dataset):
    """Videos stored as bytes; item ``i`` is ``(x[i] / 255, target)`` in float32.

    ``x``: uint8 ``(N, T, C, H, W)``. ``y``: uint8 frames ``(N, T', C, H, W)`` (served
    as float32 in [0, 1]) or int64 class ids ``(N,)``. ``lengths`` is None (every video
    has all its frames).
    """

    lengths: Tensor | None = None

    def __init__(self, x: Tensor, y: Tensor) -> None:
        if x.dtype != torch.uint8 or x.dim() != 5:
            raise ValueError(
                f"x: expected uint8 frames (N, T, C, H, W), got {x.dtype} {tuple(x.shape)}"
            )
        if len(x) != len(y):
            raise ValueError(f"x, y: expected the same number of items, got {len(x)} and {len(y)}")
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        y = self.y[i]
        return self.x[i].float() / 255.0, (y.float() / 255.0 if y.dtype == torch.uint8 else y)


def _rng(seed: int, split: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(split), 0x3D161])


def _check(name: str, value: object, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name}: expected an int >= {lo}, got {value!r}")
    return value


def _videos(
    seed: int,
    sizes: tuple[int, int, int],
    n_frames: int,
    canvas: int,
    digit_size: int,
    speed: float,
) -> dict[str, tuple[Tensor, Tensor]]:
    """``{split: (frames uint8 (N, n_frames, 1, canvas, canvas), digit classes (N, 2))}``."""
    _check("canvas", canvas, 1)
    _check("digit_size", digit_size, 1)
    _check("n_frames", n_frames, 1)
    if digit_size > canvas:
        raise ValueError(f"digit_size: expected <= canvas ({canvas}), got {digit_size}")
    if not (isinstance(speed, int | float) and math.isfinite(speed) and speed >= 0):
        raise ValueError(f"speed: expected a number >= 0 (pixels per frame), got {speed!r}")
    images, labels, is_test = digit_images(digit_size)
    pools = {"train": ~is_test, "val": ~is_test, "test": is_test}
    out = {}
    for i, split in enumerate(("train", "val", "test")):
        n = sizes[i]
        rng = _rng(seed, i)
        pool = torch.nonzero(pools[split]).flatten().numpy()
        pick = pool[rng.integers(0, len(pool), size=(n, 2))]  # (n, 2) image indices
        corners = bouncing_trajectories(
            n, n_frames, limit=canvas - digit_size, speed=float(speed), rng=rng
        )
        imgs = images.numpy()
        # in chunks: the float canvas of a whole split would take 4x the bytes kept
        frames = np.concatenate(
            [
                render(imgs[pick[k : k + 256]], corners[k : k + 256], canvas)
                for k in range(0, n, 256)
            ]
        )
        out[split] = (torch.from_numpy(frames)[:, :, None], labels[torch.from_numpy(pick)])
    return out


#: Settings ``rnnx train`` uses for the video tasks unless the config or flags say
#: otherwise (the layer: the task's kind needs one over frames, or one over sequences).
_PREDICTION_DEFAULTS = {"model": {"layer": "conv_lstm"}}
_CLASSIFICATION_DEFAULTS = {"model": {"layer": "lstm"}}


@register_task(
    "moving_digits",
    description="two bouncing digits, 10 frames in -> 10 out (Moving MNIST protocol); generated",
    defaults=_PREDICTION_DEFAULTS,
)
def moving_digits(
    seed: int = 0,
    *,
    frames_in: int = 10,
    frames_out: int = 10,
    canvas: int = 64,
    digit_size: int = 28,
    speed: float = 3.6,
    n_train: int = 2000,
    n_val: int = 100,
    n_test: int = 500,
) -> TaskData:
    """Video prediction: see ``frames_in`` frames of two bouncing digits, predict the next
    ``frames_out`` (module docstring). ``x`` ``(N, frames_in, 1, canvas, canvas)``, ``y``
    ``(N, frames_out, 1, canvas, canvas)``, stored as bytes, served in [0, 1]. Scored by
    :mod:`rnnx.train.video` (per-frame MSE and MAE summed over pixels, SSIM, PSNR) beside
    the copy-last-frame baseline.
    """
    _check("frames_in", frames_in, 1)
    _check("frames_out", frames_out, 1)
    for k, v in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        _check(k, v, 1)
    videos = _videos(
        seed, (n_train, n_val, n_test), frames_in + frames_out, canvas, digit_size, speed
    )
    splits = {
        split: FrameDataset(clips[:, :frames_in].clone(), clips[:, frames_in:].clone())
        for split, (clips, _) in videos.items()
    }
    return TaskData(
        name="moving_digits",
        kind="video_prediction",
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        d_input=1,
        info={
            "generator": "rnnx.data.moving_digits.moving_digits",
            "seed": seed,
            "params": {
                "frames_in": frames_in,
                "frames_out": frames_out,
                "canvas": canvas,
                "digit_size": digit_size,
                "speed": speed,
            },
            "source": "sklearn.datasets.load_digits, upsampled; test digits from the "
            "digits task's fixed 25% test split",
            "protocol": "Moving MNIST (arXiv 1502.04681) as in OpenSTL (arXiv 2306.11249)",
            "frames_out": frames_out,
        },
    )


@register_task(
    "moving_digits_cls",
    description="which two digits move (55 unordered pairs) in a video of bouncing digits",
    defaults=_CLASSIFICATION_DEFAULTS,
)
def moving_digits_cls(
    seed: int = 0,
    *,
    frames: int = 10,
    canvas: int = 64,
    digit_size: int = 28,
    speed: float = 3.6,
    n_train: int = 2000,
    n_val: int = 200,
    n_test: int = 500,
) -> TaskData:
    """Video classification: ``x`` ``(N, frames, 1, canvas, canvas)``; the label is the
    unordered pair of the two digits' classes (:func:`pair_label`, 55 classes)."""
    _check("frames", frames, 1)
    for k, v in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        _check(k, v, 1)
    videos = _videos(seed, (n_train, n_val, n_test), frames, canvas, digit_size, speed)
    splits = {}
    for split, (clips, classes) in videos.items():
        label = torch.from_numpy(pair_label(classes[:, 0].numpy(), classes[:, 1].numpy()))
        splits[split] = FrameDataset(clips, label.long())
    return TaskData(
        name="moving_digits_cls",
        kind="video_classification",
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        d_input=1,
        n_classes=N_PAIRS,
        info={
            "generator": "rnnx.data.moving_digits.moving_digits_cls",
            "seed": seed,
            "params": {
                "frames": frames,
                "canvas": canvas,
                "digit_size": digit_size,
                "speed": speed,
            },
            "labels": "unordered pair {a, b} of the digits' classes, a <= b: "
            "10a - a(a-1)/2 + b - a",
            "source": "sklearn.datasets.load_digits, upsampled; test digits from the "
            "digits task's fixed 25% test split",
        },
    )
