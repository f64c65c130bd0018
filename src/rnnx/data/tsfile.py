"""``ts:PATH`` — your own time-series classification or regression data (UCR/UEA ``.ts``).

``PATH`` is a ``.ts`` file, a ``<Name>_TRAIN.ts`` whose ``<Name>_TEST.ts`` sits beside
it, or a folder holding one such pair (the layout of the UCR/UEA archives and of
aeon's bundled data). With both files their split is kept; with one file,
``test_fraction`` (default 20%) is held out for the test, stratified by class for
classification, drawn with ``seed``. Validation: ``val_fraction`` of the training
split, the same way. Multivariate and unequal-length series are supported
(zero-padded, with ``lengths``).

The format is the one aeon's ``load_from_ts_file`` reads (sktime/aeon, Bagnall et al.):
a header of ``@`` lines (``@problemName``, ``@timeStamps``, ``@missing``,
``@univariate``, ``@dimensions``, ``@equalLength``, ``@seriesLength``,
``@classLabel true <values>`` or ``false``, ``@targetLabel true`` for regression),
then ``@data`` and one case per line: the channels separated by ``:``, values by
``,``, ``?`` or ``NaN`` for missing, the class label or target last. Decision: rnnx
parses it itself (:func:`parse_ts`) rather than importing aeon, for the reason it
reads aeon's bundled sets from the wheel (:mod:`rnnx.data.timeseries`): aeon would
bring numba and some 40 packages for a text format; the parser follows aeon's
header semantics and checks (declared class values, channel counts per case) and is
tested on every ``.ts`` file of the aeon wheel. Time stamps (``@timeStamps true``)
are not supported: one clear error says so.

Labels and normalisation of classification data follow
:func:`rnnx.data.timeseries.classification_task`: ``normalise="auto"`` (default)
chooses per data set, from its training split, between per-series z-normalisation and
per-channel standardisation with training statistics (``"series"``/``"global"`` force
one), and ``info["normalisation"]`` says which and why. Regression inputs: per-series
z-normalisation for univariate sets, per-channel standardisation with training
statistics for multivariate ones; targets are standardised with the training split's
mean and std (``info["target_mean_std"]``). The model and training settings are the
recipe's, derived from the data (docs/training.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnnx.data.base import SequenceDataset, TaskData, register_task, stratified_split

_BOOL_KEYS = ("timestamps", "missing", "univariate", "equallength", "targetlabel")


def parse_ts(text: str, *, source: str = ".ts file") -> tuple[list[np.ndarray], list, dict]:
    """Parse a ``.ts`` file: ``(series, targets, meta)``.

    ``series``: one ``(L_i, C)`` float64 array per case (trailing missing values
    dropped, inner ones interpolated, channels cut to the shortest); ``targets``:
    class labels (str) or regression targets (float), empty when the file has
    neither; ``meta``: the header (``classlabel``, ``targetlabel``, ``class_values``,
    ...). Errors name the file and the line.
    """
    from rnnx.data.timeseries import _fill_interior_nans

    meta: dict[str, Any] = {
        "problemname": "none",
        "timestamps": False,
        "missing": False,
        "univariate": True,
        "equallength": True,
        "classlabel": True,
        "targetlabel": False,
        "class_values": [],
    }
    lines = text.splitlines()
    start = None
    for no, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith(("#", "%")):
            continue
        if not line.startswith("@"):
            raise ValueError(f"{source}, line {no}: expected a @ header line before @data")
        tokens = line.split()
        key = tokens[0][1:].lower()
        if key == "data":
            if len(tokens) != 1:
                raise ValueError(f"{source}, line {no}: @data takes no value")
            start = no
            break
        if key in _BOOL_KEYS:
            if len(tokens) != 2 or tokens[1].lower() not in ("true", "false"):
                raise ValueError(f"{source}, line {no}: {tokens[0]} expects true or false")
            meta[key] = tokens[1].lower() == "true"
        elif key == "classlabel":
            flag = tokens[1].lower() if len(tokens) > 1 else ""
            if flag not in ("true", "false"):
                raise ValueError(f"{source}, line {no}: @classLabel expects true or false")
            meta["classlabel"] = flag == "true"
            meta["class_values"] = tokens[2:]
            if meta["classlabel"] and not meta["class_values"]:
                raise ValueError(f"{source}, line {no}: @classLabel true needs the class values")
        elif key in ("problemname", "dimensions", "serieslength"):
            meta[key] = tokens[1] if len(tokens) > 1 else ""
    if start is None:
        raise ValueError(f"{source}: no @data section")
    if meta["targetlabel"]:
        meta["classlabel"] = False
    if meta["timestamps"]:
        raise ValueError(f"{source}: @timeStamps true (time-stamped values) is not supported")
    has_target = meta["classlabel"] or meta["targetlabel"]
    declared = set(meta["class_values"])
    series: list[np.ndarray] = []
    targets: list[float | str] = []  # numbers with @targetLabel, else class names
    n_channels = None
    for no in range(start + 1, len(lines) + 1):
        line = lines[no - 1].strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if has_target:
            *channels, target = parts
        else:
            channels, target = parts, None
        if n_channels is None:
            n_channels = len(channels)
        elif len(channels) != n_channels:
            raise ValueError(
                f"{source}, line {no}: {len(channels)} channels, the first case has {n_channels}"
            )
        try:
            rows = [np.array([_value(v) for v in ch.split(",")]) for ch in channels]
            rows = [_fill_interior_nans(r) for r in rows]
        except ValueError as exc:
            raise ValueError(f"{source}, line {no}: {exc}") from None
        L = min(len(r) for r in rows)
        series.append(np.stack([r[:L] for r in rows], axis=1))
        if target is not None:
            target = target.strip()
            if meta["targetlabel"]:
                try:
                    targets.append(float(target))
                except ValueError:
                    raise ValueError(
                        f"{source}, line {no}: target {target!r} is not a number"
                    ) from None
            else:
                if declared and target not in declared:
                    raise ValueError(
                        f"{source}, line {no}: class {target!r} is not among the declared "
                        f"@classLabel values {sorted(declared)}"
                    )
                targets.append(target)
    if not series:
        raise ValueError(f"{source}: no cases after @data")
    return series, targets, meta


def _value(v: str) -> float:
    v = v.strip()
    return np.nan if v in ("?", "NaN", "nan") else float(v)


def ts_files(path: str | Path) -> tuple[Path, Path | None]:
    """``(train file, test file or None)`` for ``ts:PATH`` (module docstring)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"task ts:{path}: no such file or folder")
    if p.is_dir():
        trains = sorted(p.glob("*_TRAIN.ts"))
        if len(trains) != 1:
            singles = sorted(p.glob("*.ts"))
            if not trains and len(singles) == 1:
                return singles[0], None
            found = ", ".join(f.name for f in (trains or singles)) or "no .ts files"
            raise ValueError(
                f"task ts:{path}: expected one <Name>_TRAIN.ts (and its _TEST.ts) in the "
                f"folder, found {found}; give the file itself"
            )
        p = trains[0]
    if p.name.endswith("_TRAIN.ts"):
        test = p.with_name(p.name[: -len("_TRAIN.ts")] + "_TEST.ts")
        return p, test if test.exists() else None
    return p, None


