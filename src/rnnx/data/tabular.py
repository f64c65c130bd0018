"""``csv:PATH`` — forecasting or regression on your own time series (CSV, or Parquet).

The file is a table with one row per time step. Columns:

* **time** (``--task-arg time=COL``; default: the first column when it is named like a
  time (time, date, datetime, timestamp, ds, t), holds dates, or is a strictly
  increasing number and there are other columns; else the rows are in time order).
  Rows are sorted by it; duplicate times are an error. Its median spacing is the
  frequency, from which the seasons of the seasonal-naive baseline are inferred
  (sub-daily: a day and a week; daily: 7; weekly: 52; monthly: 12; quarterly: 4).
* **targets** (``target=COL`` or ``target=[A, B]``; default: every column that is not
  a covariate for forecasting, the last one for regression);
* **covariates** (``covariates=[C, D]``; inputs only; default: the columns that are not
  targets when targets are named, else none).

So a two-column file ``time,value`` needs no argument at all.

Problems (``problem=``):

* ``forecast`` (default): from the last ``lookback`` steps of targets + covariates,
  predict the targets' next ``horizon`` steps (``d_output = horizon × targets``,
  time-major) — the protocol of ``vic_elec`` (arXiv 2012.07436, 2205.13504);
* ``regression``: from the last ``lookback`` steps of the covariates, predict the
  targets at the window's last step (``d_output = targets``).

Split by time: the last ``test_fraction`` (default 20%) of the steps test, the
``val_fraction`` (10%) before them validate, the rest train; a window belongs to the
split that holds its target steps (its inputs may reach back into the previous
split). Every column is standardised with the training split's mean and std (0/1
columns are left as they are), and metrics are on the standardised targets, as for
``vic_elec``; ``info["target_mean_std"]`` gives the scale back. Missing values inside
a column are filled by linear interpolation (the count is reported).

Baselines on the same test windows (``info["reference"]``, printed after the run):
for forecasting, the seasonal-naive (each inferred season, and lag 1: the last value)
and linear forecasts of :func:`rnnx.data.vic_elec.baselines`; for regression, the
training mean and least squares on the flattened input window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnnx._names import did_you_mean
from rnnx.data.base import MissingDependencyError, TaskData, register_task, require_package
from rnnx.data.vic_elec import WindowDataset, _scores, _starts, baselines

_TIME_NAMES = ("time", "date", "datetime", "timestamp", "ds", "t")


def read_table(path: str | Path, *, sep: str | None = None):
    """A pandas DataFrame of a ``.csv``/``.tsv``/``.txt`` or ``.parquet`` file."""
    pd = require_package("pandas", task=f"csv:{path}", install="pip install 'rnnx[data]'")
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(
            f"task csv:{path}: no such file" + (" (it is a folder)" if p.is_dir() else "")
        )
    if p.suffix.lower() in (".parquet", ".pq"):
        try:
            return pd.read_parquet(p)
        except ImportError as exc:
            raise MissingDependencyError(
                f"task csv:{path}: reading Parquet needs pyarrow or fastparquet "
                f"({' '.join(str(exc).split())[:120]}); install one: pip install pyarrow"
            ) from None
    try:
        return pd.read_csv(p, sep=sep or ("\t" if p.suffix.lower() == ".tsv" else ","))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"task csv:{path}: cannot read it as CSV ({exc})") from None


def _as_list(v: Any, name: str) -> list[str] | None:
    if v is None:
        return None
    if isinstance(v, str):
        return [v]
    if isinstance(v, list | tuple) and all(isinstance(c, str) for c in v):
        return list(v)
    raise ValueError(f"task csv: {name}: expected a column name or a list of names, got {v!r}")


def _pick_time(frame, time: str | None):
    """``(column name or None, times as a numpy array or None, is_datetime)``."""
    import pandas as pd

    cols = list(frame.columns)
    if time is not None:
        if time not in cols:
            raise ValueError(
                f"task csv: time: no column {time!r}{did_you_mean(time, cols)} "
                f"(columns: {', '.join(map(str, cols))})"
            )
        cand = time
    else:
        cand = cols[0]
        col = frame[cand]
        named = str(cand).strip().lower() in _TIME_NAMES
        numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
        increasing = numeric and len(cols) > 1 and bool(np.all(np.diff(col.to_numpy()) > 0))
        datelike = pd.api.types.is_datetime64_any_dtype(col) or (
            col.dtype == object and _parses_as_dates(col)
        )
        if not (named or increasing or datelike):
            return None, None, False
    col = frame[cand]
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        return cand, col.to_numpy(dtype=np.float64), False
    try:
        parsed = pd.to_datetime(col, format="mixed")
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"task csv: time: column {cand!r} holds neither numbers nor dates ({exc})"
        ) from None
    return cand, parsed.to_numpy(), True


def _parses_as_dates(col) -> bool:
    import pandas as pd

    try:
        pd.to_datetime(col.head(20), format="mixed")
    except (ValueError, TypeError):
        return False
    return True


def _numeric(frame, name: str) -> tuple[np.ndarray, int]:
    """A column as float64 (booleans 0/1), interior gaps filled; ``(values, n_filled)``."""
    import pandas as pd

    col = frame[name]
    if pd.api.types.is_bool_dtype(col):
        col = col.astype(float)
    elif not pd.api.types.is_numeric_dtype(col):
        lowered = col.astype(str).str.strip().str.lower()
        if set(lowered.dropna().unique()) <= {"true", "false"}:
            col = (lowered == "true").astype(float)
        else:
            bad = next((v for v in col if not _is_number(v)), None)
            raise ValueError(
                f"task csv: column {name!r} is not numeric (e.g. {bad!r}); name the time "
                "column with --task-arg time=..., or leave the column out with "
                "--task-arg target=[...] / covariates=[...]"
            )
    values = col.to_numpy(dtype=np.float64)
    missing = np.isnan(values)
    if missing.all():
        raise ValueError(f"task csv: column {name!r} holds no values")
    if missing.any():
        idx = np.arange(len(values))
        values = values.copy()
        values[missing] = np.interp(idx[missing], idx[~missing], values[~missing])
    return values, int(missing.sum())


def _is_number(v: Any) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def _seasons(times: np.ndarray | None, is_datetime: bool) -> tuple[list[int], str | None]:
    """Seasonal periods (in steps) from the median spacing of datetime ``times``."""
    if times is None or not is_datetime or len(times) < 2:
        return [], None
    step = float(np.median(np.diff(times).astype("timedelta64[s]").astype(np.float64)))
    if step <= 0:
        return [], None
    day, week = 86400.0, 7 * 86400.0
    days = step / day
    if step < day and day % step == 0:
        freq = f"{step / 3600:g} h" if step >= 3600 else f"{step / 60:g} min"
        return [int(day // step), int(week // step)], freq
    for lo, hi, seasons, freq in (
        (1, 1, [7], "1 day"),
        (7, 7, [52], "1 week"),
        (28, 31, [12], "1 month"),
        (89, 92, [4], "1 quarter"),
    ):
        if lo <= days <= hi:
            return seasons, freq
    return [], f"{days:g} days"


def regression_baselines(train_x, train_y, test_x, test_y) -> dict:
    """MSE/MAE of the training mean and of least squares on the flattened input window."""
    a, b = train_x.reshape(len(train_x), -1), test_x.reshape(len(test_x), -1)
    mean = np.broadcast_to(train_y.mean(0), test_y.shape)
    X = np.concatenate([a, np.ones((len(a), 1))], axis=1)
    W = np.linalg.solve(X.T @ X + 1e-3 * np.eye(X.shape[1]), X.T @ train_y)
    Xt = np.concatenate([b, np.ones((len(b), 1))], axis=1)
    return {
        "training mean": _scores(mean, test_y),
        "linear (least squares)": _scores(Xt @ W, test_y),
    }


@register_task(
    "csv",
    description="your own time series, CSV or Parquet: forecasting or regression",
    takes_path=True,
)
def csv(
    path: str,
    seed: int = 0,
    *,
    problem: str = "forecast",
    time: str | None = None,
    target: str | list[str] | None = None,
    covariates: str | list[str] | None = None,
    horizon: int = 24,
    lookback: int | None = None,
    season: int | list[int] | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    train_stride: int = 1,
    eval_stride: int = 1,
    sep: str | None = None,
) -> TaskData:
    """Forecast (or regress) the target columns of the table at ``path`` (module docstring).

    ``lookback`` defaults to ``max(2 * horizon, shortest season)`` for forecasting and 24
    for regression; ``season`` (steps) replaces the inferred seasons; ``seed`` does not
    change the data (the split is by time).
    """
    if problem not in ("forecast", "regression"):
        raise ValueError(f"task csv: problem: expected 'forecast' or 'regression', got {problem!r}")
    for name, v, lo in (
        ("horizon", horizon, 1),
        ("train_stride", train_stride, 1),
        ("eval_stride", eval_stride, 1),
    ):
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise ValueError(f"task csv: {name}: expected an integer >= {lo}, got {v!r}")
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not isinstance(frac, int | float) or not 0 < frac < 1:
            raise ValueError(f"task csv: {name}: expected a number in (0, 1), got {frac!r}")
    if val_fraction + test_fraction >= 1:
        raise ValueError("task csv: val_fraction + test_fraction: expected < 1")
    frame = read_table(path, sep=sep)
    if len(frame.columns) == 0 or len(frame) < 3:
        raise ValueError(f"task csv:{path}: expected a table with rows and columns, got none")
    frame.columns = [str(c).strip() for c in frame.columns]
    tcol, times, is_dt = _pick_time(frame, time)
    if times is not None:
        order = np.argsort(times, kind="stable")
        frame, times = frame.iloc[order].reset_index(drop=True), times[order]
        dup = int((np.diff(times) == np.zeros((), times.dtype)).sum())
        if dup:
            raise ValueError(
                f"task csv: time: column {tcol!r} has {dup} repeated time(s); one row per "
                "time step is expected"
            )
    columns = [c for c in frame.columns if c != tcol]
    targets, covs = _as_list(target, "target"), _as_list(covariates, "covariates")
    for name, chosen in (("target", targets), ("covariates", covs)):
        for c in chosen or []:
            if c not in columns:
                raise ValueError(
                    f"task csv: {name}: no column {c!r}{did_you_mean(c, columns)} "
                    f"(columns: {', '.join(columns)})"
                )
    if problem == "forecast":
        if targets is None:
            covs = covs or []
            targets = [c for c in columns if c not in covs]
        elif covs is None:
            covs = [c for c in columns if c not in targets]
    else:
        targets = targets or [columns[-1]]
        covs = covs if covs is not None else [c for c in columns if c not in targets]
        if not covs:
            raise ValueError(
                "task csv: covariates: regression needs input columns besides the target "
                "(--task-arg covariates=[...])"
            )
    if not targets:
        raise ValueError("task csv: target: no target column left (all are covariates)")
    overlap = set(targets) & set(covs)
    if overlap:
        raise ValueError(f"task csv: columns {sorted(overlap)} are both target and covariate")
    inputs = (targets + covs) if problem == "forecast" else covs
    filled = 0
    cols = {}
    for c in dict.fromkeys(targets + covs):
        cols[c], k = _numeric(frame, c)
        filled += k
    raw = np.stack([cols[c] for c in targets + covs], axis=1)  # (T, K + C)
    T, K = len(raw), len(targets)

    inferred_seasons, freq = _seasons(times, is_dt)
    if season is not None:
        seasons = [season] if isinstance(season, int) else list(season)
        if not all(isinstance(m, int) and m >= 1 for m in seasons):
            raise ValueError(f"task csv: season: expected integers >= 1, got {season!r}")
    else:
        seasons = inferred_seasons
    if lookback is None:
        lookback = max(2 * horizon, min(seasons, default=0)) if problem == "forecast" else 24
    if not isinstance(lookback, int) or isinstance(lookback, bool) or lookback < 1:
        raise ValueError(f"task csv: lookback: expected an integer >= 1, got {lookback!r}")

    n_test, n_val = round(test_fraction * T), round(val_fraction * T)
    n_train = T - n_val - n_test
    binary = np.all((raw[:n_train] == 0) | (raw[:n_train] == 1), axis=0)
    mean, std = raw[:n_train].mean(0), raw[:n_train].std(0)
    mean[binary], std[binary] = 0.0, 1.0
    std[std == 0] = 1.0
    series = (raw - mean) / std
    bounds = {
        "train": (0, n_train),
        "val": (n_train, n_train + n_val),
        "test": (n_train + n_val, T),
    }
    h = horizon if problem == "forecast" else 1
    starts = {
        k: _starts(lo, hi, lookback, h, train_stride if k == "train" else eval_stride)
        for k, (lo, hi) in bounds.items()
    }
    for split, windows in starts.items():
        if len(windows) == 0:
            lo, hi = bounds[split]
            raise ValueError(
                f"task csv:{path}: no window fits in the {split} split ({hi - lo} of {T} steps) "
                f"with lookback {lookback} + horizon {h}; lower --task-arg lookback/horizon "
                "or give a longer series"
            )
    s = torch.from_numpy(series.astype(np.float32))
    x_cols = [(targets + covs).index(c) for c in inputs]
    x_series = s[:, x_cols].contiguous()
    if problem == "forecast":
        y_series = s[:, :K].contiguous()
    else:
        # The target at the window's last step: the series shifted by one step, so
        # that WindowDataset's "next step" is the window's own last step.
        y_series = torch.cat([torch.zeros(1, K), s[:-1, :K]]).contiguous()
    if K == 1:
        y_series = y_series[:, 0].contiguous()
    splits = {k: WindowDataset(x_series, y_series, v, lookback, h) for k, v in starts.items()}
    if problem == "forecast":
        ref = baselines(
            series,
            starts["test"],
            _starts(0, n_train, lookback, h, 1),
            lookback,
            h,
            lags=tuple(dict.fromkeys([1, *seasons])),
            targets=list(range(K)),
        )
    else:
        tr, te = splits["train"], splits["test"]
        ref = regression_baselines(
            tr.x.numpy(),
            tr.y.reshape(len(tr), -1).numpy(),
            te.x.numpy(),
            te.y.reshape(len(te), -1).numpy(),
        )
    root = Path(path).expanduser().absolute()
    inferred = {
        "kind": "regression (forecast)" if problem == "forecast" else "regression (current)",
        "time_column": tcol or "none (row order)",
        "frequency": freq or ("numeric steps" if tcol else "rows"),
        "rows": T,
        "targets": targets,
        "covariates": covs,
        "channels": len(inputs),
        "horizon": h,
        "lookback": lookback,
        "seasons": seasons,
        "outputs": h * K,
    }
    if filled:
        inferred["filled_missing"] = filled
    return TaskData(
        name=f"csv:{root}",
        kind="regression",
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        d_input=len(inputs),
        d_output=h * K,
        info={
            "source": str(root),
            "split": f"by time: {n_train} train / {n_val} val / {n_test} test steps "
            "(a window belongs to the split of its targets)",
            "normalisation": "every column standardised with training statistics (0/1 "
            "columns kept); metrics on standardised targets",
            "target_mean_std": [[float(mean[i]), float(std[i])] for i in range(K)],
            # forecasts continue input channels 0..K-1 (the targets come first)
            **(
                {"target_channel": 0 if K == 1 else list(range(K))} if problem == "forecast" else {}
            ),
            "inferred": inferred,
            "reference": ref,
        },
    )
