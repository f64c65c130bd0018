"""Pieces shared by the linear time-invariant SSM layers (LSSL, S4, S4D, S5, LRU).

Not a layer module (the leading underscore keeps it out of the registry): the trainable
log-step, the continuous-time ``dt`` rules, ``lengths`` handling, the bidirectional
guard, the output block, and :class:`ConvolutionalSSM`, the base of the three layers
with a convolutional view (LSSL, S4, S4D).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnx._amp import fp32_under_autocast
from rnnx._checks import length_mask, require_positive_int
from rnnx.layers.base import RecurrentLayer


def check_dt_range(dt_min: float, dt_max: float) -> None:
    if not (0 < dt_min <= dt_max):
        raise ValueError(f"dt_min, dt_max: expected 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")


def log_uniform(n: int, low: float, high: float) -> Tensor:
    """``n`` values whose logarithms are uniform in [log low, log high]."""
    return torch.rand(n) * (math.log(high) - math.log(low)) + math.log(low)


def mark_ssm_parameters(params: list[nn.Parameter], lr: float) -> None:
    """The S4 convention: the SSM's A, B and step train with a small learning rate and
    no weight decay (read by :func:`rnnx.train.module.parameter_groups`)."""
    for p in params:
        # a plain attribute on the tensor, read by parameter_groups; torch types none
        p._optim = {"lr": lr, "weight_decay": 0.0}  # type: ignore[attr-defined]


def steps(log_dt: Tensor, dt: Tensor | None) -> Tensor:
    """Δ = exp(log_dt) times the user's multiplier: ``(S,)`` or ``(B, 1|L, S)``."""
    step = torch.exp(log_dt)
    return step if dt is None else dt.unsqueeze(-1) * step


def time_invariant_steps(log_dt: Tensor, dt: Tensor | None) -> Tensor:
    """Δ for the convolutional view: ``(S,)`` or ``(B, S)``; refuses a per-step dt."""
    if dt is not None and dt.shape[1] > 1:
        raise ValueError(
            "dt: mode 'conv' needs a time-invariant step (a scalar or one per sequence); "
            "a step per time step makes the system time-varying: use mode 'scan' or "
            "'recurrent' (layer.mode = 'scan')"
        )
    step = steps(log_dt, dt)
    if step.dim() == 3:
        step = step[0, 0] if step.shape[0] == 1 else step[:, 0]
    return step


def zero_padding(u: Tensor, lengths: Tensor | None) -> Tensor:
    """``u (B, L, H)`` with padded steps set to zero (they then never move a state that
    starts from zero, and an SSM's state only decays through them)."""
    mask = length_mask(lengths, u.shape[1])
    if mask is None:
        return u
    return u * mask.unsqueeze(-1).to(u.dtype)


def last_valid(h: Tensor, lengths: Tensor | None, h0: Tensor) -> Tensor:
    """The state after ``lengths[b]`` steps from all states ``h (B, L, ...)``."""
    if lengths is None:
        return h[:, -1]
    idx = (lengths - 1).clamp(min=0).view(-1, *([1] * (h.dim() - 1)))
    picked = torch.gather(h, 1, idx.expand(-1, 1, *h.shape[2:])).squeeze(1)
    keep = (lengths > 0).view(-1, *([1] * (h0.dim() - 1)))
    return torch.where(keep, picked, h0.to(picked.dtype))


def right_align(u_t: Tensor, lengths: Tensor | None) -> Tensor:
    """``u_t (B, H, L)`` shifted so that each sequence's last real step is at L-1, with
    zeros before its first step (for the state after a sequence of a convolution)."""
    if lengths is None:
        return u_t
    B, H, L = u_t.shape
    shift = (L - lengths).view(B, 1, 1)
    pos = torch.arange(L, device=u_t.device).view(1, 1, L)
    idx = (pos - shift) % L
    out = torch.gather(u_t, 2, idx.expand(B, H, L))
    return out * (pos >= shift).to(out.dtype)


def complex_param(*shape: int, std: float = 1.0) -> nn.Parameter:
    """A complex parameter stored as real ``(*shape, 2)`` (optimisers see real numbers)."""
    return nn.Parameter(torch.randn(*shape, 2) * (std / math.sqrt(2)))


def as_complex(p: Tensor) -> Tensor:
    return torch.view_as_complex(p.contiguous())


def complex_dtype(real: torch.dtype) -> torch.dtype:
    return torch.complex128 if real == torch.float64 else torch.complex64


