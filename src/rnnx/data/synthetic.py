"""Synthetic tasks that isolate one ability of a sequence model, each a small seeded function.

* :func:`mqar` — multi-query associative recall ("Zoology", Arora et al. 2023,
  arXiv 2312.04927): recall the value bound to a key seen earlier. Tests how much a
  fixed-size state can store; the attention-free models' weak spot.
* :func:`selective_copying` — copy the data tokens scattered among noise, in order
  (the selective copying task of Mamba, Gu & Dao 2023, arXiv 2312.00752, after the
  copying memory task of Arjovsky et al. 2016, arXiv 1511.06464). Tests content-aware
  (input-dependent) forgetting.
* :func:`modular_counting` / parity — the running count of ones modulo m, at every
  step (state tracking; Grazzi et al. 2024, arXiv 2411.12537, show that linear RNNs
  need negative eigenvalues for parity). Evaluated at lengths beyond those trained on.
* :func:`adding_problem` — the sum of the two marked values in a long sequence
  (Hochreiter & Schmidhuber 1997; the variant of Arjovsky et al. 2016). Tests memory
  over long gaps; predicting 1 always scores MSE 1/6.

Every function takes ``seed`` (the data depend on it alone: same seed, same tensors),
builds train / val / test splits from disjoint random streams, and returns a
:class:`~rnnx.data.base.TaskData`. Token tasks use -100 for the steps that carry no
target, so a per-step cross-entropy ignores them.
"""

from __future__ import annotations

import numpy as np
import torch

from rnnx.data.base import SequenceDataset, TaskData, register_task

IGNORE = -100


def _rng(seed: int, split: int) -> np.random.Generator:
    # One independent stream per (seed, split): the test set never depends on the
    # size of the training set.
    return np.random.default_rng([int(seed), int(split), 0x7A5C])


