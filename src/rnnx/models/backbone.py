"""A stack of residual blocks around any registered layer (the "mixer").

Block (pre-norm, as in S4/Mamba/xLSTM stacks)::

    x = x + dropout(mixer(norm(x)))
    x = x + dropout(mlp(norm2(x)))        # optional, mlp_ratio > 0: GELU MLP or GLU

The backbone maps inputs to ``d_model`` (a linear encoder for real-valued sequences,
an embedding for token ids), applies ``n_layers`` blocks and a final norm. Its state
is the list of the blocks' states, so a backbone follows the layer contract too:
``forward`` with a carried state, and ``step`` for decoding.

Bidirectional (``bidirectional=True``, for tasks that read a whole sequence before
answering: classification, regression from a window): every block holds a second
mixer of the same layer that reads each sequence backwards, and the mixer branch is
the sum of the two directions, ``mixer(u) + rev(mixer_rev(rev(u)))``, where ``rev``
reverses the valid part of each sequence (its first ``lengths[b]`` steps) and leaves
the padding where it is. This is how LSSL and S4 read sequences for classification
(arXiv 2110.13985, 2111.00396: a kernel for each direction, outputs summed), done
for any registered layer. The backbone is then non-causal: no state passing, no
``step``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import torch
from torch import Tensor, nn

import rnnx.layers as layers
from rnnx._checks import length_mask, require_choice, require_positive_int


@dataclass
class BackboneConfig:
    """Configuration of a :class:`Backbone`."""

    layer: str = "s4d"
    """Registered name of the mixer layer (``rnnx list``)."""
    d_model: int = 64
    """Width of the residual stream."""
    n_layers: int = 2
    """Number of blocks."""
    d_input: int = 1
    """Features of the input sequence (the linear encoder maps them to d_model)."""
    vocab_size: int | None = None
    """If set, inputs are token ids in [0, vocab_size) and the encoder is an embedding
    (d_input is then ignored)."""
    layer_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments of the mixer (e.g. ``{"d_state": 64}``)."""
    mode: str | None = None
    """Mixer mode; None keeps the layer's default."""
    backend: str | None = None
    """Mixer backend (``layer.backend``); None keeps ``"auto"``."""
    mlp_ratio: float = 0.0
    """Hidden size of the per-block MLP as a multiple of d_model; 0 disables it."""
    glu: bool = False
    """Make the MLP a gated linear unit, ``W2 (silu(W1 x) ⊙ V x)`` (Shazeer 2020,
    arXiv 2002.05202), instead of ``W2 gelu(W1 x)``."""
    dropout: float = 0.0
    """Dropout on each residual branch."""
    norm: str = "layer"
    """``"layer"`` (LayerNorm) or ``"rms"`` (RMSNorm)."""
    bidirectional: bool = False
    """Add a backward mixer to every block and sum the two directions (module
    docstring); non-causal: no state passing, no ``step``."""

    def __post_init__(self) -> None:
        layers.get(self.layer)  # fails early with the list of known layers
        require_positive_int("d_model", self.d_model)
        require_positive_int("n_layers", self.n_layers)
        require_positive_int("d_input", self.d_input)
        if self.vocab_size is not None:
            require_positive_int("vocab_size", self.vocab_size)
        require_choice("norm", self.norm, ("layer", "rms"))
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: expected a value in [0, 1), got {self.dropout}")
        if self.mlp_ratio < 0:
            raise ValueError(f"mlp_ratio: expected >= 0, got {self.mlp_ratio}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reverse_valid(x: Tensor, lengths: Tensor | None) -> Tensor:
    """``x (B, L, ...)`` with the first ``lengths[b]`` steps of each sequence reversed and
    the padding after them left in place (all L steps reversed when ``lengths`` is None).

    Its own inverse: ``reverse_valid(reverse_valid(x, n), n) == x``.
    """
    if lengths is None:
        return x.flip(1)
    B, L = x.shape[:2]
    pos = torch.arange(L, device=x.device)[None]
    n = lengths.to(x.device)[:, None]
    idx = torch.where(pos < n, n - 1 - pos, pos)  # (B, L)
    return torch.gather(x, 1, idx.view(B, L, *([1] * (x.dim() - 2))).expand_as(x))


def _norm(kind: str, d: int) -> nn.Module:
    return nn.LayerNorm(d) if kind == "layer" else nn.RMSNorm(d)


class GLU(nn.Module):
    """``W2 (silu(W1 x) ⊙ V x)``: the SwiGLU feed-forward of arXiv 2002.05202."""

    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.w_in = nn.Linear(d_model, 2 * hidden)
        self.w_out = nn.Linear(hidden, d_model)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.w_in(x).chunk(2, dim=-1)
        return self.w_out(torch.nn.functional.silu(a) * b)


class Block(nn.Module):
    """Pre-norm residual block around one mixer layer (and an optional MLP)."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.norm = _norm(cfg.norm, cfg.d_model)
        self.mixer = self._make_mixer(cfg)
        self.bidirectional = cfg.bidirectional
        self.mixer_rev = self._make_mixer(cfg) if cfg.bidirectional else None
        self.dropout = nn.Dropout(cfg.dropout)
        self.mlp: nn.Module | None = None
        if cfg.mlp_ratio > 0:
            hidden = max(1, round(cfg.mlp_ratio * cfg.d_model))
            self.norm2 = _norm(cfg.norm, cfg.d_model)
            if cfg.glu:
                self.mlp = GLU(cfg.d_model, hidden)
            else:
                self.mlp = nn.Sequential(
                    nn.Linear(cfg.d_model, hidden), nn.GELU(), nn.Linear(hidden, cfg.d_model)
                )

    @staticmethod
    def _make_mixer(cfg: BackboneConfig) -> layers.RecurrentLayer:
        mixer = layers.create(cfg.layer, cfg.d_model, **cfg.layer_kwargs)
        if cfg.backend is not None:
            mixer.backend = cfg.backend
        if cfg.mode is not None:
            mixer.mode = cfg.mode
        if mixer.d_output != cfg.d_model:
            raise ValueError(
                f"layer_kwargs: the mixer {cfg.layer!r} outputs {mixer.d_output} features; "
                f"a residual block needs d_model={cfg.d_model}"
            )
        return mixer

    def _mlp(self, x: Tensor) -> Tensor:
        if self.mlp is not None:
            x = x + self.dropout(self.mlp(self.norm2(x)))
        return x

    def forward(self, x, state=None, *, lengths=None, dt=None):
        kw = {"lengths": lengths}
        if dt is not None:
            kw["dt"] = dt
        u = self.norm(x)
        if self.mixer_rev is None:
            h, state = self.mixer(u, state, **kw)
            return self._mlp(x + self.dropout(h)), state
        if state is not None:
            raise ValueError(
                "state: a bidirectional backbone is non-causal (its backward mixers read "
                "each sequence from the end), so it cannot continue from a state; call it "
                "on whole sequences with state=None"
            )
        h, _ = self.mixer(u, None, **kw)
        if isinstance(dt, Tensor) and dt.dim() == 2 and dt.shape[1] > 1:  # one per time step
            kw["dt"] = reverse_valid(dt, lengths)
        h_rev, _ = self.mixer_rev(reverse_valid(u, lengths), None, **kw)
        h = h + reverse_valid(h_rev, lengths)
        return self._mlp(x + self.dropout(h)), None

    def step(self, x, state=None):
        if self.mixer_rev is not None:
            raise RuntimeError(
                "step: a bidirectional backbone is non-causal (its backward mixers read each "
                "sequence from the end), so step-by-step decoding is not defined; build it "
                "with bidirectional=False to decode"
            )
        h, state = self.mixer.step(self.norm(x), state)
        return self._mlp(x + self.dropout(h)), state


class Backbone(nn.Module):
    """Encoder, ``n_layers`` blocks, final norm: ``(B, L, d_input) -> (B, L, d_model)``.

    With ``config.vocab_size`` the input is int64 token ids ``(B, L)`` and the encoder
    an embedding.
    """

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.config = cfg
        self.encoder: nn.Module
        if cfg.vocab_size is not None:
            self.encoder = nn.Embedding(cfg.vocab_size, cfg.d_model)
        else:
            self.encoder = nn.Linear(cfg.d_input, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = _norm(cfg.norm, cfg.d_model)

    def _blocks(self) -> Iterable[Block]:
        return cast("Iterable[Block]", self.blocks)  # a ModuleList of Blocks (__init__)

    def init_state(self, batch_size: int, **kw) -> list:
        return [b.mixer.init_state(batch_size, **kw) for b in self._blocks()]

    def encode(self, x: Tensor) -> Tensor:
        """The encoder, with a clear error for token ids out of range or wrong dtypes."""
        if self.config.vocab_size is not None:
            if x.dtype not in (torch.int64, torch.int32) or x.dim() != 2:
                raise TypeError(
                    f"x: expected int64 token ids of shape (batch, length) for a model with "
                    f"vocab_size={self.config.vocab_size}, got dtype {x.dtype}, shape "
                    f"{tuple(x.shape)}"
                )
            if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.config.vocab_size):
                raise ValueError(
                    f"x: expected token ids in [0, {self.config.vocab_size}), got values in "
                    f"[{int(x.min())}, {int(x.max())}]"
                )
        return self.encoder(x)

    def forward(self, x: Tensor, state: list | None = None, *, lengths=None, dt=None):
        states = [None] * len(self.blocks) if state is None else state
        h = self.encode(x)
        new = []
        for block, s in zip(self.blocks, states):
            h, s = block(h, s, lengths=lengths, dt=dt)
            new.append(s)
        return self.norm(h), new

    def step(self, x: Tensor, state: list | None = None):
        states = [None] * len(self.blocks) if state is None else state
        h = self.encode(x)
        new = []
        for block, s in zip(self._blocks(), states):
            h, s = block.step(h, s)
            new.append(s)
        return self.norm(h), new


def pool(h: Tensor, lengths: Tensor | None, how: str) -> Tensor:
    """``(B, L, D) -> (B, D)``: the last valid step, or the mean over valid steps."""
    B, L, _ = h.shape
    if how == "last":
        idx = (lengths - 1).clamp(min=0) if lengths is not None else torch.full((B,), L - 1)
        return h[torch.arange(B, device=h.device), idx.to(h.device)]
    if lengths is None:
        return h.mean(1)
    mask = length_mask(lengths, L).to(h.dtype)
    return (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
