"""sLSTM's recurrence solved in parallel over time by quasi-Newton iterations.

The sLSTM cell (xLSTM, Beck et al. 2024, arXiv 2405.04517; :func:`rnnx.ops.rnn.cell_step`)
couples the units of a head through the recurrent matrix R (dense per head), and carries
three more states per unit than h: c, the normaliser n and the stabiliser m. Two
observations make a parallel solve (DEER / ParaRNN, arXiv 2309.12252, 2510.21450;
:func:`rnnx.ops.newton_solve`) work.

1. *Coordinates.* The stabiliser cancels in h, and c, n are exponentially scaled, which
   makes Newton's method in (h, c, n, m) diverge (tried: residuals grow to 1e6 and more).
   In the coordinates (h, c~ = c / n, nu = log n + m) the cell is smooth and bounded,
   and m leaves the recurrence::

       nu'  = logaddexp(log sigma(f~) + nu, i~)            (log of the unstabilised n)
       w    = exp(log sigma(f~) + nu - nu'),   1 - w = exp(i~ - nu')
       c~'  = w c~ + (1 - w) tanh(z~),         h' = sigma(o~) c~'

   with the preactivations (i~, f~, z~, o~) = gx + R h. After the solve, m_T follows in
   closed form (a max-plus recurrence: m_T = max(m_1 + sum_{r>1} l_r, max_s (i~_s +
   sum_{r>s} l_r)), l_r = log sigma(f~_r)), then n_T = exp(nu_T - m_T), c_T = c~_T n_T.
   The first step runs in the original coordinates (exactly the reference step), so a
   zero initial normaliser (nu = -inf) never enters the iteration and every gradient of
   the initial state is exact.

2. *Jacobian.* The exact Jacobian of a step is a dense (3 DH x 3 DH) block per head
   (DH = H / num_heads): a scan over it costs O(T DH^3) per head and O(T H^2) memory,
   out of reach for H in the hundreds. The iteration instead uses its part inside each
   unit, a 3 x 3 block over (h, c~, nu) that keeps the diagonal R_jj of the recurrent
   matrix and drops the coupling between units (quasi-Newton; ``BlockDiagonal(3)``, one
   block scan per iteration). The residual is always the exact one, so the fixed point is
   the sequential trajectory to the tolerance; the price is linear instead of quadratic
   convergence. The backward pass solves the exact adjoint with VJPs of the true cell
   (:func:`rnnx.ops.newton_solve` with ``exact_jacobian=False``).

Measured convergence (float64, the layer's initialisation: weights U(+-1/sqrt(H)), forget
bias linspace(3, 6); residual max|f(h_{t-1}) - h_t|): T = 512, H = 64: 17 iterations to
1e-10 (about 10 to float32's 1e-5); T = 2048, H = 128: 19; T = 1024, H = 128, 4 heads
and R scaled by 3: 21. The rate depends on how strongly units drive each other through R
(R scaled by 10: about 330 iterations at T = 512; then ``max_iter`` runs out and the
layer falls back to the sequential loop with a :class:`rnnx.ops.newton.NewtonWarning`).
Iteration k makes the first k steps exact, so T iterations always suffice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnx._amp import fp32_under_autocast
from rnnx.ops.newton import NewtonInfo, newton_solve
from rnnx.ops.rnn import _validate, cell_step, recurrent_preactivation
from rnnx.ops.structure import BlockDiagonal

__all__ = ["slstm_cell_reparam", "slstm_newton", "slstm_unit_jacobian"]

_STRUCTURE = BlockDiagonal(3)


def _recurrent(h: Tensor, weight_hh: Tensor, num_heads: int) -> Tensor:
    """``h R^T`` over any leading dimensions: ``(..., H)`` -> ``(..., 4H)``."""
    lead = h.shape[:-1]
    rec = recurrent_preactivation(h.reshape(-1, h.shape[-1]), weight_hh, num_heads)
    return rec.reshape(*lead, rec.shape[-1])


def _gates(pre: Tensor, ct: Tensor, nu: Tensor):
    pi, pf, pz, po = pre.chunk(4, dim=-1)
    lf = F.logsigmoid(pf) + nu
    nu_new = torch.logaddexp(lf, pi)
    w = torch.exp(lf - nu_new)
    iw = torch.exp(pi - nu_new)  # 1 - w, without the cancellation
    tz = torch.tanh(pz)
    so = torch.sigmoid(po)
    ct_new = w * ct + iw * tz
    return pf, tz, so, w, iw, nu_new, ct_new


def slstm_cell_reparam(s: Tensor, gx: Tensor, weight_hh: Tensor, num_heads: int) -> Tensor:
    """One sLSTM step in the coordinates (h, c~, nu), interleaved per unit.

    Args:
        s: ``(..., 3H)``: ``s.unflatten(-1, (H, 3))[..., j, :]`` is unit j's (h, c~, nu).
        gx: ``(..., 4H)`` input preactivations (gates i, f, z, o), biases included.
        weight_hh: ``(4H, H // num_heads)``, block-diagonal over heads.

    Returns:
        The next state, same layout. Same h as :func:`rnnx.ops.rnn.cell_step` (module
        docstring).
    """
    H = s.shape[-1] // 3
    h, ct, nu = s.unflatten(-1, (H, 3)).unbind(-1)
    pre = gx + _recurrent(h, weight_hh, num_heads)
    _, _, so, _, _, nu_new, ct_new = _gates(pre, ct, nu)
    return torch.stack((so * ct_new, ct_new, nu_new), -1).flatten(-2)


def slstm_unit_jacobian(
    s: Tensor, gx: Tensor, weight_hh: Tensor, num_heads: int
) -> tuple[Tensor, Tensor]:
    """:func:`slstm_cell_reparam` and the part of its Jacobian inside each unit.

    Returns ``(f, J)`` with J ``(..., H, 3, 3)``: ``J[..., j, a, b]`` = d f_a / d s_b of
    unit j over (h, c~, nu), where h enters the gates of its own unit through the
    diagonal R_jj of the recurrent matrix only (the coupling between units is dropped:
    the quasi-Newton approximation of the module docstring). Written out by hand (one
    pass of elementwise ops) rather than by autograd.
    """
    H = s.shape[-1] // 3
    h, ct, nu = s.unflatten(-1, (H, 3)).unbind(-1)
    pre = gx + _recurrent(h, weight_hh, num_heads)
    pf, tz, so, w, iw, nu_new, ct_new = _gates(pre, ct, nu)
    NH, DH = num_heads, H // num_heads
    r_i, r_f, r_z, r_o = torch.diagonal(weight_hh.reshape(4, NH, DH, DH), dim1=-2, dim2=-1).reshape(
        4, H
    )
    dlf_dh = torch.sigmoid(-pf) * r_f
    dnu_dh = w * dlf_dh + iw * r_i
    wiw = w * iw
    dw_dh = wiw * (dlf_dh - r_i)
    diff = ct - tz
    dct_dh = dw_dh * diff + iw * (1 - tz * tz) * r_z
    dct_dnu = wiw * diff
    dh_dh = so * (1 - so) * r_o * ct_new + so * dct_dh
    zero = torch.zeros_like(w)
    jac = torch.stack(
        (
            torch.stack((dh_dh, so * w, so * dct_dnu), -1),
            torch.stack((dct_dh, w, dct_dnu), -1),
            torch.stack((dnu_dh, zero, w), -1),
        ),
        -2,
    )
    return torch.stack((so * ct_new, ct_new, nu_new), -1).flatten(-2), jac


def _to_reparam(state: tuple[Tensor, ...]) -> Tensor:
    """(h, c, n, m) -> (h, c~, nu) interleaved ``(B, 3H)``; n = 0 gives c~ = 0 and a
    finite stand-in for nu = -inf (only reached when step 1 is padding: those rows are
    identity steps and take the initial state back at the end)."""
    h, c, n, m = state
    pos = n > 0
    safe = torch.where(pos, n, torch.ones_like(n))
    ct = torch.where(pos, c / safe, torch.zeros_like(c))
    low = torch.full_like(n, -1e4)
    nu = torch.where(pos, torch.log(safe) + m, low)
    return torch.stack((h, ct, nu), -1).flatten(-2)


def _final_stabiliser(m1: Tensor, pre: Tensor, keep: Tensor | None) -> Tensor:
    """m after the last step from m after step 1 and the preactivations of steps 2..T
    ``(B, T-1, 4H)``: the closed form of m_t = max(log sigma(f~_t) + m_{t-1}, i~_t)."""
    pi, pf, _, _ = pre.chunk(4, dim=-1)
    lf = F.logsigmoid(pf)
    if keep is not None:  # padding keeps m: no decay, no candidate
        k = keep.unsqueeze(-1)
        lf = torch.where(k, lf, torch.zeros_like(lf))
        pi = torch.where(k, pi, torch.full_like(pi, -torch.inf))
    suffix = lf.flip(1).cumsum(1).flip(1)  # sum_{r >= s} l_r
    after = suffix - lf  # sum_{r > s} l_r
    cand = (pi + after).amax(1)
    return torch.maximum(m1 + suffix[:, 0], cand)


@fp32_under_autocast
def slstm_newton(
    gx: Tensor,
    weight_hh: Tensor,
    state: tuple[Tensor, ...],
    *,
    lengths: Tensor | None = None,
    reverse: bool = False,
    num_heads: int = 1,
    max_iter: int = 32,
    tol: float | None = None,
    fallback: bool = True,
    backend: str = "auto",
) -> tuple[Tensor, tuple[Tensor, ...], NewtonInfo | None]:
    """The sLSTM recurrence over a sequence by quasi-Newton iterations (module docstring).

    Same arguments and results as :func:`rnnx.ops.rnn.rnn_sequence` with ``cell="slstm"``
    (``gx`` ``(B, T, 4H)``, ``state`` = ``(h, c, n, m)`` each ``(B, H)``), plus the Newton
    settings of :func:`rnnx.ops.newton_solve` (``tol`` on max |f(s_{t-1}) - s_t| in the
    (h, c~, nu) coordinates; default 1e-5 for float32, 1e-10 for float64; ``backend``,
    the :func:`rnnx.ops.scan` backend of the linear solves). Returns
    ``(y, final_state, info)``; ``info`` is None for a sequence of one step (no
    iteration).
    """
    _validate("slstm", gx, weight_hh, state, None, lengths, num_heads)
    T = gx.shape[1]
    keep = order = None
    if lengths is not None:
        t = torch.arange(T, device=gx.device)
        keep = t < lengths.unsqueeze(1)
    if reverse and lengths is None:
        gx = gx.flip(1)
    elif reverse:
        # Reverse each sequence inside its length (padding stays at the end): the first
        # step is then a real one, run in the original coordinates, so a zero initial
        # normaliser gets its exact gradient whatever the padding.
        assert keep is not None and lengths is not None  # reverse with lengths
        order = torch.where(keep, lengths.unsqueeze(1) - 1 - t, t)
        gx = gx.gather(1, order.unsqueeze(-1).expand_as(gx))
    # step 1 in the original coordinates: exactly the reference's step
    rec0 = recurrent_preactivation(state[0], weight_hh, num_heads)
    first = cell_step("slstm", gx[:, 0], rec0, state)
    if keep is not None:
        k0 = keep[:, :1]
        first = tuple(torch.where(k0, a, b) for a, b in zip(first, state))
    if T == 1:
        return first[0].unsqueeze(1), tuple(first), None
    H = state[0].shape[-1]
    u = gx[:, 1:]

    def step(s: Tensor, uk) -> Tensor:
        if keep is None:
            return slstm_cell_reparam(s, uk, weight_hh, num_heads)
        g, k = uk
        return torch.where(k.unsqueeze(-1), slstm_cell_reparam(s, g, weight_hh, num_heads), s)

    def jac_fn(s: Tensor, uk) -> tuple[Tensor, Tensor]:
        if keep is None:
            return slstm_unit_jacobian(s, uk, weight_hh, num_heads)
        g, k = uk
        val, jac = slstm_unit_jacobian(s, g, weight_hh, num_heads)
        eye = torch.eye(3, dtype=jac.dtype, device=jac.device)
        kk = k.reshape(*k.shape, 1, 1, 1)
        return torch.where(k.unsqueeze(-1), val, s), torch.where(kk, jac, eye)

    inputs = u if keep is None else (u, keep[:, 1:])
    traj, info = newton_solve(
        step,
        inputs,
        _to_reparam(first),
        _STRUCTURE,
        max_iter=max_iter,
        tol=tol,
        init="one_step",
        fallback=fallback,
        jacobian_fn=jac_fn,
        exact_jacobian=False,
        backend=backend,
    )
    S = traj.unflatten(-1, (H, 3))
    hs = S[..., 0]
    y = torch.cat([first[0].unsqueeze(1), hs], 1)
    h_T, ct_T, nu_T = S[:, -1].unbind(-1)
    prev_h = torch.cat([first[0].unsqueeze(1), hs[:, :-1]], 1)
    pre = u + _recurrent(prev_h, weight_hh, num_heads)
    m_T = _final_stabiliser(first[3], pre, None if keep is None else keep[:, 1:])
    n_T = torch.exp(nu_T - m_T)
    final: tuple[Tensor, ...] = (h_T, ct_T * n_T, n_T, m_T)
    if lengths is not None:
        empty = (lengths == 0).unsqueeze(-1)
        final = tuple(torch.where(empty, s0, f) for s0, f in zip(state, final))
    if reverse and order is None:
        y = y.flip(1)
    elif reverse:
        # as the reference: padding comes first in reverse time and carries h_0
        assert keep is not None and order is not None  # order is set only with lengths
        y = torch.where(keep.unsqueeze(-1), y, state[0].unsqueeze(1))
        y = y.gather(1, order.unsqueeze(-1).expand_as(y))
    return y, final, info