class GLUOutput(nn.Module):
    """GELU, dropout, then a position-wise GLU projection ``d_in -> d_out`` (the S4 block)."""

    def __init__(self, d_in: int, d_out: int, dropout: float) -> None:
        super().__init__()
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(d_in, 2 * d_out)

    def forward(self, y: Tensor) -> Tensor:
        return F.glu(self.proj(self.dropout(self.activation(y))), dim=-1)


class BidirectionalMixin:
    """Forbids what a non-causal layer cannot do: carry a state across calls, step.

    Also records whether ``forward`` was called without a state (``_fresh_state``):
    the convolutional view then skips the response to the (zero) initial state, which
    costs as much as the final state and adds exactly zero.
    """

    bidirectional: bool
    _fresh_state: bool = False

    def _non_causal(self) -> str:
        return (
            f"{type(self).__name__}(bidirectional=True) is non-causal: its backward "
            "direction reads the whole sequence from the end"
        )

    def forward(self, x: Tensor, state: Any = None, *, lengths=None, dt=None):
        if self.bidirectional and state is not None:
            raise ValueError(
                f"state: {self._non_causal()}, so it cannot continue from a state; call it "
                "on the whole sequence with state=None (or build it with bidirectional=False)"
            )
        self._fresh_state = state is None
        try:
            return super().forward(x, state, lengths=lengths, dt=dt)  # type: ignore[misc]
        finally:
            self._fresh_state = False

    def step(self, x_chunk: Tensor, state: Any = None, *, dt=None):
        if self.bidirectional:
            raise RuntimeError(
                f"step: {self._non_causal()}, so step-by-step decoding is not defined; "
                "build it with bidirectional=False to decode"
            )
        return super().step(x_chunk, state, dt=dt)  # type: ignore[misc]


#: The backends of the layers whose fast ops are :func:`rnnx.ops.scan` (mode ``"scan"``:
#: native or PyTorch; the convolution and the recurrent loop are PyTorch).
SCAN_BACKENDS: tuple[str, ...] = ("auto", "native", "torch")


def scan_native_available() -> bool:
    """Whether the native scan kernel builds and loads here."""
    from rnnx.ops.scan import native_available

    return native_available()


