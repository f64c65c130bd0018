"""mLSTM: the matrix-memory LSTM of xLSTM (Beck et al., arXiv 2405.04517).

The mLSTM block of the paper (its Fig. 10 / the reference ``mLSTMLayer``):

    x_m, z  = split(W_up x)                                  (inner = proj_factor · d_model)
    x_c     = SiLU(causal_conv(x_m))                          (kernel 4)
    q, k    = W_q x_c, W_k x_c;   v = W_v x_m                 (per head)
    ĩ, f̃    = W_i [q, k, v] + b_i,  W_f [q, k, v] + b_f        (a scalar per head)
    h       = mLSTM cell (:func:`rnnx.ops.mlstm.mlstm`: exponential input gate, sigmoid
              forget gate, normaliser and max-stabiliser)
    y       = W_down ((LayerNorm_head(h) + skip ⊙ x_c) ⊙ SiLU(z))

Modes: ``"chunk"`` (default; the chunked form, which computes the stabiliser of the
recurrence exactly) and ``"recurrent"`` (one step at a time; the reference and the
decoding path of :meth:`step`). Padded steps (``lengths``) get the input gate e^{−∞} = 0
and the forget gate 1: they leave C, n and m unchanged.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnx._checks import length_mask, require_choice, require_positive_int
from rnnx._vocab import REFERENCE
from rnnx.layers._chunked import HeadLayerNorm, pick_heads, scaled_dim, where_valid
from rnnx.layers.base import RecurrentLayer, State, register
from rnnx.ops.chunk import native_available
from rnnx.ops.mlstm import FORGET_GATES, mlstm
from rnnx.ops.short_conv import causal_conv1d

__all__ = ["mLSTM"]


@register("mlstm")
class mLSTM(RecurrentLayer):
    """The mLSTM block of xLSTM (arXiv 2405.04517).

    Args:
        d_model: input and output features.
        num_heads: heads of the cell (default: about one per 64 inner features).
        proj_factor: inner size as a multiple of d_model (paper: 2).
        conv_size: kernel size of the causal convolution before q and k.
        forget_gate: ``"sigmoid"`` (paper) or ``"exp"`` (log f = f̃).
        eps: added to the normaliser's denominator.
        chunk_size: chunk length of mode ``"chunk"``.
        mode: ``"chunk"`` (default) or ``"recurrent"``.
        backend: ``"auto"`` (default), ``"native"`` (the intra-chunk weights from a C++
            kernel, CPU) or ``"torch"``: the implementation of mode ``"chunk"``.

    State: ``{"conv": (batch, conv_size − 1, inner), "C": (batch, num_heads, head_dim,
    head_dim), "n": (batch, num_heads, head_dim), "m": (batch, num_heads)}``: the
    convolution's last inputs, the stabilised memory, normaliser and stabiliser.
    """

    modes: ClassVar[tuple[str, ...]] = ("chunk", "recurrent")
    default_mode: ClassVar[str] = "chunk"
    reference_mode: ClassVar[str] = "recurrent"
    step_mode: ClassVar[str] = "recurrent"
    family: ClassVar[str] = "linear attention"
    paper: ClassVar[str] = "arXiv 2405.04517"
    backends: ClassVar[tuple[str, ...]] = ("auto", "native", "torch")

    def __init__(
        self,
        d_model: int,
        num_heads: int | None = None,
        *,
        proj_factor: float = 2.0,
        conv_size: int = 4,
        forget_gate: str = "sigmoid",
        eps: float = 1e-6,
        chunk_size: int = 64,
        mode: str | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__(d_model, mode=mode, backend=backend)
        inner = scaled_dim("proj_factor", d_model, proj_factor)
        H = pick_heads(inner, inner, num_heads=num_heads)
        self.num_heads, self.inner, self.head_dim = H, inner, inner // H
        self.conv_size = require_positive_int("conv_size", conv_size)
        self.chunk_size = require_positive_int("chunk_size", chunk_size)
        self.forget_gate = require_choice("forget_gate", forget_gate, FORGET_GATES)
        self.eps = float(eps)
        self.up_proj = nn.Linear(d_model, 2 * inner, bias=False)
        bound = 1 / math.sqrt(conv_size)
        self.conv_weight = nn.Parameter(torch.empty(inner, conv_size).uniform_(-bound, bound))
        self.conv_bias = nn.Parameter(torch.zeros(inner))
        self.q_proj = nn.Linear(inner, inner, bias=False)
        self.k_proj = nn.Linear(inner, inner, bias=False)
        self.v_proj = nn.Linear(inner, inner, bias=False)
        self.igate = nn.Linear(3 * inner, H)
        self.fgate = nn.Linear(3 * inner, H)
        # the paper's initialisation: forget gates open (bias 3..6), input gates near 1
        nn.init.zeros_(self.fgate.weight)
        with torch.no_grad():
            self.fgate.bias.copy_(torch.linspace(3.0, 6.0, H))
        nn.init.zeros_(self.igate.weight)
        nn.init.normal_(self.igate.bias, mean=0.0, std=0.1)
        self.outnorm = HeadLayerNorm(H, self.head_dim, bias=False)
        self.learnable_skip = nn.Parameter(torch.ones(inner))
        self.down_proj = nn.Linear(inner, d_model, bias=False)

    @classmethod
    def tiny_config(cls) -> dict[str, Any]:
        return {"num_heads": 2, "proj_factor": 1.0, "chunk_size": 4}

    def native_available(self) -> bool:
        """Whether the native chunk kernels build and load here."""
        return native_available()

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, inner={self.inner}, num_heads={self.num_heads}, "
            f"forget_gate={self.forget_gate!r}, chunk_size={self.chunk_size}, mode={self.mode!r}"
            + self._backend_repr()
        )

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> dict[str, Tensor]:
        """Zeros: ``{"conv": (batch, conv_size − 1, inner), "C": (batch, num_heads,
        head_dim, head_dim), "n": (batch, num_heads, head_dim), "m": (batch, num_heads)}``."""
        device = device if device is not None else self._device()
        dtype = dtype if dtype is not None else self.state_dtype()
        B, H, dh = batch_size, self.num_heads, self.head_dim
        return {
            "conv": torch.zeros(B, self.conv_size - 1, self.inner, device=device, dtype=dtype),
            "C": torch.zeros(B, H, dh, dh, device=device, dtype=dtype),
            "n": torch.zeros(B, H, dh, device=device, dtype=dtype),
            "m": torch.zeros(B, H, device=device, dtype=dtype),
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
        B, L, _ = x.shape
        H, dh = self.num_heads, self.head_dim
        u = x.to(self.state_dtype())
        x_m, z = self.up_proj(u).chunk(2, -1)
        x_c, conv_state = causal_conv1d(
            x_m, self.conv_weight, self.conv_bias, state["conv"], lengths=lengths
        )
        x_c = F.silu(x_c)
        q, k, v = self.q_proj(x_c), self.k_proj(x_c), self.v_proj(x_m)
        qkv = torch.cat([q, k, v], -1)
        i_pre, f_pre = self.igate(qkv), self.fgate(qkv)  # (B, L, H)
        logf = F.logsigmoid(f_pre) if self.forget_gate == "sigmoid" else f_pre
        valid = length_mask(lengths, L)
        i_pre = where_valid(valid, i_pre, -math.inf)
        logf = where_valid(valid, logf, 0.0)
        h, final = mlstm(
            q.view(B, L, H, dh), k.view(B, L, H, dh), v.view(B, L, H, dh), i_pre, logf,
            initial_state=(state["C"], state["n"], state["m"]), output_final_state=True,
            chunk_size=self.chunk_size, backend=REFERENCE if mode == "recurrent" else self.backend,
            forget_gate="exp", eps=self.eps,  # "exp": the gate is passed as log f already
        )  # fmt: skip
        assert final is not None  # output_final_state=True
        C, n, m = final
        h = self.outnorm(h).reshape(B, L, self.inner) + self.learnable_skip * x_c
        y = self.down_proj(h * F.silu(z))
        return y.to(x.dtype), {"conv": conv_state, "C": C, "n": n, "m": m}
