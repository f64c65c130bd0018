"""Continuous-time state-space math: HiPPO matrices, initialisations, discretisation.

Follows "Combining Recurrent, Convolutional, and Continuous-time Models with Linear
State-Space Layers" (Gu et al. 2021, arXiv 2110.13985) and "On the Parameterization
and Initialization of Diagonal State Space Models" (S4D, Gu et al. 2022, arXiv
2206.11893).
"""

from rnnx.ssm.discretize import (
    Discretization,
    DPLRStep,
    bilinear_dense,
    bilinear_diagonal,
    discretize_diagonal,
    dplr_matvec,
    dplr_solve,
    gbt_dense,
    gbt_diagonal,
    gbt_dplr_step,
    zoh_dense,
    zoh_diagonal,
)
from rnnx.ssm.hippo import (
    NPLR,
    Measure,
    S4DInit,
    hippo,
    hippo_fourier,
    hippo_lagt,
    hippo_legs,
    hippo_legt,
    nplr,
    rank_correction,
    s4d_init,
    s4d_inv,
    s4d_legs,
    s4d_lin,
    s4d_real,
)

__all__ = [
    "NPLR",
    "DPLRStep",
    "Discretization",
    "Measure",
    "S4DInit",
    "bilinear_dense",
    "bilinear_diagonal",
    "discretize_diagonal",
    "dplr_matvec",
    "dplr_solve",
    "gbt_dense",
    "gbt_diagonal",
    "gbt_dplr_step",
    "hippo",
    "hippo_fourier",
    "hippo_lagt",
    "hippo_legs",
    "hippo_legt",
    "nplr",
    "rank_correction",
    "s4d_init",
    "s4d_inv",
    "s4d_legs",
    "s4d_lin",
    "s4d_real",
    "zoh_dense",
    "zoh_diagonal",
]
