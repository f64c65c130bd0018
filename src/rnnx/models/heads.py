"""Task heads on top of a :class:`~rnnx.models.backbone.Backbone`.

* :class:`SequenceClassifier` — one label per sequence (pooling over valid steps);
* :class:`SequenceRegressor` — real-valued targets per sequence (forecasting: the
  next ``d_output`` values) or per step (``per_step=True``);
* :class:`StepClassifier` — one label per step (token tagging: MQAR, copying, parity);
* :class:`LanguageModel` — next-token prediction with :meth:`LanguageModel.generate`,
  which prefills the prompt with the layers' parallel mode and decodes with ``step``
  (constant memory per token).

Every head maps ``(x, lengths=None)`` to its output tensor; :func:`build_model`
picks the head for a task's kind.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnx._checks import require_choice, require_positive_int
from rnnx.models.backbone import Backbone, BackboneConfig, pool
from rnnx.models.vision import ImageClassifier, PatchScanConfig, patch_scan_config


class SequenceClassifier(nn.Module):
    """One label per sequence: backbone, pooling over time (masked by ``lengths``), linear.

    Args:
        config: the backbone.
        n_classes: number of classes.
        pooling: ``"mean"`` (default) or ``"last"`` (the last valid step).
    """

    def __init__(self, config: BackboneConfig, n_classes: int, pooling: str = "mean") -> None:
        super().__init__()
        require_positive_int("n_classes", n_classes)
        self.pooling = require_choice("pooling", pooling, ("mean", "last"))
        self.backbone = Backbone(config)
        self.head = nn.Linear(config.d_model, n_classes)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``(B, L, d_input)`` -> logits ``(B, n_classes)``."""
        h, _ = self.backbone(x, lengths=lengths)
        return self.head(pool(h, lengths, self.pooling))


