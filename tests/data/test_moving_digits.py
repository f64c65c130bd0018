"""Moving digits: seeded and deterministic, the right shapes and range, digits that bounce
and stay wholly inside the canvas, disjoint digit images in train and test."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from rnnx.data import get_task
from rnnx.data.moving_digits import (
    N_PAIRS,
    bouncing_trajectories,
    digit_images,
    pair_label,
    pair_of,
    render,
)

SMALL = {"n_train": 12, "n_val": 4, "n_test": 6, "canvas": 32, "digit_size": 12, "speed": 2.0}


def test_same_seed_same_videos_other_seed_other_videos():
    a = get_task("moving_digits", **SMALL)
    b = get_task("moving_digits", **SMALL)
    c = get_task("moving_digits", seed=1, **SMALL)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(a, split).x, getattr(b, split).x)
        assert torch.equal(getattr(a, split).y, getattr(b, split).y)
        assert not torch.equal(getattr(a, split).x, getattr(c, split).x)
    # the test set does not depend on the size of the training set
    bigger = get_task("moving_digits", **{**SMALL, "n_train": 20})
    assert torch.equal(bigger.test.x, a.test.x)


def test_shapes_splits_and_range():
    t = get_task("moving_digits", frames_in=5, frames_out=7, **SMALL)
    assert t.kind == "video_prediction" and t.d_input == 1
    assert (len(t.train), len(t.val), len(t.test)) == (12, 4, 6)
    assert t.train.x.shape == (12, 5, 1, 32, 32) and t.train.y.shape == (12, 7, 1, 32, 32)
    assert t.train.x.dtype == torch.uint8
    x, y = t.train[3]
    assert x.dtype == torch.float32 and x.shape == (5, 1, 32, 32) and y.shape == (7, 1, 32, 32)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.max()) > 0.5
    # the targets continue the inputs: one clip cut in two
    whole = get_task("moving_digits", frames_in=12, frames_out=1, **SMALL)
    assert torch.equal(whole.train.x[:, :5], t.train.x)
    assert torch.equal(whole.train.x[:, 5:12], t.train.y)


def test_long_variant():
    t = get_task("moving_digits", frames_in=50, frames_out=60, **{**SMALL, "n_train": 2})
    assert t.train.x.shape[1] == 50 and t.train.y.shape[1] == 60


def test_trajectories_move_at_constant_speed_and_bounce_inside():
    rng = np.random.default_rng(0)
    limit, speed = 20, 3.0
    p = bouncing_trajectories(64, 80, limit=limit, speed=speed, rng=rng)
    assert p.shape == (64, 2, 80, 2)
    assert p.min() >= 0 and p.max() <= limit
    step = np.diff(p, axis=2)  # (64, 2, 79, 2)
    assert (np.linalg.norm(step, axis=-1) <= speed + 1e-9).all()  # a bounce only shortens
    free = np.abs(np.linalg.norm(step, axis=-1) - speed) < 1e-9
    assert free.mean() > 0.5  # most frames move freely at the full speed
    # velocity sign flips happen (bounces), and only at the walls
    sign = np.sign(step)
    flips = sign[:, :, 1:] != sign[:, :, :-1]
    assert flips.any()
    at_wall = (p[:, :, 1:-1] <= speed) | (p[:, :, 1:-1] >= limit - speed)
    assert not (flips & ~at_wall).any()


def test_a_digit_is_never_cut_by_the_edge():
    # one digit per video: every frame holds the whole digit, so the ink is constant
    rng = np.random.default_rng(1)
    images = rng.random((5, 1, 6, 6)).astype(np.float32)
    corners = bouncing_trajectories(5, 40, n_digits=1, limit=10, speed=2.5, rng=rng)
    frames = render(images, corners, canvas=16).astype(np.int64)  # (5, 40, 16, 16)
    ink = frames.sum((-2, -1))
    expected = np.rint(images[:, 0] * 255).sum((-2, -1))
    assert np.array_equal(ink, np.repeat(expected[:, None], 40, axis=1))


def test_test_digits_are_not_training_digits():
    images, labels, is_test = digit_images(12)
    assert images.shape == (1797, 12, 12) and float(images.max()) <= 1.0
    assert int(is_test.sum()) == pytest.approx(0.25 * 1797, abs=10)
    # every class in both pools
    assert set(labels[is_test].tolist()) == set(range(10)) == set(labels[~is_test].tolist())


def test_pair_labels_are_a_bijection():
    pairs = [(a, b) for a in range(10) for b in range(a, 10)]
    labels = [int(pair_label(a, b)) for a, b in pairs]
    assert sorted(labels) == list(range(N_PAIRS))
    assert all(pair_of(lab) == p for lab, p in zip(labels, pairs))
    assert int(pair_label(7, 2)) == int(pair_label(2, 7))
    with pytest.raises(ValueError, match="label"):
        pair_of(N_PAIRS)


def test_classification_task():
    t = get_task("moving_digits_cls", frames=6, **SMALL)
    assert t.kind == "video_classification" and t.n_classes == N_PAIRS
    assert t.train.x.shape == (12, 6, 1, 32, 32) and t.train.y.dtype == torch.long
    assert int(t.train.y.min()) >= 0 and int(t.train.y.max()) < N_PAIRS
    x, y = t.test[0]
    assert x.shape == (6, 1, 32, 32) and y.dim() == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"frames_in": 0}, "frames_in"),
        ({"digit_size": 40}, "digit_size"),
        ({"speed": -1.0}, "speed"),
        ({"n_train": 0}, "n_train"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        get_task("moving_digits", **{**SMALL, **kwargs})
