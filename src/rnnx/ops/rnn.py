"""The time loop of the classic nonlinear RNN cells: Elman, LSTM, GRU and sLSTM.

One op, :func:`rnn_sequence`, runs the recurrence of a cell over a sequence, given the
input preactivations of every step (the input projection ``x W_ih^T + b`` is one large
matrix product done beforehand, by the layer). It returns every output h_t and the final
state. Cells (gate order as torch.nn, so that weights move without reshuffling):

* ``"elman_tanh"`` / ``"elman_relu"`` (Elman 1990): h_t = act(gx_t + R h_{t-1});
* ``"lstm"`` (Hochreiter & Schmidhuber 1997; torch.nn.LSTM): gates i, f, g, o;
* ``"gru"`` (Cho et al. 2014, arXiv 1406.1078; torch.nn.GRU): gates r, z, n with
  n = tanh(gx_n + r * (R_n h + b_hn));
* ``"slstm"`` (xLSTM, Beck et al. 2024, arXiv 2405.04517, eqs. 8-17): gates i, f, z, o,
  exponential input gate, sigmoid forget gate taken in log space, normaliser n and
  stabiliser m states.

``num_heads`` makes the recurrent matrix block-diagonal, one dense block per head
(FlashRNN, arXiv 2412.07752): ``weight_hh`` is ``(G*H, H // num_heads)`` and row
``g*H + j`` holds unit j's weights over the DH = H / num_heads units of its head. With
one head this is torch.nn's ``weight_hh_l0``.

Two backends compute the same function:

* ``"torch"`` (:func:`rnn_sequence_reference`): a readable loop over time in plain
  PyTorch, differentiated by autograd; the test oracle and the fallback (any device).
* ``"native"``: a fused C++ kernel for CPU float32/float64 (:mod:`rnnx._native`, built on
  first use), the operator ``torch.ops.rnnx.rnn``: per step the recurrent product and the
  gate nonlinearities are fused, and backward through time runs in native code too
  (``rnnx::rnn_bwd``; the weight gradient is one large product over all steps afterwards).

``backend="auto"`` picks ``"native"`` for CPU float32/float64 tensors when the kernel
builds, and ``"torch"`` otherwise (one :class:`rnnx.RnnxWarning` if the build fails).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnx import _native
from rnnx._amp import fp32_under_autocast
from rnnx._checks import fmt_shape, require_choice, require_tensor
from rnnx._native import ops as native_ops
from rnnx._vocab import op_backend

__all__ = [
    "BACKENDS",
    "CELLS",
    "cell_step",
    "native_rnn_available",
    "recurrent_preactivation",
    "rnn_sequence",
    "rnn_sequence_reference",
    "state_names",
]

BACKENDS: tuple[str, ...] = ("auto", "native", "torch")


@dataclass(frozen=True)
class _Cell:
    gates: int
    states: tuple[str, ...]


_CELLS: dict[str, _Cell] = {
    "elman_tanh": _Cell(1, ("h",)),
    "elman_relu": _Cell(1, ("h",)),
    "lstm": _Cell(4, ("h", "c")),
    "gru": _Cell(3, ("h",)),
    "slstm": _Cell(4, ("h", "c", "n", "m")),
}
CELLS: tuple[str, ...] = tuple(_CELLS)


def num_gates(cell: str) -> int:
    """G, the number of gates (preactivations per unit) of ``cell``."""
    return _CELLS[require_choice("cell", cell, CELLS)].gates


def state_names(cell: str) -> tuple[str, ...]:
    """The names of the cell's state tensors, h first: ``("h", "c")`` for the LSTM."""
    return _CELLS[require_choice("cell", cell, CELLS)].states


# --------------------------------------------------------------------------- reference


