"""Suggestions for mistyped names ("did you mean ...?"), shared by every registry and the CLI.

The comparison ignores case (``LSTM`` suggests ``lstm``, ``forda`` suggests ``FordA``)
and separators (``d-model`` suggests ``d_model``), and an exact match up to case and
separators always comes first.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def _norm(name: str) -> str:
    return str(name).lower().replace("-", "_")


def close_names(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` of ``candidates`` that look like ``name``, best first (case-insensitive)."""
    cands = list(dict.fromkeys(str(c) for c in candidates))
    by_norm: dict[str, list[str]] = {}
    for c in cands:
        by_norm.setdefault(_norm(c), []).append(c)
    key = _norm(name)
    out = list(by_norm.get(key, []))
    for m in difflib.get_close_matches(key, list(by_norm), n=n, cutoff=0.6):
        out.extend(c for c in by_norm[m] if c not in out)
    if not out:
        # A prefix or a part of a long name (``Ford`` for ``FordA``, ``vowels``).
        out = [c for c in cands if len(key) >= 3 and key in _norm(c)]
    return out[:n]


def did_you_mean(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """``"; did you mean 'x' or 'y'?"`` for the names closest to ``name``, or ``""``."""
    close = close_names(name, candidates, n)
    return f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
