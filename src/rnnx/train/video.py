"""Video prediction metrics (OpenSTL's, arXiv 2306.11249), the copy-last-frame baseline,
and a PNG strip of predictions.

Frames are ``(B, T, C, H, W)`` with values in [0, 1] (data range 1). Every metric is
computed per frame and averaged over the frames and the videos:

* **MSE**: the squared error summed over the pixels (and channels) of a frame, the
  number OpenSTL and the Moving MNIST papers report (not a per-pixel mean);
* **MAE**: the absolute error summed over the pixels of a frame;
* **SSIM** (Wang, Bovik, Sheikh, Simoncelli 2004, "Image quality assessment: from error
  visibility to structural similarity"): a Gaussian window of 11 x 11 pixels with
  sigma 1.5, constants ``C1 = (0.01 L)²``, ``C2 = (0.03 L)²`` with ``L = 1``; local means,
  variances and the covariance weighted by the window, over the positions where the
  window lies wholly inside the frame ("valid", as the paper's reference code), the
  SSIM map averaged over them and over the channels;
* **PSNR**: ``10 log10(L² / m)`` with ``m`` the per-pixel mean squared error of the frame
  (floored at 1e-10, so a perfect frame scores 100 dB).

:func:`copy_last_frame` is the baseline every model must beat: it predicts that
nothing moves (every future frame equals the last frame seen).

:func:`ssim_reference` is the readable oracle of :func:`ssim` (a loop over window
positions with the formula written out), for the tests.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "copy_last_frame",
    "frame_metrics",
    "gaussian_window",
    "psnr",
    "save_strip",
    "ssim",
    "ssim_reference",
    "video_metric_sums",
]

WINDOW = 11
SIGMA = 1.5
K1, K2 = 0.01, 0.03


def _check_frames(pred: Tensor, target: Tensor) -> None:
    for name, v in (("pred", pred), ("target", target)):
        if not isinstance(v, Tensor) or v.dim() != 5:
            shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise ValueError(f"{name}: expected frames (batch, time, C, H, W), got {shape}")
    if pred.shape != target.shape:
        raise ValueError(
            f"pred, target: expected the same shape, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )


def gaussian_window(size: int = WINDOW, sigma: float = SIGMA) -> Tensor:
    """The normalised 1-D Gaussian ``(size,)`` in float64 (the 2-D window is its outer
    product)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(pred: Tensor, target: Tensor, *, data_range: float = 1.0) -> Tensor:
    """SSIM of every frame, ``(B, T)`` float64 (module docstring). Frames must be at
    least 11 pixels on each side."""
    _check_frames(pred, target)
    B, T, C, H, W = pred.shape
    if H < WINDOW or W < WINDOW:
        raise ValueError(
            f"pred: SSIM's {WINDOW}x{WINDOW} window needs frames of at least {WINDOW} pixels "
            f"a side, got {H}x{W}"
        )
    x = pred.detach().to(torch.float64).reshape(B * T * C, 1, H, W)
    y = target.detach().to(torch.float64).reshape(B * T * C, 1, H, W)
    g = gaussian_window().to(x.device)
    gh, gw = g.view(1, 1, WINDOW, 1), g.view(1, 1, 1, WINDOW)

    def blur(v: Tensor) -> Tensor:  # the separable window, valid positions only
        return F.conv2d(F.conv2d(v, gh), gw)

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean((-2, -1)).reshape(B, T, C).mean(-1)


def ssim_reference(x: Tensor, y: Tensor, *, data_range: float = 1.0) -> float:
    """SSIM of two grey images ``(H, W)``, window position by window position: the
    readable oracle of :func:`ssim` (slow; for tests)."""
    g = gaussian_window()
    w = g[:, None] * g[None, :]
    x, y = x.to(torch.float64), y.to(torch.float64)
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    values = []
    for i in range(x.shape[0] - WINDOW + 1):
        for j in range(x.shape[1] - WINDOW + 1):
            px, py = x[i : i + WINDOW, j : j + WINDOW], y[i : i + WINDOW, j : j + WINDOW]
            mu_x, mu_y = (w * px).sum(), (w * py).sum()
            var_x = (w * (px - mu_x) ** 2).sum()
            var_y = (w * (py - mu_y) ** 2).sum()
            cov = (w * (px - mu_x) * (py - mu_y)).sum()
            num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
            den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
            values.append(float(num / den))
    return sum(values) / len(values)


