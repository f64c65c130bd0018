"""pLSTM-2D: the 2-D pLSTM over every frame, with a time edge per pixel carrying a state
from frame to frame.

"pLSTM: parallelizable Linear Source Transition Mark networks" (Pöppel, Freinschlag,
Schmied, Lin, Hochreiter; arXiv 2506.11997). Within a frame each pixel is a cell of the
paper's 2-D grid: matrix states ``k v^T`` per head travel along the edges to the right
and down, mixed at every cell by a Transition matrix, fed by a Source gate and read by a
Mark gate (:mod:`rnnx.ops.plstm` has the equations).

Time is rnnx's extension, not the paper's (the paper runs one image at a time): every
cell has a third incoming edge, its own state from the previous frame, and a third
outgoing one, the state it hands to the next frame. So a cell's 3x3 transition matrix
mixes (left, top, previous frame) into (right, down, next frame), and the layer's state
is one d_head x d_head matrix per head and pixel, carried across frames exactly like a
recurrent layer's state: forward over T frames, :meth:`step` frame by frame and chunks
with the state carried over compute the same thing.

Gates, per pixel, head and frame, from one linear map of the pixel's features (the
paper computes its gates from the input the same way):

    S^o = σ(s_o),   M^e = σ(m_e),   D = σ(δ)                  o, e in {r, d, τ} / {l, u, τ}
    T[:, e] = σ(ρ_e) · softmax_o(t_{·e})                       one column per incoming edge

Stabilisation. On a grid the number of paths between two cells grows combinatorially,
so products of transitions summed over all paths can explode (the long-distance
exploding/vanishing problem the paper addresses); its P-mode splits each incoming state
between the outgoing edges with weights that sum to one. Here each column of the
transition matrix (how one incoming state is passed on) is a softmax over the three
outgoing edges (a split, as in P-mode, now including the next frame) scaled by a
retention σ(ρ_e) < 1, so the total weight an incoming state passes on is below one: no
path sum can grow, over space or time, and states decay at a learned rate (where σ
saturates to 1.0 in floating point, a column conserves what it receives: growth is then
at most linear in the number of frames, never exponential). The paper's D-mode,
matrix-valued transitions, its four orientations and its hierarchical algorithm are not
implemented (docs/plstm.md).

Modes (one op call over all frames; both compute the same function):

* ``"wavefront"`` (default): :func:`rnnx.ops.plstm.plstm_2d`, the planes t + i + j of
  the video one after the other, every cell of a plane at once: T + H + W - 1 vectorised
  steps for T frames of H x W;
* ``"recurrent"``: :func:`rnnx.ops.plstm.plstm_2d_reference`, one cell after the other,
  frame by frame (the reference).

``lengths``: a padded frame passes the time edge through unchanged (its T^{ττ} is set to
1, the rest of that row and its time source to 0), so the state returned for sequence b
is the one after ``lengths[b]`` frames.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from rnnx._checks import require_positive_int
from rnnx.layers._spatial import SpatialLayer, check_size
from rnnx.layers.base import State, register
from rnnx.ops.plstm import plstm_2d, plstm_2d_reference

__all__ = ["PLSTM2D"]

#: Gate pre-activations per head: 3 sources, 3x3 transition logits, 3 retentions,
#: 3 marks, 1 direct.
_N_GATES = 3 + 9 + 3 + 3 + 1


@register("plstm_2d")
class PLSTM2D(SpatialLayer):
    """pLSTM over a 2-D grid per frame (arXiv 2506.11997), with a per-pixel state carried
    across frames as a third edge of every cell (rnnx's extension for video).

    Per pixel, q, k, v (``n_heads`` heads of ``d_head``) and the gates come from linear
    maps of the pixel's channels; within a frame the states flow right and down from the
    top-left corner (one orientation); the heads' outputs are concatenated and mapped
    back to ``d_model`` channels.

    Args:
        d_model: channels C of input and output.
        n_heads: number of heads (default 4).
        d_head: key and value size per head (default ``max(1, d_model // n_heads)``).
        retention: initial retention σ(ρ) of every incoming edge, in (0, 1) (default
            0.9): the share of an incoming state passed on at the start of training.
        mode: ``"wavefront"`` (default; the cells of each plane t + i + j at once) or
            ``"recurrent"`` (cell by cell, the reference).

    Shapes: x and y ``(batch, time, d_model, height, width)``. State
    ``(batch, n_heads, d_head, d_head, height, width)`` (one key x value matrix per head
    and pixel), fp32.
    """

    modes: ClassVar[tuple[str, ...]] = ("recurrent", "wavefront")
    default_mode: ClassVar[str] = "wavefront"
    reference_mode: ClassVar[str] = "recurrent"
    step_mode: ClassVar[str] = "wavefront"
    family: ClassVar[str] = "space-time"
    paper: ClassVar[str] = "arXiv 2506.11997"

    def __init__(
        self,
        d_model: int,
        n_heads: int = 4,
        d_head: int | None = None,
        *,
        retention: float = 0.9,
        mode: str | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__(d_model, mode=mode, backend=backend)
        self.n_heads = require_positive_int("n_heads", n_heads)
        self.d_head = require_positive_int(
            "d_head", max(1, d_model // self.n_heads) if d_head is None else d_head
        )
        if (
            isinstance(retention, bool)
            or not isinstance(retention, int | float)
            or not 0.0 < retention < 1.0
        ):
            raise ValueError(f"retention: expected a number in (0, 1), got {retention!r}")
        N, dh = self.n_heads, self.d_head
        self.qkv = nn.Linear(d_model, 3 * N * dh)
        self.gates = nn.Linear(d_model, N * _N_GATES)
        with torch.no_grad():
            bias = self.gates.bias.view(N, _N_GATES)
            bias.zero_()
            bias[:, 12:15] = math.log(retention / (1.0 - retention))  # σ^{-1}(retention)
        self.output = nn.Linear(N * dh, d_model)

    @classmethod
    def tiny_config(cls) -> dict[str, Any]:
        return {"n_heads": 2, "d_head": 2}

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, n_heads={self.n_heads}, d_head={self.d_head}, "
            f"mode={self.mode!r}" + self._backend_repr()
        )

    def init_state(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        size: tuple[int, int] | None = None,
    ) -> Tensor:
        """Zeros ``(batch_size, n_heads, d_head, d_head, height, width)``."""
        h, w = check_size(size)
        return torch.zeros(
            batch_size,
            self.n_heads,
            self.d_head,
            self.d_head,
            h,
            w,
            device=device if device is not None else self._device(),
            dtype=dtype if dtype is not None else self.state_dtype(),
        )

    def gate_values(self, x: Tensor) -> dict[str, Tensor]:
        """q, k, v and the gates of every frame, from ``x`` ``(B, T, C, H, W)``, laid out
        ``(B, n_heads, T, H, W, ...)`` as :func:`rnnx.ops.plstm.plstm_2d` takes them:
        q (scaled by d_head^-1/2), k, v ``(..., d_head)``; source and mark ``(..., 3)``;
        transition ``(..., 3, 3)`` (outgoing, incoming); direct ``(...)``."""
        B, T, _, H, W = x.shape
        N, dh = self.n_heads, self.d_head
        u = x.to(self.state_dtype()).permute(0, 1, 3, 4, 2)  # (B, T, H, W, C)
        qkv = self.qkv(u).view(B, T, H, W, 3, N, dh).permute(4, 0, 5, 1, 2, 3, 6)
        g = self.gates(u).view(B, T, H, W, N, _N_GATES).permute(0, 4, 1, 2, 3, 5)
        logits = g[..., 3:12].unflatten(-1, (3, 3))  # (outgoing, incoming)
        retain = torch.sigmoid(g[..., 12:15]).unsqueeze(-2)
        return {
            "q": qkv[0] * dh**-0.5,
            "k": qkv[1],
            "v": qkv[2],
            "source": torch.sigmoid(g[..., 0:3]),
            "transition": retain * torch.softmax(logits, dim=-2),
            "mark": torch.sigmoid(g[..., 15:18]),
            "direct": torch.sigmoid(g[..., 18]),
        }

    def _forward(
        self,
        x: Tensor,
        state: State,
        *,
        mode: str,
        lengths: Tensor | None,
        dt: Tensor | None,
    ) -> tuple[Tensor, State]:
        B, T = x.shape[:2]
        gv = self.gate_values(x)
        if lengths is not None:
            # A padded frame passes the time edge through unchanged (T^{ττ} = 1, the
            # rest of the time edge's row and its source 0), so the returned state is
            # the one after lengths[b] frames; the base class zeroes the outputs.
            pad = (torch.arange(T, device=x.device).view(1, T) >= lengths.view(B, 1)).view(
                B, 1, T, 1, 1, 1
            )
            keep_time = torch.tensor([0.0, 0.0, 1.0], device=x.device, dtype=x.dtype)
            tr = gv["transition"]
            gv["transition"] = torch.cat(
                [
                    tr[..., :2, :],
                    torch.where(pad, keep_time.to(tr.dtype), tr[..., 2, :])[..., None, :],
                ],
                -2,
            )
            src = gv["source"]
            gv["source"] = torch.cat([src[..., :2], src[..., 2:].masked_fill(pad, 0.0)], -1)
        op = plstm_2d if mode == "wavefront" else plstm_2d_reference
        z0 = state.permute(0, 1, 4, 5, 2, 3)  # (B, N, H, W, d_head, d_head)
        y, z = op(**gv, state=z0)
        assert z is not None  # three edges: the op returns the time edge's state
        # (B, N, T, H, W, d_head) -> (B, T, H, W, N * d_head) -> d_model channels.
        y = self.output(y.permute(0, 2, 3, 4, 1, 5).flatten(-2))
        return y.permute(0, 1, 4, 2, 3).to(x.dtype), z.permute(0, 1, 4, 5, 2, 3)
