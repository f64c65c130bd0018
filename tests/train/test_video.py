"""Video prediction metrics (OpenSTL's): SSIM against its window-by-window oracle and
values known in closed form, PSNR, the per-frame sums, the copy-last-frame baseline, and
the PNG strip."""

from __future__ import annotations

import math

import pytest
import torch

from rnnx.train.video import (
    K1,
    K2,
    copy_last_frame,
    frame_metrics,
    gaussian_window,
    psnr,
    save_strip,
    ssim,
    ssim_reference,
    video_metric_sums,
)


def test_gaussian_window():
    g = gaussian_window()
    assert g.shape == (11,) and float(g.sum()) == pytest.approx(1.0)
    assert float(g[4] / g[5]) == pytest.approx(math.exp(-1 / (2 * 1.5**2)))


def test_ssim_of_a_frame_with_itself_is_one():
    x = torch.rand(2, 3, 1, 16, 13)
    torch.testing.assert_close(ssim(x, x), torch.ones(2, 3, dtype=torch.float64))


def test_ssim_of_two_flat_frames_is_known_in_closed_form():
    # flat frames a and b: means a, b; variances and covariance 0, so
    # SSIM = (2ab + C1) / (a² + b² + C1) exactly
    a, b = 0.3, 0.7
    x = torch.full((1, 1, 1, 12, 14), a, dtype=torch.float64)
    y = torch.full((1, 1, 1, 12, 14), b, dtype=torch.float64)
    c1 = K1**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert float(ssim(x, y)) == pytest.approx(expected, rel=1e-12)


def test_ssim_of_a_frame_and_its_negative_around_the_mean():
    # y = 2m - x with constant m: equal variances, covariance -var, equal means
    # where the local mean of x is m; on a checkerboard the windowed variance is
    # close to 1/4, so SSIM ~ (C2 - 2 var) / (2 var + C2) < 0
    x = (torch.arange(13)[:, None] + torch.arange(13)[None]) % 2
    x = x.double()[None, None, None]
    y = 1.0 - x
    s = float(ssim(x, y))
    assert s < -0.9
    assert s == pytest.approx(ssim_reference(x[0, 0, 0], y[0, 0, 0]), rel=1e-10)
    c2 = K2**2
    assert s == pytest.approx((c2 - 0.5) / (0.5 + c2), abs=0.01)


def test_ssim_matches_the_window_by_window_oracle():
    torch.manual_seed(0)
    x = torch.rand(2, 2, 1, 13, 15, dtype=torch.float64)
    y = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    fast = ssim(x, y)
    for b in range(2):
        for t in range(2):
            assert float(fast[b, t]) == pytest.approx(
                ssim_reference(x[b, t, 0], y[b, t, 0]), rel=1e-10
            )


def test_psnr_and_per_frame_sums():
    y = torch.zeros(2, 3, 1, 12, 12, dtype=torch.float64)
    x = y + 0.1  # per-pixel MSE 0.01: PSNR 20 dB
    torch.testing.assert_close(psnr(x, y), torch.full((2, 3), 20.0, dtype=torch.float64))
    m = frame_metrics(x, y)
    torch.testing.assert_close(m["mse"], torch.full((2, 3), 0.01 * 144, dtype=torch.float64))
    torch.testing.assert_close(m["mae"], torch.full((2, 3), 0.1 * 144, dtype=torch.float64))
    assert float(psnr(y, y).max()) == pytest.approx(100.0)  # floored error: finite


def test_copy_last_frame_and_the_sums_of_a_batch():
    context = torch.rand(2, 4, 1, 12, 12)
    target = torch.rand(2, 3, 1, 12, 12)
    base = copy_last_frame(context, 3)
    assert base.shape == target.shape and torch.equal(base[:, 2], context[:, 3])
    sums = video_metric_sums(target, target, context)
    assert float(sums["n"]) == 6 and float(sums["mse"]) == 0.0
    assert float(sums["ssim"]) == pytest.approx(6.0)
    expected = ((base.double() - target.double()) ** 2).sum()
    assert float(sums["copy_last_mse"]) == pytest.approx(float(expected))
    with pytest.raises(ValueError, match="pred, target: expected the same shape"):
        frame_metrics(target[:, :2], target)
    with pytest.raises(ValueError, match="SSIM's 11x11 window"):
        ssim(torch.rand(1, 1, 1, 8, 8), torch.rand(1, 1, 1, 8, 8))


def test_save_strip(tmp_path):
    pytest.importorskip("matplotlib")
    ctx, tgt = torch.rand(3, 1, 12, 12), torch.rand(2, 1, 12, 12)
    out = save_strip(tmp_path / "s.png", ctx, tgt, {"model": tgt * 0.5}, title="t")
    assert out.exists() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_save_strip_without_matplotlib(tmp_path, monkeypatch):
    pytest.importorskip("PIL")
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("no matplotlib here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    ctx, tgt = torch.rand(3, 1, 12, 12), torch.rand(2, 1, 12, 12)
    out = save_strip(tmp_path / "s.png", ctx, tgt, {"model": tgt})
    from PIL import Image

    monkeypatch.undo()
    img = Image.open(out)
    assert img.size == (3 * 14, 3 * 14)  # 3 columns, 3 rows of 12 + 2 pixels
    assert abs(img.getpixel((14, 0)) - round(float(ctx[1, 0, 0, 0]) * 255)) <= 1