def psnr(pred: Tensor, target: Tensor, *, data_range: float = 1.0) -> Tensor:
    """PSNR of every frame in dB, ``(B, T)`` float64 (module docstring)."""
    _check_frames(pred, target)
    err = (pred.detach().to(torch.float64) - target.detach().to(torch.float64)) ** 2
    mse = err.mean((-3, -2, -1)).clamp(min=1e-10)
    return 10 * torch.log10(data_range**2 / mse)


def frame_metrics(pred: Tensor, target: Tensor) -> dict[str, Tensor]:
    """``{"mse", "mae", "ssim", "psnr"}``, each ``(B, T)`` float64: one value per frame."""
    _check_frames(pred, target)
    err = pred.detach().to(torch.float64) - target.detach().to(torch.float64)
    return {
        "mse": (err**2).sum((-3, -2, -1)),
        "mae": err.abs().sum((-3, -2, -1)),
        "ssim": ssim(pred, target),
        "psnr": psnr(pred, target),
    }


def copy_last_frame(context: Tensor, n_frames: int) -> Tensor:
    """The baseline prediction: the last frame of ``context`` ``(B, T, C, H, W)``
    repeated ``n_frames`` times, ``(B, n_frames, C, H, W)``."""
    if not isinstance(context, Tensor) or context.dim() != 5 or context.shape[1] < 1:
        raise ValueError("context: expected frames (batch, time >= 1, C, H, W)")
    return context[:, -1:].expand(-1, n_frames, -1, -1, -1)


def video_metric_sums(pred: Tensor, target: Tensor, context: Tensor) -> dict[str, Tensor]:
    """Sums over the frames of a batch of the model's metrics and the copy-last-frame
    baseline's (``copy_last_mse``, ...), and ``n``, the number of frames: summed over
    batches and divided by ``n`` they give the split's averages."""
    sums = {k: v.sum() for k, v in frame_metrics(pred, target).items()}
    base = frame_metrics(copy_last_frame(context, target.shape[1]), target)
    sums.update({f"copy_last_{k}": v.sum() for k, v in base.items()})
    sums["n"] = torch.tensor(float(target.shape[0] * target.shape[1]), dtype=torch.float64)
    return sums


def save_strip(
    path: str | Path,
    context: Tensor,
    target: Tensor,
    predictions: dict[str, Tensor],
    *,
    title: str | None = None,
) -> Path:
    """A PNG of one video: a row of context frames ``(T, C, H, W)``, a row of target
    frames ``(T', C, H, W)``, and a row per prediction (name -> ``(T', C, H, W)``), grey
    frames in [0, 1] (the first channel). With matplotlib the rows are labelled and the
    title drawn; without it, Pillow writes the bare grid of frames."""
    rows = [("input", context), ("target", target), *predictions.items()]
    cols = max(len(v) for _, v in rows)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib
    except ImportError:
        return _strip_with_pillow(out, rows, cols)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), cols, figsize=(1.1 * cols, 1.2 * len(rows)), squeeze=False)
    for r, (name, frames) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if c < len(frames):
                img = frames[c][0].detach().float().clamp(0, 1).cpu().numpy()
                ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def _strip_with_pillow(out: Path, rows: list[tuple[str, Tensor]], cols: int) -> Path:
    """The grid of :func:`save_strip` without labels: one grey frame per cell, a 2-pixel
    black gap between cells."""
    from PIL import Image

    H, W = rows[0][1].shape[-2:]
    gap = 2
    grid = torch.zeros(len(rows) * (H + gap), cols * (W + gap))
    for r, (_, frames) in enumerate(rows):
        for c in range(len(frames)):
            img = frames[c][0].detach().float().clamp(0, 1).cpu()
            grid[r * (H + gap) : r * (H + gap) + H, c * (W + gap) : c * (W + gap) + W] = img
    pixels = (grid * 255).round().to(torch.uint8).numpy()
    Image.fromarray(pixels).save(out)  # 2-D uint8: mode "L"
    return out
