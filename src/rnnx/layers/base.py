"""The layer contract every rnnx layer follows, and the registry that names them.

.. code-block:: python

    layer = rnnx.layers.get("s4d")(d_model=128)
    state = layer.init_state(batch_size)          # documented shape, fp32 (or fp64)
    y, state = layer(x)                           # x: (B, L, d_model), batch-first
    y, state = layer(x, state=state)              # continue exactly where it stopped
    y, state = layer.step(x_chunk, state)         # x_chunk: (B, T>=1, d_model)
    y, state = layer(x, dt=dt)                    # continuous-time layers only
    layer.modes                                   # e.g. ("recurrent", "scan", "conv")
    layer.mode = "scan"                           # explicit; never switched silently
    layer.mode = "auto"                           # per device, see RecurrentLayer.auto_modes
    layer.backends, layer.backend                 # e.g. ("auto", "native", "torch"), "auto"
    layer.backend = "torch"                       # the implementation of the mode's ops

What the base class guarantees, so that layers only write the math:

* inputs are validated with errors that name the argument and the expected shape
  (wrong rank, wrong feature size, empty sequence or batch, non-float dtype,
  a state that does not match :meth:`init_state`, a ``dt`` given to a layer that is not
  continuous-time; ``lengths`` out of range and ``dt <= 0`` for CPU tensors in eager
  mode; NaN/inf, and those values on any device, when checks are on: no host
  synchronisation and no data-dependent branch otherwise, so ``torch.compile`` traces
  every layer whole);
* ``state=None`` starts from :meth:`init_state`;
* with ``lengths``, outputs at padded positions are zero, and (checked by the test
  matrix for every layer) the final state is the state after ``lengths[b]`` steps;
* :meth:`step` runs the layer's constant-memory mode (:attr:`step_mode`) on a chunk of
  any length >= 1, so prefill-then-decode needs no special path.

Modes name algorithms and backends name implementations, in one vocabulary for every
layer (:mod:`rnnx._vocab`, docs/contract.md); :func:`register` refuses other words.

A subclass sets :attr:`modes`, :attr:`default_mode`, :attr:`reference_mode` (and
:attr:`backends` when its ops have native kernels) and implements :meth:`init_state`
and :meth:`_forward`. :func:`register` adds it to the registry under a short name; the
test matrix then covers it automatically.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from rnnx._checks import (
    check_lengths,
    check_sequence_input,
    finite_checks_enabled,
    fmt_shape,
    length_mask,
    require_choice,
    require_finite,
    require_positive_int,
    value_checks_enabled,
)
from rnnx._names import did_you_mean
from rnnx._tree import State, flatten, leaf_paths
from rnnx._vocab import BACKENDS, MODES, OLD_BACKENDS, OLD_MODES, deprecated

__all__ = ["KINDS", "RecurrentLayer", "State", "create", "get", "names", "register", "registry"]

_log = logging.getLogger("rnnx.layers")


class RecurrentLayer(nn.Module):
    """Base class of every rnnx layer: one contract, several equivalent modes.

    Class attributes a subclass sets:

    * ``modes``: the algorithms this layer can compute its output with, e.g.
      ``("recurrent", "scan", "conv")``, words of the vocabulary
      (:data:`rnnx._vocab.MODES`). All compute the same function.
    * ``default_mode``: the mode a new instance uses (the fastest for training).
    * ``reference_mode``: the step-by-step mode the tests compare every other mode to.
    * ``step_mode``: the constant-memory mode :meth:`step` uses (default: the reference).
    * ``continuous_time``: whether ``forward(..., dt=...)`` is accepted.
    * ``auto_modes``: ``{device type: mode}``, the mode ``mode="auto"`` runs on a device
      of that type (other devices: ``default_mode``). A layer that has entries starts in
      ``"auto"``; ``layer.mode`` always names the mode that runs, resolved from the
      device of the layer's parameters when it is read (so after ``layer.to("cuda")``),
      never from the input; each change is logged (logger ``rnnx.layers``, level INFO).
    * ``backends``: the implementations :attr:`backend` may name
      (:data:`rnnx._vocab.BACKENDS`): ``("auto", "torch")`` for a layer with only
      PyTorch code; ``"native"`` where its ops have C++ kernels.
    * ``mode_aliases``: ``{old mode: (mode, backend or None)}``, old spellings that keep
      working for one release with a :class:`DeprecationWarning` (besides the general
      ones of :data:`rnnx._vocab.OLD_MODES`, e.g. ``"sequential"`` -> ``"recurrent"``).
    * ``family`` and ``paper`` (arXiv id): shown by ``rnnx list``.
    * ``kind``: what a time step is. ``"sequence"`` (every layer so far): a vector,
      ``x`` of shape ``(batch, length, d_model)``; ``"spatial"``: a feature map,
      ``x`` of shape ``(batch, time, d_model, height, width)`` and a state per pixel
      (:class:`rnnx.layers._spatial.SpatialLayer`, whose ``init_state`` takes
      ``size=(height, width)``). The contract is the same for both kinds.
    """

    modes: ClassVar[tuple[str, ...]] = ()
    default_mode: ClassVar[str] = ""
    reference_mode: ClassVar[str] = ""
    step_mode: ClassVar[str] = ""
    continuous_time: ClassVar[bool] = False
    auto_modes: ClassVar[dict[str, str]] = {}
    backends: ClassVar[tuple[str, ...]] = ("auto", "torch")
    mode_aliases: ClassVar[dict[str, tuple[str, str | None]]] = {}
    family: ClassVar[str] = ""
    kind: ClassVar[str] = "sequence"
    registry_name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    #: Relative tolerance at which the test matrix compares modes in float64.
    equivalence_rtol: ClassVar[float] = 1e-7

    def __init__(self, d_model: int, *, mode: str | None = None, backend: str = "auto") -> None:
        super().__init__()
        self.d_model = require_positive_int("d_model", d_model)
        #: Feature size of the outputs (d_model unless a layer documents otherwise).
        self.d_output = self.d_model
        self._mode = self.default_mode
        self._auto_mode = False
        self._auto_device: torch.device | None = None
        self._backend = "auto"
        if backend != "auto":
            self.backend = backend
        if mode is None:
            mode = "auto" if self.auto_modes else self.default_mode
        self.mode = mode

    # ------------------------------------------------------------------ modes

    @property
    def mode(self) -> str:
        """The mode :meth:`forward` uses; one of :attr:`modes`.

        After ``layer.mode = "auto"`` (the default of layers with :attr:`auto_modes`) this
        is the mode :meth:`resolve_mode` picks for the device of the layer's parameters;
        :attr:`mode_setting` keeps ``"auto"``.
        """
        if self._auto_mode:
            device = self._device()
            if device != self._auto_device:
                self._resolve_auto(device)
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        value = self._new_mode_name(value)
        if value == "auto" and self.auto_modes:
            self._auto_mode = True
            self._resolve_auto(self._device())
            return
        choices = (*self.modes, "auto") if self.auto_modes else self.modes
        self._mode = require_choice(f"mode (of {type(self).__name__})", value, choices)
        self._auto_mode = False

    def _new_mode_name(self, value: str) -> str:
        """``value``, or the mode an old spelling names now (one DeprecationWarning; an
        alias of :attr:`mode_aliases` may set :attr:`backend` too)."""
        alias = self.old_mode(value)
        if alias is None:
            return value
        mode, backend = alias
        new = f"mode={mode!r}" + (f" with backend={backend!r}" if backend else "")
        deprecated(f"mode (of {type(self).__name__})", value, new)
        if backend is not None:
            self.backend = backend
        return mode

    @classmethod
    def old_mode(cls, value: object) -> tuple[str, str | None] | None:
        """``(mode, backend or None)`` that an old mode name of this layer stands for
        (:attr:`mode_aliases`, else :data:`rnnx._vocab.OLD_MODES`), or None when ``value``
        is not one (a current mode, ``"auto"`` or an unknown word)."""
        if not isinstance(value, str) or value in cls.modes or value == "auto":
            return None
        alias = cls.mode_aliases.get(value)
        if alias is None and OLD_MODES.get(value) in cls.modes:
            alias = (OLD_MODES[value], None)
        return alias

    @property
    def mode_setting(self) -> str:
        """What was asked for: ``"auto"`` or an explicit mode (:attr:`mode` says what runs)."""
        return "auto" if self._auto_mode else self._mode

    @classmethod
    def resolve_mode(cls, device: torch.device | str) -> str:
        """The mode ``mode="auto"`` runs on ``device``: ``auto_modes[device type]``, else
        :attr:`default_mode`. Depends on the device type only."""
        return cls.auto_modes.get(torch.device(device).type, cls.default_mode)

    def _resolve_auto(self, device: torch.device) -> None:
        mode = self.resolve_mode(device)
        if mode != self._mode or self._auto_device is None:
            _log.info("%s: mode 'auto' runs %r on %s", type(self).__name__, mode, device.type)
        self._mode = mode
        self._auto_device = device

    @contextlib.contextmanager
    def using_mode(self, mode: str) -> Iterator[RecurrentLayer]:
        """``with layer.using_mode("recurrent"): ...`` sets the mode temporarily (and
        restores the backend, which an old mode name may set)."""
        old, old_backend = self.mode_setting, self.backend
        self.mode = mode
        try:
            yield self
        finally:
            self.mode = old
            self.backend = old_backend

    # ------------------------------------------------------------------ backends

    @property
    def backend(self) -> str:
        """The implementation of the ops of :attr:`mode`: one of :attr:`backends`.

        ``"auto"`` (the default) picks per device and dtype, never per value or length
        (:meth:`resolved_backend` says what); ``"torch"`` runs plain PyTorch everywhere;
        ``"native"`` the C++ kernels (CPU float32/float64; an error where they cannot
        run). Ops with only one implementation (e.g. a mode's step-by-step reference)
        run it whatever the backend. An old name (``"reference"``, ``"chunked"``) maps
        to ``"torch"`` with a :class:`DeprecationWarning`.
        """
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        what = f"backend (of {type(self).__name__})"
        new = OLD_BACKENDS.get(value) if isinstance(value, str) else None
        if new is not None and value not in self.backends and new in self.backends:
            deprecated(what, value, f"backend={new!r}")
            value = new
        self._check_backend(value)
        self._backend = require_choice(what, value, self.backends)

    def _check_backend(self, backend: str) -> None:
        """A layer's own reason to refuse a backend name, checked before the name is
        looked up in :attr:`backends` so that the error says why (e.g. ``"cudnn"`` only
        for the cells torch has); raise ``ValueError`` naming it. The base class has none."""

    def resolved_backend(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> str:
        """The implementation the ops of :attr:`mode` run for inputs on ``device``
        (default: the parameters' device) computing in ``dtype`` (default: the state
        dtype): an explicit :attr:`backend` as it is; ``"auto"`` gives ``"native"`` for
        CPU float32/float64 when the layer has native kernels and they build here (see
        :meth:`native_available`), else ``"torch"``. Depends on the device, the dtype
        and the build only."""
        if self.backend != "auto":
            return self.backend
        device = torch.device(device) if device is not None else self._device()
        dtype = dtype if dtype is not None else self.state_dtype()
        if (
            "native" in self.backends
            and device.type == "cpu"
            and dtype in (torch.float32, torch.float64)
            and self.native_available()
        ):
            return "native"
        return "torch"

    def native_available(self) -> bool:
        """Whether the native kernels of this layer's ops build and load here (False for
        a layer without ``"native"`` in :attr:`backends`)."""
        return False

    # ------------------------------------------------------------------ contract

    def init_state(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> State:
        """The state before the first step, for ``batch_size`` sequences.

        Each layer documents the shapes. States are float32 (float64 when the layer's
        parameters are float64, complex where the layer's state is complex) whatever
        the input dtype, and live on ``device`` (default: the parameters' device).
        """
        raise NotImplementedError

    def forward(
        self,
        x: Tensor,
        state: State | None = None,
        *,
        lengths: Tensor | None = None,
        dt: Tensor | float | None = None,
    ) -> tuple[Tensor, State]:
        """Run the layer over a sequence in :attr:`mode`.

        Args:
            x: ``(batch, length, d_model)``, length >= 1.
            state: the state to start from (from :meth:`init_state` or a previous
                call); None starts from :meth:`init_state`.
            lengths: ``(batch,)`` integers in [0, length]: sequence b is
                ``x[b, :lengths[b]]``; positions after it are padding. The returned
                state is the state after ``lengths[b]`` steps and outputs at padded
                positions are zero.
            dt: continuous-time layers only. The step size relative to the one the
                layer was trained with (1 = same sampling rate; 0.5 = twice as dense):
                a scalar, ``(batch,)`` (one step per sequence) or ``(batch, length)``
                (one step per time step: irregular sampling). Must be > 0.

        Returns:
            ``(y, state)``: ``y`` of shape ``(batch, length, d_output)`` and the state
            after the last (unpadded) step.
        """
        return self._run("x", x, state, mode=self.mode, lengths=lengths, dt=dt)

    def step(
        self, x_chunk: Tensor, state: State | None = None, *, dt: Tensor | float | None = None
    ) -> tuple[Tensor, State]:
        """Advance the state over a chunk ``(batch, T, d_model)``, T >= 1, in
        :attr:`step_mode` (constant memory per step). Prefill and decode alike."""
        mode = self.step_mode or self.reference_mode
        return self._run("x_chunk", x_chunk, state, mode=mode, lengths=None, dt=dt)

    def _forward(
        self,
        x: Tensor,
        state: State,
        *,
        mode: str,
        lengths: Tensor | None,
        dt: Tensor | None,
    ) -> tuple[Tensor, State]:
        """The layer's math in ``mode``, on validated inputs.

        ``dt`` arrives as None or a positive tensor broadcastable to ``(B, L)``
        (shape ``(1, 1)``, ``(B, 1)`` or ``(B, L)``). ``lengths`` is None or int64
        ``(B,)``; the returned state must be the state after ``lengths[b]`` steps.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers

    def state_dtype(self) -> torch.dtype:
        """float32, or float64 if the layer's parameters are float64."""
        # The layer's own parameters first: walking the module tree costs more than a
        # decode step of a small layer.
        for p in self._parameters.values():
            if p is not None and p.is_floating_point():
                return torch.promote_types(p.dtype, torch.float32)
        for p in self.parameters():
            if p.is_floating_point():
                return torch.promote_types(p.dtype, torch.float32)
        return torch.float32

    def _device(self) -> torch.device:
        # The first parameter or buffer (generators: no list of all of them per call).
        for t in self.parameters():
            return t.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    @classmethod
    def tiny_config(cls) -> dict[str, Any]:
        """Keyword arguments (besides ``d_model``) of a small instance, used by the
        test matrix, the smoke trainings and the docs."""
        return {}

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, mode={self.mode!r}" + self._backend_repr()

    def _backend_repr(self) -> str:
        """``", backend='torch'"`` for a backend other than ``"auto"``, else ``""``."""
        return "" if self.backend == "auto" else f", backend={self.backend!r}"

    # ------------------------------------------------------------------ validation

    def _run(
        self,
        arg: str,
        x: Tensor,
        state: State | None,
        *,
        mode: str,
        lengths: Any,
        dt: Any,
    ) -> tuple[Tensor, State]:
        x = self._check_input(arg, x)
        B, L = x.shape[0], x.shape[1]
        lengths_t = check_lengths(lengths, B, L, x.device)
        dt_t = self._check_dt(dt, B, L, x)
        if state is None:
            state = self.init_state(B, device=x.device, **self._state_kwargs(x))
        else:
            self._check_state(state, B, x)
        y, new_state = self._forward(x, state, mode=mode, lengths=lengths_t, dt=dt_t)
        if lengths_t is not None:
            mask = length_mask(lengths_t, L).reshape(B, L, *([1] * (y.dim() - 2)))
            y = torch.where(mask, y, torch.zeros((), dtype=y.dtype, device=y.device))
        return y, new_state

    def _check_input(self, arg: str, x: object) -> Tensor:
        """``x`` validated for this layer's :attr:`kind` (``(B, L, d_model)`` here)."""
        return check_sequence_input(arg, x, self.d_model)

    def _state_kwargs(self, x: Tensor) -> dict[str, Any]:
        """Keyword arguments of :meth:`init_state` that the input decides (none for a
        sequence layer; the frame size for a spatial one)."""
        return {}

    def _check_dt(self, dt: Any, B: int, L: int, x: Tensor) -> Tensor | None:
        if dt is None:
            return None
        name = type(self).__name__
        if not self.continuous_time:
            raise TypeError(
                f"dt: {name} is not a continuous-time layer, so it takes no step size; "
                "pass dt only to continuous-time layers (see `rnnx list`)"
            )
        if isinstance(dt, bool):
            raise TypeError(f"dt: expected a float or a tensor, got {dt!r}")
        if isinstance(dt, int | float):
            dt = torch.tensor(
                float(dt), dtype=torch.float64
            )  # no float32 rounding of a Python float
        if not isinstance(dt, Tensor):
            raise TypeError(f"dt: expected a float or a tensor, got {type(dt).__name__}")
        if not dt.is_floating_point():
            raise TypeError(f"dt: expected a floating-point tensor, got dtype {dt.dtype}")
        if dt.dim() == 0:
            dt = dt.reshape(1, 1)
        elif dt.dim() == 1 and dt.shape[0] == B:
            dt = dt.reshape(B, 1)
        elif dt.dim() == 2 and tuple(dt.shape) == (B, L):
            pass
        else:
            raise ValueError(
                f"dt: expected a scalar, shape ({B},) (one step per sequence) or "
                f"({B}, {L}) (one step per time step), got shape {fmt_shape(dt.shape)}"
            )
        if value_checks_enabled(dt) and (
            not bool(torch.isfinite(dt).all()) or bool((dt <= 0).any())
        ):
            raise ValueError("dt: expected finite step sizes > 0")
        return dt.to(device=x.device, dtype=self.state_dtype())

    def _expected_state(
        self, B: int, kwargs: dict[str, Any]
    ) -> tuple[State, Any, list[tuple[str, Tensor]]]:
        """``init_state(B, **kwargs)`` on the meta device, its tree spec and (path, leaf)
        pairs; cached per (batch size, mode, kwargs): a decode step checks its state every
        token, and rebuilding it costs more than the step of a small layer."""
        key = (B, self.mode, *sorted(kwargs.items()))
        cache = self.__dict__.setdefault("_rnnx_state_spec", {})
        hit = cache.get(key)
        if hit is None:
            expected = self.init_state(B, device="meta", **kwargs)
            exp_leaves, exp_spec = flatten(expected)
            hit = (expected, exp_spec, list(zip(leaf_paths(expected), exp_leaves)))
            if len(cache) > 8:
                cache.clear()
            cache[key] = hit
        return hit

    def _check_state(self, state: State, B: int, x: Tensor) -> None:
        kwargs = self._state_kwargs(x)
        expected, exp_spec, paths = self._expected_state(B, kwargs)
        got_leaves, got_spec = flatten(state)
        if got_spec != exp_spec:
            raise ValueError(
                f"state: expected the structure of {type(self).__name__}.init_state(): "
                f"{_describe(expected)}, got {_describe(state)}"
            )
        for (path, e), g in zip(paths, got_leaves):
            if not isinstance(g, Tensor):
                raise TypeError(f"{path}: expected a tensor, got {type(g).__name__}")
            if tuple(g.shape) != tuple(e.shape):
                call = ", ".join([f"batch_size={B}", *(f"{k}={v}" for k, v in kwargs.items())])
                raise ValueError(
                    f"{path}: expected shape {fmt_shape(e.shape)} (init_state({call})), "
                    f"got {fmt_shape(g.shape)}"
                )
            if g.is_complex() != e.is_complex() or not (g.is_floating_point() or g.is_complex()):
                kind = "complex" if e.is_complex() else "floating-point"
                raise TypeError(f"{path}: expected a {kind} tensor, got dtype {g.dtype}")
            if g.device != x.device:
                raise ValueError(f"{path}: expected device {x.device} (like x), got {g.device}")
            if finite_checks_enabled():
                require_finite(path, g)


def _describe(state: State) -> str:
    if isinstance(state, Tensor):
        return f"a tensor of shape {fmt_shape(state.shape)}"
    leaves, _ = flatten(state)
    shapes = ", ".join(
        fmt_shape(t.shape) if isinstance(t, Tensor) else type(t).__name__ for t in leaves
    )
    return f"{type(state).__name__} of {len(leaves)} [{shapes}]"


# ---------------------------------------------------------------------- registry

_REGISTRY: dict[str, type[RecurrentLayer]] = {}
#: The kinds of layer (:attr:`RecurrentLayer.kind`).
KINDS = ("sequence", "spatial")


def register(name: str):
    """Class decorator: add a layer to the registry under ``name`` (lowercase).

    Checks the class attributes of the contract, so a malformed layer fails at
    import rather than in a user's training run.
    """
    if not isinstance(name, str) or not name or name != name.lower():
        raise ValueError(f"name: expected a non-empty lowercase string, got {name!r}")

    def decorator(cls: type[RecurrentLayer]) -> type[RecurrentLayer]:
        if not (isinstance(cls, type) and issubclass(cls, RecurrentLayer)):
            raise TypeError(f"register({name!r}): expected a RecurrentLayer subclass, got {cls!r}")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"register: the name {name!r} is taken by {_REGISTRY[name].__name__}")
        if not cls.modes:
            raise ValueError(f"{cls.__name__}.modes: expected at least one mode")
        for attr in ("default_mode", "reference_mode"):
            value = getattr(cls, attr)
            if value not in cls.modes:
                raise ValueError(
                    f"{cls.__name__}.{attr}: expected one of {cls.modes}, got {value!r}"
                )
        if cls.step_mode and cls.step_mode not in cls.modes:
            raise ValueError(f"{cls.__name__}.step_mode: expected one of {cls.modes}")
        for device, mode in cls.auto_modes.items():
            if mode not in cls.modes:
                raise ValueError(
                    f"{cls.__name__}.auto_modes[{device!r}]: expected one of {cls.modes}, "
                    f"got {mode!r}"
                )
        _check_vocabulary(cls)
        require_choice(f"{cls.__name__}.kind", cls.kind, KINDS)
        cls.registry_name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def _check_vocabulary(cls: type[RecurrentLayer]) -> None:
    """Refuse mode and backend names outside the vocabulary (docs/contract.md)."""
    for mode in cls.modes:
        if mode not in MODES:
            hint = f" (now {OLD_MODES[mode]!r})" if mode in OLD_MODES else ""
            raise ValueError(
                f"{cls.__name__}.modes: {mode!r} is not a mode of the vocabulary{hint}; "
                f"modes name algorithms: {tuple(MODES)}"
            )
    if "auto" not in cls.backends or "torch" not in cls.backends:
        raise ValueError(f"{cls.__name__}.backends: expected 'auto' and 'torch' among them")
    for backend in cls.backends:
        if backend not in BACKENDS:
            raise ValueError(
                f"{cls.__name__}.backends: {backend!r} is not a backend of the vocabulary; "
                f"backends name implementations: {tuple(BACKENDS)}"
            )
    for old, (mode, alias_backend) in cls.mode_aliases.items():
        if mode not in cls.modes or (
            alias_backend is not None and alias_backend not in cls.backends
        ):
            raise ValueError(
                f"{cls.__name__}.mode_aliases[{old!r}]: expected a mode of {cls.modes} and "
                f"a backend of {cls.backends} or None, got {(mode, alias_backend)!r}"
            )


def get(name: str) -> type[RecurrentLayer]:
    """The layer class registered under ``name`` (e.g. ``"lstm"``, ``"s4d"``); a name not
    among the built-in layers is looked up in the ``rnnx.layers`` entry points."""
    from rnnx import _plugins

    if isinstance(name, str) and name not in _REGISTRY:
        _plugins.load_entry_points("layers")
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        hint = did_you_mean(str(name), list(_REGISTRY))
        raise ValueError(
            f"layer: no layer named {name!r}{hint} (known layers: {', '.join(names())})"
            + _plugins.failures("layers")
        ) from None


def names(kind: str | None = None) -> list[str]:
    """Every registered layer name, sorted (plugins included); with ``kind``
    (``"sequence"`` or ``"spatial"``, see :attr:`RecurrentLayer.kind`) only those."""
    from rnnx import _plugins

    if kind is not None:
        require_choice("kind", kind, KINDS)
    _plugins.load_entry_points("layers")
    return sorted(n for n, c in _REGISTRY.items() if kind is None or c.kind == kind)


def registry() -> dict[str, type[RecurrentLayer]]:
    """A copy of the name -> class mapping."""
    return dict(_REGISTRY)


def create(name: str, d_model: int, **kwargs: Any) -> RecurrentLayer:
    """``get(name)(d_model, **kwargs)``."""
    return get(name)(d_model, **kwargs)
