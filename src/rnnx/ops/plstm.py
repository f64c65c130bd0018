"""pLSTM over a 2-D grid: Source, Transition and Mark gates on the grid's line graph.

"pLSTM: parallelizable Linear Source Transition Mark networks" (Pöppel, Freinschlag,
Schmied, Lin, Hochreiter; arXiv 2506.11997). A linear RNN on a directed acyclic graph
keeps its states on the graph's *edges*: a node takes the states of its incoming edges,
mixes them with a Transition matrix into the states of its outgoing edges, adds its own
input through a Source gate, and reads the incoming states out through a Mark gate. On
the 2-D grid every cell (i, j) has two incoming edges, from its left neighbour (l) and
from its top neighbour (u), and two outgoing ones, to the right (r) and down (d). With
matrix states ``k v^T`` per head as in mLSTM (arXiv 2405.04517):

    C^r_ij = T^{rl}_ij C^r_{i,j-1} + T^{ru}_ij C^d_{i-1,j} + S^r_ij k_ij v_ij^T
    C^d_ij = T^{dl}_ij C^r_{i,j-1} + T^{du}_ij C^d_{i-1,j} + S^d_ij k_ij v_ij^T
    y_ij   = q_ij^T (M^l_ij C^r_{i,j-1} + M^u_ij C^d_{i-1,j}) + D_ij (q_ij . k_ij) v_ij

(states left of column 0 and above row 0 are zero; T, S, M and D are scalars per head
and cell). rnnx adds one optional edge per cell, **time** (τ), for video: the cell's
state from the previous frame ``Z_ij`` comes in as a third incoming edge, and the cell
sends a third outgoing state ``Z'_ij`` on to the next frame, with the same gates:

    C^o_ij = T^{ol} C^r_{i,j-1} + T^{ou} C^d_{i-1,j} + T^{oτ} Z_ij + S^o k v^T,  o in {r, d, τ}
    y_ij   = q^T (M^l C^r_{i,j-1} + M^u C^d_{i-1,j} + M^τ Z_ij) + D (q . k) v

and ``Z' = C^τ``. With two edges (``source.shape[-1] == 2``) the op is the paper's 2-D
pLSTM in one orientation (from the top-left corner).

Stabilisation is the caller's: the op computes the recurrence for whatever gates it is
given. The paper's condition for long-range stability on a grid is that a state must not
grow along the combinatorially many paths between two cells, which holds when every
*column* of the transition matrix (the weights with which one incoming state is passed
to the outgoing edges) has an absolute sum <= 1; :class:`rnnx.layers.PLSTM2D` builds its
transitions that way (docs/plstm.md).

Two programs compute the same function:

* :func:`plstm_2d`: the parallel form. Cell (i, j) depends only on cells of the
  previous anti-diagonal i + j - 1, so the grid is skewed to ``(diagonal, row)`` and the
  H + W - 1 anti-diagonals are computed one after the other, every cell of a diagonal at
  once (vectorised over batch, heads and the rows of the diagonal); the read-out, the
  time edge and the direct term are then one batched product over the whole grid.
* :func:`plstm_2d_reference`: the oracle, a loop over the cells in row-major order
  following the equations above one cell at a time.

Not implemented from the paper: its hierarchical (log-depth) algorithm, transition
matrices larger than scalars per head, the other three orientations, and states on the
grid's borders for tiling one grid into chunks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnx._amp import fp32_under_autocast
from rnnx._checks import fmt_shape

__all__ = ["plstm_2d", "plstm_2d_reference"]


def _check(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    source: Tensor,
    transition: Tensor,
    mark: Tensor,
    direct: Tensor,
    state: Tensor | None,
) -> int:
    """Validate the arguments; return the number E of edges per cell (2 or 3)."""
    args = {
        "q": q,
        "k": k,
        "v": v,
        "source": source,
        "transition": transition,
        "mark": mark,
        "direct": direct,
    }
    for name, t in args.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: expected a tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {t.dtype}")
    if q.dim() != 5 or min(q.shape) < 1:
        raise ValueError(
            f"q: expected (batch, heads, height, width, d_key) with every size >= 1, "
            f"got shape {fmt_shape(q.shape)}"
        )
    B, N, H, W, K = q.shape
    if tuple(k.shape) != (B, N, H, W, K):
        raise ValueError(
            f"k: expected the shape of q, {fmt_shape(q.shape)}, got {fmt_shape(k.shape)}"
        )
    if v.dim() != 5 or tuple(v.shape[:4]) != (B, N, H, W) or v.shape[4] < 1:
        raise ValueError(
            f"v: expected ({B}, {N}, {H}, {W}, d_value), got shape {fmt_shape(v.shape)}"
        )
    E = source.shape[-1] if source.dim() == 5 else -1
    if source.dim() != 5 or tuple(source.shape[:4]) != (B, N, H, W) or E not in (2, 3):
        raise ValueError(
            f"source: expected ({B}, {N}, {H}, {W}, E) with E = 2 edges (right, down) or 3 "
            f"(right, down, time), got shape {fmt_shape(source.shape)}"
        )
    if tuple(transition.shape) != (B, N, H, W, E, E):
        raise ValueError(
            f"transition: expected {fmt_shape((B, N, H, W, E, E))} (outgoing edge, incoming "
            f"edge) for E = {E} edges, got {fmt_shape(transition.shape)}"
        )
    if tuple(mark.shape) != (B, N, H, W, E):
        raise ValueError(
            f"mark: expected {fmt_shape((B, N, H, W, E))} (one per incoming edge), "
            f"got {fmt_shape(mark.shape)}"
        )
    if tuple(direct.shape) != (B, N, H, W):
        raise ValueError(
            f"direct: expected {fmt_shape((B, N, H, W))}, got {fmt_shape(direct.shape)}"
        )
    V = v.shape[4]
    if state is not None:
        if E != 3:
            raise ValueError(
                "state: the incoming time-edge state needs E = 3 edges (right, down, time) "
                f"in source, transition and mark, got E = {E}"
            )
        if not isinstance(state, Tensor) or tuple(state.shape) != (B, N, H, W, K, V):
            got = fmt_shape(state.shape) if isinstance(state, Tensor) else type(state).__name__
            raise ValueError(
                f"state: expected {fmt_shape((B, N, H, W, K, V))} (a d_key x d_value matrix "
                f"per head and cell), got {got}"
            )
    return E


@fp32_under_autocast
def plstm_2d(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    source: Tensor,
    transition: Tensor,
    mark: Tensor,
    direct: Tensor,
    state: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """The 2-D pLSTM (arXiv 2506.11997) over a grid, one anti-diagonal at a time.

    Args:
        q, k: ``(batch, heads, height, width, d_key)``.
        v: ``(batch, heads, height, width, d_value)``.
        source: ``(batch, heads, height, width, E)``: S for the outgoing edges
            (right, down) with E = 2, (right, down, time) with E = 3.
        transition: ``(batch, heads, height, width, E, E)``: T[..., o, e] passes the
            incoming edge e (left, top[, time]) to the outgoing edge o.
        mark: ``(batch, heads, height, width, E)``: M for the incoming edges.
        direct: ``(batch, heads, height, width)``: D, the weight of the cell's own
            ``(q . k) v``.
        state: E = 3 only: ``(batch, heads, height, width, d_key, d_value)``, every
            cell's incoming time-edge state Z (None: zeros).

    Returns:
        ``(y, state)``: y ``(batch, heads, height, width, d_value)``; with E = 3 the
        outgoing time-edge states Z' (shape of ``state``), else None.
    """
    E = _check(q, k, v, source, transition, mark, direct, state)
    B, N, H, W, K = q.shape
    V = v.shape[-1]
    D = H + W - 1
    kv = k.unsqueeze(-1) * v.unsqueeze(-2)  # (B, N, H, W, K, V)
    # What a cell adds to its right and down edges besides its neighbours' states.
    add_r = source[..., 0, None, None] * kv
    add_d = source[..., 1, None, None] * kv
    if state is not None:
        add_r = add_r + transition[..., 0, 2, None, None] * state
        add_d = add_d + transition[..., 1, 2, None, None] * state

    # Skew: cell (i, j) -> (diagonal i + j, row i). Slots with j outside [0, W) get zero
    # gates and inputs, so their states stay zero: the zero states beside the borders.
    dev = q.device
    rows = torch.arange(H, device=dev)
    diag = torch.arange(D, device=dev)
    cols = diag.view(D, 1) - rows.view(1, H)  # (D, H)
    inside = (cols >= 0) & (cols < W)
    cols = cols.clamp(0, W - 1)
    ri = rows.view(1, H).expand(D, H)

    def skew(t: Tensor) -> Tensor:  # (B, N, H, W, ...) -> (B, N, D, H, ...), zero outside
        s = t[:, :, ri, cols]
        return s * inside.view(D, H, *([1] * (s.dim() - 4))).to(s.dtype)

    a_r, a_d = skew(add_r), skew(add_d)
    t2 = skew(transition[..., :2, :2])  # (B, N, D, H, 2, 2)
    t_rl, t_ru, t_dl, t_du = (t2[..., o, e, None, None] for o in (0, 1) for e in (0, 1))

    c_r = q.new_zeros(B, N, H, K, V)  # the right- and down-edge states of diagonal d - 1
    c_d = q.new_zeros(B, N, H, K, V)
    zero_row = q.new_zeros(B, N, 1, K, V)
    lefts, tops = [], []
    for d in range(D):
        left = c_r  # C^r of (i, d-1-i): same row, previous diagonal
        top = torch.cat([zero_row, c_d[:, :, :-1]], 2)  # C^d of (i-1, d-i): the row above
        lefts.append(left)
        tops.append(top)
        c_r = t_rl[:, :, d] * left + t_ru[:, :, d] * top + a_r[:, :, d]
        c_d = t_dl[:, :, d] * left + t_du[:, :, d] * top + a_d[:, :, d]

    # Unskew the incoming states: (i, j) <- (diagonal i + j, row i).
    di = (rows.view(H, 1) + torch.arange(W, device=dev).view(1, W)).expand(H, W)
    rj = rows.view(H, 1).expand(H, W)
    c_left = torch.stack(lefts, 2)[:, :, di, rj]  # (B, N, H, W, K, V)
    c_top = torch.stack(tops, 2)[:, :, di, rj]

    read = mark[..., 0, None, None] * c_left + mark[..., 1, None, None] * c_top
    if state is not None:
        read = read + mark[..., 2, None, None] * state
    y = torch.einsum("bnhwk,bnhwkv->bnhwv", q, read)
    y = y + (direct * (q * k).sum(-1)).unsqueeze(-1) * v
    if E == 2:
        return y, None
    out = (
        transition[..., 2, 0, None, None] * c_left
        + transition[..., 2, 1, None, None] * c_top
        + source[..., 2, None, None] * kv
    )
    if state is not None:
        out = out + transition[..., 2, 2, None, None] * state
    return y, out


@fp32_under_autocast
def plstm_2d_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    source: Tensor,
    transition: Tensor,
    mark: Tensor,
    direct: Tensor,
    state: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """:func:`plstm_2d` one cell at a time, in row-major order (the oracle): the
    equations of the module docstring as written. Same arguments and results."""
    E = _check(q, k, v, source, transition, mark, direct, state)
    B, N, H, W, K = q.shape
    V = v.shape[-1]
    zero = q.new_zeros(B, N, K, V)
    right: dict[tuple[int, int], Tensor] = {}
    down: dict[tuple[int, int], Tensor] = {}
    y_rows, z_rows = [], []
    for i in range(H):
        y_row, z_row = [], []
        for j in range(W):
            incoming = [right.get((i, j - 1), zero), down.get((i - 1, j), zero)]
            if E == 3:
                incoming.append(state[:, :, i, j] if state is not None else zero)
            qq, kk, vv = q[:, :, i, j], k[:, :, i, j], v[:, :, i, j]
            kv = torch.einsum("bnk,bnv->bnkv", kk, vv)
            outgoing = []
            for o in range(E):
                c = source[:, :, i, j, o, None, None] * kv
                for e in range(E):
                    c = c + transition[:, :, i, j, o, e, None, None] * incoming[e]
                outgoing.append(c)
            right[i, j], down[i, j] = outgoing[0], outgoing[1]
            read = sum(mark[:, :, i, j, e, None, None] * incoming[e] for e in range(E))
            y = torch.einsum("bnk,bnkv->bnv", qq, read)
            y = y + direct[:, :, i, j, None] * (qq * kk).sum(-1, keepdim=True) * vv
            y_row.append(y)
            if E == 3:
                z_row.append(outgoing[2])
        y_rows.append(torch.stack(y_row, 2))
        if E == 3:
            z_rows.append(torch.stack(z_row, 2))
    y_all = torch.stack(y_rows, 2)
    return y_all, (torch.stack(z_rows, 2) if E == 3 else None)
