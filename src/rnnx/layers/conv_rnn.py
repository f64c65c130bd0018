"""ConvLSTM and ConvGRU: the LSTM and the GRU with convolutions for matrix products, a
state per pixel, over frames ``(batch, time, d_model, height, width)``.

ConvLSTM (Shi, Chen, Wang, Yeung, Wong, Woo; NeurIPS 2015, arXiv 1506.04214), eqs. (3):
the four gates come from one convolution ``*`` over the concatenation [x_t, h_{t-1}],

    [i; f; g; o] = W * [x_t; h_{t-1}] + b
    c_t = σ(f + w_cf ∘ c_{t-1}) ∘ c_{t-1} + σ(i + w_ci ∘ c_{t-1}) ∘ tanh(g)
    h_t = σ(o + w_co ∘ c_t) ∘ tanh(c_t)

(the peephole terms ``w_c· ∘ c`` are Hadamard products with per-pixel weights, off by
default). ConvGRU (Ballas, Yao, Pal, Courville; ICLR 2016, arXiv 1511.06432), Section 3
(the paper's GRU-RCN; it writes no biases, they are added here):

    [z; r] = σ(W_zr * [x_t; h_{t-1}] + b_zr)
    n_t = tanh(W_xn * x_t + W_hn * (r ∘ h_{t-1}) + b_n)
    h_t = (1 - z) ∘ h_{t-1} + z ∘ n_t

Both use "same" padding (an odd ``kernel_size`` k, padding k // 2), so the state has the
frame's height and width and one layer serves every frame size. The output is h_t, through
a 1x1 convolution to ``d_model`` channels when ``d_state != d_model``.

The time loop. A convolution over a concatenation is the sum of the convolutions of its
parts, so the x-part of every gate (ConvGRU: of the candidate too) is one convolution over
all T frames at once, ``(B*T, C, H, W)``, before the loop; the loop runs only the
hidden-to-gate convolutions (ConvGRU: two, since the candidate's convolution reads r ∘ h
and r comes out of the first). The frames are iterated with ``unbind`` and the outputs
stacked once, so the backward pass costs time linear in T.

Modes: ``("recurrent",)`` only. The recurrence is nonlinear in h (the gates read h through
a convolution and a sigmoid), so it has no parallel scan or convolution form; for a
space-time layer that is parallel over time use ConvS5 (``conv_s5``, arXiv 2310.19694: a
linear state-space recurrence, run as a parallel scan).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnx._checks import require_positive_int
from rnnx.layers._spatial import SpatialLayer, check_size
from rnnx.layers.base import State, register

__all__ = ["ConvGRU", "ConvLSTM", "check_kernel_size"]


def check_kernel_size(kernel_size: object) -> int:
    """``kernel_size`` as an odd int >= 1, or a ValueError naming it."""
    if (
        isinstance(kernel_size, bool)
        or not isinstance(kernel_size, int)
        or kernel_size < 1
        or kernel_size % 2 == 0
    ):
        raise ValueError(
            f"kernel_size: expected an odd int >= 1 (the 'same' padding kernel_size // 2 "
            f"keeps the frame size), got {kernel_size!r}"
        )
    return kernel_size


def _uniform(shape: tuple[int, ...], fan_in: int) -> nn.Parameter:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): torch.nn.Conv2d's default initialisation."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))


class _ConvRNN(SpatialLayer):
    """What ConvLSTM and ConvGRU share: arguments, the output projection, the state."""

    modes: ClassVar[tuple[str, ...]] = ("recurrent",)
    default_mode: ClassVar[str] = "recurrent"
    reference_mode: ClassVar[str] = "recurrent"
    family: ClassVar[str] = "space-time"

    def __init__(
        self,
        d_model: int,
        d_state: int | None = None,
        *,
        kernel_size: int = 3,
        mode: str | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__(d_model, mode=mode, backend=backend)
        self.d_state = require_positive_int("d_state", d_model if d_state is None else d_state)
        self.kernel_size = check_kernel_size(kernel_size)
        #: 1x1 convolution from d_state to d_model channels; None (y = h) when they are equal.
        self.output: nn.Conv2d | None = (
            nn.Conv2d(self.d_state, d_model, 1) if self.d_state != d_model else None
        )

    @classmethod
    def tiny_config(cls) -> dict[str, Any]:
        return {"d_state": 4}

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, kernel_size={self.kernel_size}, "
            f"mode={self.mode!r}" + self._backend_repr()
        )

    def _zeros(self, batch_size: int, device: Any, dtype: Any, size: Any) -> Tensor:
        h, w = check_size(size)
        return torch.zeros(
            batch_size,
            self.d_state,
            h,
            w,
            device=device if device is not None else self._device(),
            dtype=dtype if dtype is not None else self.state_dtype(),
        )

    def _project_inputs(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """``weight * x_t + bias`` for every frame in one convolution: ``(B, T, out, H, W)``."""
        B, T, C, H, W = x.shape
        u = x.to(self.state_dtype()).reshape(B * T, C, H, W)
        out = F.conv2d(u, weight, bias, padding=self.kernel_size // 2)
        return out.reshape(B, T, -1, H, W)

    def _outputs(self, hs: list[Tensor], x: Tensor) -> Tensor:
        """The hidden states stacked ``(B, T, d_state, H, W)``, projected to d_model."""
        y = torch.stack(hs, 1)
        if self.output is not None:
            B, T = y.shape[:2]
            y = self.output(y.flatten(0, 1)).unflatten(0, (B, T))
        return y.to(x.dtype)


@register("conv_lstm")
class ConvLSTM(_ConvRNN):
    """ConvLSTM (Shi et al. 2015, arXiv 1506.04214): an LSTM whose products are
    convolutions, with a ``(d_state, H, W)`` cell and hidden state per frame.

    Gates i, f, g, o from one convolution over [x_t, h_{t-1}] (weight ``weight``, gate
    order i, f, g, o along its output channels, inputs x then h along its input
    channels); c_t = f c_{t-1} + i g, h_t = o tanh(c_t); y_t = h_t, or a 1x1 convolution of
    it to ``d_model`` channels when ``d_state != d_model``. Forget-gate bias starts at 1.

    Args:
        d_model: channels C of input and output.
        d_state: hidden channels (default d_model).
        kernel_size: odd size of the square kernel ("same" padding), default 3.
        peephole: add the paper's peephole terms w_ci ∘ c_{t-1}, w_cf ∘ c_{t-1},
            w_co ∘ c_t to the i, f, o pre-activations; the weights are per channel and
            pixel (``(3, d_state, H, W)``, zeros at the start), so the layer then runs
            on frames of ``frame_size`` only.
        frame_size: ``(H, W)``, required with ``peephole=True``.
        mode: ``"recurrent"`` (the only mode).

    Shapes: x ``(B, T, d_model, H, W)`` -> y ``(B, T, d_model, H, W)``. State
    ``(h, c)``, each ``(B, d_state, H, W)``, fp32.
    """

    paper: ClassVar[str] = "arXiv 1506.04214"

    def __init__(
        self,
        d_model: int,
        d_state: int | None = None,
        *,
        kernel_size: int = 3,
        peephole: bool = False,
        frame_size: tuple[int, int] | None = None,
        mode: str | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__(d_model, d_state, kernel_size=kernel_size, mode=mode, backend=backend)
        C, S, k = d_model, self.d_state, self.kernel_size
        self.weight = _uniform((4 * S, C + S, k, k), (C + S) * k * k)
        bias = torch.zeros(4 * S)
        bias[S : 2 * S] = 1.0  # forget gate open at the start
        self.bias = nn.Parameter(bias)
        if not isinstance(peephole, bool):
            raise TypeError(f"peephole: expected a bool, got {peephole!r}")
        self.peephole = peephole
        self.frame_size: tuple[int, int] | None = None
        self.peephole_weight: nn.Parameter | None = None
        if peephole:
            if frame_size is None:
                raise ValueError(
                    "frame_size: peephole=True has per-pixel weights, so it needs the "
                    "frame size, frame_size=(height, width)"
                )
            try:
                self.frame_size = check_size(frame_size)
            except ValueError:
                raise ValueError(
                    f"frame_size: expected (height, width), two ints >= 1, got {frame_size!r}"
                ) from None
            self.peephole_weight = nn.Parameter(torch.zeros(3, S, *self.frame_size))
        elif frame_size is not None:
            raise ValueError("frame_size: only used with peephole=True (per-pixel weights)")

    def extra_repr(self) -> str:
        extra = f", peephole=True, frame_size={self.frame_size}" if self.peephole else ""
        return super().extra_repr() + extra

    def init_state(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        size: tuple[int, int] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Zeros ``(h, c)``, each ``(batch_size, d_state, height, width)``."""
        if self.frame_size is not None and size is not None and tuple(size) != self.frame_size:
            raise ValueError(
                f"size: this ConvLSTM has per-pixel peephole weights for frames of "
                f"{self.frame_size} (frame_size), got frames of {tuple(size)}"
            )
        h = self._zeros(batch_size, device, dtype, size)
        return h, torch.zeros_like(h)

    def _forward(
        self,
        x: Tensor,
        state: State,
        *,
        mode: str,
        lengths: Tensor | None,
        dt: Tensor | None,
    ) -> tuple[Tensor, State]:
        C = self.d_model
        gx = self._project_inputs(x, self.weight[:, :C], self.bias)
        w_h = self.weight[:, C:].contiguous()
        pad = self.kernel_size // 2
        peep = self.peephole_weight
        h, c = state
        hs = []
        for t, gx_t in enumerate(gx.unbind(1)):
            i, f, g, o = (gx_t + F.conv2d(h, w_h, padding=pad)).chunk(4, 1)
            if peep is not None:
                i = i + peep[0] * c
                f = f + peep[1] * c
            c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            if peep is not None:
                o = o + peep[2] * c_new
            h_new = torch.sigmoid(o) * torch.tanh(c_new)
            if lengths is not None:
                active = (t < lengths).view(-1, 1, 1, 1)
                h_new = torch.where(active, h_new, h)
                c_new = torch.where(active, c_new, c)
            h, c = h_new, c_new
            hs.append(h)
        return self._outputs(hs, x), (h, c)


