"""The classic RNNs on torch's fused RNN op: the backend ``"cudnn"``.

``torch.nn.LSTM`` / ``GRU`` / ``RNN`` run a whole stacked (and bidirectional) recurrence in
one call of ``torch._VF.lstm`` / ``gru`` / ``rnn_tanh`` / ``rnn_relu``: cuDNN's persistent
kernels on CUDA, torch's own fused loop elsewhere (on the CPU, which is how the tests
check this backend against rnnx's reference loop). rnnx's Elman, LSTM and GRU layers keep
torch.nn's parameter names and layout, so the same weights go to the op as they are; this
module is only the call: state layout (rnnx's ``(batch, layers * directions, H)`` is torch's
``(layers * directions, batch, H)`` transposed), ``lengths`` (a packed batch, as
``torch.nn.utils.rnn.pack_padded_sequence`` builds it) and the dtype policy.

The gates are those of :func:`rnnx.ops.rnn.cell_step` (torch.nn's, gate order included),
so outputs, final states and every gradient equal the reference to rounding; the tests
compare them.

What the op cannot do, and the layers therefore run with another backend: block-diagonal
recurrences (``num_heads > 1``) and cells torch.nn does not have (sLSTM).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor

from rnnx._amp import fp32_under_autocast

__all__ = ["CUDNN_CELLS", "rnn_cudnn"]

#: The cells of :mod:`rnnx.ops.rnn` that torch's fused op computes.
CUDNN_CELLS: tuple[str, ...] = ("lstm", "gru", "elman_tanh", "elman_relu")


def _op(cell: str):
    return {
        "lstm": torch._VF.lstm,
        "gru": torch._VF.gru,
        "elman_tanh": torch._VF.rnn_tanh,
        "elman_relu": torch._VF.rnn_relu,
    }[cell]


def _no_flat_weights_warning() -> contextlib.AbstractContextManager[None]:
    """Silence cuDNN's warning that the weights are not one flat buffer. Our parameters
    are separate tensors: cuDNN copies them into one per call (a few MB) and warns about
    it; the copy is the price of keeping torch.nn's parameter layout, so the warning says
    nothing new. Under ``torch.compile`` nothing is silenced (changing the warning
    filters is a side effect Dynamo cannot trace: a graph break)."""
    if torch.compiler.is_compiling():
        return contextlib.nullcontext()
    return _ignoring_flat_weights_warning()


@contextlib.contextmanager
def _ignoring_flat_weights_warning() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not part of single contiguous chunk.*")
        yield


@fp32_under_autocast
def rnn_cudnn(
    cell: str,
    x: Tensor,
    state: tuple[Tensor, ...],
    weights: list[Tensor],
    *,
    num_layers: int,
    bidirectional: bool,
    bias: bool,
    dropout: float = 0.0,
    train: bool = False,
    lengths: Tensor | None = None,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """A stacked RNN over a batch-first sequence with torch's fused op.

    Args:
        cell: one of :data:`CUDNN_CELLS`.
        x: ``(B, T, input)``.
        state: the initial state in torch's layout, one ``(num_layers * D, B, H)`` tensor
            per state of the cell (``(h0,)``; LSTM ``(h0, c0)``), D = 2 if bidirectional.
        weights: torch.nn's flat weight list: per layer and direction, ``weight_ih``,
            ``weight_hh`` and (with ``bias``) ``bias_ih``, ``bias_hh``, layer-major,
            forward direction first.
        dropout, train: dropout on the outputs of every layer but the last, when ``train``.
        lengths: ``(B,)`` int64; sequence b is ``x[b, :lengths[b]]``. The batch is packed
            (this needs the lengths on the host: one device-to-host copy when they live
            on a GPU); outputs at padding are zero and the final state of a sequence is
            its state after ``lengths[b]`` steps (its initial state when the length is 0).

    Returns:
        ``(y, final)``: ``y`` ``(B, T, D * H)`` and the final states in torch's layout.
        Under autocast the op runs in float32, as every rnnx recurrence.
    """
    if cell not in CUDNN_CELLS:
        raise ValueError(f"cell: the fused op has {CUDNN_CELLS}, got {cell!r}")
    op = _op(cell)
    hx = state if cell == "lstm" else state[0]
    with _no_flat_weights_warning():
        if lengths is None:
            out = op(x, hx, weights, bias, num_layers, dropout, train, bidirectional, True)
            y, final = out[0], tuple(out[1:])
            return y, final
        B, T = x.shape[:2]
        host = lengths.detach().to("cpu", torch.int64)
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x, host.clamp(min=1), batch_first=True, enforce_sorted=False
        )
        order, back = packed.sorted_indices, packed.unsorted_indices
        assert order is not None and back is not None  # set by enforce_sorted=False
        hx_sorted = (
            tuple(h.index_select(1, order) for h in hx)
            if isinstance(hx, tuple)
            else hx.index_select(1, order)
        )
        out = op(
            packed.data,
            packed.batch_sizes,
            hx_sorted,
            weights,
            bias,
            num_layers,
            dropout,
            train,
            bidirectional,
        )
    y_packed = torch.nn.utils.rnn.PackedSequence(out[0], packed.batch_sizes, order, back)
    y, _ = torch.nn.utils.rnn.pad_packed_sequence(y_packed, batch_first=True, total_length=T)
    empty = (lengths == 0).view(1, B, 1)
    final = tuple(
        torch.where(empty, s0, f.index_select(1, back))
        for s0, f in zip(state, out[1:], strict=True)
    )
    return y, final
