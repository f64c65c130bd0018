"""Mamba-2: the SSD block (Dao & Gu 2024, arXiv 2405.21060).

    [z, xBC, δ] = W_in u                        (z, x: d_inner = expand·d_model; B, C: G·N; δ: H)
    [x, B, C] = silu(conv1d_causal(xBC))        (depthwise over x, B and C together)
    Δ = softplus(δ + dt_bias),  A = -exp(A_log) (one scalar decay per head)
    y = SSD(x; Δ, A, B, C, D)                   (:func:`rnnx.ops.ssd`, H heads of P channels)
    out = W_out RMSNorm(y · silu(z))            (gated RMS norm per group, as in Mamba-2)

Initialisation as in the reference block: A uniform in [1, 16] (stored as log), D = 1,
dt_bias the inverse softplus of a log-uniform step in [dt_min, dt_max].

Modes (the same function; the test matrix checks it):

* ``"chunk"``: the chunked SSD algorithm (matrix products inside chunks of ``chunk_size``,
  a scan across chunks). Default, and the :meth:`step` mode: a chunk shorter than
  ``chunk_size`` is one chunk of its own length, so a decoding step costs O(1) work.
* ``"recurrent"``: the reference recurrence in Python, one step at a time.

Padded batches (``lengths``): Δ = 0 after each sequence's end (decay 1, no input).

State: ``(conv_state, ssm_state)``: ``conv_state`` ``(batch, d_conv - 1, d_inner + 2·G·N)``
and ``ssm_state`` ``(batch, heads, head_dim, d_state)``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnx._checks import length_mask, require_positive_int
from rnnx._vocab import REFERENCE
from rnnx.layers.base import RecurrentLayer, State, register
from rnnx.layers.mamba import depthwise_conv_parameters, inverse_softplus_dt
from rnnx.ops.short_conv import causal_conv1d
from rnnx.ops.ssd import ssd

__all__ = ["Mamba2"]


def _default_headdim(d_inner: int) -> int:
    """The largest divisor of d_inner that is at most 64 (Mamba-2's default head size)."""
    return max(p for p in range(1, min(64, d_inner) + 1) if d_inner % p == 0)


@register("mamba2")
class Mamba2(RecurrentLayer):
    """Mamba-2 block: multi-head SSD with scalar decays, gated RMS norm (arXiv 2405.21060).

    Args:
        d_model: input and output features.
        d_state: N, the state size per channel.
        d_conv: length of the causal depthwise convolution.
        expand: d_inner = expand · d_model.
        headdim: P, channels per head (default: the largest divisor of d_inner up to 64).
        ngroups: G, groups of heads sharing B and C (and one RMS-norm group each).
        A_init_range: A is drawn uniformly from this range (then negated).
        dt_min, dt_max, dt_init_floor: range of the initial steps Δ.
        bias: biases of the input and output projections.
        norm_eps: epsilon of the gated RMS norm.
        chunk_size: Q, the chunk length of the SSD algorithm.
        mode: ``"chunk"`` (default) or ``"recurrent"``.
        backend: ``"auto"`` (default) or ``"torch"`` (the layer's ops are PyTorch).
    """

    modes: ClassVar[tuple[str, ...]] = ("chunk", "recurrent")
    default_mode: ClassVar[str] = "chunk"
    reference_mode: ClassVar[str] = "recurrent"
    step_mode: ClassVar[str] = "chunk"
    family: ClassVar[str] = "selective SSM"
    paper: ClassVar[str] = "arXiv 2405.21060"

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        *,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int | None = None,
        ngroups: int = 1,
        A_init_range: tuple[float, float] = (1.0, 16.0),
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init_floor: float = 1e-4,
        bias: bool = False,
        norm_eps: float = 1e-5,
        chunk_size: int = 64,
        mode: str | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__(d_model, mode=mode, backend=backend)
        self.d_state = require_positive_int("d_state", d_state)
        self.d_conv = require_positive_int("d_conv", d_conv)
        self.d_inner = require_positive_int("expand", expand) * d_model
        self.headdim = (
            _default_headdim(self.d_inner)
            if headdim is None
            else require_positive_int("headdim", headdim)
        )
        if self.d_inner % self.headdim:
            raise ValueError(
                f"headdim: expected a divisor of d_inner = expand * d_model = {self.d_inner}, "
                f"got {self.headdim}"
            )
        self.nheads = self.d_inner // self.headdim
        self.ngroups = require_positive_int("ngroups", ngroups)
        if self.nheads % self.ngroups:
            raise ValueError(
                f"ngroups: expected a divisor of the number of heads ({self.nheads}), got {ngroups}"
            )
        lo, hi = A_init_range
        if not (0 < lo <= hi):
            raise ValueError(f"A_init_range: expected 0 < low <= high, got {A_init_range}")
        if not (0 < dt_min <= dt_max):
            raise ValueError(
                f"dt_min, dt_max: expected 0 < dt_min <= dt_max, got {dt_min}, {dt_max}"
            )
        self.chunk_size = require_positive_int("chunk_size", chunk_size)
        self.norm_eps = float(norm_eps)
        E, N, G, H = self.d_inner, self.d_state, self.ngroups, self.nheads
        self.conv_dim = E + 2 * G * N
        self.in_proj = nn.Linear(d_model, 2 * E + 2 * G * N + H, bias=bias)
        self.conv_weight, self.conv_bias = depthwise_conv_parameters(self.conv_dim, d_conv)
        self.dt_bias = nn.Parameter(inverse_softplus_dt(H, dt_min, dt_max, dt_init_floor))
        self.A_log = nn.Parameter(torch.log(torch.empty(H).uniform_(lo, hi)))
        self.D = nn.Parameter(torch.ones(H))
        for p in (self.dt_bias, self.A_log, self.D):
            # a plain attribute on the tensor, read by parameter_groups; torch types none
            p._optim = {"weight_decay": 0.0}  # type: ignore[attr-defined]
        self.norm_weight = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, d_model, bias=bias)

    @classmethod
    def tiny_config(cls) -> dict[str, Any]:
        return {"d_state": 4, "d_conv": 3, "headdim": 4, "chunk_size": 8}

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, d_inner={self.d_inner}, "
            f"heads={self.nheads}x{self.headdim}, ngroups={self.ngroups}, "
            f"chunk_size={self.chunk_size}, mode={self.mode!r}" + self._backend_repr()
        )

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> tuple[Tensor, Tensor]:
        """Zeros ``(conv_state (batch, d_conv - 1, d_inner + 2·ngroups·d_state),
        ssm_state (batch, heads, headdim, d_state))``."""
        dtype = dtype if dtype is not None else self.state_dtype()
        device = device if device is not None else self._device()
        return (
            torch.zeros(batch_size, self.d_conv - 1, self.conv_dim, device=device, dtype=dtype),
            torch.zeros(
                batch_size, self.nheads, self.headdim, self.d_state, device=device, dtype=dtype
            ),
        )

    def _gated_rms_norm(self, y: Tensor, z: Tensor) -> Tensor:
        """RMSNorm(y · silu(z)) per group of d_inner / ngroups channels, times the weight."""
        g = y * F.silu(z)
        g = g.unflatten(-1, (self.ngroups, -1))
        g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + self.norm_eps)
        return g.flatten(-2) * self.norm_weight

    def _forward(
        self,
        x: Tensor,
        state: State,
        *,
        mode: str,
        lengths: Tensor | None,
        dt: Tensor | None,
    ) -> tuple[Tensor, State]:
        conv_state, ssm_state = state
        u = x.to(self.state_dtype())
        Bsz, L, _ = u.shape
        E, N, G, H = self.d_inner, self.d_state, self.ngroups, self.nheads
        z, xBC, delta = self.in_proj(u).split([E, self.conv_dim, H], dim=-1)
        xBC, conv_state = causal_conv1d(
            xBC, self.conv_weight, self.conv_bias, conv_state.to(u.dtype), lengths=lengths
        )
        xs, Bm, Cm = F.silu(xBC).split([E, G * N, G * N], dim=-1)
        delta = F.softplus(delta + self.dt_bias)
        if lengths is not None:  # Δ = 0: decay 1 and no input on the padding
            mask = length_mask(lengths, L).unsqueeze(-1)
            delta = torch.where(mask, delta, torch.zeros((), dtype=delta.dtype))
        y, ssm_state = ssd(
            xs.reshape(Bsz, L, H, self.headdim),
            delta,
            -torch.exp(self.A_log),
            Bm.reshape(Bsz, L, G, N),
            Cm.reshape(Bsz, L, G, N),
            self.D,
            initial_state=ssm_state,
            output_final_state=True,
            chunk_size=self.chunk_size,
            backend=REFERENCE if mode == "recurrent" else self.backend,
        )
        y = self._gated_rms_norm(y.reshape(Bsz, L, E), z)
        return self.out_proj(y).to(x.dtype), (conv_state, ssm_state)