def recurrent_preactivation(h: Tensor, weight_hh: Tensor, num_heads: int = 1) -> Tensor:
    """``h R^T`` with R block-diagonal over heads: ``(B, H)`` -> ``(B, G*H)``.

    ``weight_hh`` is ``(G*H, H // num_heads)``; output column ``g*H + j`` is the
    recurrent preactivation of gate g of unit j.
    """
    if num_heads == 1:
        return h @ weight_hh.t()
    B, H = h.shape
    DH = H // num_heads
    G = weight_hh.shape[0] // H
    w = weight_hh.reshape(G, num_heads, DH, DH)
    rec = torch.einsum("bhk,ghjk->bghj", h.reshape(B, num_heads, DH), w)
    return rec.reshape(B, G * H)


def cell_step(
    cell: str,
    gx: Tensor,
    rec: Tensor,
    state: tuple[Tensor, ...],
    bias_hn: Tensor | None = None,
) -> tuple[Tensor, ...]:
    """One step of ``cell``: the new state from the preactivations of its gates.

    Args:
        gx: ``(B, G*H)`` input preactivations (``x W_ih^T`` plus biases), gate-major.
        rec: ``(B, G*H)`` recurrent preactivations ``h_{t-1} R^T`` (no bias).
        state: the state before the step, h first (see :func:`state_names`).
        bias_hn: GRU only, ``(H,)``: the bias added to R_n h before r scales it.

    Returns:
        The new state, h first.
    """
    if cell in ("elman_tanh", "elman_relu"):
        pre = gx + rec
        return (torch.tanh(pre) if cell == "elman_tanh" else torch.relu(pre),)
    if cell == "lstm":
        c = state[1]
        gi, gf, gg, go = (gx + rec).chunk(4, dim=-1)
        c_new = torch.sigmoid(gf) * c + torch.sigmoid(gi) * torch.tanh(gg)
        return torch.sigmoid(go) * torch.tanh(c_new), c_new
    if cell == "gru":
        h = state[0]
        xr, xz, xn = gx.chunk(3, dim=-1)
        hr, hz, hn = rec.chunk(3, dim=-1)
        if bias_hn is not None:
            hn = hn + bias_hn
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return (n + z * (h - n),)
    if cell == "slstm":
        # xLSTM eqs. (8)-(17): stabilised exponential input gate, log-space forget gate.
        _, c, n, m = state
        pi, pf, pz, po = (gx + rec).chunk(4, dim=-1)
        log_f_plus_m = F.logsigmoid(pf) + m
        m_new = torch.maximum(log_f_plus_m, pi)
        i_gate = torch.exp(pi - m_new)
        f_gate = torch.exp(log_f_plus_m - m_new)
        c_new = f_gate * c + i_gate * torch.tanh(pz)
        n_new = f_gate * n + i_gate
        h_new = torch.sigmoid(po) * c_new / n_new
        return h_new, c_new, n_new, m_new
    raise ValueError(f"cell: expected one of {CELLS}, got {cell!r}")