def _read(f: Path) -> tuple[list[np.ndarray], list, dict]:
    try:
        text = f.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"task ts: {f} is not UTF-8 text ({exc})") from None
    return parse_ts(text, source=str(f))


def _split(n: int, frac: float, seed: int, labels: list | None) -> tuple[list[int], list[int]]:
    if labels is not None:
        classes = sorted(set(labels))
        y = torch.tensor([classes.index(v) for v in labels])
        rest, held = stratified_split(y, frac, seed=seed)
        if len(held) and len(rest):
            return rest.tolist(), held.tolist()
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    k = max(1, round(frac * n))
    return sorted(perm[k:]), sorted(perm[:k])


@register_task(
    "ts",
    description="your own UCR/UEA .ts data: a file, or <Name>_TRAIN.ts/_TEST.ts (folder)",
    takes_path=True,
)
def ts(
    path: str,
    seed: int = 0,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    normalise: str = "auto",
) -> TaskData:
    """Classification or regression on the ``.ts`` data at ``path`` (module docstring)."""
    from rnnx.data.timeseries import classification_task

    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not isinstance(frac, int | float) or not 0 < frac < 1:
            raise ValueError(f"task ts: {name}: expected a number in (0, 1), got {frac!r}")
    f_train, f_test = ts_files(path)
    xs, ys, meta = _read(f_train)
    if not ys:
        raise ValueError(
            f"task ts: {f_train} has neither class labels nor targets (@classLabel false): "
            "nothing to learn"
        )
    if f_test is not None:
        xs_te, ys_te, meta_te = _read(f_test)
        if meta_te["targetlabel"] != meta["targetlabel"] or not ys_te:
            raise ValueError(f"task ts: {f_test} and {f_train} hold different kinds of targets")
        split = f"the files' split ({f_train.name} / {f_test.name})"
    else:
        classify = not meta["targetlabel"]
        rest, held = _split(len(xs), test_fraction, seed, ys if classify else None)
        xs, ys, xs_te, ys_te = (
            [xs[i] for i in rest],
            [ys[i] for i in rest],
            [xs[i] for i in held],
            [ys[i] for i in held],
        )
        split = f"{test_fraction:.0%} of {f_train.name} held out for the test (seed {seed})"
    root = Path(path).expanduser().absolute()
    name = f"ts:{root}"
    lengths = [len(s) for s in xs + xs_te]
    channels = int(xs[0].shape[1])
    if {s.shape[1] for s in xs + xs_te} != {channels}:
        raise ValueError(f"task ts:{path}: the train and test files have different channels")
    inferred: dict[str, Any] = {
        "kind": "regression" if meta["targetlabel"] else "classification",
        "channels": channels,
        "lengths": [min(lengths), max(lengths)],
        "equal_length": len(set(lengths)) == 1,
    }
    info = {
        "source": str(f_train) + (f" + {f_test}" if f_test else ""),
        "problem": meta["problemname"],
    }
    if not meta["targetlabel"]:
        task = classification_task(
            name,
            (xs, [str(v) for v in ys]),
            (xs_te, [str(v) for v in ys_te]),
            seed=seed,
            val_fraction=val_fraction,
            info=info,
            normalise=normalise,
        )
        task.info["split"] = split + "; " + task.info["split"].split("; ", 1)[-1]
        inferred["classes"] = task.n_classes
        inferred["labels"] = task.info["classes"]
        task.info["inferred"] = inferred
        return task
    return _regression(name, xs, ys, xs_te, ys_te, seed, val_fraction, info, split, inferred)


