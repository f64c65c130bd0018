"""Patch scans (rnnx.models.vision): the scan orders, the block against its oracle, every
registered sequence layer as an image backbone, the errors, the recipe and the CLI."""

from __future__ import annotations

import json

import pytest
import torch

import rnnx.layers as layers
from rnnx.models import BackboneConfig, ImageClassifier, PatchScanBlock, PatchScanConfig
from rnnx.models.vision import (
    ORDERS,
    parse_orders,
    patch_scan_reference,
    scan_order,
    scan_order_reference,
)
from tests.conftest import assert_close


@pytest.mark.parametrize("name", ORDERS)
@pytest.mark.parametrize(("h", "w"), [(3, 4), (4, 3), (1, 5), (2, 2)])
def test_orders_are_permutations_that_their_inverses_undo(name, h, w):
    perm = scan_order(name, h, w)
    assert perm.dtype == torch.int64 and perm.shape == (h * w,)
    assert perm.sort().values.tolist() == list(range(h * w))
    assert perm.tolist() == scan_order_reference(name, h, w)
    x = torch.randn(2, h * w, 3)
    assert torch.equal(x[:, perm][:, perm.argsort()], x)


def test_orders_on_a_small_grid():
    # 3 x 4 grid, cells numbered row by row:  0  1  2  3 /  4  5  6  7 /  8  9 10 11
    expected = {
        "row": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
        "col": [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11],
        "zigzag": [0, 1, 2, 3, 7, 6, 5, 4, 8, 9, 10, 11],
        "zigzag_col": [0, 4, 8, 9, 5, 1, 2, 6, 10, 11, 7, 3],
        "zigzag_rev": [11, 10, 9, 8, 4, 5, 6, 7, 3, 2, 1, 0],
        "col_rev": [11, 7, 3, 10, 6, 2, 9, 5, 1, 8, 4, 0],
    }
    for name, path in expected.items():
        assert scan_order(name, 3, 4).tolist() == path, name
        assert scan_order_reference(name, 3, 4) == path, name
    # a snake moves to a neighbouring cell at every step
    for name in ("zigzag", "zigzag_col", "zigzag_col_rev"):
        p = scan_order(name, 3, 4)
        r, c = p // 4, p % 4
        assert ((r.diff().abs() + c.diff().abs()) == 1).all(), name


def _block(layer="gla", *, shared=True, merge="mean", orders=("row", "col_rev", "zigzag")):
    cfg = BackboneConfig(
        layer=layer,
        d_model=8,
        n_layers=1,
        mlp_ratio=2.0,
        layer_kwargs=layers.get(layer).tiny_config(),
    )
    scan = PatchScanConfig((1, 6, 4), patch_size=2, orders=orders, merge=merge, shared=shared)
    return PatchScanBlock(cfg, scan).double()


@pytest.mark.parametrize("layer", ["gla", "lstm"])
@pytest.mark.parametrize(("shared", "merge"), [(True, "mean"), (False, "linear"), (True, "linear")])
def test_block_equals_its_reference_in_outputs_and_every_gradient(layer, shared, merge):
    torch.manual_seed(0)
    block = _block(layer, shared=shared, merge=merge)
    if block.merge_proj is not None:  # move it off its mean-initialisation
        torch.nn.init.normal_(block.merge_proj.weight, std=0.3)
    x = torch.randn(2, 6, 8, dtype=torch.float64, requires_grad=True)
    y, state = block(x)
    assert state is None and y.shape == x.shape
    y_ref = patch_scan_reference(block, x)
    assert_close(y, y_ref, rtol=1e-10, what="output")
    g = torch.randn_like(y)
    params = [x, *block.parameters()]
    grads = torch.autograd.grad(y, params, g)
    grads_ref = torch.autograd.grad(y_ref, params, g)
    for (name, _), a, b in zip([("x", x), *block.named_parameters()], grads, grads_ref):
        assert_close(a, b, rtol=1e-10, what=f"grad {name}")


def test_shared_batched_path_equals_one_layer_per_order_with_equal_weights():
    torch.manual_seed(0)
    shared, separate = _block(shared=True), _block(shared=False)
    separate.load_state_dict(shared.state_dict(), strict=False)
    for m in separate.other_mixers:
        m.load_state_dict(shared.mixer.state_dict())
    x = torch.randn(3, 6, 8, dtype=torch.float64)
    assert_close(separate(x)[0], shared(x)[0], rtol=1e-10)
    assert len(list(separate.parameters())) > len(list(shared.parameters()))


