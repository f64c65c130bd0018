"""The structure of a transition matrix A_t: diagonal, block-diagonal or dense.

The same three structures are used by :func:`rnnx.ops.scan` (how A_t is stored)
and by :func:`rnnx.ops.newton_solve` (which Jacobian a nonlinear cell declares).
The structure decides the cost of one step: O(n) for diagonal, O(n k) for
k x k blocks, O(n^2) for dense.

Storage, for a state of ``n`` features stored as ``(..., n)``:

* ``Diagonal()``: A_t has the state's shape ``(..., n)``; real or complex.
* ``BlockDiagonal(k)``: the state is read as ``(..., n // k, k)`` groups and A_t is
  ``(..., n // k, k, k)`` (row-major: ``A[..., i, j]`` maps component j to i).
* ``Dense()``: A_t is ``(..., n, n)``; this is ``BlockDiagonal(n)`` with one block.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Diagonal:
    """A_t = diag(a_t); the transition is elementwise."""

    def __str__(self) -> str:
        return "Diagonal()"


@dataclass(frozen=True)
class BlockDiagonal:
    """A_t is block-diagonal with ``k x k`` blocks (``k >= 1``)."""

    k: int

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"BlockDiagonal.k: expected an int >= 1, got {self.k!r}")

    def __str__(self) -> str:
        return f"BlockDiagonal({self.k})"


@dataclass(frozen=True)
class Dense:
    """A_t is a full matrix over the state."""

    def __str__(self) -> str:
        return "Dense()"


Structure = Diagonal | BlockDiagonal | Dense

_NAMES: dict[str, type[Diagonal] | type[Dense]] = {"diagonal": Diagonal, "dense": Dense}


def as_structure(value: object) -> Structure:
    """Accept a structure object or the strings ``"diagonal"`` / ``"dense"``.

    Block-diagonal needs its block size, so it is only given as ``BlockDiagonal(k)``.
    """
    if isinstance(value, Diagonal | BlockDiagonal | Dense):
        return value
    if isinstance(value, str) and value in _NAMES:
        return _NAMES[value]()
    raise ValueError(
        "structure: expected Diagonal(), BlockDiagonal(k), Dense(), 'diagonal' or 'dense', "
        f"got {value!r}"
    )