class SequenceRegressor(nn.Module):
    """Real-valued outputs: ``(B, d_output)`` per sequence, or ``(B, L, d_output)`` per step.

    For forecasting, the backbone reads the context window and the pooled state
    (``pooling="last"``: the state after the last step) is mapped to the next
    ``d_output`` values of the target (a direct multi-horizon forecast).

    ``instance_norm=c`` (forecasting a continuation of input channel ``c``) normalises
    each input window by its own mean and standard deviation per channel (over its
    valid steps) and maps the outputs back with channel ``c``'s: the reversible instance
    normalisation of RevIN (Kim et al., ICLR 2022), without its affine parameters. The
    model then forecasts the shape of what follows, and a level or scale shift between
    training and test periods does not reach it.

    ``linear_skip=(c, n)`` adds to the outputs a linear map of input channel ``c``'s
    ``n`` steps (the whole window, after the instance normalisation if it is on):
    DLinear's "Linear" forecaster (Zeng et al., arXiv 2205.13504), a strong baseline on
    long horizons, inside the model; the backbone's head then learns what a linear
    map of the past misses. It starts at zero, so the model starts as the backbone
    alone. Needs windows of exactly ``n`` steps.

    Several targets: ``c`` may be a list of K input channels, the outputs then being
    time-major (``d_output = horizon * K``, output ``t * K + k`` continues channel
    ``c[k]``); each output is mapped back with its own channel's statistics, and the
    linear map (one ``n -> horizon`` map shared by the K channels, DLinear's default)
    reads each channel's own window.
    """

    def __init__(
        self,
        config: BackboneConfig,
        d_output: int,
        pooling: str = "last",
        *,
        per_step: bool = False,
        instance_norm: int | list[int] | None = None,
        linear_skip: tuple[int | list[int], int] | None = None,
    ) -> None:
        super().__init__()
        require_positive_int("d_output", d_output)
        self.pooling = require_choice("pooling", pooling, ("mean", "last"))
        self.per_step = per_step
        self.skip: nn.Linear | None = None
        self.skip_channels: list[int] = []
        if linear_skip is not None:
            channels, length = _channels(linear_skip[0]), linear_skip[1]
            bad = per_step or not channels or d_output % len(channels) != 0
            if bad or not all(0 <= c < config.d_input for c in channels):
                raise ValueError(
                    f"linear_skip: expected (input channel(s) in [0, {config.d_input}), window "
                    f"length) for a per-sequence head whose d_output ({d_output}) is a "
                    f"multiple of the number of channels, got {tuple(linear_skip)}"
                )
            require_positive_int("linear_skip length", length)
            self.skip_channels = channels
            self.skip = nn.Linear(int(length), d_output // len(channels))
            nn.init.zeros_(self.skip.weight)
            nn.init.zeros_(self.skip.bias)
        norm_channels = _channels(instance_norm) if instance_norm is not None else []
        if instance_norm is not None and (
            not norm_channels
            or not all(0 <= c < config.d_input for c in norm_channels)
            or d_output % len(norm_channels) != 0
        ):
            raise ValueError(
                f"instance_norm: expected the index of an input channel in [0, "
                f"{config.d_input}) (or a list of them dividing d_output {d_output}), "
                f"got {instance_norm}"
            )
        self.instance_norm = instance_norm
        self.norm_channels = norm_channels
        self.backbone = Backbone(config)
        self.head = nn.Linear(config.d_model, d_output)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        if self.norm_channels:
            mask = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device)
            if lengths is not None:
                mask = (torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None]).to(
                    x.dtype
                )
            n = mask.sum(1, keepdim=True).clamp(min=1)[..., None]  # (B, 1, 1)
            mean = (x * mask[..., None]).sum(1, keepdim=True) / n
            var = (((x - mean) * mask[..., None]) ** 2).sum(1, keepdim=True) / n
            std = (var + 1e-5).sqrt()
            x = (x - mean) / std * mask[..., None]
        h, _ = self.backbone(x, lengths=lengths)
        out = self.head(h) if self.per_step else self.head(pool(h, lengths, self.pooling))
        if self.skip is not None:
            if x.shape[1] != self.skip.in_features or lengths is not None:
                raise ValueError(
                    f"x: a linear_skip head reads windows of exactly {self.skip.in_features} "
                    f"steps (no lengths), got {x.shape[1]} steps"
                )
            window = x[..., self.skip_channels].to(self.skip.weight.dtype)  # (B, n, K)
            lin = self.skip(window.transpose(1, 2))  # (B, K, horizon)
            out = out + lin.transpose(1, 2).reshape(len(x), -1)  # time-major
        if self.norm_channels:
            k = len(self.norm_channels)
            sd, mu = std[:, 0, self.norm_channels], mean[:, 0, self.norm_channels]  # (B, K)
            if self.per_step:
                shape: tuple[int, ...] = (len(x), 1, -1, k)
                out = (out.view(*out.shape[:2], -1, k) * sd.view(shape) + mu.view(shape)).flatten(2)
            else:
                shape = (len(x), 1, k)
                out = (out.view(len(x), -1, k) * sd.view(shape) + mu.view(shape)).flatten(1)
        return out


def _channels(c: int | list[int] | tuple[int, ...]) -> list[int]:
    """One input channel or a list of them, as a list of ints."""
    return [int(v) for v in c] if isinstance(c, list | tuple) else [int(c)]


class StepClassifier(nn.Module):
    """One label per step: ``(B, L[, d_input])`` -> logits ``(B, L, n_classes)``."""

    def __init__(self, config: BackboneConfig, n_classes: int) -> None:
        super().__init__()
        require_positive_int("n_classes", n_classes)
        self.backbone = Backbone(config)
        self.head = nn.Linear(config.d_model, n_classes)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        h, _ = self.backbone(x, lengths=lengths)
        return self.head(h)