@register("conv_gru")
class ConvGRU(_ConvRNN):
    """ConvGRU (Ballas et al. 2015, arXiv 1511.06432): a GRU whose products are
    convolutions, with a ``(d_state, H, W)`` hidden state per frame.

    The update gate z and reset gate r from one convolution over [x_t, h_{t-1}]
    (``gate_weight``, order z, r; inputs x then h); the candidate
    n = tanh(W_xn * x_t + W_hn * (r ∘ h_{t-1}) + b_n) (``candidate_x_weight``,
    ``candidate_h_weight``); h_t = (1 - z) h_{t-1} + z n. The x-parts of z, r and n are
    one convolution over all frames before the time loop. y_t = h_t, or a 1x1
    convolution of it to ``d_model`` channels when ``d_state != d_model``.

    Args:
        d_model: channels C of input and output.
        d_state: hidden channels (default d_model).
        kernel_size: odd size of the square kernel ("same" padding), default 3.
        mode: ``"recurrent"`` (the only mode).

    Shapes: x ``(B, T, d_model, H, W)`` -> y ``(B, T, d_model, H, W)``. State h,
    ``(B, d_state, H, W)``, fp32.
    """

    paper: ClassVar[str] = "arXiv 1511.06432"

    def __init__(
        self,
        d_model: int,
        d_state: int | None = None,
        *,
        kernel_size: int = 3,
        mode: str | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__(d_model, d_state, kernel_size=kernel_size, mode=mode, backend=backend)
        C, S, k = d_model, self.d_state, self.kernel_size
        fan_in = (C + S) * k * k
        self.gate_weight = _uniform((2 * S, C + S, k, k), fan_in)
        self.gate_bias = nn.Parameter(torch.zeros(2 * S))
        self.candidate_x_weight = _uniform((S, C, k, k), fan_in)
        self.candidate_h_weight = _uniform((S, S, k, k), fan_in)
        self.candidate_bias = nn.Parameter(torch.zeros(S))

    def init_state(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        size: tuple[int, int] | None = None,
    ) -> Tensor:
        """Zeros ``(batch_size, d_state, height, width)``."""
        return self._zeros(batch_size, device, dtype, size)

    def _forward(
        self,
        x: Tensor,
        state: State,
        *,
        mode: str,
        lengths: Tensor | None,
        dt: Tensor | None,
    ) -> tuple[Tensor, State]:
        C, S = self.d_model, self.d_state
        # The x-parts of z, r and n: one convolution over every frame.
        w_x = torch.cat([self.gate_weight[:, :C], self.candidate_x_weight])
        gx = self._project_inputs(x, w_x, torch.cat([self.gate_bias, self.candidate_bias]))
        w_h = self.gate_weight[:, C:].contiguous()
        pad = self.kernel_size // 2
        h: Tensor = state
        hs = []
        for t, gx_t in enumerate(gx.unbind(1)):
            zr = torch.sigmoid(gx_t[:, : 2 * S] + F.conv2d(h, w_h, padding=pad))
            z, r = zr.chunk(2, 1)
            n = torch.tanh(gx_t[:, 2 * S :] + F.conv2d(r * h, self.candidate_h_weight, padding=pad))
            h_new = h + z * (n - h)
            if lengths is not None:
                h_new = torch.where((t < lengths).view(-1, 1, 1, 1), h_new, h)
            h = h_new
            hs.append(h)
        return self._outputs(hs, x), h
