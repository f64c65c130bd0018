"""The three views of one trained LSSL: its convolution kernel, and one output computed
as a convolution, as a recurrence (parallel scan and step-by-step loop), and as a
continuous-time system sampled twice as densely.

Reproduce the figure ``docs/img/three_views.png`` (about a minute on 2 CPU cores)::

    python docs/scripts/three_views.py

It trains a small classifier (a linear encoder, one LSSL block, mean pooling) on
scikit-learn's 8x8 digits read pixel by pixel (the offline ``digits`` task of
``rnnx.data``, L = 64), then looks at the trained LSSL on one test digit.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from rnnx.data import get_task
from rnnx.models import BackboneConfig, SequenceClassifier
from rnnx.train.module import parameter_groups

ROOT = Path(__file__).resolve().parents[2]


def train(epochs: int, seed: int) -> tuple[SequenceClassifier, float]:
    torch.manual_seed(seed)
    task = get_task("digits", seed=seed)
    cfg = BackboneConfig(
        layer="lssl",
        d_model=32,
        n_layers=1,
        d_input=task.d_input,
        # zero-order hold: exact for an input held over each step, which is what a
        # pixel sequence is (the continuous-time panel relies on it)
        layer_kwargs={"d_state": 32, "channels": 2, "discretization": "zoh"},
    )
    model = SequenceClassifier(cfg, task.n_classes)
    opt = torch.optim.AdamW(parameter_groups(model, lr=1e-2, weight_decay=0.01))
    loader = torch.utils.data.DataLoader(task.train, batch_size=64, shuffle=True)
    for epoch in range(epochs):
        model.train()
        total = 0.0
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss) * len(y)
        print(f"epoch {epoch + 1}/{epochs}: train loss {total / len(task.train):.3f}")
    model.eval()
    with torch.no_grad():
        acc = float((model(task.test.x).argmax(-1) == task.test.y).float().mean())
    print(f"test accuracy {acc:.3f} ({len(task.test)} digits)")
    return model, acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "docs" / "img" / "three_views.png"))
    args = parser.parse_args()

    model, acc = train(args.epochs, args.seed)
    block = model.backbone.blocks[0]
    lssl = block.mixer
    task = get_task("digits", seed=args.seed)
    digit, label = task.test.x[:1], int(task.test.y[0])
    with torch.no_grad():
        u = block.norm(model.backbone.encoder(digit))  # the LSSL's input, (1, 64, 32)
        L = u.shape[1]
        K = lssl.kernel(L)  # (H, M, L)
        outs = {}
        for mode in ("conv", "scan", "recurrent"):
            with lssl.using_mode(mode):
                outs[mode] = lssl(u)[0][0]
        # continuous time: each pixel held over two half-steps (sampled twice as densely),
        # dt = 0.5; under zero-order hold this is the same system
        dense = u.repeat_interleave(2, dim=1)
        y_dense = lssl(dense, dt=0.5)[0][0]
    diff_scan = float((outs["scan"] - outs["conv"]).abs().max())
    diff_rec = float((outs["recurrent"] - outs["conv"]).abs().max())
    diff_ct = float((y_dense[1::2] - outs["recurrent"]).abs().max())
    scale = float(outs["conv"].abs().max())
    print(
        f"max |scan - conv| = {diff_scan:.1e}, max |recurrent - conv| = {diff_rec:.1e}, "
        f"max |dt=0.5 on 2x samples - dt=1| = {diff_ct:.1e} (output scale {scale:.2f})"
    )

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    t = torch.arange(L)
    ax = axes[0]
    for h in range(4):
        ax.plot(t, K[h, 0], label=f"feature {h}")
    ax.set_title("convolution kernel $K_l = C\\bar A^l \\bar B$ (channel 0)")
    ax.set_xlabel("lag l")
    ax.legend(fontsize=8)
    ax = axes[1]
    feats = [0, 1]
    for i, h in enumerate(feats):
        c = f"C{i}"
        ax.plot(t, outs["conv"][:, h], color=c, lw=2.5, alpha=0.5, label=f"conv (FFT), feature {h}")
        ax.plot(t, outs["scan"][:, h], color=c, ls="--", lw=1.2, label="scan")
        ax.plot(t, outs["recurrent"][:, h], color=c, ls="", marker=".", ms=4, label="recurrent")
    ax.set_title(
        f"one output, three algorithms\nmax |scan-conv| {diff_scan:.0e}, "
        f"max |recurrent-conv| {diff_rec:.0e}",
        fontsize=10,
    )
    ax.set_xlabel("step (pixel)")
    ax.legend(fontsize=7, ncol=2)
    ax = axes[2]
    td = torch.arange(1, 2 * L + 1) / 2 - 1
    for i, h in enumerate(feats):
        c = f"C{i}"
        ax.plot(
            t, outs["recurrent"][:, h], color=c, lw=2.5, alpha=0.5, label=f"dt = 1, feature {h}"
        )
        ax.plot(td, y_dense[:, h], color=c, ls="", marker=".", ms=3, label="2x samples, dt = 0.5")
    ax.set_title(
        f"continuous time: twice the sampling rate\nmax difference at shared steps {diff_ct:.0e}",
        fontsize=10,
    )
    ax.set_xlabel("time (steps of the training rate)")
    ax.legend(fontsize=7, ncol=2)
    fig.suptitle(
        f"LSSL (HiPPO-LegS, N=32, 2 channels, ZOH) trained on digits (test accuracy {acc:.3f}); "
        f"input: test digit '{label}' read pixel by pixel",
        fontsize=11,
    )
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