class LanguageModel(StepClassifier):
    """Next-token prediction over ``config.vocab_size`` tokens, with :meth:`generate`."""

    def __init__(self, config: BackboneConfig) -> None:
        if config.vocab_size is None:
            raise ValueError("config.vocab_size: a language model needs a vocabulary size")
        if config.bidirectional:
            raise ValueError(
                "config.bidirectional: a language model predicts the next token, so its "
                "backbone must be causal; build it with bidirectional=False"
            )
        super().__init__(config, config.vocab_size)

    @torch.no_grad()
    def generate(
        self,
        prompt: Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Continue ``prompt`` (int64 ``(B, T)``, T >= 1) by ``max_new_tokens`` tokens.

        The prompt is read in one parallel pass (each layer's training mode), which
        returns every layer's state; then each new token costs one
        :meth:`~rnnx.models.backbone.Backbone.step` on a chunk of length 1, so memory
        does not grow with the length generated. ``temperature=0`` is greedy
        (argmax); otherwise tokens are sampled from ``softmax(logits / temperature)``
        restricted to the ``top_k`` most likely (all if None).

        Returns the new tokens, int64 ``(B, max_new_tokens)``. Runs in eval mode.
        """
        require_positive_int("max_new_tokens", max_new_tokens, allow_zero=True)
        if prompt.dim() != 2 or prompt.shape[1] < 1:
            raise ValueError(
                f"prompt: expected int64 token ids of shape (batch, length >= 1), got shape "
                f"{tuple(prompt.shape)}"
            )
        if temperature < 0:
            raise ValueError(f"temperature: expected >= 0, got {temperature}")
        if top_k is not None:
            require_positive_int("top_k", top_k)
        was_training = self.training
        self.eval()
        try:
            h, state = self.backbone(prompt)
            logits = self.head(h[:, -1])
            out = []
            for _ in range(max_new_tokens):
                token = _sample(logits, temperature, top_k, generator)
                out.append(token)
                h, state = self.backbone.step(token[:, None], state)
                logits = self.head(h[:, -1])
        finally:
            self.train(was_training)
        if not out:
            return prompt.new_zeros(prompt.shape[0], 0)
        return torch.stack(out, 1)


def _sample(logits: Tensor, temperature: float, top_k: int | None, generator) -> Tensor:
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def build_model(
    kind: str,
    config: BackboneConfig,
    *,
    n_classes: int = 0,
    d_output: int = 0,
    pooling: str = "mean",
    instance_norm: int | list[int] | None = None,
    linear_skip: tuple[int | list[int], int] | None = None,
    patch_scan: PatchScanConfig | dict | None = None,
    patch_size: int | None = None,
) -> nn.Module:
    """The head for a task kind (see :data:`rnnx.data.base.KINDS`) on a backbone
    (``instance_norm``, ``linear_skip``: regression only, see :class:`SequenceRegressor`;
    ``patch_scan``: images, classification only, see
    :class:`~rnnx.models.vision.ImageClassifier`; ``patch_size``: video prediction
    only, see :class:`rnnx.models.VideoPredictor`, default
    :data:`rnnx.models.video.DEFAULT_PATCH_SIZE`)."""
    if patch_scan is not None:
        if kind != "classification":
            raise ValueError(
                f"patch_scan: only image classification reads patch scans, not {kind!r}"
            )
        return ImageClassifier(config, patch_scan_config(patch_scan), n_classes)
    if (instance_norm is not None or linear_skip is not None) and kind != "regression":
        raise ValueError(
            f"instance_norm, linear_skip: only regression heads take them, not {kind!r}"
        )
    if patch_size is not None and kind != "video_prediction":
        raise ValueError(f"patch_size: only video prediction models take it, not {kind!r}")
    if kind in ("video_prediction", "video_classification"):
        from rnnx.models.video import DEFAULT_PATCH_SIZE, VideoClassifier, VideoPredictor

        if kind == "video_prediction":
            return VideoPredictor(config, DEFAULT_PATCH_SIZE if patch_size is None else patch_size)
        return VideoClassifier(config, n_classes, pooling=pooling)
    if kind == "classification":
        return SequenceClassifier(config, n_classes, pooling=pooling)
    if kind == "tagging":
        return StepClassifier(config, n_classes)
    if kind == "lm":
        return LanguageModel(config)
    if kind == "regression":
        return SequenceRegressor(
            config,
            d_output,
            pooling=pooling,
            instance_norm=instance_norm,
            linear_skip=linear_skip,
        )
    raise ValueError(
        "kind: expected classification, tagging, lm, regression, video_classification or "
        f"video_prediction, got {kind!r}"
    )
