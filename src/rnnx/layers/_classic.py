"""What the classic nonlinear RNN layers (Elman, LSTM, GRU, sLSTM) share.

One base class, :class:`ClassicRNN`, does everything but the cell: torch.nn's parameter
names and layout, stacked layers, dropout between layers, the bidirectional pass, the
state layout, ``lengths``, ``batch_first``, the dtype policy, ``from_torch`` /
``to_torch`` and the choice of backend. The cell math lives in :mod:`rnnx.ops.rnn`
(a readable reference and a fused native kernel); :mod:`rnnx.ops.rnn_cudnn` calls torch's
fused RNN op (cuDNN on CUDA) with the same weights. Each layer file (``elman.py``,
``lstm.py``, ``gru.py``, ``slstm.py``) is a thin subclass that names its cell and its
torch.nn counterpart, so that one change of the stacking logic fixes all four.

Parameters, for layer ``k`` and ``sfx`` = ``""`` (forward) or ``"_reverse"``, exactly as
torch.nn.LSTM/GRU/RNN name them (so ``load_state_dict`` moves weights both ways):

* ``weight_ih_l{k}{sfx}``: ``(G*H, input)``, gate-major rows (gate g of unit j at g*H+j);
* ``weight_hh_l{k}{sfx}``: ``(G*H, H // num_heads)``; with ``num_heads > 1`` the
  recurrent matrix is block-diagonal and row g*H+j holds unit j's weights over its
  head's units (FlashRNN, arXiv 2412.07752);
* ``bias_ih_l{k}{sfx}``, ``bias_hh_l{k}{sfx}``: ``(G*H,)`` (sLSTM: one ``bias_l{k}{sfx}``).

State: one tensor per state of the cell, each ``(batch, num_layers * num_directions,
hidden_size)``, entry ``k * num_directions + d`` for layer k and direction d (torch's
index order, but batch first like every rnnx state: torch's ``h_n`` is
``state.transpose(0, 1)``; see :meth:`ClassicRNN.state_to_torch`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnx._checks import require_positive_int
from rnnx.layers.base import RecurrentLayer, State
from rnnx.ops.rnn import native_rnn_available, rnn_sequence
from rnnx.ops.rnn_cudnn import CUDNN_CELLS, rnn_cudnn

__all__ = ["ClassicRNN"]

# torch's fused single-step cells (what nn.LSTMCell/GRUCell/RNNCell call), used for
# one-token decode steps; gates and gate order are those of rnnx's kernels.
_TORCH_CELLS: dict[str, Callable[..., Any]] = {
    "lstm": torch._VF.lstm_cell,
    "gru": torch._VF.gru_cell,
    "elman_tanh": torch._VF.rnn_tanh_cell,
    "elman_relu": torch._VF.rnn_relu_cell,
}


class ClassicRNN(RecurrentLayer):
    """Base of the classic nonlinear RNN layers; see the module docstring.

    Args:
        d_model: input features.
        hidden_size: units H per direction (default: d_model). Outputs have
            ``H * num_directions`` features.
        num_layers: stacked layers; layer k > 0 reads the outputs of layer k - 1.
        num_heads: heads of the block-diagonal recurrent matrix (must divide H).
        bias: whether to use biases.
        dropout: dropout on the outputs of every layer but the last (training only),
            as torch.nn.
        bidirectional: add a reverse-time direction per layer (non-causal: no ``step``).
        batch_first: True (the rnnx contract): ``x`` is ``(batch, length, features)``;
            False: ``(length, batch, features)`` for inputs and outputs, as torch.nn with
            ``batch_first=False`` (the state layout does not change).
        backend: how the time loop runs; :meth:`resolved_backend` says which one runs on
            a device. ``"auto"``: ``"cudnn"`` on CUDA when the configuration allows it
            (one head, a cell torch.nn has: Elman, LSTM, GRU), the native fused kernel for
            CPU float32/float64 when it builds, else the PyTorch reference. ``"cudnn"``:
            torch's fused RNN op, what torch.nn.LSTM/GRU/RNN call (cuDNN on CUDA, torch's
            own loop on the CPU; :mod:`rnnx.ops.rnn_cudnn`). ``"native"`` or
            ``"torch"``: see :func:`rnnx.ops.rnn.rnn_sequence`.
        mode: ``"recurrent"`` (the only mode: the step-by-step recurrence).
    """

    modes: ClassVar[tuple[str, ...]] = ("recurrent",)
    default_mode: ClassVar[str] = "recurrent"
    reference_mode: ClassVar[str] = "recurrent"
    step_mode: ClassVar[str] = "recurrent"
    backends: ClassVar[tuple[str, ...]] = ("auto", "native", "torch", "cudnn")
    family: ClassVar[str] = "classic nonlinear RNN"
    #: G, the gates per unit.
    num_gates: ClassVar[int] = 1
    #: the cell's states, h first (the state is a tensor when there is only h).
    state_names: ClassVar[tuple[str, ...]] = ("h",)
    #: torch.nn's two bias vectors per direction (False: one ``bias_l{k}``).
    two_biases: ClassVar[bool] = True
    #: the torch.nn module with the same weights (None: no counterpart).
    torch_class: ClassVar[type[nn.Module] | None] = None

    def __init__(
        self,
        d_model: int,
        hidden_size: int | None = None,
        *,
        num_layers: int = 1,
        num_heads: int = 1,
        bias: bool = True,
        dropout: float = 0.0,
        bidirectional: bool = False,
        batch_first: bool = True,
        backend: str = "auto",
        mode: str | None = None,
    ) -> None:
        super().__init__(d_model, mode=mode)
        H = d_model if hidden_size is None else require_positive_int("hidden_size", hidden_size)
        self.hidden_size = H
        self.num_layers = require_positive_int("num_layers", num_layers)
        self.num_heads = require_positive_int("num_heads", num_heads)
        if H % self.num_heads != 0:
            raise ValueError(
                f"num_heads: expected a divisor of hidden_size={H}, got {self.num_heads}"
            )
        if isinstance(dropout, bool) or not isinstance(dropout, int | float):
            raise TypeError(f"dropout: expected a float in [0, 1], got {dropout!r}")
        if not 0.0 <= float(dropout) <= 1.0:
            raise ValueError(f"dropout: expected a float in [0, 1], got {dropout}")
        self.dropout = float(dropout)
        self.bias = bool(bias)
        self.bidirectional = bool(bidirectional)
        self.batch_first = bool(batch_first)
        self.backend = backend
        self.num_directions = 2 if self.bidirectional else 1
        self.d_output = H * self.num_directions
        G = self.num_gates
        for k in range(self.num_layers):
            fan_in = d_model if k == 0 else H * self.num_directions
            for sfx in self._suffixes():
                self.register_parameter(
                    f"weight_ih_l{k}{sfx}", nn.Parameter(torch.empty(G * H, fan_in))
                )
                self.register_parameter(
                    f"weight_hh_l{k}{sfx}", nn.Parameter(torch.empty(G * H, H // self.num_heads))
                )
                names: tuple[str, ...] = (f"bias_ih_l{k}{sfx}", f"bias_hh_l{k}{sfx}")
                if not self.two_biases:
                    names = (f"bias_l{k}{sfx}",)
                for name in names:
                    p = nn.Parameter(torch.empty(G * H)) if self.bias else None
                    self.register_parameter(name, p)
        self.reset_parameters()

    # ------------------------------------------------------------------ configuration

    def _check_backend(self, backend: str) -> None:
        """``"cudnn"`` only where :meth:`cudnn_supported`."""
        if backend == "cudnn" and not self.cudnn_supported():
            raise ValueError(
                f"backend: 'cudnn' (torch's fused RNN op) needs num_heads=1 and a cell "
                f"torch.nn has (Elman, LSTM, GRU); {type(self).__name__} has cell "
                f"{self.cell()!r} and num_heads={self.num_heads}"
            )

    def cudnn_supported(self) -> bool:
        """Whether torch's fused RNN op computes this configuration: one head (no
        block-diagonal recurrence) and a cell torch.nn has, with its two bias vectors."""
        return self.num_heads == 1 and self.two_biases and self.cell() in CUDNN_CELLS

    def resolved_backend(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> str:
        """The implementation :meth:`forward` runs for inputs on ``device`` (default:
        the parameters' device) computing in ``dtype`` (default: the state dtype):
        ``"cudnn"``, ``"native"`` or ``"torch"``.

        ``backend="auto"`` picks ``"cudnn"`` on CUDA when :meth:`cudnn_supported`,
        ``"native"`` for CPU float32/float64 when the kernel builds, else
        ``"torch"`` (the PyTorch loop); an explicit backend is used as it is. Depends on the device,
        the dtype and the configuration only, never on the input's values or length.
        (One-token decode steps with ``"auto"`` use torch's fused cells, which compute
        the same function.)
        """
        device = torch.device(device) if device is not None else self._device()
        if self.backend == "auto" and self._uses_cudnn(device):
            return "cudnn"
        return super().resolved_backend(device, dtype)

    def native_available(self) -> bool:
        """Whether the native RNN kernel builds and loads here."""
        return native_rnn_available()

    def _uses_cudnn(self, device: torch.device) -> bool:
        """Whether :meth:`forward` runs the ``"cudnn"`` backend on ``device`` (the part of
        :meth:`resolved_backend` that the forward pass asks, with no kernel lookup)."""
        if self.backend == "auto":
            return device.type == "cuda" and self.cudnn_supported()
        return self.backend == "cudnn"

    def _suffixes(self) -> tuple[str, ...]:
        return ("", "_reverse") if self.bidirectional else ("",)

    def cell(self) -> str:
        """The cell name of :func:`rnnx.ops.rnn.rnn_sequence`."""
        raise NotImplementedError

    def reset_parameters(self) -> None:
        """U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias, as torch.nn."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    @classmethod
    def tiny_config(cls) -> dict[str, Any]:
        return {}

    def extra_repr(self) -> str:
        parts = [f"d_model={self.d_model}", f"hidden_size={self.hidden_size}"]
        for name, default in (
            ("num_layers", 1),
            ("num_heads", 1),
            ("bias", True),
            ("dropout", 0.0),
            ("bidirectional", False),
            ("batch_first", True),
            ("backend", "auto"),
        ):
            if getattr(self, name) != default:
                parts.append(f"{name}={getattr(self, name)!r}")
        return ", ".join(parts)

    # ------------------------------------------------------------------ state

    def init_state(
        self, batch_size: int, *, device=None, dtype=None
    ) -> Tensor | tuple[Tensor, ...]:
        """Zeros, one tensor per state of the cell (``state_names``), each
        ``(batch_size, num_layers * num_directions, hidden_size)``; a single tensor
        for the cells whose only state is h (Elman, GRU)."""
        device = device if device is not None else self._device()
        dtype = dtype if dtype is not None else self.state_dtype()
        shape = (batch_size, self.num_layers * self.num_directions, self.hidden_size)
        states = tuple(torch.zeros(shape, device=device, dtype=dtype) for _ in self.state_names)
        return states[0] if len(states) == 1 else states

    def state_to_torch(self, state: Tensor | tuple[Tensor, ...]) -> Tensor | tuple[Tensor, ...]:
        """The state in torch.nn's layout ``(num_layers * num_directions, batch, H)``
        (``h_n``, or ``(h_n, c_n)`` for the LSTM)."""
        if isinstance(state, Tensor):
            return state.transpose(0, 1).contiguous()
        return tuple(s.transpose(0, 1).contiguous() for s in state)

    def state_from_torch(self, hx: Tensor | tuple[Tensor, ...]) -> Tensor | tuple[Tensor, ...]:
        """The inverse of :meth:`state_to_torch`: torch.nn's ``hx`` as an rnnx state."""
        if isinstance(hx, Tensor):
            return hx.transpose(0, 1).contiguous()
        return tuple(s.transpose(0, 1).contiguous() for s in hx)

    # ------------------------------------------------------------------ torch.nn

    def _torch_kwargs(self) -> dict[str, Any]:
        return {}

    @classmethod
    def _from_torch_kwargs(cls, module: nn.Module) -> dict[str, Any]:
        return {}

    @classmethod
    def from_torch(cls, module: nn.RNNBase, **kwargs: Any) -> ClassicRNN:
        """A layer with the configuration and (copied) weights of a torch.nn module.

        ``batch_first`` follows the module unless given; the weights do not depend on
        it. ``kwargs`` (e.g. ``backend``) go to the constructor.
        """
        if cls.torch_class is None or not isinstance(module, cls.torch_class):
            want = cls.torch_class.__name__ if cls.torch_class else "nothing"
            raise TypeError(
                f"module: {cls.__name__}.from_torch expects a torch.nn.{want}, "
                f"got {type(module).__name__}"
            )
        if getattr(module, "proj_size", 0):
            raise ValueError(
                f"module: proj_size={module.proj_size} (LSTM with projections) is not supported"
            )
        config = {
            "hidden_size": module.hidden_size,
            "num_layers": module.num_layers,
            "bias": module.bias,
            "dropout": float(module.dropout),
            "bidirectional": module.bidirectional,
            "batch_first": module.batch_first,
            **cls._from_torch_kwargs(module),
            **kwargs,
        }
        layer = cls(module.input_size, **config)
        p = next(module.parameters())
        layer.to(device=p.device, dtype=p.dtype)
        layer.load_state_dict(module.state_dict())
        return layer

    def to_torch(self) -> nn.Module:
        """The torch.nn module with this layer's configuration and (copied) weights."""
        if self.torch_class is None:
            raise TypeError(f"{type(self).__name__} has no torch.nn counterpart")
        if self.num_heads != 1:
            raise ValueError(
                f"num_heads: torch.nn has no block-diagonal recurrence; to_torch needs "
                f"num_heads=1, got {self.num_heads}"
            )
        module = self.torch_class(
            self.d_model,
            self.hidden_size,
            num_layers=self.num_layers,
            bias=self.bias,
            batch_first=self.batch_first,
            dropout=self.dropout,
            bidirectional=self.bidirectional,
            **self._torch_kwargs(),
        )
        p = next(self.parameters())
        module.to(device=p.device, dtype=p.dtype)
        module.load_state_dict(self.state_dict())
        return module

    # ------------------------------------------------------------------ running

    def forward(
        self,
        x: Tensor,
        state: Tensor | tuple[Tensor, ...] | None = None,
        *,
        lengths: Tensor | None = None,
        dt: Tensor | float | None = None,
    ) -> tuple[Tensor, Any]:
        """Run over a sequence; see :meth:`RecurrentLayer.forward`.

        For a bidirectional layer, ``state`` is the initial state of each direction
        (torch.nn's ``h_0``: the reverse direction starts from it after the last step),
        not a continuation of an earlier call.
        """
        if not self.batch_first and isinstance(x, Tensor) and x.dim() == 3:
            y, s = super().forward(x.transpose(0, 1), state, lengths=lengths, dt=dt)
            return y.transpose(0, 1), s
        return super().forward(x, state, lengths=lengths, dt=dt)

    def step(
        self, x_chunk: Tensor, state: Any = None, *, dt: Tensor | float | None = None
    ) -> tuple[Tensor, Any]:
        """Advance the state over a chunk; see :meth:`RecurrentLayer.step`.

        Not defined for a bidirectional layer (its reverse direction needs the whole
        sequence).
        """
        if self.bidirectional:
            raise ValueError(
                f"step: {type(self).__name__}(bidirectional=True) cannot run step by step: "
                "its reverse direction needs the whole sequence; use forward on the full "
                "sequence, or a unidirectional layer for decoding"
            )
        if not self.batch_first and isinstance(x_chunk, Tensor) and x_chunk.dim() == 3:
            y, s = super().step(x_chunk.transpose(0, 1), state, dt=dt)
            return y.transpose(0, 1), s
        return super().step(x_chunk, state, dt=dt)

    def _layer_params(self, k: int, sfx: str, dtype: torch.dtype):
        """(W_ih, gx bias, W_hh, GRU's b_hn) of layer k, direction sfx, in ``dtype``."""
        w_ih = getattr(self, f"weight_ih_l{k}{sfx}").to(dtype)
        w_hh = getattr(self, f"weight_hh_l{k}{sfx}").to(dtype)
        if not self.bias:
            return w_ih, None, w_hh, None
        if not self.two_biases:
            return w_ih, getattr(self, f"bias_l{k}{sfx}").to(dtype), w_hh, None
        b_ih = getattr(self, f"bias_ih_l{k}{sfx}").to(dtype)
        b_hh = getattr(self, f"bias_hh_l{k}{sfx}").to(dtype)
        if self.cell() == "gru":
            # b_hn stays inside the reset gate's product: n = tanh(x_n + r (W_hn h + b_hn))
            H = self.hidden_size
            return w_ih, b_ih + F.pad(b_hh[: 2 * H], (0, H)), w_hh, b_hh[2 * H :]
        return w_ih, b_ih + b_hh, w_hh, None

    def _decode_one_step(self, x: Tensor, states: tuple[Tensor, ...]) -> tuple[Tensor, Any]:
        """One token through every layer with torch's fused cell ops (``torch._VF``'s
        ``lstm_cell`` etc., the ops behind ``nn.LSTMCell``): the same function as the
        kernel, at a fraction of the per-call overhead, for single-token decoding."""
        op = _TORCH_CELLS[self.cell()]
        inp = x[:, 0]
        finals: list[list[Tensor]] = [[] for _ in states]
        for k in range(self.num_layers):
            w_ih = getattr(self, f"weight_ih_l{k}")
            w_hh = getattr(self, f"weight_hh_l{k}")
            b_ih = getattr(self, f"bias_ih_l{k}") if self.bias else None
            b_hh = getattr(self, f"bias_hh_l{k}") if self.bias else None
            if len(states) == 2:
                h, c = op(inp, (states[0][:, k], states[1][:, k]), w_ih, w_hh, b_ih, b_hh)
                finals[0].append(h)
                finals[1].append(c)
            else:
                h = op(inp, states[0][:, k], w_ih, w_hh, b_ih, b_hh)
                finals[0].append(h)
            inp = h
            if self.dropout > 0 and self.training and k + 1 < self.num_layers:
                inp = F.dropout(inp, self.dropout, training=True)
        if self.num_layers == 1:
            new = tuple(f[0].unsqueeze(1) for f in finals)
        else:
            new = tuple(torch.stack(f, 1) for f in finals)
        return inp.unsqueeze(1), (new[0] if len(new) == 1 else new)

    def _can_decode_with_torch_cells(
        self, x: Tensor, lengths: Tensor | None, cd: torch.dtype
    ) -> bool:
        return (
            x.shape[1] == 1
            and self.backend == "auto"  # an explicit backend is honoured, token by token too
            and lengths is None
            and self.num_directions == 1
            and self.num_heads == 1
            and self.two_biases
            and self.cell() in _TORCH_CELLS
            and x.dtype == self.weight_ih_l0.dtype == cd
            and not torch.is_autocast_enabled(x.device.type)
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
        cd = self.state_dtype()
        if self._can_decode_with_torch_cells(x, lengths, cd):
            states = (state,) if isinstance(state, Tensor) else tuple(state)
            if all(s.dtype == cd for s in states):
                return self._decode_one_step(x, states)
        H, D, G = self.hidden_size, self.num_directions, self.num_gates
        states = (state,) if isinstance(state, Tensor) else tuple(state)
        states = tuple(s.to(cd) for s in states)
        if mode == self.reference_mode and self._uses_cudnn(x.device):
            return self._forward_cudnn(x, states, lengths, cd)
        # Batch-major activations, as the caller gives them: the input projection is then
        # one GEMM over contiguous rows (a time-major projection of a batch-first x costs
        # a strided read, ~1.4x the GEMM's time measured), and the kernel reads gx at any
        # strides at the same speed.
        inp = x.to(cd)
        finals: list[list[Tensor]] = [[] for _ in states]
        for k in range(self.num_layers):
            params = [self._layer_params(k, sfx, cd) for sfx in self._suffixes()]
            w_ih = torch.cat([p[0] for p in params]) if D > 1 else params[0][0]
            b = None
            if self.bias:
                b = torch.cat([p[1] for p in params]) if D > 1 else params[0][1]
            gx_all = F.linear(inp, w_ih, b)  # (B, T, D*G*H)
            outs = []
            for d in range(D):
                idx = k * D + d
                gx = gx_all[..., d * G * H : (d + 1) * G * H]
                y, fin = self._sequence(
                    mode,
                    gx,
                    params[d][2],
                    tuple(s[:, idx] for s in states),
                    bias_hn=params[d][3],
                    lengths=lengths,
                    reverse=d == 1,
                )
                outs.append(y)
                for lst, f in zip(finals, fin):
                    lst.append(f)
            inp = torch.cat(outs, -1) if D > 1 else outs[0]
            if self.dropout > 0 and self.training and k + 1 < self.num_layers:
                inp = F.dropout(inp, self.dropout, training=True)
        new = tuple(torch.stack(lst, 1) for lst in finals)
        y = inp.to(x.dtype)
        return y, (new[0] if len(new) == 1 else new)

    def _sequence(
        self,
        mode: str,
        gx: Tensor,
        weight_hh: Tensor,
        state: tuple[Tensor, ...],
        *,
        bias_hn: Tensor | None,
        lengths: Tensor | None,
        reverse: bool,
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """One layer and direction over the sequence in ``mode`` (the time loop of
        :func:`rnnx.ops.rnn.rnn_sequence`; a subclass with more modes overrides this)."""
        return rnn_sequence(
            self.cell(),
            gx,
            weight_hh,
            state,
            bias_hn=bias_hn,
            lengths=lengths,
            reverse=reverse,
            num_heads=self.num_heads,
            # the setter validated it; 'cudnn' runs in _forward_cudnn, never here
            backend=self.backend,
        )

    def _forward_cudnn(
        self, x: Tensor, states: tuple[Tensor, ...], lengths: Tensor | None, cd: torch.dtype
    ) -> tuple[Tensor, Any]:
        """Every layer and direction in one call of torch's fused op (cuDNN on CUDA)."""
        weights: list[Tensor] = []
        for k in range(self.num_layers):
            for sfx in self._suffixes():
                names = [f"weight_ih_l{k}{sfx}", f"weight_hh_l{k}{sfx}"]
                if self.bias:
                    names += [f"bias_ih_l{k}{sfx}", f"bias_hh_l{k}{sfx}"]
                weights += [getattr(self, n).to(cd) for n in names]
        y, final = rnn_cudnn(
            self.cell(),
            x.to(cd),
            tuple(s.transpose(0, 1).contiguous() for s in states),
            weights,
            num_layers=self.num_layers,
            bidirectional=self.bidirectional,
            bias=self.bias,
            dropout=self.dropout,
            train=self.training,
            lengths=lengths,
        )
        new = tuple(f.transpose(0, 1) for f in final)
        return y.to(x.dtype), (new[0] if len(new) == 1 else new)