def test_linear_merge_starts_as_the_mean():
    torch.manual_seed(0)
    mean, linear = _block(merge="mean"), _block(merge="linear")
    linear.load_state_dict(mean.state_dict(), strict=False)
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    assert_close(linear(x)[0], mean(x)[0], rtol=1e-6)  # 1/K held in float32 at init


def test_gradcheck_float64():
    torch.manual_seed(0)
    block = _block("gla", shared=False, merge="linear", orders=("zigzag", "col_rev"))
    x = torch.randn(1, 6, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: block(t)[0], (x,))


def test_orders_change_the_output():
    # a scan in another order is another function of the image (else the test above
    # could pass with every order collapsed to one)
    torch.manual_seed(0)
    row = _block(orders=("row",))
    col = _block(orders=("col",))
    col.load_state_dict(row.state_dict())
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    assert (row(x)[0] - col(x)[0]).abs().max() > 1e-3


@pytest.mark.parametrize("name", layers.names("sequence"))
def test_every_sequence_layer_is_an_image_backbone(name):
    torch.manual_seed(0)
    cfg = BackboneConfig(
        layer=name, d_model=8, n_layers=1, layer_kwargs=layers.get(name).tiny_config()
    )
    scan = PatchScanConfig((2, 4, 6), patch_size=2, orders=("row", "zigzag_col_rev"))
    model = ImageClassifier(cfg, scan, n_classes=3)
    x = torch.randn(2, 2, 4, 6)
    logits = model(x)
    assert logits.shape == (2, 3)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    # the mixer sees the patches: its input projection gets a gradient
    assert any(
        p.grad.abs().sum() > 0 for p in model.backbone.blocks[0].mixer.parameters() if p.dim() >= 2
    )


def test_bad_options_say_what_was_expected():
    with pytest.raises(ValueError, match=r"patch_size: expected a divisor of both the height 28"):
        PatchScanConfig((1, 28, 28), patch_size=5)
    with pytest.raises(ValueError, match=r"scan_orders: .*unknown \['diag'\]"):
        PatchScanConfig(orders=("row", "diag"))
    with pytest.raises(ValueError, match=r"scan_orders: .*repeated"):
        parse_orders("row,row")
    with pytest.raises(ValueError, match=r"scan_orders: .*no orders"):
        parse_orders(())
    with pytest.raises(ValueError, match="merge: "):
        PatchScanConfig(merge="max")
    with pytest.raises(ValueError, match=r"image_shape: expected \(channels, height, width\)"):
        PatchScanConfig(image_shape=(28, 28))  # type: ignore[arg-type]
    scan = PatchScanConfig((1, 8, 8), patch_size=4)
    with pytest.raises(ValueError, match="layer: a patch scan runs a sequence layer"):
        PatchScanBlock(BackboneConfig(layer="conv_lstm", d_model=8), scan)
    with pytest.raises(ValueError, match="bidirectional: a patch-scan block reads"):
        PatchScanBlock(BackboneConfig(layer="gla", d_model=8, bidirectional=True), scan)
    model = ImageClassifier(BackboneConfig(layer="lstm", d_model=8, n_layers=1), scan, 2)
    with pytest.raises(ValueError, match=r"x: expected images of shape \(batch, 1, 8, 8\)"):
        model(torch.randn(2, 1, 8, 9))
    with pytest.raises(ValueError, match="lengths: images have no lengths"):
        model(torch.randn(2, 1, 8, 8), torch.tensor([1, 2]))
    block = model.backbone.blocks[0]
    with pytest.raises(ValueError, match="state: a patch-scan block"):
        block(torch.randn(2, 4, 8), state=torch.zeros(1))
    with pytest.raises(RuntimeError, match="step: a patch-scan block"):
        block.step(torch.randn(2, 1, 8))


