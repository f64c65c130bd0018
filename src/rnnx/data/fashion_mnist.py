"""Fashion-MNIST as sequences: row by row, pixel by pixel, and pixel by pixel permuted.

Source: the Debian package ``dataset-fashion-mnist`` 0.0~git20200523.55506a9-1 (the
original IDX files of Xiao et al. 2017, arXiv 1708.07747; MIT licence), sha256 of the
.deb and of each IDX file pinned in :mod:`rnnx.data._sources`; ``rnnx data fetch
fashion-mnist`` unpacks it into the data directory (or ``apt-get install
dataset-fashion-mnist`` puts it in /usr/share/datasets/fashion-mnist).

Split: the official 60,000 / 10,000 train / test split; 5,000 training images
(stratified, drawn with ``seed``) are held out for validation. ``n_train`` keeps a
stratified subset of the rest (fixed, seed 0) for smaller CPU budgets. Pixels are
scaled to [0, 1].

Layouts: ``fashion_mnist`` reads pixels one per step (L = 784, d_input = 1; the
"sequential MNIST" protocol of the LSSL/S4 papers, on Fashion-MNIST because no
package ships MNIST); ``fashion_mnist_rows`` reads one row per step (L = 28,
d_input = 28); ``fashion_mnist_perm`` applies one fixed permutation of the 784 pixels
(``torch.randperm(784)`` with a generator seeded 0), the "permuted MNIST" protocol;
``fashion_mnist_image`` gives the images themselves, ``(N, 1, 28, 28)``, with
``info["image_shape"] = [1, 28, 28]``, for the patch-scan backbones
(:mod:`rnnx.models.vision`).
"""

from __future__ import annotations

import gzip

import numpy as np
import torch

from rnnx.data import _sources
from rnnx.data.base import SequenceDataset, TaskData, register_task, stratified_split

REFERENCE = {
    "GRU+SVM, row-wise (package README)": 0.888,
    "GRU+SVM+dropout, row-wise (package README)": 0.897,
    "MLP 256-128-100 (package README)": 0.883,
}


def _read_idx(path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset).copy()


def load_arrays(task: str = "fashion_mnist") -> tuple[np.ndarray, ...]:
    """``(x_train (60000, 28, 28) uint8, y_train, x_test (10000, 28, 28), y_test)``."""
    root = _sources.fashion_mnist_dir(task)
    out = []
    for split in ("train", "t10k"):
        x = _read_idx(root / f"{split}-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
        y = _read_idx(root / f"{split}-labels-idx1-ubyte.gz", 8)
        out += [x, y]
    return tuple(out)


def permutation() -> torch.Tensor:
    """The fixed pixel order of ``fashion_mnist_perm``."""
    return torch.randperm(784, generator=torch.Generator().manual_seed(0))


def _fashion(name: str, layout: str, seed: int, n_train: int | None, n_val: int) -> TaskData:
    x_tr, labels_tr, x_te, labels_te = load_arrays(name)
    y_tr = torch.from_numpy(labels_tr.astype(np.int64))
    y_te = torch.from_numpy(labels_te.astype(np.int64))
    fit_idx, val_idx = stratified_split(y_tr, n_val / len(y_tr), seed=seed)
    if n_train is not None and n_train < len(fit_idx):
        keep, _ = stratified_split(y_tr[fit_idx], 1 - n_train / len(fit_idx), seed=0)
        fit_idx = fit_idx[keep]

    def seq(x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(x.astype(np.float32) / 255.0)
        if layout == "rows":
            return t  # (N, 28, 28)
        if layout == "image":
            return t.unsqueeze(1)  # (N, 1, 28, 28)
        t = t.reshape(len(t), 784)
        if layout == "perm":
            t = t[:, permutation()]
        return t.unsqueeze(-1)  # (N, 784, 1)

    xt = torch.from_numpy(x_tr)
    return TaskData(
        name=name,
        kind="classification",
        train=SequenceDataset(seq(xt[fit_idx].numpy()), y_tr[fit_idx]),
        val=SequenceDataset(seq(xt[val_idx].numpy()), y_tr[val_idx]),
        test=SequenceDataset(seq(x_te), y_te),
        d_input=28 if layout == "rows" else 1,
        n_classes=10,
        info={
            "source": "Debian dataset-fashion-mnist 0.0~git20200523.55506a9-1 "
            f"(sha256 {_sources.SOURCES['fashion-mnist'].sha256[:12]}…)",
            "split": f"official 60000/10000; {n_val} of train (stratified, seed {seed}) for "
            "validation"
            + (f"; training subset of {n_train} (stratified, seed 0)" if n_train else ""),
            "normalisation": "pixels / 255",
            "layout": layout,
            "reference": REFERENCE if layout in ("rows", "image") else {},
            **({"image_shape": [1, 28, 28]} if layout == "image" else {}),
        },
    )


@register_task(
    "fashion_mnist",
    description="Fashion-MNIST pixel by pixel (784 x 1); Debian dataset-fashion-mnist",
    sources=("fashion-mnist",),
)
def fashion_mnist(seed: int = 0, *, n_train: int | None = None, n_val: int = 5000) -> TaskData:
    """Pixel-wise sequential Fashion-MNIST (L = 784)."""
    return _fashion("fashion_mnist", "pixel", seed, n_train, n_val)


@register_task(
    "fashion_mnist_rows",
    description="Fashion-MNIST row by row (28 x 28)",
    sources=("fashion-mnist",),
)
def fashion_mnist_rows(seed: int = 0, *, n_train: int | None = None, n_val: int = 5000) -> TaskData:
    """Row-wise sequential Fashion-MNIST (L = 28, d_input = 28)."""
    return _fashion("fashion_mnist_rows", "rows", seed, n_train, n_val)


@register_task(
    "fashion_mnist_perm",
    description="Fashion-MNIST pixel by pixel in a fixed random order (784 x 1)",
    sources=("fashion-mnist",),
)
def fashion_mnist_perm(seed: int = 0, *, n_train: int | None = None, n_val: int = 5000) -> TaskData:
    """Permuted pixel-wise Fashion-MNIST (fixed permutation, :func:`permutation`)."""
    return _fashion("fashion_mnist_perm", "perm", seed, n_train, n_val)


@register_task(
    "fashion_mnist_image",
    description="Fashion-MNIST images (1 x 28 x 28) for the patch-scan backbones",
    sources=("fashion-mnist",),
)
def fashion_mnist_image(
    seed: int = 0, *, n_train: int | None = None, n_val: int = 5000
) -> TaskData:
    """Fashion-MNIST as images ``(N, 1, 28, 28)`` (same split as the sequence layouts)."""
    return _fashion("fashion_mnist_image", "image", seed, n_train, n_val)
