"""Mamba: the selective state-space block (Gu & Dao 2023, arXiv 2312.00752).

    [x, z] = W_in u                                   (two branches of d_inner = expand·d_model)
    x = silu(conv1d_causal(x))                        (depthwise, kernel d_conv, carried state)
    [δ, B, C] = W_x x;   Δ = softplus(W_Δ δ + b_Δ)    (Δ: low-rank, per channel)
    y = S6(x; Δ, A = -exp(A_log), B, C, D) · silu(z)  (:func:`rnnx.ops.selective_scan`)
    out = W_out y

Initialisation as in the reference block: S4D-real A_n = -(n + 1), D = 1, Δ's bias the
inverse softplus of a log-uniform step in [dt_min, dt_max], W_Δ uniform in ±dt_rank^-1/2.

``negative_eigenvalues=True`` maps each transition from exp(Δ A) in (0, 1] to
2 exp(Δ A) - 1 in (-1, 1] ("Unlocking State-Tracking in Linear RNNs Through Negative
Eigenvalues", Grazzi et al. 2024, arXiv 2411.12537), which lets one layer count modulo 2
(parity); the input term Δ B x is unchanged, as in the paper's Mamba.

Modes (the same function; the test matrix checks it):

* ``"scan"``: the selective scan :func:`rnnx.ops.selective_scan`, in the implementation
  :attr:`~rnnx.layers.RecurrentLayer.backend` names: ``"native"`` (the fused CPU
  kernel), ``"torch"`` (pure PyTorch, any device: states by :func:`rnnx.ops.scan` within
  chunks of ``chunk_size``, the old mode ``"chunked"``) or ``"auto"`` (native where it
  runs, else torch). Default, and the :meth:`step` mode (prefill or decode).
* ``"chunk"``: the selective scan as a chunked algorithm over all chunks at once, pure
  PyTorch (:mod:`rnnx.ops.selective_scan_chunk`): a few hundred large batched operations
  per call whatever the length, so a GPU is kept busy; O(batch · length · d_inner ·
  d_state) transient memory, O(batch · length / chunk · d_inner · d_state) kept for
  backward.
* ``"recurrent"``: the reference recurrence in Python, one step at a time.

``mode="auto"`` (the default) runs ``"scan"`` on the CPU (the native kernel) and
``"chunk"`` on CUDA (:attr:`auto_modes`; ``layer.mode`` says what runs).

Padded batches (``lengths``): after each sequence's end the pre-activation of Δ is -inf, so
Δ = softplus(-inf) = 0 exactly: the transition is the identity and the input zero there,
and the state after the padding is the state after ``lengths[b]`` steps.

State: ``(conv_state, ssm_state)`` with ``conv_state`` ``(batch, d_conv - 1, d_inner)``
(the last inputs of the convolution) and ``ssm_state`` ``(batch, d_inner, d_state)``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnx._checks import length_mask, require_positive_int
from rnnx._native import available as native_built
from rnnx._vocab import REFERENCE
from rnnx.layers.base import RecurrentLayer, State, register
from rnnx.ops.selective_scan import selective_scan
from rnnx.ops.selective_scan_chunk import selective_scan_chunk
from rnnx.ops.short_conv import causal_conv1d

__all__ = ["Mamba"]


def inverse_softplus_dt(n: int, dt_min: float, dt_max: float, floor: float) -> Tensor:
    """Biases b with softplus(b) log-uniform in [dt_min, dt_max] (at least ``floor``)."""
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))  # softplus^{-1}(dt) = log(e^dt - 1)


def depthwise_conv_parameters(channels: int, kernel: int) -> tuple[nn.Parameter, nn.Parameter]:
    """Weight (channels, kernel) and bias (channels,), initialised as nn.Conv1d's."""
    bound = 1.0 / math.sqrt(kernel)  # fan-in of a depthwise filter is its length
    weight = nn.Parameter(torch.empty(channels, kernel).uniform_(-bound, bound))
    bias = nn.Parameter(torch.empty(channels).uniform_(-bound, bound))
    return weight, bias


