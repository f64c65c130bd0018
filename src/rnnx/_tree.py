"""Layer states as trees of tensors.

A layer's state is a tensor, or a (named) tuple / list / dict of tensors (LSTM:
``(h, c)``; Mamba: ``(conv_state, ssm_state)``). These helpers let the contract,
the tests and the trainer treat every state alike. They wrap ``torch.utils._pytree``
so that a change of that API is fixed in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor
from torch.utils import _pytree

State = Any  # Tensor | tuple | list | dict of Tensors, nested


def leaves(tree: State) -> list[Tensor]:
    """The tensors of a state, in a fixed order."""
    return _pytree.tree_leaves(tree)


def tree_map(fn: Callable[[Tensor], Any], tree: State) -> State:
    """Apply ``fn`` to every tensor of a state, keeping its structure."""
    return _pytree.tree_map(fn, tree)


def tree_map2(fn: Callable[[Tensor, Tensor], Any], a: State, b: State) -> State:
    """Apply ``fn`` leafwise to two states of the same structure."""
    la, spec = _pytree.tree_flatten(a)
    lb, spec_b = _pytree.tree_flatten(b)
    if spec != spec_b:
        raise ValueError(f"states differ in structure: {spec} vs {spec_b}")
    return _pytree.tree_unflatten([fn(x, y) for x, y in zip(la, lb)], spec)


def flatten(tree: State) -> tuple[list[Any], Any]:
    """``(leaves, spec)``; ``unflatten(leaves, spec)`` rebuilds the state."""
    return _pytree.tree_flatten(tree)


def unflatten(values: list[Any], spec: Any) -> State:
    return _pytree.tree_unflatten(values, spec)


def leaf_paths(tree: State) -> list[str]:
    """Human-readable names of the leaves (``state[0]``, ``state['conv']``) for errors."""
    flat, _ = _pytree.tree_flatten_with_path(tree)
    out = []
    for path, _leaf in flat:
        name = "state"
        for key in path:
            name += str(key)  # KeyEntry / SequenceKey render as ['k'] / [i]
        out.append(name)
    return out
