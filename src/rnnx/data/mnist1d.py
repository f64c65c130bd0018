"""MNIST-1D (Greydanus 2020, arXiv 2011.14439): 40-step 1-D digit signals, generated locally.

Source: the ``mnist1d`` 0.0.2.post1 package (Apache-2.0; in ``rnnx[data]``), whose
``make_dataset(get_dataset_args())`` builds the standard 4,000 / 1,000 train / test
set from hard-coded templates with seed 42 in about a second (``get_dataset`` would
download a pickle; it is not used). The test split is the package's; 10% of the
training split (stratified, ``seed``) is held out for validation. Generating takes
seconds (scipy per sample), so the arrays are cached as a ``.npz`` (read without
pickle) in the data directory, keyed by the package version. The signals are
used as generated (they are already roughly zero-mean, unit-scale).
Reference (the paper's table): logistic regression 32%, MLP 68%, CNN 94%, GRU 91%.
"""

from __future__ import annotations

import importlib.metadata
import os

import numpy as np
import torch

from rnnx.data import _sources
from rnnx.data.base import (
    SequenceDataset,
    TaskData,
    register_task,
    require_package,
    stratified_split,
)


def _arrays() -> dict[str, np.ndarray]:
    data = require_package(
        "mnist1d.data", task="mnist1d", install="pip install 'rnnx[data]' (mnist1d==0.0.2.post1)"
    )
    version = importlib.metadata.version("mnist1d")
    cache = _sources.data_dir() / f"mnist1d-{version}-default.npz"
    if cache.exists():
        with np.load(cache, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    made = data.make_dataset(data.get_dataset_args())
    ds = {k: np.asarray(made[k]) for k in ("x", "y", "x_test", "y_test")}
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + f".{os.getpid()}.part.npz")
    np.savez(tmp, x=ds["x"], y=ds["y"], x_test=ds["x_test"], y_test=ds["y_test"])
    os.replace(tmp, cache)
    return ds


@register_task(
    "mnist1d",
    description="MNIST-1D, 40-step signals, 10 classes (mnist1d make_dataset; generated locally)",
)
def mnist1d(seed: int = 0, *, val_fraction: float = 0.1) -> TaskData:
    """MNIST-1D as ``(N, 40, 1)`` sequences."""
    ds = _arrays()
    x = torch.tensor(ds["x"], dtype=torch.float32).unsqueeze(-1)
    y = torch.tensor(ds["y"], dtype=torch.long)
    fit, val = stratified_split(y, val_fraction, seed=seed)
    return TaskData(
        name="mnist1d",
        kind="classification",
        train=SequenceDataset(x[fit], y[fit]),
        val=SequenceDataset(x[val], y[val]),
        test=SequenceDataset(
            torch.tensor(ds["x_test"], dtype=torch.float32).unsqueeze(-1),
            torch.tensor(ds["y_test"], dtype=torch.long),
        ),
        d_input=1,
        n_classes=10,
        info={
            "source": "mnist1d 0.0.2.post1 make_dataset(get_dataset_args()), seed 42",
            "split": f"package train/test (4000/1000); {val_fraction:.0%} of train for validation",
            "reference": {
                "logistic regression (paper)": 0.32,
                "MLP (paper)": 0.68,
                "CNN (paper)": 0.94,
                "GRU (paper)": 0.91,
            },
        },
    )
