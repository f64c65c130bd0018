"""pLSTM over 2-D grids (frames of them): Source, Transition and Mark gates on the
grid's line graph, with an optional time edge from each cell to itself in the next frame.

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
and cell). That is the paper's 2-D pLSTM in one orientation (from the top-left corner),
and what the ops compute with E = 2 edges, every frame a grid of its own.

rnnx adds, with E = 3, a **time** edge (τ) for video: the cell (t, i, j) has a third
incoming edge, the state ``C^τ_{t-1,i,j}`` its pixel sent from the previous frame (for
t = 0: the given ``state``), and a third outgoing one, ``C^τ_{t,i,j}``, with the same
gates:

    C^o = T^{ol} C^r_{t,i,j-1} + T^{ou} C^d_{t,i-1,j} + T^{oτ} C^τ_{t-1,i,j} + S^o k v^T,
                                                                      o in {r, d, τ}
    y   = q^T (M^l C^r_{t,i,j-1} + M^u C^d_{t,i-1,j} + M^τ C^τ_{t-1,i,j}) + D (q . k) v

and the returned state is the time edge out of the last frame, ``C^τ_{T-1}``.

Stabilisation is the caller's: the ops compute the recurrence for whatever gates they
are given. On a grid the number of paths between two cells grows combinatorially (with
unit transitions the state reaching (i, j) from the corner is binomial(i + j, i)), so
the transitions must not pass on more than they receive: if every *column* of the
transition matrix (the weights with which one incoming state is passed to the outgoing
edges) sums in absolute value to at most λ, the states crossing any plane t + i + j
sum (in norm) to at most λ times those crossing the plane before plus the sources. The
paper's P-mode uses columns that sum to one; :class:`rnnx.layers.PLSTM2D` uses a
softmax split scaled by a retention below one (docs/plstm.md).

Two programs compute the same function:

* :func:`plstm_2d`: the parallel form, a wavefront. Cell (t, i, j) depends only on cells
  with t + i + j one smaller, so the planes p = t + i + j are computed one after the
  other, every cell of a plane at once: a plane is held as one ``(height, width)`` frame
  whose pixel (i, j) is the cell of frame p - i - j. T + H + W - 2 vectorised steps in all
  (vectorised over batch, heads and both grid dimensions), instead of T * H * W cells;
  the read-out is one batched product over every cell afterwards.
* :func:`plstm_2d_reference`: the oracle, loops over frames, rows and columns following
  the equations above one cell at a time.

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
    if q.dim() != 6 or min(q.shape) < 1:
        raise ValueError(
            "q: expected (batch, heads, frames, height, width, d_key) with every size >= 1, "
            f"got shape {fmt_shape(q.shape)}"
        )
    B, N, T, H, W, K = q.shape
    cells = (B, N, T, H, W)
    if tuple(k.shape) != tuple(q.shape):
        raise ValueError(
            f"k: expected the shape of q, {fmt_shape(q.shape)}, got {fmt_shape(k.shape)}"
        )
    if v.dim() != 6 or tuple(v.shape[:5]) != cells or v.shape[5] < 1:
        raise ValueError(
            f"v: expected {fmt_shape(cells)[:-1]}, d_value), got shape {fmt_shape(v.shape)}"
        )
    E = source.shape[-1] if source.dim() == 6 else -1
    if source.dim() != 6 or tuple(source.shape[:5]) != cells or E not in (2, 3):
        raise ValueError(
            f"source: expected {fmt_shape(cells)[:-1]}, E) with E = 2 edges (right, down) "
            f"or 3 (right, down, time), got shape {fmt_shape(source.shape)}"
        )
    if tuple(transition.shape) != (*cells, E, E):
        raise ValueError(
            f"transition: expected {fmt_shape((*cells, E, E))} (outgoing edge, incoming "
            f"edge) for E = {E} edges, got {fmt_shape(transition.shape)}"
        )
    if tuple(mark.shape) != (*cells, E):
        raise ValueError(
            f"mark: expected {fmt_shape((*cells, E))} (one per incoming edge), "
            f"got {fmt_shape(mark.shape)}"
        )
    if tuple(direct.shape) != cells:
        raise ValueError(f"direct: expected {fmt_shape(cells)}, got {fmt_shape(direct.shape)}")
    V = v.shape[5]
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
                f"per head and pixel), got {got}"
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
    """The 2-D pLSTM (arXiv 2506.11997) over frames of grids, by a wavefront over the
    planes t + i + j (module docstring).

    Args:
        q, k: ``(batch, heads, frames, height, width, d_key)``.
        v: ``(batch, heads, frames, height, width, d_value)``.
        source: ``(batch, heads, frames, height, width, E)``: S of the outgoing edges,
            (right, down) with E = 2 (the paper's grid; frames are independent) or
            (right, down, time) with E = 3 (rnnx's time edge links the frames).
        transition: ``(batch, heads, frames, height, width, E, E)``: T[..., o, e] passes
            the incoming edge e (left, top[, time]) to the outgoing edge o.
        mark: ``(batch, heads, frames, height, width, E)``: M of the incoming edges.
        direct: ``(batch, heads, frames, height, width)``: D, the weight of the cell's
            own ``(q . k) v``.
        state: E = 3 only: ``(batch, heads, height, width, d_key, d_value)``, the time
            edge into the first frame, per pixel (None: zeros).

    Returns:
        ``(y, state)``: y ``(batch, heads, frames, height, width, d_value)``; with E = 3
        the time edge out of the last frame (the shape of ``state``), else None.
    """
    E = _check(q, k, v, source, transition, mark, direct, state)
    B, N, T, H, W, K = q.shape
    V = v.shape[-1]
    if E == 2:  # no time edge: every frame its own grid (zero weights on the time edge)
        source = torch.nn.functional.pad(source, (0, 1))
        transition = torch.nn.functional.pad(transition, (0, 1, 0, 1))
        mark = torch.nn.functional.pad(mark, (0, 1))
    # Frame 0 of the wavefront is a virtual one whose cells only send the initial state
    # on their time edges; frames 1..T are the input's.
    kv = k.unsqueeze(-1) * v.unsqueeze(-2)  # (B, N, T, H, W, K, V)
    z0 = q.new_zeros(B, N, H, W, K, V) if state is None else state
    start = torch.stack([torch.zeros_like(z0), torch.zeros_like(z0), z0], -3).unsqueeze(2)
    add_cells = torch.cat([start, source[..., None, None] * kv.unsqueeze(-3)], 2)
    mix_cells = torch.cat([transition.new_zeros(B, N, 1, H, W, 3, 3), transition], 2)
    F = T + 1  # frames of the wavefront
    P = F + H + W - 2  # the last plane: the time edge out of the last frame comes in there

    # Plane layout: plane p holds, at pixel (i, j), the cell (p - i - j, i, j); outside
    # frames [0, F) its gates and inputs are zero, so its states stay zero.
    dev = q.device
    ii = torch.arange(H, device=dev).view(1, H, 1)
    jj = torch.arange(W, device=dev).view(1, 1, W)
    frame = torch.arange(P + 1, device=dev).view(-1, 1, 1) - ii - jj  # (P+1, H, W)
    inside = (frame >= 0) & (frame < F)
    frame_c = frame.clamp(0, F - 1)
    ii, jj = ii.expand_as(frame), jj.expand_as(frame)

    def to_planes(t: Tensor) -> Tensor:  # (B, N, F, H, W, ...) -> (B, N, P+1, H, W, ...)
        x = t[:, :, frame_c, ii, jj]
        return x * inside.view(*inside.shape, *([1] * (x.dim() - 5))).to(x.dtype)

    adds = to_planes(add_cells).unbind(2)  # (B, N, H, W, 3, K, V) per plane
    mixes = to_planes(mix_cells).unbind(2)  # (B, N, H, W, 3, 3) per plane

    out = q.new_zeros(B, N, H, W, 3, K, V)  # the outgoing states of the previous plane
    zero_col = q.new_zeros(B, N, H, 1, K, V)
    zero_row = q.new_zeros(B, N, 1, W, K, V)
    incoming = []
    for p in range(P + 1):
        left = torch.cat([zero_col, out[:, :, :, :-1, 0]], 3)  # C^r of (t, i, j-1)
        top = torch.cat([zero_row, out[:, :, :-1, :, 1]], 2)  # C^d of (t, i-1, j)
        time = out[:, :, :, :, 2]  # C^tau of (t-1, i, j): same pixel, previous plane
        inc = torch.stack([left, top, time], 4)  # (B, N, H, W, 3, K, V)
        incoming.append(inc)
        if p < P:
            out = torch.einsum("bnhwoe,bnhwekv->bnhwokv", mixes[p], inc) + adds[p]

    # Back to cells: (t, i, j) <- plane t + i + j, pixel (i, j); frames 1..F.
    all_in = torch.stack(incoming, 2)  # (B, N, P+1, H, W, 3, K, V)
    ti = torch.arange(1, F + 1, device=dev).view(-1, 1, 1)
    i3, j3 = ii[:F], jj[:F]
    cells_in = all_in[:, :, ti + i3 + j3, i3, j3]  # (B, N, T+1, H, W, 3, K, V)
    y = torch.einsum("bnthwk,bnthwe,bnthwekv->bnthwv", q, mark, cells_in[:, :, :T])
    y = y + (direct * (q * k).sum(-1)).unsqueeze(-1) * v
    return y, (cells_in[:, :, T, :, :, 2] if E == 3 else None)


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
    """:func:`plstm_2d` one cell at a time, frame after frame, each frame in row-major
    order (the oracle): the equations of the module docstring as written. Same
    arguments and results."""
    E = _check(q, k, v, source, transition, mark, direct, state)
    B, N, T, H, W, K = q.shape
    V = v.shape[-1]
    zero = q.new_zeros(B, N, K, V)
    carried = [[zero if state is None else state[:, :, i, j] for j in range(W)] for i in range(H)]
    frames = []
    for t in range(T):
        right: dict[tuple[int, int], Tensor] = {}
        down: dict[tuple[int, int], Tensor] = {}
        rows = []
        for i in range(H):
            row = []
            for j in range(W):
                incoming = [right.get((i, j - 1), zero), down.get((i - 1, j), zero)]
                if E == 3:
                    incoming.append(carried[i][j])
                c = (t, i, j)
                kv = torch.einsum("bnk,bnv->bnkv", k[:, :, t, i, j], v[:, :, t, i, j])
                outgoing = []
                for o in range(E):
                    s = source[(slice(None), slice(None), *c, o)].view(B, N, 1, 1) * kv
                    for e in range(E):
                        w = transition[(slice(None), slice(None), *c, o, e)].view(B, N, 1, 1)
                        s = s + w * incoming[e]
                    outgoing.append(s)
                right[i, j], down[i, j] = outgoing[0], outgoing[1]
                if E == 3:
                    carried[i][j] = outgoing[2]
                read = sum(mark[:, :, t, i, j, e, None, None] * incoming[e] for e in range(E))
                qq, kk, vv = q[:, :, t, i, j], k[:, :, t, i, j], v[:, :, t, i, j]
                y = torch.einsum("bnk,bnkv->bnv", qq, read)
                y = y + direct[:, :, t, i, j, None] * (qq * kk).sum(-1, keepdim=True) * vv
                row.append(y)
            rows.append(torch.stack(row, 2))
        frames.append(torch.stack(rows, 2))
    y_all = torch.stack(frames, 2)
    if E == 2:
        return y_all, None
    final = torch.stack([torch.stack(row, 2) for row in carried], 2)
    return y_all, final