def mqar_arrays(
    n: int,
    *,
    vocab_size: int,
    seq_len: int,
    num_kv_pairs: int,
    power_a: float = 0.01,
    random_non_queries: bool = True,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Multi-query associative recall examples, as in Zoology (arXiv 2312.04927, §3).

    Each sequence starts with ``num_kv_pairs`` key-value pairs ``k1 v1 k2 v2 ...``
    (keys distinct, drawn from the lower half of the vocabulary excluding 0; values
    from the upper half). Every key is then queried once, at a position drawn with a
    power law over the remaining space (``p(gap) ∝ power_a · gap^(power_a - 1)``: most
    queries come soon after the context, some far away), and is followed by its value.
    The target at a query position is the value bound to that key; all other targets
    are -100. Positions that hold no query are random tokens (``random_non_queries``)
    or 0.

    Returns ``(x, y)``, int64 arrays of shape ``(n, seq_len)``.
    """
    context = 2 * num_kv_pairs
    space = (seq_len - context) // 2
    half = vocab_size // 2
    if half - 1 < num_kv_pairs or vocab_size - half < 1:
        raise ValueError(
            f"vocab_size: {vocab_size} leaves {half - 1} keys for num_kv_pairs={num_kv_pairs}"
        )
    if space < num_kv_pairs:
        raise ValueError(
            f"seq_len: {seq_len} leaves room for {space} queries, need num_kv_pairs="
            f"{num_kv_pairs} (seq_len >= 4 * num_kv_pairs)"
        )
    # Keys without replacement: the first num_kv_pairs of a random permutation of 1..half-1.
    keys = np.argsort(rng.random((n, half - 1)), axis=1)[:, :num_kv_pairs] + 1
    values = rng.integers(half, vocab_size, size=(n, num_kv_pairs))
    kvs = np.zeros((n, context), dtype=np.int64)
    kvs[:, 0::2], kvs[:, 1::2] = keys, values

    p = power_a * np.arange(1, space + 1, dtype=np.float64) ** (power_a - 1)
    p /= p.sum()
    # num_kv_pairs distinct gaps drawn with probabilities p, without replacement:
    # the top-k of log p + Gumbel noise (the Gumbel-top-k trick) is such a draw.
    gumbel = -np.log(-np.log(rng.random((n, space))))
    gaps = np.argsort(-(np.log(p)[None] + gumbel), axis=1)[:, :num_kv_pairs]
    rest = np.zeros((n, seq_len - context), dtype=np.int64)
    np.put_along_axis(rest, gaps * 2, keys, axis=1)
    np.put_along_axis(rest, gaps * 2 + 1, values, axis=1)
    x = np.concatenate([kvs, rest], axis=1)
    y = np.full((n, seq_len), IGNORE, dtype=np.int64)
    np.put_along_axis(y, context + gaps * 2, values, axis=1)
    if random_non_queries:
        noise = rng.integers(0, vocab_size, size=x.shape)
        filled = np.zeros_like(rest, dtype=bool)
        np.put_along_axis(filled, gaps * 2, True, axis=1)
        np.put_along_axis(filled, gaps * 2 + 1, True, axis=1)
        mask = np.concatenate([np.ones((n, context), dtype=bool), filled], axis=1)
        x = np.where(mask, x, noise)
    return x, y


def _token_task(name, make, sizes, seed, *, vocab_size, n_classes, info, lengths=None):
    splits = {}
    for i, (split, n) in enumerate(zip(("train", "val", "test"), sizes)):
        x, y, *ln = make(n, split, _rng(seed, i))
        lt = torch.from_numpy(ln[0]) if ln else None
        splits[split] = SequenceDataset(torch.from_numpy(x), torch.from_numpy(y), lt)
    return TaskData(
        name=name,
        kind="tagging",
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        vocab_size=vocab_size,
        n_classes=n_classes,
        info={"generator": f"rnnx.data.synthetic.{name}", "seed": seed, **info},
    )


#: The synthetic tasks' protocol (a fixed small model and epoch count, so that results
#: compare layers, not recipes); the data-derived recipe fills only what is not here.
_PROTOCOL_MODEL = {"d_model": 64, "n_layers": 2, "dropout": 0.0, "mlp_ratio": 0.0}
_PROTOCOL_TRAIN = {"batch_size": 64, "weight_decay": 0.01}
_TOKEN_DEFAULTS = {
    "model": _PROTOCOL_MODEL,
    "train": {"epochs": 20, "lr": 3e-3, **_PROTOCOL_TRAIN},
}


@register_task(
    "mqar",
    description="multi-query associative recall (Zoology, arXiv 2312.04927); synthetic",
    defaults=_TOKEN_DEFAULTS,
)
def mqar(
    seed: int = 0,
    *,
    vocab_size: int = 128,
    seq_len: int = 64,
    num_kv_pairs: int = 8,
    power_a: float = 0.01,
    n_train: int = 20000,
    n_val: int = 500,
    n_test: int = 1000,
) -> TaskData:
    """MQAR (see :func:`mqar_arrays`): accuracy over the query positions."""

    def make(n, split, rng):
        return mqar_arrays(
            n,
            vocab_size=vocab_size,
            seq_len=seq_len,
            num_kv_pairs=num_kv_pairs,
            power_a=power_a,
            rng=rng,
        )

    return _token_task(
        "mqar",
        make,
        (n_train, n_val, n_test),
        seed,
        vocab_size=vocab_size,
        n_classes=vocab_size,
        info={
            "params": {"vocab_size": vocab_size, "seq_len": seq_len, "num_kv_pairs": num_kv_pairs},
            "metric": "accuracy over query positions",
        },
    )


@register_task(
    "selective_copying",
    description="copy the data tokens scattered in noise, in order (Mamba, arXiv 2312.00752)",
    defaults=_TOKEN_DEFAULTS,
)
def selective_copying(
    seed: int = 0,
    *,
    seq_len: int = 64,
    n_tokens: int = 8,
    n_symbols: int = 8,
    n_train: int = 20000,
    n_val: int = 500,
    n_test: int = 1000,
) -> TaskData:
    """Selective copying.

    Tokens: 0 is blank (noise), 1 is the "recall" marker, ``2 .. n_symbols + 1`` are
    data. A region of ``seq_len`` steps holds ``n_tokens`` data tokens at random
    positions (blank elsewhere), followed by ``n_tokens`` markers; at the i-th marker
    the target is the i-th data token. Inputs ``(N, seq_len + n_tokens)``; accuracy
    over the marker positions.
    """
    if n_tokens > seq_len:
        raise ValueError(f"n_tokens: expected <= seq_len={seq_len}, got {n_tokens}")
    vocab = n_symbols + 2

    def make(n, split, rng):
        pos = np.sort(np.argsort(rng.random((n, seq_len)), axis=1)[:, :n_tokens], axis=1)
        data = rng.integers(2, vocab, size=(n, n_tokens))
        x = np.zeros((n, seq_len + n_tokens), dtype=np.int64)
        np.put_along_axis(x, pos, data, axis=1)
        x[:, seq_len:] = 1
        y = np.full_like(x, IGNORE)
        y[:, seq_len:] = data
        return x, y

    return _token_task(
        "selective_copying",
        make,
        (n_train, n_val, n_test),
        seed,
        vocab_size=vocab,
        n_classes=vocab,
        info={
            "params": {"seq_len": seq_len, "n_tokens": n_tokens, "n_symbols": n_symbols},
            "metric": "accuracy over the marker positions",
        },
    )


def _counting_task(name, seed, modulus, train_len, min_len, test_len, n_train, n_val, n_test):
    if not 1 <= min_len <= train_len < test_len:
        raise ValueError(
            f"lengths: expected 1 <= min_len <= train_len < test_len, got "
            f"{min_len}, {train_len}, {test_len}"
        )

    def make(n, split, rng):
        length = test_len if split == "test" else train_len
        x = rng.integers(0, 2, size=(n, length))
        y = np.cumsum(x, axis=1) % modulus
        if split == "test":
            # Score only the steps beyond the longest training sequence.
            y[:, :train_len] = IGNORE
            lengths = np.full(n, length)
        else:
            lengths = rng.integers(min_len, train_len + 1, size=n)
            pad = np.arange(length)[None] >= lengths[:, None]
            x = np.where(pad, 0, x)
            y = np.where(pad, IGNORE, y)
        return x.astype(np.int64), y.astype(np.int64), lengths.astype(np.int64)

    return _token_task(
        name,
        make,
        (n_train, n_val, n_test),
        seed,
        vocab_size=2,
        n_classes=modulus,
        info={
            "params": {
                "modulus": modulus,
                "train_lengths": [min_len, train_len],
                "test_length": test_len,
            },
            "metric": f"per-step accuracy at steps {train_len + 1}..{test_len} (test); "
            f"chance {1 / modulus:.3f}",
        },
    )


@register_task(
    "modular_counting",
    description="running count of ones mod m at every step; tested beyond the trained length",
    defaults=_TOKEN_DEFAULTS,
)
def modular_counting(
    seed: int = 0,
    *,
    modulus: int = 5,
    train_len: int = 40,
    min_len: int = 3,
    test_len: int = 256,
    n_train: int = 10000,
    n_val: int = 500,
    n_test: int = 1000,
) -> TaskData:
    """Modular counting (state tracking).

    Inputs are bits; the target at step t is ``(x_1 + ... + x_t) mod modulus``.
    Training and validation sequences have lengths uniform in [min_len, train_len]
    (padded, with ``lengths``); test sequences have length ``test_len`` and are scored
    only at steps after ``train_len`` (length generalisation, as in arXiv 2411.12537).
    """
    return _counting_task(
        "modular_counting", seed, modulus, train_len, min_len, test_len, n_train, n_val, n_test
    )


@register_task(
    "parity",
    description="running parity of a bit string (arXiv 2411.12537); tested beyond trained length",
    defaults=_TOKEN_DEFAULTS,
)
def parity(
    seed: int = 0,
    *,
    train_len: int = 40,
    min_len: int = 3,
    test_len: int = 256,
    n_train: int = 10000,
    n_val: int = 500,
    n_test: int = 1000,
) -> TaskData:
    """Parity: :func:`modular_counting` with modulus 2."""
    return _counting_task("parity", seed, 2, train_len, min_len, test_len, n_train, n_val, n_test)


@register_task(
    "adding",
    description="the adding problem: sum the two marked values (Hochreiter 1997; arXiv 1511.06464)",
    defaults={
        "model": {**_PROTOCOL_MODEL, "pooling": "last"},
        "train": {"epochs": 20, "lr": 3e-3, **_PROTOCOL_TRAIN},
    },
)
def adding_problem(
    seed: int = 0,
    *,
    seq_len: int = 200,
    n_train: int = 10000,
    n_val: int = 500,
    n_test: int = 1000,
) -> TaskData:
    """The adding problem.

    ``x`` is ``(N, seq_len, 2)``: channel 0 holds values uniform in [0, 1], channel 1
    is 1 at exactly two steps (one in each half of the sequence) and 0 elsewhere. The
    target ``(N, 1)`` is the sum of the two marked values. Predicting 1 always gives
    MSE 1/6 ≈ 0.167, the level a model has to beat.
    """
    if seq_len < 2:
        raise ValueError(f"seq_len: expected >= 2, got {seq_len}")
    splits = {}
    for i, (split, n) in enumerate(zip(("train", "val", "test"), (n_train, n_val, n_test))):
        rng = _rng(seed, i)
        values = rng.random((n, seq_len))
        half = seq_len // 2
        a = rng.integers(0, half, size=n)
        b = rng.integers(half, seq_len, size=n)
        marks = np.zeros((n, seq_len))
        marks[np.arange(n), a] = 1.0
        marks[np.arange(n), b] = 1.0
        x = np.stack([values, marks], axis=-1).astype(np.float32)
        y = (values[np.arange(n), a] + values[np.arange(n), b]).astype(np.float32)[:, None]
        splits[split] = SequenceDataset(torch.from_numpy(x), torch.from_numpy(y))
    return TaskData(
        name="adding",
        kind="regression",
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        d_input=2,
        d_output=1,
        info={
            "generator": "rnnx.data.synthetic.adding_problem",
            "seed": seed,
            "params": {"seq_len": seq_len},
            "reference": {"predict 1 (MSE)": round(1 / 6, 4)},
        },
    )