def test_config_flags_are_checked_before_the_run():
    from rnnx.train.config import ConfigError, resolve

    with pytest.raises(ConfigError, match=r"\[model\] scan_orders: .*unknown \['diag'\]"):
        resolve({"task": {"name": "digits_image"}, "model": {"scan_orders": "row,diag"}})
    with pytest.raises(ConfigError, match=r"\[model\] scan_merge: expected one of"):
        resolve({"task": {"name": "digits_image"}, "model": {"scan_merge": "max"}})
    with pytest.raises(ConfigError, match=r"\[model\] bidirectional: a patch scan reads"):
        resolve(
            {"task": {"name": "digits_image"}, "model": {"patch_scan": True, "bidirectional": True}}
        )


def test_recipe_turns_the_patch_scan_on_for_images_only():
    from rnnx.train.recipe import DataStats, patch_size_for, recommend

    assert patch_size_for(28, 28) == 4 and patch_size_for(8, 8) == 1
    assert patch_size_for(32, 48) == 8 and patch_size_for(7, 11) == 1  # 4x6; no common > 1
    stats = DataStats("classification", 1000, 1, 10, 0, 1000, image_shape=(1, 28, 28))
    model = recommend(stats)["model"]
    assert model["patch_scan"][0] is True and model["patch_size"][0] == 4
    assert model["bidirectional"][0] is False
    seq = recommend(DataStats("classification", 1000, 784, 10, 0, 784_000))["model"]
    assert seq["patch_scan"][0] is False and "patch_size" not in seq


def test_recipe_fills_the_patch_scan_from_the_task_info():
    pytest.importorskip("sklearn")
    from rnnx.data import get_task
    from rnnx.train import recipe
    from rnnx.train.config import resolve

    cfg, derived = recipe.apply(
        resolve({"task": {"name": "digits_image"}}), get_task("digits_image")
    )
    assert (cfg.model.patch_scan, cfg.model.patch_size, cfg.model.bidirectional) == (True, 1, False)
    assert derived["data"]["image_shape"] == (1, 8, 8) and derived["data"]["length"] == 64
    assert "64 patches" in derived["model"]["patch_size"]["why"]
    # a user's choice is kept
    user = resolve({"task": {"name": "digits_image"}, "model": {"patch_size": 2}})
    cfg, derived = recipe.apply(user, get_task("digits_image"))
    assert cfg.model.patch_size == 2 and "patch_size" not in derived["model"]


def test_cli_trains_and_evaluates_a_patch_scan(tmp_path, capsys):
    pytest.importorskip("lightning")
    pytest.importorskip("sklearn")
    from rnnx.cli import main

    out = tmp_path / "run"
    args = ["train", "--task", "digits_image", "--model", "gla", "--d-model", "8"]
    args += ["--layer-arg", "num_heads=2", "--n-layers", "1", "--max-steps", "3"]
    args += ["--batch-size", "16", "--precision", "32", "--scan-orders", "zigzag,col_rev"]
    args += ["--scan-merge", "linear", "--no-scan-shared", "--threads", "1", "--no-progress"]
    assert main([*args, "--out-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "patch scan (1x1 patches; orders zigzag,col_rev; merge linear" in printed
    result = json.loads((out / "results.json").read_text())
    assert result["task"] == "digits_image" and 0.0 <= result["test_acc"] <= 1.0
    head = json.loads((out / "config.json").read_text())["head"]
    assert head["patch_scan"] == {
        "image_shape": [1, 8, 8],
        "patch_size": 1,
        "orders": ["zigzag", "col_rev"],
        "merge": "linear",
        "shared": False,
    }
    assert main(["eval", str(out)]) == 0
    assert f"acc {result['test_acc']:.4f}" in capsys.readouterr().out
    # the saved model refuses sequences
    assert main(["eval", str(out), "--task", "digits"]) != 0
    assert "the model reads images" in capsys.readouterr().err


@pytest.mark.parametrize("shared", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_compiles_without_graph_breaks(shared):
    # aot_eager, as the layers' compile tests: the graph and its autograd, not codegen
    torch.manual_seed(0)
    block = _block("gla", shared=shared, merge="linear").float()
    x = torch.randn(2, 6, 8, requires_grad=True)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    y, _ = compiled(x)
    y_ref, _ = block(x)
    assert_close(y, y_ref, rtol=1e-5, what="output")
    g = torch.randn_like(y)
    params = [x, *block.parameters()]
    for a, b in zip(torch.autograd.grad(y, params, g), torch.autograd.grad(y_ref, params, g)):
        assert_close(a, b, rtol=1e-5, what="gradient")
