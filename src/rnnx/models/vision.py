"""Patch scans: any registered sequence layer as an image backbone.

An image ``(B, C, H, W)`` is cut into ``p x p`` patches; a strided convolution maps
each patch to ``d_model`` features and a learned position embedding is added
(:class:`PatchEmbed`), giving a grid of ``h x w = (H/p) x (W/p)`` patch vectors.
A 1-D layer reads a sequence, so each block flattens the grid in several **scan
orders**, runs the layer over each ordering, puts every output back at its patch's
position and merges the orderings (:class:`PatchScanBlock`)::

    u   = norm(x)                                  # (B, N, D), N = h*w, row-major
    h_k = mixer_k(u[:, perm_k])[:, inv_k]          # k-th order; inv_k undoes perm_k
    x   = x + dropout(merge(h_1, ..., h_K))        # mean, or a linear map of the concat
    x   = x + dropout(mlp(norm2(x)))               # optional, as in every Block

``perm_k[t]`` is the (row-major) index of the patch read at step ``t`` of order ``k``
(:func:`scan_order`); ``inv_k = argsort(perm_k)`` is its inverse, so ``h_k`` is back in
row-major order before the orders are merged. The orders:

* ``row``: rows top to bottom, each left to right (raster order);
* ``col``: columns left to right, each top to bottom;
* ``zigzag``: rows top to bottom, every other row right to left (a snake: each
  step moves to a neighbouring patch);
* ``zigzag_col``: the column snake;
* any of them with ``_rev``: the same path read from its end (``row_rev``, ...).

This is the multi-directional scan of Vision Mamba (Vim, arXiv 2401.09417: forward
and backward raster scans), VMamba (arXiv 2401.10166: the four row/column scans
and their reverses, merged after restoring positions), ViR (arXiv 2310.19731:
RetNet as a vision backbone) and ViG (arXiv 2405.18425: GLA over patches with
bidirectional scans), done once for every registered layer: ``mixer_k`` is one
shared layer applied to every order (``shared=True``; the orders then run as one
batch of ``K * B`` sequences) or one layer per order. The block subclasses
:class:`~rnnx.models.backbone.Block` (same norms, residuals, MLP/GLU, dropout); it
is non-causal over the image, so it has no state and no ``step``.

:class:`ImageClassifier` mean-pools the patches of the last block and maps them to
class logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

import rnnx.layers as layers
from rnnx._checks import fmt_shape, require_choice, require_positive_int
from rnnx.models.backbone import BackboneConfig, Block, _norm

#: The base scan orders; each also exists reversed, with the suffix ``_rev``.
BASE_ORDERS = ("row", "col", "zigzag", "zigzag_col")
#: Every scan order a patch-scan block accepts.
ORDERS = tuple(o for b in BASE_ORDERS for o in (b, b + "_rev"))
#: What ``rnnx train`` reads images with unless told otherwise (VMamba's four scans).
DEFAULT_ORDERS = ("row", "row_rev", "col", "col_rev")
MERGES = ("mean", "linear")


def parse_orders(orders: str | Sequence[str]) -> tuple[str, ...]:
    """``"row,col_rev"`` or ``["row", "col_rev"]`` as a tuple of known, distinct orders;
    one clear error naming ``scan_orders`` otherwise."""
    items = orders.split(",") if isinstance(orders, str) else list(orders)
    out = tuple(str(o).strip() for o in items)
    bad = [o for o in out if o not in ORDERS]
    if not out or bad or len(set(out)) != len(out):
        why = f"unknown {bad}" if bad else "repeated orders" if out else "no orders"
        raise ValueError(
            f"scan_orders: expected distinct orders from {', '.join(ORDERS)} "
            f"(comma-separated), got {orders!r} ({why})"
        )
    return out


def scan_order(name: str, height: int, width: int) -> Tensor:
    """int64 ``(height * width,)``: the row-major index of the cell read at each step of
    scan order ``name`` (module docstring) over a ``height x width`` grid."""
    require_choice("order", name, ORDERS)
    require_positive_int("height", height)
    require_positive_int("width", width)
    base = name.removesuffix("_rev")
    grid = torch.arange(height * width).view(height, width)
    if base in ("col", "zigzag_col"):
        grid = grid.t()  # one line per column
    if base.startswith("zigzag"):
        grid = grid.clone()
        grid[1::2] = grid[1::2].flip(1)
    order = grid.reshape(-1)
    return order.flip(0) if name.endswith("_rev") else order


def scan_order_reference(name: str, height: int, width: int) -> list[int]:
    """The oracle of :func:`scan_order`: the same path walked cell by cell."""
    lines = []
    if name.startswith("col") or name.startswith("zigzag_col"):
        for j in range(width):
            lines.append([i * width + j for i in range(height)])
    else:
        for i in range(height):
            lines.append([i * width + j for j in range(width)])
    path = []
    for k, line in enumerate(lines):
        snake = name.startswith("zigzag") and k % 2 == 1
        path += line[::-1] if snake else line
    return path[::-1] if name.endswith("_rev") else path


@dataclass
class PatchScanConfig:
    """How images become patch sequences and how the scan orders are read and merged."""

    image_shape: tuple[int, int, int] = (1, 28, 28)
    """``(channels, height, width)`` of the input images."""
    patch_size: int = 4
    """Side of the square patches; must divide height and width."""
    orders: tuple[str, ...] = DEFAULT_ORDERS
    """Scan orders (:data:`ORDERS`), also given as ``"row,col"``."""
    merge: str = "mean"
    """``"mean"`` of the orders' outputs, or ``"linear"``: a learned map of their
    concatenation (initialised to the mean)."""
    shared: bool = True
    """One layer for every order (run as one batch), or one layer per order."""

    def __post_init__(self) -> None:
        shape = tuple(self.image_shape)
        if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
            raise ValueError(
                f"image_shape: expected (channels, height, width) of positive ints, got "
                f"{self.image_shape!r}"
            )
        self.image_shape = (int(shape[0]), int(shape[1]), int(shape[2]))
        require_positive_int("patch_size", self.patch_size)
        _, H, W = self.image_shape
        if H % self.patch_size or W % self.patch_size:
            raise ValueError(
                f"patch_size: expected a divisor of both the height {H} and the width {W} "
                f"of the images, got {self.patch_size}"
            )
        self.orders = parse_orders(self.orders)
        require_choice("merge", self.merge, MERGES)
        if not isinstance(self.shared, bool):
            raise ValueError(f"shared: expected true or false, got {self.shared!r}")

    @property
    def grid(self) -> tuple[int, int]:
        """``(h, w)``: patches per column and per row."""
        _, H, W = self.image_shape
        return H // self.patch_size, W // self.patch_size

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_shape"], d["orders"] = list(self.image_shape), list(self.orders)
        return d


class PatchEmbed(nn.Module):
    """``(B, C, H, W) -> (B, h*w, d_model)``: non-overlapping ``p x p`` patches through one
    strided convolution (a linear map of each patch), in row-major order, plus a learned
    position embedding (ViT, arXiv 2010.11929)."""

    def __init__(self, config: PatchScanConfig, d_model: int) -> None:
        super().__init__()
        C, _, _ = config.image_shape
        p = config.patch_size
        self.image_shape = config.image_shape
        self.proj = nn.Conv2d(C, d_model, kernel_size=p, stride=p)
        h, w = config.grid
        self.pos = nn.Parameter(torch.zeros(1, h * w, d_model))
        nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or tuple(x.shape[1:]) != self.image_shape or x.dim() != 4:
            shape = fmt_shape(x.shape) if isinstance(x, Tensor) else type(x).__name__
            C, H, W = self.image_shape
            raise ValueError(
                f"x: expected images of shape (batch, {C}, {H}, {W}), got shape {shape}"
            )
        return self.proj(x.to(self.proj.weight.dtype)).flatten(2).transpose(1, 2) + self.pos


class PatchScanBlock(Block):
    """A :class:`~rnnx.models.backbone.Block` whose mixer reads the patch grid in several
    scan orders and merges them (module docstring). ``(B, h*w, D) -> (B, h*w, D)``."""

    perm: Tensor
    """``(K, N)``: ``perm[k, t]`` is the patch read at step ``t`` of order ``k``."""
    inv: Tensor
    """``(K, N)``: the inverse permutations, ``perm[k, inv[k, i]] == i``."""

    def __init__(self, cfg: BackboneConfig, scan: PatchScanConfig) -> None:
        if layers.get(cfg.layer).kind != "sequence":
            raise ValueError(
                f"layer: a patch scan runs a sequence layer over the patches "
                f"(rnnx.layers.names('sequence')), got the {layers.get(cfg.layer).kind} "
                f"layer {cfg.layer!r}"
            )
        if cfg.bidirectional:
            raise ValueError(
                "bidirectional: a patch-scan block reads its scan orders instead; add "
                "reversed orders (e.g. scan_orders='row,row_rev') rather than bidirectional"
            )
        super().__init__(cfg)
        self.orders, self.shared, self.merge = scan.orders, scan.shared, scan.merge
        k = len(scan.orders)
        # self.mixer reads the first order (all of them when shared); one more per order
        self.other_mixers = nn.ModuleList(
            () if scan.shared else (self._make_mixer(cfg) for _ in range(k - 1))
        )
        self.grid = h, w = scan.grid
        perm = torch.stack([scan_order(o, h, w) for o in scan.orders])  # (K, N)
        self.register_buffer("perm", perm, persistent=False)
        self.register_buffer("inv", perm.argsort(1), persistent=False)
        self.merge_proj: nn.Linear | None = None
        if scan.merge == "linear":
            d = cfg.d_model
            self.merge_proj = nn.Linear(k * d, d)
            with torch.no_grad():  # starts as the mean of the orders
                self.merge_proj.weight.copy_(torch.eye(d).repeat(1, k) / k)
                self.merge_proj.bias.zero_()

    def mixers(self) -> list[nn.Module]:
        """The layer that reads each order (the same one ``K`` times when shared)."""
        return [self.mixer] * len(self.orders) if self.shared else [self.mixer, *self.other_mixers]

    def scan(self, u: Tensor) -> Tensor:
        """``(B, N, D) -> (K, B, N, D)``: every order's output, back in row-major order."""
        B, N, D = u.shape
        K = len(self.orders)
        if self.shared:  # all orders as one batch of K*B sequences
            seqs = u[:, self.perm.reshape(-1)].view(B, K, N, D).transpose(0, 1)
            h, _ = self.mixer(seqs.reshape(K * B, N, D))
            h = h.view(K, B, N, D)
            return torch.gather(h, 2, self.inv[:, None, :, None].expand(K, B, N, D))
        outs = []
        for k, mixer in enumerate(self.mixers()):
            h, _ = mixer(u[:, self.perm[k]])
            outs.append(h[:, self.inv[k]])
        return torch.stack(outs)

    def merged(self, hs: Tensor) -> Tensor:
        """``(K, B, N, D) -> (B, N, D)``: the mean of the orders, or the linear merge."""
        if self.merge_proj is None:
            return hs.mean(0)
        return self.merge_proj(torch.cat(list(hs.unbind(0)), dim=-1))

    def forward(self, x, state=None, *, lengths=None, dt=None):
        if state is not None or lengths is not None or dt is not None:
            named = (("state", state), ("lengths", lengths), ("dt", dt))
            given = [n for n, v in named if v is not None]
            raise ValueError(
                f"{', '.join(given)}: a patch-scan block reads whole images (every patch, "
                "in several orders), so it takes no state, lengths or dt"
            )
        h = self.merged(self.scan(self.norm(x)))
        return self._mlp(x + self.dropout(h)), None

    def step(self, x, state=None):
        raise RuntimeError(
            "step: a patch-scan block reads the whole image in several orders, so "
            "step-by-step decoding is not defined"
        )


