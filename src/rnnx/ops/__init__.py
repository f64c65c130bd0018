"""Pure functions on tensors (no nn.Module): scans, convolutions, solvers.

Each op has a readable reference implementation (the test oracle and the fallback)
and optional fast paths chosen by explicit dispatch.
"""

from rnnx.ops.scan import scan, scan_reference
from rnnx.ops.structure import BlockDiagonal, Dense, Diagonal

__all__ = ["BlockDiagonal", "Dense", "Diagonal", "scan", "scan_reference"]
