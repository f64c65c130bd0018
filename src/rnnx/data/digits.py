"""scikit-learn's bundled 8x8 handwritten digits, read as a 64-step pixel sequence.

Source: ``sklearn.datasets.load_digits`` (the UCI optical recognition of handwritten
digits test set, 1,797 images, 16 grey levels; CC BY 4.0), shipped inside
scikit-learn, so nothing is downloaded. There is no official split: a stratified 25%
test split with seed 0 (1-NN on the flattened images scores 0.982 on it, the reference
in ``docs/``), and 10% of the rest for validation. Pixels are scaled to [0, 1] and read
row by row, one pixel per step (L = 64, d_input = 1); ``digits_image`` gives the
same splits as images ``(N, 1, 8, 8)`` for the patch-scan backbones
(:mod:`rnnx.models.vision`).
"""

from __future__ import annotations

import torch

from rnnx.data.base import (
    SequenceDataset,
    Split,
    TaskData,
    register_task,
    require_package,
    stratified_split,
)


@register_task(
    "digits",
    description="scikit-learn's 8x8 digits as 64-step pixel sequences (bundled; the default)",
)
def digits(seed: int = 0, val_fraction: float = 0.1, rows: bool = False) -> TaskData:
    """Digits as sequences. ``rows=True`` reads rows instead (L = 8, d_input = 8).

    The test split is fixed (seed 0); ``seed`` only draws the validation split.
    """
    datasets = require_package(
        "sklearn.datasets", task="digits", install="pip install 'rnnx[data]' (scikit-learn)"
    )
    bunch = datasets.load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32) / 16.0  # (N, 8, 8)
    y = torch.tensor(bunch.target, dtype=torch.long)
    x = x.reshape(len(x), 8, 8) if rows else x.reshape(len(x), 64, 1)
    train_idx, test_idx = stratified_split(y, 0.25, seed=0)
    fit_rel, val_rel = stratified_split(y[train_idx], val_fraction, seed=seed)
    fit_idx, val_idx = train_idx[fit_rel], train_idx[val_rel]
    return TaskData(
        name="digits",
        kind="classification",
        train=SequenceDataset(x[fit_idx], y[fit_idx]),
        val=SequenceDataset(x[val_idx], y[val_idx]),
        test=SequenceDataset(x[test_idx], y[test_idx]),
        d_input=x.shape[-1],
        n_classes=10,
        info={
            "source": "sklearn.datasets.load_digits",
            "split": "stratified 25% test (seed 0), 10% of train for validation",
            "reference": {"1-NN (flattened pixels)": 0.982},
        },
    )


@register_task(
    "digits_image",
    description="scikit-learn's 8x8 digits as images (1 x 8 x 8) for the patch-scan backbones",
)
def digits_image(seed: int = 0, val_fraction: float = 0.1) -> TaskData:
    """The splits of :func:`digits` as images ``(N, 1, 8, 8)``, ``info["image_shape"]``
    ``= [1, 8, 8]``."""
    seq = digits(seed, val_fraction)

    def image(split: Split) -> SequenceDataset:
        return SequenceDataset(split.x.reshape(len(split.x), 1, 8, 8), split.y)

    return TaskData(
        name="digits_image",
        kind="classification",
        train=image(seq.train),
        val=image(seq.val),
        test=image(seq.test),
        d_input=1,
        n_classes=10,
        info={**seq.info, "image_shape": [1, 8, 8]},
    )