def patch_scan_reference(block: PatchScanBlock, x: Tensor) -> Tensor:
    """The oracle of :meth:`PatchScanBlock.forward`: each order built patch by patch from
    :func:`scan_order_reference`, its outputs put back patch by patch, then merged."""
    h_grid, w_grid = block.grid
    u = block.norm(x)
    per_order = []
    for k, name in enumerate(block.orders):
        path = scan_order_reference(name, h_grid, w_grid)
        mixer = block.mixer if block.shared else [block.mixer, *block.other_mixers][k]
        y, _ = mixer(torch.stack([u[:, i] for i in path], 1))
        back: list[Tensor | None] = [None] * len(path)
        for t, i in enumerate(path):
            back[i] = y[:, t]
        per_order.append(torch.stack(back, 1))  # type: ignore[arg-type]
    if block.merge_proj is None:
        h = sum(per_order) / len(per_order)
    else:
        h = block.merge_proj(torch.cat(per_order, -1))
    out = x + block.dropout(h)
    if block.mlp is not None:
        out = out + block.dropout(block.mlp(block.norm2(out)))
    return out


class PatchScanBackbone(nn.Module):
    """Patch embedding, ``n_layers`` :class:`PatchScanBlock` s, final norm:
    ``(B, C, H, W) -> (B, h*w, d_model)`` (patches in row-major order)."""

    def __init__(self, cfg: BackboneConfig, scan: PatchScanConfig) -> None:
        super().__init__()
        self.config = cfg
        self.scan_config = scan
        self.embed = PatchEmbed(scan, cfg.d_model)
        self.blocks = nn.ModuleList(PatchScanBlock(cfg, scan) for _ in range(cfg.n_layers))
        self.norm = _norm(cfg.norm, cfg.d_model)

    def forward(self, x: Tensor, state: None = None, *, lengths: None = None):
        """``(h, None)``: the patch features and no state (the backbone is non-causal)."""
        if state is not None or lengths is not None:
            raise ValueError(
                "state, lengths: a patch-scan backbone reads whole images; it takes neither"
            )
        h = self.embed(x)
        for block in self.blocks:
            h, _ = block(h)
        return self.norm(h), None