class ConvolutionalSSM(BidirectionalMixin, RecurrentLayer):
    """The base of the linear time-invariant SSM layers with a convolutional view
    (LSSL, S4, S4D): their modes, and the one dispatch of ``forward``.

    A subclass sets ``paper`` and ``bidirectional`` and implements ``_conv``, ``_scan``
    and ``_recurrent`` (each ``(u (B, L, H), state, lengths, dt) -> (y, state)`` on the
    SSM's input ``u`` in the state dtype) and ``_mix(y, u)``, the output block after the
    SSM (skip term D u, activation, projection to ``d_model``).
    """

    modes: ClassVar[tuple[str, ...]] = ("conv", "scan", "recurrent")
    default_mode: ClassVar[str] = "conv"
    reference_mode: ClassVar[str] = "recurrent"
    step_mode: ClassVar[str] = "recurrent"
    continuous_time: ClassVar[bool] = True
    family: ClassVar[str] = "linear time-invariant SSM"
    backends: ClassVar[tuple[str, ...]] = SCAN_BACKENDS

    def native_available(self) -> bool:
        return scan_native_available()

    def _forward(
        self,
        x: Tensor,
        state: Tensor,
        *,
        mode: str,
        lengths: Tensor | None,
        dt: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        u = x.to(self.state_dtype())
        if self.bidirectional or mode == "conv":
            # the backward direction reads padding first; the convolution runs over it
            u = zero_padding(u, lengths)
        if mode == "conv":
            y, new_state = self._conv(u, state, lengths, dt)
        elif mode == "scan":
            y, new_state = self._scan(u, state, lengths, dt)
        else:
            y, new_state = self._recurrent(u, state, lengths, dt)
        return self._mix(y, u).to(x.dtype), new_state

    def _conv(self, u: Tensor, state: Tensor, lengths: Tensor | None, dt: Tensor | None):
        raise NotImplementedError

    def _scan(self, u: Tensor, state: Tensor, lengths: Tensor | None, dt: Tensor | None):
        raise NotImplementedError

    def _recurrent(self, u: Tensor, state: Tensor, lengths: Tensor | None, dt: Tensor | None):
        raise NotImplementedError

    def _mix(self, y: Tensor, u: Tensor) -> Tensor:
        raise NotImplementedError


def hippo_n_diagonal(P: int, blocks: int, conj_sym: bool) -> tuple[Tensor, Tensor]:
    """S5's initialisation of a diagonal state (arXiv 2208.04933, Section 4.2): the
    eigenvalues Λ of HiPPO-N (the normal part of HiPPO-LegS, :func:`rnnx.ssm.hippo.nplr`)
    repeated in ``blocks`` diagonal blocks, and the block-diagonal eigenvector matrix V.

    ``P`` (the number of modes, argument ``d_state`` of the layers) must be a multiple
    of ``blocks`` with ``P / blocks`` even. With ``conj_sym`` only one of each conjugate
    pair is kept. Returns ``(Λ (P_s,), V (P, P_s))``, complex128, with P_s = P/2 under
    ``conj_sym``, else P; a layer sets B̃ = V^* B and C̃ = C V.
    """
    from rnnx.ssm.hippo import Measure, nplr

    require_even("d_state", P)
    require_positive_int("blocks", blocks)
    if P % blocks or (P // blocks) % 2:
        raise ValueError(
            f"blocks: expected d_state / blocks to be an even integer, got "
            f"d_state={P}, blocks={blocks}"
        )
    block = nplr(Measure.LEGS, P // blocks)
    lam_half, V_half = block.Lambda, block.V  # (Pb/2,), (Pb, Pb/2)
    if conj_sym:
        lam_b, V_b = lam_half, V_half
    else:
        lam_b = torch.cat([lam_half, lam_half.conj()])
        V_b = torch.cat([V_half, V_half.conj()], -1)
    return lam_b.repeat(blocks), torch.block_diag(*([V_b] * blocks))


def require_even(name: str, value: int) -> int:
    require_positive_int(name, value)
    if value % 2:
        raise ValueError(f"{name}: expected an even number (conjugate pairs), got {value}")
    return value


def require_probability(name: str, value: float) -> float:
    if not (0.0 <= float(value) < 1.0):
        raise ValueError(f"{name}: expected a value in [0, 1), got {value}")
    return float(value)


@fp32_under_autocast
def diagonal_mimo(
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
    """A complex diagonal MIMO SSM (S5, LRU): x_k = Ā x_{k-1} + B̄ u_k, y = s Re(C x).

    Args:
        u: ``(B, L, H)`` real; state: ``(B, P)`` complex.
        dA: Ā, ``(P,)`` or ``(B, 1|L, P)``; dB: per-mode input scale, same shapes
            (B̄ = dB ⊙ B).
        B: ``(P, H)`` complex; C: ``(H, P)`` complex.
        out_scale: s (2 when one of each conjugate pair is stored, else 1).
        mode: ``"scan"`` (:func:`rnnx.ops.scan`, native complex kernel on CPU) or
            ``"recurrent"`` (a loop over time).
        backend: the :func:`rnnx.ops.scan` backend of mode ``"scan"``.

    Returns:
        ``(y (B, L, H), state after lengths[b] steps)``.

    Under autocast it runs in float32 with autocast off, like every op
    (:mod:`rnnx._amp`): its projections B u and Re(C x) build and read a complex state,
    and complex numbers have no bfloat16 (CUDA autocast would hand ``view_as_complex`` a
    bfloat16 product).
    """
    from rnnx.ops.scan import scan

    # B u and Re(C x) as real matrix products on interleaved (re, im) views: no complex
    # copy of u, and view_as_complex / view_as_real cost nothing.
    P, H = B.shape
    W_B = torch.view_as_real(B).transpose(1, 2).reshape(2 * P, H)  # rows re_0, im_0, re_1, ...
    Bu = torch.view_as_complex((zero_padding(u, lengths) @ W_B.T).unflatten(-1, (P, 2)))
    b = dB * Bu
    if mode == "scan":
        h, _ = scan(dA, b, state, backend=backend)
        last = last_valid(h, lengths, state)
    else:
        Bsz, L, P = b.shape
        a = dA.expand(Bsz, L, P)
        mask = length_mask(lengths, L)
        s, hs = state, []
        for t, (a_t, b_t) in enumerate(zip(a.unbind(1), b.unbind(1))):
            s_new = a_t * s + b_t
            if mask is not None:
                s_new = torch.where(mask[:, t : t + 1], s_new, s)
            s = s_new
            hs.append(s)
        h, last = torch.stack(hs, 1), s
    W_C = torch.stack([C.real, -C.imag], -1).reshape(C.shape[0], 2 * P)  # Re(C h) = W_C [h]
    y = torch.view_as_real(h).flatten(-2) @ (out_scale * W_C).T
    return y, last
