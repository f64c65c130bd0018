"""``npz:PATH`` — your own arrays (a NumPy ``.npz`` file): classification, tagging, regression.

Arrays (``np.savez(path, x=..., y=...)``; nothing is unpickled, so arrays of Python
objects are refused):

* ``x``: ``(N, L, D)`` real-valued sequences, or ``(N, L)``: real values (one channel)
  when float, token ids when integer (vocabulary ``max + 1``; ``inputs=real`` reads
  integers as values);
* ``y``: ``(N,)`` integer, boolean or string labels -> **classification**; ``(N, L)``
  integer labels per step (``-100``: not scored) -> **tagging**; float ``(N,)`` or
  ``(N, K)`` -> **regression** with ``K`` outputs. ``kind=`` overrides the guess;
* ``lengths`` (optional): ``(N,)`` valid steps per sequence (the rest is padding);
* predefined splits (optional): ``x_train``, ``y_train``, ``x_test``, ``y_test`` and
  optionally ``x_val``, ``y_val`` (and ``lengths_<split>``) instead of ``x``/``y``.

Without predefined splits, ``test_fraction`` (default 20%) is held out, then
``val_fraction`` (10%) of the rest, drawn with ``seed`` (stratified by class for
classification); without ``x_val``, validation is drawn from ``x_train`` the same way.
Labels map to ``0..C-1`` in sorted order of the training labels (a test label never
seen in training is an error). Real inputs are standardised per channel with the
training split's mean and std over valid steps (``normalize=false`` keeps them), and
regression targets likewise (metrics are on the standardised targets;
``info["target_mean_std"]`` gives the scale back).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnnx._names import did_you_mean
from rnnx.data.base import SequenceDataset, TaskData, register_task, stratified_split
from rnnx.data.timeseries import _channel_stats, _standardise_channels

_SPLITS = ("train", "val", "test")
_KINDS = ("classification", "tagging", "regression")


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file (no pickle), with one clear error if it is not one."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(
            f"task npz:{path}: no such file" + (" (it is a folder)" if p.is_dir() else "")
        )
    if not zipfile.is_zipfile(p):
        raise ValueError(
            f"task npz:{path}: not a readable .npz file (not a zip archive; np.savez writes one)"
        )
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise ValueError(
                f"task npz:{path}: holds arrays of Python objects, which would need pickle; "
                "save numbers (or fixed-width strings for labels)"
            ) from None
        raise ValueError(f"task npz:{path}: not a readable .npz file ({exc})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"task npz:{path}: not a readable .npz file ({exc})") from None


def _parts(arrays: dict[str, np.ndarray], path: str) -> tuple[dict[str, tuple], bool]:
    """``{split: (x, y, lengths)}`` (one entry ``"all"`` without predefined splits)."""
    names = set(arrays)
    single = {"x", "y", "lengths"}
    split = {f"{a}_{s}" for a in ("x", "y", "lengths") for s in _SPLITS}
    unknown = sorted(names - single - split)
    if unknown:
        raise ValueError(
            f"task npz:{path}: unexpected array {unknown[0]!r}"
            f"{did_you_mean(unknown[0], sorted(single | split))} (expected x, y, lengths, or "
            "x_train, y_train, x_test, y_test [, x_val, y_val, lengths_<split>])"
        )
    if names & single and names & split:
        raise ValueError(
            f"task npz:{path}: has both x/y and x_<split>/y_<split> arrays; use one layout"
        )
    if names & split:
        out = {}
        for s in _SPLITS:
            have = [f"{a}_{s}" in names for a in ("x", "y")]
            if s != "val" and not all(have):
                raise ValueError(f"task npz:{path}: predefined splits need x_{s} and y_{s}")
            if any(have) and not all(have):
                raise ValueError(f"task npz:{path}: x_{s} and y_{s} come together")
            if all(have):
                out[s] = (arrays[f"x_{s}"], arrays[f"y_{s}"], arrays.get(f"lengths_{s}"))
        return out, True
    if not {"x", "y"} <= names:
        raise ValueError(
            f"task npz:{path}: expected arrays x and y "
            f"(it has {', '.join(sorted(names)) or 'none'})"
        )
    return {"all": (arrays["x"], arrays["y"], arrays.get("lengths"))}, False


def _check(x: np.ndarray, y: np.ndarray, lengths: np.ndarray | None, where: str) -> None:
    if x.ndim not in (2, 3) or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{where} x: expected shape (N, L) or (N, L, D), got {x.shape}")
    if x.dtype.kind not in "biuf":
        raise ValueError(f"{where} x: expected numbers, got dtype {x.dtype}")
    if len(y) != len(x):
        raise ValueError(f"{where} y: expected {len(x)} entries (like x), got {len(y)}")
    if lengths is not None:
        if lengths.shape != (len(x),) or lengths.dtype.kind not in "iu":
            raise ValueError(
                f"{where} lengths: expected {len(x)} integers, got {lengths.dtype} {lengths.shape}"
            )
        if lengths.min() < 1 or lengths.max() > x.shape[1]:
            raise ValueError(
                f"{where} lengths: expected values in [1, {x.shape[1]}], got "
                f"[{lengths.min()}, {lengths.max()}]"
            )
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ValueError(f"{where} x: holds NaN or inf")


def _guess_kind(x: np.ndarray, y: np.ndarray) -> str:
    if y.ndim == 1:
        return "regression" if y.dtype.kind == "f" else "classification"
    if y.ndim == 2 and y.dtype.kind in "iub" and y.shape[1] == x.shape[1]:
        return "tagging"
    if y.ndim == 2 and y.dtype.kind == "f":
        return "regression"
    raise ValueError(
        f"y: cannot tell the task from shape {y.shape} and dtype {y.dtype} (expected (N,) "
        "labels, (N, L) integer step labels, or float (N,) / (N, K) targets)"
    )


def _random_split(n: int, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    k = max(1, round(frac * n))
    return np.sort(perm[k:]), np.sort(perm[:k])


@register_task(
    "npz",
    description="your own arrays (.npz: x, y, lengths): classification, tagging, regression",
    takes_path=True,
)
def npz(
    path: str,
    seed: int = 0,
    *,
    kind: str | None = None,
    inputs: str | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    normalize: bool = True,
) -> TaskData:
    """The arrays at ``path`` as a task (module docstring)."""
    where = f"task npz:{path}:"
    if kind is not None and kind not in _KINDS:
        raise ValueError(f"{where} kind: expected one of {', '.join(_KINDS)}, got {kind!r}")
    if inputs not in (None, "real", "tokens"):
        raise ValueError(f"{where} inputs: expected 'real' or 'tokens', got {inputs!r}")
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not isinstance(frac, int | float) or not 0 < frac < 1:
            raise ValueError(f"{where} {name}: expected a number in (0, 1), got {frac!r}")
    parts, predefined = _parts(load_arrays(path), path)
    for s, (x, y, lengths) in parts.items():
        _check(x, y, lengths, f"{where}" + ("" if s == "all" else f" [{s}]"))
    chans = {p[0].shape[2] if p[0].ndim == 3 else 1 for p in parts.values()}
    if len(chans) > 1:
        raise ValueError(f"{where} the splits' x have different numbers of channels {chans}")
    x0, y0, _ = next(iter(parts.values()))
    try:
        kind = kind or _guess_kind(x0, y0)
    except ValueError as exc:
        raise ValueError(f"{where} {exc}") from None
    tokens = inputs == "tokens" or (inputs is None and x0.ndim == 2 and x0.dtype.kind in "iu")
    if tokens and x0.ndim != 2:
        raise ValueError(f"{where} inputs=tokens: expected x of shape (N, L) token ids")

    # ---- splits (indices into "all", or the predefined arrays)
    if not predefined:
        x, y, lengths = parts["all"]
        strat = kind == "classification"
        yk = _label_ids(y)[0] if strat else None
        rest, test = _split(len(x), test_fraction, seed, yk)
        sub = None if yk is None else yk[rest]
        fit, val = _split(len(rest), val_fraction, seed + 1, sub)
        fit, val = rest[fit], rest[val]
        idx = {"train": fit, "val": val, "test": test}
        parts = {s: (x[i], y[i], None if lengths is None else lengths[i]) for s, i in idx.items()}
        policy = (
            f"random ({'stratified, ' if strat else ''}seed {seed}): "
            f"{test_fraction:.0%} test, then {val_fraction:.0%} of the rest validation"
        )
    elif "val" not in parts:
        x, y, lengths = parts["train"]
        yk = _label_ids(y)[0] if kind == "classification" else None
        fit, val = _split(len(x), val_fraction, seed, yk)
        parts = {
            "train": (x[fit], y[fit], None if lengths is None else lengths[fit]),
            "val": (x[val], y[val], None if lengths is None else lengths[val]),
            "test": parts["test"],
        }
        policy = f"predefined train/test; {val_fraction:.0%} of train for validation (seed {seed})"
    else:
        policy = "predefined train/val/test"

    # ---- inputs: pad to one length, standardise real channels with training statistics
    L = max(p[0].shape[1] for p in parts.values())
    lens = {
        s: (p[2].astype(np.int64) if p[2] is not None else np.full(len(p[0]), p[0].shape[1]))
        for s, p in parts.items()
    }
    xs = {}
    for s, (x, _y, _l) in parts.items():
        pad = [(0, 0), (0, L - x.shape[1])] + ([(0, 0)] if x.ndim == 3 else [])
        xs[s] = np.pad(x, pad)
    vocab = None
    if tokens:
        lo = min(int(v.min()) for v in xs.values())
        if lo < 0:
            raise ValueError(f"{where} x: token ids must be >= 0, got {lo}")
        vocab = max(int(v.max()) for v in xs.values()) + 1
        xt = {s: torch.from_numpy(v.astype(np.int64)) for s, v in xs.items()}
        norm = "none (token ids)"
    else:
        xs = {s: (v[..., None] if v.ndim == 2 else v).astype(np.float64) for s, v in xs.items()}
        if normalize:
            stats = _channel_stats(xs["train"], lens["train"])
            xs = {s: _standardise_channels(v, lens[s], stats) for s, v in xs.items()}
            norm = "per-channel standardisation with training statistics"
        else:
            mask = {s: np.arange(L)[None, :, None] < lens[s][:, None, None] for s in xs}
            xs = {s: np.where(mask[s], v, 0.0).astype(np.float32) for s, v in xs.items()}
            norm = "none"
        xt = {s: torch.from_numpy(v) for s, v in xs.items()}

    # ---- targets
    info: dict[str, Any] = {}
    if kind in ("classification", "tagging"):
        ys, classes = _encode_labels(parts, kind, L, lens, where)
        n_classes, d_output = len(classes), 0
        info["classes"] = classes
    else:
        raw = {s: p[1].astype(np.float64).reshape(len(p[1]), -1) for s, p in parts.items()}
        if not all(np.isfinite(v).all() for v in raw.values()):
            raise ValueError(f"{where} y: holds NaN or inf")
        mean, std = raw["train"].mean(0), raw["train"].std(0)
        std[std == 0] = 1.0
        ys = {s: torch.from_numpy(((v - mean) / std).astype(np.float32)) for s, v in raw.items()}
        n_classes, d_output = 0, raw["train"].shape[1]
        info["target_mean_std"] = [[float(m), float(s)] for m, s in zip(mean, std)]
    equal = all(bool((v == L).all()) for v in lens.values())
    ds = {
        s: SequenceDataset(xt[s], ys[s], None if equal else torch.from_numpy(lens[s]))
        for s in _SPLITS
    }
    all_lens = np.concatenate(list(lens.values()))
    root = Path(path).expanduser().absolute()
    inferred: dict[str, Any] = {
        "kind": kind,
        "inputs": f"token ids (vocabulary {vocab})" if tokens else "real",
        "channels": 1 if tokens else int(next(iter(chans))),
        "lengths": [int(all_lens.min()), int(all_lens.max())],
    }
    if kind != "regression":
        inferred["classes"] = len(info["classes"])
        inferred["labels"] = info["classes"]
    else:
        inferred["outputs"] = d_output
    return TaskData(
        name=f"npz:{root}",
        kind=kind,
        **ds,
        d_input=1 if tokens else int(next(iter(chans))),
        n_classes=n_classes,
        vocab_size=vocab,
        d_output=d_output,
        info={
            "source": str(root),
            "split": policy,
            "normalisation": norm,
            **info,
            "inferred": inferred,
        },
    )


def _label_ids(y: np.ndarray) -> tuple[torch.Tensor, list]:
    classes = sorted(np.unique(y).tolist())
    index = {c: i for i, c in enumerate(classes)}
    return torch.tensor([index[v] for v in y.tolist()]), classes


def _split(n: int, frac: float, seed: int, labels: torch.Tensor | None):
    """``(rest, held_out)`` indices; stratified when ``labels`` are given."""
    if n < 2:
        raise ValueError(f"expected at least 2 sequences to split, got {n}")
    if labels is not None:
        rest, held = stratified_split(labels, frac, seed=seed)
        if len(held) and len(rest):
            return rest.numpy(), held.numpy()
    return _random_split(n, frac, seed)


def _encode_labels(parts, kind: str, L: int, lens: dict, where: str):
    """Labels -> 0..C-1 (sorted training labels); tagging keeps -100 and masks padding."""
    ys = {s: p[1] for s, p in parts.items()}
    if kind == "classification":
        for s, y in ys.items():
            if y.ndim != 1:
                raise ValueError(f"{where} y [{s}]: classification expects (N,) labels")
        classes = sorted(np.unique(ys["train"]).tolist())
    else:
        for s, y in ys.items():
            if y.ndim != 2 or y.dtype.kind not in "iub":
                raise ValueError(
                    f"{where} y [{s}]: tagging expects (N, L) integer labels, got "
                    f"{y.dtype} {y.shape}"
                )
        classes = sorted(set(np.unique(ys["train"]).tolist()) - {-100})
    index = {c: i for i, c in enumerate(classes)}
    out = {}
    for s, y in ys.items():
        seen = set(np.unique(y).tolist()) - {-100}
        unknown = sorted(seen - set(index), key=str)
        if unknown:
            raise ValueError(
                f"{where} y [{s}]: labels {unknown[:5]} never occur in the training split"
            )
        if kind == "classification":
            out[s] = torch.tensor([index[v] for v in y.tolist()])
        else:
            ids = np.full((len(y), L), -100, dtype=np.int64)
            for c, i in index.items():
                ids[:, : y.shape[1]][y == c] = i
            ids[np.arange(L)[None] >= lens[s][:, None]] = -100  # padding is never scored
            out[s] = torch.from_numpy(ids)
    if len(classes) < 2 and kind == "classification":
        raise ValueError(f"{where} y: expected at least 2 classes, got {classes}")
    return out, [c if isinstance(c, int | float | str) else str(c) for c in classes]