class ImageClassifier(nn.Module):
    """One label per image: a :class:`PatchScanBackbone`, the mean over patches, a linear
    map. ``(B, C, H, W) -> (B, n_classes)``.

    Args:
        config: the blocks (``layer``, ``d_model``, ``n_layers``, norm, MLP, dropout;
            ``bidirectional`` must be off: the scan orders replace it).
        scan: image shape, patch size, scan orders, merge, sharing.
        n_classes: number of classes.
    """

    def __init__(self, config: BackboneConfig, scan: PatchScanConfig, n_classes: int) -> None:
        super().__init__()
        require_positive_int("n_classes", n_classes)
        self.backbone = PatchScanBackbone(config, scan)
        self.head = nn.Linear(config.d_model, n_classes)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        if lengths is not None:
            raise ValueError("lengths: images have no lengths; pass None")
        h, _ = self.backbone(x)
        return self.head(h.mean(1))


def patch_scan_config(value: PatchScanConfig | dict[str, Any]) -> PatchScanConfig:
    """A :class:`PatchScanConfig` from itself or its :meth:`~PatchScanConfig.to_dict`."""
    if isinstance(value, PatchScanConfig):
        return replace(value)
    return PatchScanConfig(
        image_shape=tuple(value["image_shape"]),
        patch_size=int(value["patch_size"]),
        orders=tuple(value["orders"]),
        merge=str(value["merge"]),
        shared=bool(value["shared"]),
    )
