"""ConvS5: S5's diagonal state-space recurrence per pixel, with convolutions in and out.

"Convolutional State Space Models for Long-Range Spatiotemporal Modeling" (Smith,
De Mello, Kautz, Linderman, Byeon; NeurIPS 2023, arXiv 2310.19694). Each pixel of a
``(height, width)`` frame holds P complex modes; the state of frame t is

    X_t = Ā ⊙ X_{t-1} + B̄ * U_t,          Y_t = Re(C̃ * X_t) + D ⊙ U_t,

where ``*`` is a 2-D convolution with "same" padding (B̄: U -> P channels, kernel k_B;
C̃: P -> U channels, kernel k_C, on the real and imaginary parts of the state), ⊙ is
per channel, and Ā = exp(ΔΛ), B̄ = Λ^{-1}(Ā - 1) ⊙ B̃ by zero-order hold (or the bilinear
transform) with a trainable step Δ per mode. Λ, B̃ = V^* B and C̃ = C V come from S5's
HiPPO-N initialisation (:func:`rnnx.layers._ssm.hippo_n_diagonal`, shared with
:class:`rnnx.layers.S5`), applied to every tap of the kernels. With ``conj_sym=True``
(default) one of each conjugate pair of modes is stored and Y = 2 Re(C̃ * X) + D ⊙ U.

The transition Ā is diagonal and does not depend on the input, so time is the only
sequential axis: mode ``"scan"`` computes B̄ * U for all frames in one convolution,
runs the recurrence over all T frames with one call of :func:`rnnx.ops.scan` (features
(P, height, width); native complex kernel on the CPU, a chunked PyTorch scan elsewhere)
and reads every state with C̃ in one more convolution. Mode ``"recurrent"`` is the loop
over frames (the reference, and :meth:`step`'s constant-memory path).

As in rnnx's :class:`~rnnx.layers.S5`, the layer's output is the SSM's Y followed by
GELU, dropout and a position-wise GLU projection (per pixel, over channels).

Continuous time: ``dt`` multiplies every mode's step (a scalar, one per sequence, or one
per frame: irregularly sampled video).

State: complex ``(batch, d_state // 2, height, width)`` with ``conj_sym`` (else
``(batch, d_state, height, width)``); complex64, or complex128 for float64 parameters.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnx._amp import fp32_under_autocast
from rnnx._checks import length_mask
from rnnx.layers import _ssm
from rnnx.layers._spatial import SpatialLayer, check_size
from rnnx.layers.base import State, register
from rnnx.ssm.discretize import Discretization, as_discretization, discretize_diagonal

__all__ = ["ConvS5", "conv_ssm"]


def _odd_kernel(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % 2 == 0:
        raise ValueError(
            f"{name}: expected an odd int >= 1 (a 'same' convolution keeps the frame size), "
            f"got {value!r}"
        )
    return value


def _per_channel(v: Tensor) -> Tensor:
    """``(..., K)`` -> ``(..., K, 1, 1)``: one value per channel (mode), broadcast over pixels."""
    return v.unsqueeze(-1).unsqueeze(-1)


@fp32_under_autocast
def conv_ssm(
    u: Tensor,
    state: Tensor,
    lengths: Tensor | None,
    dA: Tensor,
    dB: Tensor,
    B: Tensor,
    C: Tensor,
    *,
    out_scale: float,
    mode: str,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """A convolutional diagonal SSM over frames: X_t = Ā ⊙ X_{t-1} + dB ⊙ (B * U_t),
    Y_t = s Re(C * X_t).

    Args:
        u: ``(batch, T, U, height, width)`` real; state: ``(batch, P, height, width)``
            complex.
        dA: Ā, ``(P,)`` or ``(batch, 1|T, P)``; dB: the per-mode input scale of the
            discretisation, same shapes.
        B: ``(P, U, k_B, k_B)`` complex; C: ``(U, P, k_C, k_C)`` complex (odd kernels,
            "same" padding).
        out_scale: s (2 when one of each conjugate pair is stored, else 1).
        mode: ``"scan"`` (the input convolution over all frames at once, one
            :func:`rnnx.ops.scan` over time, the output convolution over all frames) or
            ``"recurrent"`` (a loop over frames).
        backend: the :func:`rnnx.ops.scan` backend of mode ``"scan"``.

    Returns:
        ``(Y (batch, T, U, height, width), state after lengths[b] frames)``.

    Under autocast it runs in float32 with autocast off (:mod:`rnnx._amp`): it builds
    and reads a complex state, and complex numbers have no bfloat16.
    """
    from rnnx.ops.scan import scan

    P, U, kB = B.shape[0], B.shape[1], B.shape[-1]
    kC = C.shape[-1]
    scale: Tensor | None = dB
    if dB.dim() == 1:  # time-invariant B̄ = dB ⊙ B: scale the kernel, not every frame
        B, scale = dB.view(P, 1, 1, 1) * B, None
    # Complex kernels as real ones. Input: output channels interleaved (re_0, im_0, re_1,
    # ...), so that the result is (re, im) pairs per mode. Output: Re(C x) = Re C Re x -
    # Im C Im x, one real convolution over the state's channels (re_0, im_0, re_1, ...).
    W_B = torch.view_as_real(B).movedim(-1, 1).reshape(2 * P, U, kB, kB)
    W_C = out_scale * torch.stack([C.real, -C.imag], 2).reshape(C.shape[0], 2 * P, kC, kC)

    def convolve_in(frames: Tensor) -> Tensor:  # (M, U, h, w) real -> (M, P, h, w) complex
        z = F.conv2d(frames, W_B, padding=kB // 2).unflatten(1, (P, 2))
        return torch.view_as_complex(z.movedim(2, -1).contiguous())

    def read_out(states: Tensor) -> Tensor:  # (M, P, h, w) complex -> (M, U, h, w) real
        z = torch.view_as_real(states).movedim(-1, 2).flatten(1, 2)
        return F.conv2d(z, W_C, padding=kC // 2)

    N, T = u.shape[:2]
    mask = length_mask(lengths, T)
    if mode == "scan":
        if mask is not None:  # padded frames add nothing (the final state is picked below)
            u = u * mask.view(N, T, 1, 1, 1).to(u.dtype)
        b = convolve_in(u.flatten(0, 1)).unflatten(0, (N, T))
        if scale is not None:
            b = _per_channel(scale) * b
        h, _ = scan(_per_channel(dA), b, state, backend=backend)
        return read_out(h.flatten(0, 1)).unflatten(0, (N, T)), _ssm.last_valid(h, lengths, state)
    s, ys = state, []
    for t in range(T):
        a_t = dA if dA.dim() == 1 else dA[:, t if dA.shape[1] > 1 else 0]
        b_t = convolve_in(u[:, t])
        if scale is not None:
            b_t = _per_channel(scale[:, t if scale.shape[1] > 1 else 0]) * b_t
        s_new = _per_channel(a_t) * s + b_t
        s = s_new if mask is None else torch.where(mask[:, t].view(N, 1, 1, 1), s_new, s)
        ys.append(read_out(s))
    return torch.stack(ys, 1), s


@register("conv_s5")
class ConvS5(SpatialLayer):
    """Convolutional S5 over frames ``(B, T, C, H, W)``: a diagonal complex SSM per pixel
    with convolutional input and output maps, run by one parallel scan over time;
    arXiv 2310.19694.

    Args:
        d_model: channels C of input and output.
        d_state: number P of complex modes per pixel; even.
        kernel_b: kernel size k_B of the input convolution B̄ (odd; "same" padding).
        kernel_c: kernel size k_C of the output convolution C̃ (odd; "same" padding).
        blocks: number J of HiPPO-N blocks in the initialisation (P/J even).
        conj_sym: store one of each conjugate pair (P/2 modes, Y = 2 Re(C̃ * X)).
        discretization: ``"zoh"`` (default) or ``"bilinear"``.
        dt_min, dt_max: the initial steps Δ (one per mode) are log-uniform in
            [dt_min, dt_max].
        dropout: dropout after the activation.
        ssm_lr: learning rate of Λ, B̃ and Δ (no weight decay), as in S5.
        mode: ``"scan"`` (default) or ``"recurrent"``.
        backend: ``"auto"`` (default), ``"native"`` or ``"torch"``: the
            :func:`rnnx.ops.scan` implementation of mode ``"scan"``.

    Shapes: x and y ``(batch, time, d_model, height, width)``; state complex
    ``(batch, d_state // 2, height, width)`` (``d_state`` without ``conj_sym``).
    """

    modes: ClassVar[tuple[str, ...]] = ("recurrent", "scan")
    default_mode: ClassVar[str] = "scan"
    reference_mode: ClassVar[str] = "recurrent"
    step_mode: ClassVar[str] = "recurrent"
    backends: ClassVar[tuple[str, ...]] = _ssm.SCAN_BACKENDS
    continuous_time: ClassVar[bool] = True
    family: ClassVar[str] = "space-time"
    paper: ClassVar[str] = "arXiv 2310.19694"

    def native_available(self) -> bool:
        return _ssm.scan_native_available()

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        *,
        kernel_b: int = 3,
        kernel_c: int = 3,
        blocks: int = 1,
        conj_sym: bool = True,
        discretization: Discretization | str = Discretization.ZOH,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dropout: float = 0.0,
        ssm_lr: float = 1e-3,
        mode: str | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__(d_model, mode=mode, backend=backend)
        kB = _odd_kernel("kernel_b", kernel_b)
        kC = _odd_kernel("kernel_c", kernel_c)
        Lambda, V = _ssm.hippo_n_diagonal(d_state, blocks, bool(conj_sym))  # (P_s,), (P, P_s)
        _ssm.check_dt_range(dt_min, dt_max)
        U, P = d_model, d_state
        self.d_state, self.blocks = P, blocks
        self.kernel_b, self.kernel_c = kB, kC
        self.conj_sym = bool(conj_sym)
        self.discretization = as_discretization(discretization)
        self.log_A_real = nn.Parameter(torch.log(-Lambda.real).float())
        self.A_imag = nn.Parameter(Lambda.imag.float())
        # S5's initialisation at every kernel tap: B ~ lecun normal (fan-in U k_B^2),
        # B̃ = V^* B; C ~ normal with variance 1 / (P k_C^2), C̃ = C V.
        B = torch.randn(P, U, kB, kB, dtype=torch.float64) / math.sqrt(U * kB * kB)
        C = torch.randn(U, P, kC, kC, dtype=torch.float64) / math.sqrt(P * kC * kC)
        Bt = torch.einsum("ps,puij->suij", V.conj(), B.to(V.dtype))
        Ct = torch.einsum("upij,ps->usij", C.to(V.dtype), V)
        self.B = nn.Parameter(torch.view_as_real(Bt.to(torch.complex64)).clone())
        self.C = nn.Parameter(torch.view_as_real(Ct.to(torch.complex64)).clone())
        self.D = nn.Parameter(torch.randn(U))
        self.log_dt = nn.Parameter(_ssm.log_uniform(Lambda.shape[0], dt_min, dt_max))
        _ssm.mark_ssm_parameters([self.log_A_real, self.A_imag, self.B, self.log_dt], ssm_lr)
        self.output = _ssm.GLUOutput(U, U, _ssm.require_probability("dropout", dropout))

    @classmethod
    def tiny_config(cls) -> dict[str, Any]:
        return {"d_state": 4, "blocks": 2}

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, kernel_b={self.kernel_b}, "
            f"kernel_c={self.kernel_c}, blocks={self.blocks}, conj_sym={self.conj_sym}, "
            f"discretization={self.discretization.value}, mode={self.mode!r}" + self._backend_repr()
        )

    @property
    def n_stored(self) -> int:
        """Complex modes per pixel held in the state (P/2 with conjugate symmetry, else P)."""
        return self.log_A_real.shape[0]

    def init_state(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        size: tuple[int, int] | None = None,
    ) -> Tensor:
        """Complex zeros ``(batch_size, d_state // 2, height, width)`` (``d_state``
        without conj_sym) for frames of ``size=(height, width)``."""
        height, width = check_size(size)
        real = dtype if dtype is not None else self.state_dtype()
        return torch.zeros(
            batch_size,
            self.n_stored,
            height,
            width,
            device=device if device is not None else self._device(),
            dtype=_ssm.complex_dtype(real),
        )

    def ssm(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(Λ (P_s,), B̃ (P_s, C, k_B, k_B), C̃ (C, P_s, k_C, k_C))``, complex."""
        Lambda = torch.complex(-torch.exp(self.log_A_real), self.A_imag)
        return Lambda, _ssm.as_complex(self.B), _ssm.as_complex(self.C)

    def _forward(
        self,
        x: Tensor,
        state: State,
        *,
        mode: str,
        lengths: Tensor | None,
        dt: Tensor | None,
    ) -> tuple[Tensor, State]:
        u = x.to(self.state_dtype())
        Lambda, B, C = self.ssm()
        step = _ssm.steps(self.log_dt, dt)  # (P_s,) or (batch, 1|T, P_s)
        dA, dB = discretize_diagonal(Lambda, step, self.discretization)
        y, new_state = conv_ssm(
            u,
            state,
            lengths,
            dA,
            dB,
            B,
            C,
            out_scale=2.0 if self.conj_sym else 1.0,
            mode=mode,
            backend=self.backend,
        )
        y = y + _per_channel(self.D) * u
        # rnnx's S5 output block (GELU, dropout, GLU projection) per pixel over channels,
        # on one channels-last copy (a strided view made GELU's backward several times slower)
        y = self.output(y.movedim(2, -1).contiguous()).movedim(-1, 2)
        return y.to(x.dtype), new_state
