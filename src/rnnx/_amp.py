"""Mixed precision: recurrences run in float32 under autocast.

Under ``torch.autocast`` (``--precision bf16-mixed``) matrix products inside an op would
run in bfloat16, and a state accumulated in bfloat16 (8 bits of mantissa) forgets what it
should remember; native kernels and FFTs have no bfloat16 path at all. rnnx therefore
follows the policy of mamba-ssm's and flash-linear-attention's ops (``custom_fwd`` with
float32 inputs): the projections around an op run in the autocast dtype, the op itself in
float32. Every public op is wrapped with :func:`fp32_under_autocast`; outside autocast
the wrapper only checks two flags and calls the op unchanged.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch.utils import _pytree

F = TypeVar("F", bound=Callable[..., Any])

_LOW = (torch.bfloat16, torch.float16)


def _autocast_devices(leaves: list[Any]) -> set[str]:
    types = {t.device.type for t in leaves if isinstance(t, torch.Tensor)}
    return {d for d in types if d in ("cpu", "cuda") and torch.is_autocast_enabled(d)}


def fp32_under_autocast(fn: F) -> F:
    """Decorate an op so that under autocast it runs with autocast off, its bfloat16 /
    float16 tensor arguments (nested in tuples, lists or dicts too) cast to float32."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        # Two thread-local flags: the common (no autocast) path costs well under a
        # microsecond, which matters for one-token decode steps.
        if not (torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda")):
            return fn(*args, **kwargs)
        devices = _autocast_devices(_pytree.tree_leaves((args, kwargs)))
        if not devices:
            return fn(*args, **kwargs)

        def up(t: Any) -> Any:
            if isinstance(t, torch.Tensor) and t.dtype in _LOW:
                return t.float()
            return t

        args, kwargs = _pytree.tree_map(up, (args, kwargs))
        with contextlib.ExitStack() as stack:
            for d in sorted(devices):
                stack.enter_context(torch.autocast(device_type=d, enabled=False))
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
