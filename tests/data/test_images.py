"""Image tasks: the layouts the patch-scan backbones read (rnnx.models.vision)."""

from __future__ import annotations

import pytest
import torch

from rnnx.data import _sources, get_task


def test_digits_image_is_digits_as_8x8_images():
    pytest.importorskip("sklearn")
    seq, img = get_task("digits", seed=3), get_task("digits_image", seed=3)
    assert img.info["image_shape"] == [1, 8, 8] and "image_shape" not in seq.info
    for a, b in ((seq.train, img.train), (seq.val, img.val), (seq.test, img.test)):
        assert b.x.shape[1:] == (1, 8, 8)
        assert torch.equal(b.x.reshape(len(b.x), 64, 1), a.x) and torch.equal(b.y, a.y)


def test_fashion_mnist_image_has_the_pixel_tasks_split():
    if not _sources.available("fashion-mnist"):
        pytest.skip(f"fashion-mnist not installed: {_sources.install_hint('fashion-mnist')}")
    img = get_task("fashion_mnist_image", n_train=2000, seed=1)
    pix = get_task("fashion_mnist", n_train=2000, seed=1)
    assert (len(img.train), len(img.val), len(img.test)) == (2000, 5000, 10000)
    assert img.train.x.shape[1:] == (1, 28, 28) and img.info["image_shape"] == [1, 28, 28]
    assert img.d_input == 1 and img.n_classes == 10
    for a, b in ((pix.train, img.train), (pix.val, img.val), (pix.test, img.test)):
        assert torch.equal(b.x.reshape(len(b.x), 784, 1), a.x) and torch.equal(b.y, a.y)
