"""Pure functions on tensors (no nn.Module): scans, solvers, convolutions, chunked forms.

Each op has a readable reference implementation (the test oracle and the fallback)
and fast paths chosen by explicit dispatch (``backend=``).

Ops named like their module are imported from the module, so that the module stays
importable by name: ``from rnnx.ops.mlstm import mlstm``, ``from rnnx.ops.ssd import ssd``,
``from rnnx.ops.selective_scan import selective_scan``. ``rnnx.ops.scan`` is the exception:
the attribute is the scan function (import the module's helpers with
``from rnnx.ops.scan import scan_reference``).
"""

from rnnx.ops.chunk import (
    gla,
    gla_reference,
    linear_attention,
    linear_attention_reference,
    retention,
    retention_reference,
    simple_gla,
    simple_gla_reference,
)
from rnnx.ops.conv import (
    cauchy_kernel,
    causal_conv_fft,
    dplr_bilinear_kernel,
    fft_conv,
    krylov,
    krylov_kernel,
    krylov_response,
    krylov_state,
    matrix_power_apply,
    vandermonde_kernel,
    vandermonde_state,
)
from rnnx.ops.delta import (
    delta_rule,
    delta_rule_reference,
    gated_delta_rule,
    gated_delta_rule_reference,
)
from rnnx.ops.newton import (
    NewtonInfo,
    NewtonWarning,
    StructureError,
    check_structure,
    newton_solve,
    sequential_solve,
)
from rnnx.ops.plstm import plstm_2d, plstm_2d_reference
from rnnx.ops.rnn import rnn_sequence, rnn_sequence_reference
from rnnx.ops.scan import scan, scan_reference
from rnnx.ops.short_conv import causal_conv1d, causal_conv1d_reference
from rnnx.ops.structure import BlockDiagonal, Dense, Diagonal

__all__ = [
    "BlockDiagonal",
    "Dense",
    "Diagonal",
    "NewtonInfo",
    "NewtonWarning",
    "StructureError",
    "cauchy_kernel",
    "causal_conv1d",
    "causal_conv1d_reference",
    "causal_conv_fft",
    "check_structure",
    "delta_rule",
    "delta_rule_reference",
    "dplr_bilinear_kernel",
    "fft_conv",
    "gated_delta_rule",
    "gated_delta_rule_reference",
    "gla",
    "gla_reference",
    "krylov",
    "krylov_kernel",
    "krylov_response",
    "krylov_state",
    "linear_attention",
    "linear_attention_reference",
    "matrix_power_apply",
    "newton_solve",
    "plstm_2d",
    "plstm_2d_reference",
    "retention",
    "retention_reference",
    "rnn_sequence",
    "rnn_sequence_reference",
    "scan",
    "scan_reference",
    "sequential_solve",
    "simple_gla",
    "simple_gla_reference",
    "vandermonde_kernel",
    "vandermonde_state",
]
