"""Continuous-time state-space math: HiPPO matrices, initialisations, discretisation.

Follows "Combining Recurrent, Convolutional, and Continuous-time Models with Linear
State-Space Layers" (Gu et al. 2021, arXiv 2110.13985) and "On the Parameterization
and Initialization of Diagonal State Space Models" (S4D, Gu et al. 2022, arXiv
2206.11893).
"""