@register("mamba")
class Mamba(RecurrentLayer):
    """Mamba block: gated selective SSM with a short causal convolution (arXiv 2312.00752).

    Args:
        d_model: input and output features.
        d_state: N, the state size per channel.
        d_conv: length of the causal depthwise convolution.
        expand: d_inner = expand · d_model channels inside the block.
        dt_rank: rank of Δ's projection (default ceil(d_model / 16)).
        dt_min, dt_max, dt_init_floor: range of the initial steps Δ.
        bias: biases of the input and output projections.
        negative_eigenvalues: transitions in (-1, 1] instead of (0, 1] (arXiv 2411.12537).
        chunk_size: chunk length of the scan (mode ``"chunk"``, and ``"scan"`` in PyTorch),
            checkpoint interval of the native backward.
        mode: ``"auto"`` (default: ``"scan"`` on the CPU, ``"chunk"`` on CUDA),
            ``"scan"``, ``"chunk"`` or ``"recurrent"``.
        backend: ``"auto"`` (default), ``"native"`` or ``"torch"``: the implementation of
            mode ``"scan"`` (the other modes are PyTorch).
    """

    modes: ClassVar[tuple[str, ...]] = ("scan", "chunk", "recurrent")
    backends: ClassVar[tuple[str, ...]] = ("auto", "native", "torch")
    #: the old mode "chunked" was the PyTorch implementation of the selective scan
    mode_aliases: ClassVar[dict[str, tuple[str, str | None]]] = {"chunked": ("scan", "torch")}
    default_mode: ClassVar[str] = "scan"
    auto_modes: ClassVar[dict[str, str]] = {"cuda": "chunk"}
    reference_mode: ClassVar[str] = "recurrent"
    step_mode: ClassVar[str] = "scan"
    family: ClassVar[str] = "selective SSM"
    paper: ClassVar[str] = "arXiv 2312.00752"

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        *,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init_floor: float = 1e-4,
        bias: bool = False,
        negative_eigenvalues: bool = False,
        chunk_size: int = 64,
        mode: str | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__(d_model, mode=mode, backend=backend)
        self.d_state = require_positive_int("d_state", d_state)
        self.d_conv = require_positive_int("d_conv", d_conv)
        self.d_inner = require_positive_int("expand", expand) * d_model
        self.dt_rank = (
            math.ceil(d_model / 16) if dt_rank is None else require_positive_int("dt_rank", dt_rank)
        )
        self.chunk_size = require_positive_int("chunk_size", chunk_size)
        if not (0 < dt_min <= dt_max):
            raise ValueError(
                f"dt_min, dt_max: expected 0 < dt_min <= dt_max, got {dt_min}, {dt_max}"
            )
        self.negative_eigenvalues = bool(negative_eigenvalues)
        E, N, R = self.d_inner, self.d_state, self.dt_rank
        self.in_proj = nn.Linear(d_model, 2 * E, bias=bias)
        self.conv_weight, self.conv_bias = depthwise_conv_parameters(E, d_conv)
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, E)
        with torch.no_grad():
            self.dt_proj.weight.uniform_(-(R**-0.5), R**-0.5)
            self.dt_proj.bias.copy_(inverse_softplus_dt(E, dt_min, dt_max, dt_init_floor))
        # S4D-real: A_n = -(n + 1) for every channel
        self.A_log = nn.Parameter(
            torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1)
        )
        self.D = nn.Parameter(torch.ones(E))
        for p in (self.A_log, self.D):
            # a plain attribute on the tensor, read by parameter_groups; torch types none
            p._optim = {"weight_decay": 0.0}  # type: ignore[attr-defined]
        self.out_proj = nn.Linear(E, d_model, bias=bias)

    @classmethod
    def tiny_config(cls) -> dict[str, Any]:
        return {"d_state": 4, "d_conv": 3, "chunk_size": 8}

    def extra_repr(self) -> str:
        neg = ", negative_eigenvalues=True" if self.negative_eigenvalues else ""
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, d_inner={self.d_inner}, "
            f"d_conv={self.d_conv}, dt_rank={self.dt_rank}{neg}, mode={self.mode!r}"
            + self._backend_repr()
        )

    def native_available(self) -> bool:
        """Whether the native selective-scan kernel builds and loads here."""
        return native_built("selective_scan")

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> tuple[Tensor, Tensor]:
        """Zeros ``(conv_state, ssm_state)``: ``(batch, d_conv - 1, d_inner)`` and
        ``(batch, d_inner, d_state)``."""
        dtype = dtype if dtype is not None else self.state_dtype()
        device = device if device is not None else self._device()
        return (
            torch.zeros(batch_size, self.d_conv - 1, self.d_inner, device=device, dtype=dtype),
            torch.zeros(batch_size, self.d_inner, self.d_state, device=device, dtype=dtype),
        )

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
        xs, z = self.in_proj(u).chunk(2, dim=-1)
        xs, conv_state = causal_conv1d(
            xs, self.conv_weight, self.conv_bias, conv_state.to(u.dtype), lengths=lengths
        )
        xs = F.silu(xs)
        delta_in, Bm, Cm = self.x_proj(xs).split([self.dt_rank, self.d_state, self.d_state], -1)
        # Δ = softplus(W_Δ δ + b_Δ), the bias and softplus fused into the scan
        delta = F.linear(delta_in, self.dt_proj.weight)
        if lengths is not None:  # Δ = softplus(-inf) = 0 on the padding: identity, no input
            mask = length_mask(lengths, x.shape[1]).unsqueeze(-1)
            delta = torch.where(mask, delta, torch.full((), -torch.inf, dtype=delta.dtype))
        kwargs: dict[str, Any] = {} if mode == "chunk" else {"backend": self._scan_backend(mode)}
        scan_op = selective_scan_chunk if mode == "chunk" else selective_scan
        y, ssm_state = scan_op(
            xs,
            delta,
            -torch.exp(self.A_log),
            Bm,
            Cm,
            self.D,
            z,
            delta_bias=self.dt_proj.bias,
            delta_softplus=True,
            initial_state=ssm_state,
            output_final_state=True,
            negative_eigenvalues=self.negative_eigenvalues,
            chunk_size=self.chunk_size,
            **kwargs,
        )
        return self.out_proj(y).to(x.dtype), (conv_state, ssm_state)

    def _scan_backend(self, mode: str) -> str:
        """The backend of :func:`rnnx.ops.selective_scan` in ``mode``: the layer's in mode
        ``"scan"``, the op's step-by-step reference in mode ``"recurrent"``."""
        return REFERENCE if mode == "recurrent" else self.backend