def _regression(name, xs, ys, xs_te, ys_te, seed, val_fraction, info, split, inferred):
    from rnnx.data.timeseries import _channel_stats, _pad, _standardise_channels, _znorm_series

    x_tr, len_tr = _pad(xs)
    x_te, len_te = _pad(xs_te)
    L = max(x_tr.shape[1], x_te.shape[1])
    x_tr = np.pad(x_tr, [(0, 0), (0, L - x_tr.shape[1]), (0, 0)])
    x_te = np.pad(x_te, [(0, 0), (0, L - x_te.shape[1]), (0, 0)])
    if x_tr.shape[2] == 1:
        x_tr, x_te = _znorm_series(x_tr, len_tr), _znorm_series(x_te, len_te)
        norm = "per-series z-normalisation"
    else:
        stats = _channel_stats(x_tr, len_tr)
        x_tr = _standardise_channels(x_tr, len_tr, stats)
        x_te = _standardise_channels(x_te, len_te, stats)
        norm = "per-channel standardisation with training-split statistics"
    y_tr, y_te = np.asarray(ys, dtype=np.float64), np.asarray(ys_te, dtype=np.float64)
    fit, val = _split(len(y_tr), val_fraction, seed, None)
    mean, std = float(y_tr[fit].mean()), float(y_tr[fit].std()) or 1.0
    equal = len(set(len_tr.tolist()) | set(len_te.tolist())) == 1

    def ds(x, y, lengths, idx=None):
        idx = np.arange(len(x)) if idx is None else np.asarray(idx)
        return SequenceDataset(
            torch.from_numpy(x[idx]),
            torch.from_numpy(((y[idx] - mean) / std).astype(np.float32))[:, None],
            None if equal else torch.from_numpy(lengths[idx]),
        )

    inferred["outputs"] = 1
    return TaskData(
        name=name,
        kind="regression",
        train=ds(x_tr, y_tr, len_tr, fit),
        val=ds(x_tr, y_tr, len_tr, val),
        test=ds(x_te, y_te, len_te),
        d_input=x_tr.shape[2],
        d_output=1,
        info={
            **info,
            "split": f"{split}; {val_fraction:.0%} of train for validation (seed {seed})",
            "normalisation": norm + "; target standardised with training statistics",
            "target_mean_std": [[mean, std]],
            "inferred": inferred,
        },
    )