@fp32_under_autocast
def rnn_sequence_reference(
    cell: str,
    gx: Tensor,
    weight_hh: Tensor,
    state: tuple[Tensor, ...],
    *,
    bias_hn: Tensor | None = None,
    lengths: Tensor | None = None,
    reverse: bool = False,
    num_heads: int = 1,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Readable reference of :func:`rnn_sequence`: a loop over time under autograd.

    Same arguments and results. Iterates over ``unbind(1)`` and stacks once at the end,
    so its backward is linear in the length.
    """
    _validate(cell, gx, weight_hh, state, bias_hn, lengths, num_heads)
    T = gx.shape[1]
    steps = range(T - 1, -1, -1) if reverse else range(T)
    gxs = gx.unbind(1)
    ys: list[Tensor] = [gx.new_empty(0)] * T
    for t in steps:
        rec = recurrent_preactivation(state[0], weight_hh, num_heads)
        new = cell_step(cell, gxs[t], rec, state, bias_hn)
        if lengths is not None:
            # padding (t >= lengths[b]) carries the state unchanged
            keep = (t < lengths).unsqueeze(-1)
            new = tuple(torch.where(keep, n, s) for n, s in zip(new, state))
        state = new
        ys[t] = state[0]
    return torch.stack(ys, 1), tuple(state)


# --------------------------------------------------------------------------- validation


def _validate(
    cell: str,
    gx: object,
    weight_hh: object,
    state: object,
    bias_hn: object,
    lengths: object,
    num_heads: int,
) -> None:
    spec = _CELLS[require_choice("cell", cell, CELLS)]
    gx = require_tensor("gx", gx)
    weight_hh = require_tensor("weight_hh", weight_hh)
    if not isinstance(state, tuple) or len(state) != len(spec.states):
        raise TypeError(
            f"state: expected a tuple of {len(spec.states)} tensors {spec.states} for cell "
            f"{cell!r}, got {type(state).__name__}"
            + (f" of length {len(state)}" if isinstance(state, tuple) else "")
        )
    if not gx.is_floating_point():
        raise TypeError(f"gx: expected a floating-point tensor, got dtype {gx.dtype}")
    if gx.dim() != 3:
        raise ValueError(f"gx: expected shape (batch, length, G*H), got {fmt_shape(gx.shape)}")
    B = gx.shape[0]
    H = state[0].shape[-1] if isinstance(state[0], Tensor) else -1
    G = spec.gates
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f"num_heads: expected an int >= 1, got {num_heads!r}")
    if H % num_heads != 0:
        raise ValueError(f"num_heads: {num_heads} does not divide the hidden size {H}")
    if gx.shape[-1] != G * H:
        raise ValueError(
            f"gx: expected last dimension G*H = {G}*{H} = {G * H} for cell {cell!r}, "
            f"got shape {fmt_shape(gx.shape)}"
        )
    expected_w = (G * H, H // num_heads)
    if tuple(weight_hh.shape) != expected_w:
        raise ValueError(
            f"weight_hh: expected shape {fmt_shape(expected_w)} (G*H, H // num_heads), "
            f"got {fmt_shape(weight_hh.shape)}"
        )
    for name, s in zip(spec.states, state):
        s = require_tensor(f"state[{name}]", s)
        if tuple(s.shape) != (B, H):
            raise ValueError(
                f"state[{name}]: expected shape {fmt_shape((B, H))} (batch, hidden), "
                f"got {fmt_shape(s.shape)}"
            )
        if s.dtype != gx.dtype or s.device != gx.device:
            raise TypeError(
                f"state[{name}]: expected dtype {gx.dtype} on {gx.device} like gx, "
                f"got {s.dtype} on {s.device}"
            )
    if weight_hh.dtype != gx.dtype or weight_hh.device != gx.device:
        raise TypeError(
            f"weight_hh: expected dtype {gx.dtype} on {gx.device} like gx, got "
            f"{weight_hh.dtype} on {weight_hh.device}"
        )
    if bias_hn is not None:
        if cell != "gru":
            raise ValueError(f"bias_hn: only the 'gru' cell takes it, got cell {cell!r}")
        bias_hn = require_tensor("bias_hn", bias_hn)
        if tuple(bias_hn.shape) != (H,) or bias_hn.dtype != gx.dtype:
            raise ValueError(
                f"bias_hn: expected shape ({H},) and dtype {gx.dtype}, got "
                f"{fmt_shape(bias_hn.shape)} {bias_hn.dtype}"
            )
    if lengths is not None:
        lengths = require_tensor("lengths", lengths)
        if lengths.dtype != torch.int64 or tuple(lengths.shape) != (B,):
            raise ValueError(
                f"lengths: expected an int64 tensor of shape ({B},), got "
                f"{lengths.dtype} {fmt_shape(lengths.shape)}"
            )


# --------------------------------------------------------------------------- native

_NATIVE_DTYPES = (torch.float32, torch.float64)


def native_rnn_available() -> bool:
    """Whether the native RNN kernel is built and loadable here (builds it if needed)."""
    return _native.available("rnn")


# --------------------------------------------------------------------------- public


@fp32_under_autocast
def rnn_sequence(
    cell: str,
    gx: Tensor,
    weight_hh: Tensor,
    state: tuple[Tensor, ...],
    *,
    bias_hn: Tensor | None = None,
    lengths: Tensor | None = None,
    reverse: bool = False,
    num_heads: int = 1,
    backend: str = "auto",
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Every output and the final state of an RNN cell over a sequence.

    Args:
        cell: one of :data:`CELLS` (``"elman_tanh"``, ``"elman_relu"``, ``"lstm"``,
            ``"gru"``, ``"slstm"``).
        gx: ``(B, T, G*H)`` input preactivations of every step, gate-major (gate g of
            unit j at ``g*H + j``), biases included (``x W_ih^T + b_ih + b_hh``; for the
            GRU without ``b_hn``). The last dimension must be contiguous; any batch/time
            strides work (a slice of a bidirectional projection needs no copy).
        weight_hh: ``(G*H, H // num_heads)`` recurrent weights (torch.nn's
            ``weight_hh_l0`` when ``num_heads == 1``).
        state: the initial state, a tuple of ``(B, H)`` tensors, h first
            (:func:`state_names`): LSTM ``(h, c)``; sLSTM ``(h, c, n, m)``.
        bias_hn: GRU only: ``(H,)``, added to ``R_n h`` before the reset gate scales it.
        lengths: ``(B,)`` int64; step t of sequence b is padding when
            ``t >= lengths[b]``: it carries the state unchanged.
        reverse: run from the last step to the first (the backward direction of a
            bidirectional layer).
        num_heads: block-diagonal recurrence with this many heads.
        backend: ``"auto"`` (native for CPU float32/float64 when built, else the
            PyTorch loop), ``"native"`` or ``"torch"`` (the loop,
            :func:`rnn_sequence_reference`; the old name ``"reference"`` maps to it with
            a DeprecationWarning). Depends only on device, dtype and
            whether the kernel builds, never on values or lengths.

    Returns:
        ``(y, state)``: ``y`` ``(B, T, H)`` the h of every step (at padding: the carried
        h) and the final state (after the last step processed).
    """
    backend = op_backend(backend, BACKENDS)
    if backend == "torch":
        return rnn_sequence_reference(
            cell,
            gx,
            weight_hh,
            state,
            bias_hn=bias_hn,
            lengths=lengths,
            reverse=reverse,
            num_heads=num_heads,
        )
    _validate(cell, gx, weight_hh, state, bias_hn, lengths, num_heads)
    supported = gx.device.type == "cpu" and gx.dtype in _NATIVE_DTYPES
    if backend == "native" and not supported:
        raise ValueError(
            f"backend: 'native' supports CPU float32/float64 tensors, got {gx.dtype} on {gx.device}"
        )
    if not (supported and _native.available("rnn")):
        if backend == "native":
            raise RuntimeError(
                "backend: 'native' was requested but the native RNN kernel is unavailable: "
                f"{_native.unavailable_reason('rnn')}"
            )
        return rnn_sequence_reference(
            cell,
            gx,
            weight_hh,
            state,
            bias_hn=bias_hn,
            lengths=lengths,
            reverse=reverse,
            num_heads=num_heads,
        )
    state0 = torch.stack(state, 0) if len(state) > 1 else state[0].unsqueeze(0)
    # Time-major storage (the rows of one step contiguous) when gx is stored so: the
    # outputs and gradients follow, and the weight gradient's product needs no copy.
    time_major = gx.stride(0) < gx.stride(1)
    y, final = native_ops.call(
        "rnn", cell, gx, weight_hh, bias_hn, state0, lengths, num_heads, bool(reverse), time_major
    )
    return y, tuple(final.unbind(0))
