"""rnnx.ops.scan against one pass over memory and against plain PyTorch time loops.

For each case (real diagonal, complex diagonal, 2x2 block-diagonal) at batch 16,
length 4096, 1024 features (float32, batch-first):

* ``pass``: the same arithmetic with no recurrence, one pass over the same bytes
  (``torch.addcmul(b, a, b, out=h)``; for blocks the batched 2x2 mat-vec into ``out``,
  which torch does not run at memory speed, so the GB/s columns — bytes of ``a`` and ``b``
  read plus ``h`` written, per second — are the fair physical comparison there);
* ``kernel``: the native kernel writing into a preallocated output (the same footing
  as ``pass``); ``scan fwd``: :func:`rnnx.ops.scan` as a user calls it (its output is
  fresh memory, so first-touch page faults are included);
* ``loop fwd``: ``h = a[:, t] * h + b[:, t]; out[:, t] = h`` under ``no_grad``;
* ``loop fwd+bwd``: the loop under autograd written with linear-cost backward
  (iterate over ``unbind(1)``, stack once) vs ``scan`` forward+backward.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from rnnx.bench._common import machine_info, markdown_table, ms, timeit, write_json
from rnnx.ops import BlockDiagonal, scan

DESCRIPTION = "linear scan vs one memory pass and PyTorch time loops"

TARGETS = {"scan/pass": 1.5, "loop/scan fwd": 2.5, "loop/scan fwd+bwd": 4.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--features", type=int, default=1024)
    parser.add_argument(
        "--cases", default="real,complex,block2", help="comma-separated: real, complex, block2"
    )


def _inputs(case: str, B: int, T: int, D: int):
    g = torch.Generator().manual_seed(0)
    b = torch.randn(B, T, D, generator=g)
    if case == "real":
        return 0.5 + 0.5 * torch.rand(B, T, D, generator=g), b, "diagonal"
    if case == "complex":
        a = torch.polar(0.5 + 0.5 * torch.rand(B, T, D, generator=g), torch.rand(B, T, D) * 6.28)
        return a, torch.complex(b, torch.randn(B, T, D, generator=g)), "diagonal"
    if case == "block2":
        a = (torch.rand(B, T, D // 2, 2, 2, generator=g) - 0.5) * 0.9
        return a, b, BlockDiagonal(2)
    raise ValueError(f"--cases: unknown case {case!r} (expected real, complex, block2)")


def _pass(case, a, b, out):
    if case == "block2":
        B, T, D = b.shape
        bv = b.view(B, T, D // 2, 2, 1)
        return lambda: torch.matmul(a, bv, out=out.view(B, T, D // 2, 2, 1))
    return lambda: torch.addcmul(b, a, b, out=out)


def _step(case, a_t, h, b_t):
    if case == "block2":
        B, D = b_t.shape
        return (a_t @ h.view(B, D // 2, 2, 1)).view(B, D) + b_t
    return a_t * h + b_t


def _loop_fwd(case, a, b):
    def fn():
        with torch.no_grad():
            B, T, D = b.shape
            h = torch.zeros(B, D, dtype=b.dtype)
            out = torch.empty_like(b)
            for t in range(T):
                h = _step(case, a[:, t], h, b[:, t])
                out[:, t] = h
            return out

    return fn


def _loop_fwd_bwd(case, a, b):
    def fn():
        aa = a.detach().requires_grad_()
        bb = b.detach().requires_grad_()
        B, _, D = b.shape
        h = torch.zeros(B, D, dtype=b.dtype)
        hs = []
        for a_t, b_t in zip(aa.unbind(1), bb.unbind(1)):
            h = _step(case, a_t, h, b_t)
            hs.append(h)
        out = torch.stack(hs, 1)
        out.real.sum().backward() if out.is_complex() else out.sum().backward()

    return fn


def _scan_fwd_bwd(a, b, structure, backend):
    def fn():
        aa = a.detach().requires_grad_()
        bb = b.detach().requires_grad_()
        h, _ = scan(aa, bb, structure=structure, backend=backend)
        h.real.sum().backward() if h.is_complex() else h.sum().backward()

    return fn


def _kernel_prealloc(a, b, structure):
    """The native kernel into a preallocated output: the same footing as ``pass`` (the C
    function itself, without the operator's dispatch and checks)."""
    from rnnx import _native
    from rnnx._native.ops import _SCAN_DTYPES, _scan_strides
    from rnnx.ops.structure import as_structure

    scan_mod = sys.modules["rnnx.ops.scan"]
    st = as_structure(structure)
    a_c, b_c, _, canon = scan_mod._canonicalize(a, b, None, st)
    lib = _native.load("scan")
    if lib is None or not scan_mod._native_supported(canon, b_c.dtype, b_c.device):
        return None
    out = torch.empty_like(b_c)
    sfx = _SCAN_DTYPES[b_c.dtype]
    threads = torch.get_num_threads()
    sab, sat = _scan_strides(a_c, canon.B, canon.L)
    if canon.block:
        fn = getattr(lib, f"rnnx_scan_block_fwd_{sfx}")
        sizes: tuple[int, ...] = (canon.B, canon.L, canon.D, canon.k)
    else:
        fn = getattr(lib, f"rnnx_scan_diag_fwd_{sfx}")
        sizes = (canon.B, canon.L, canon.D)
    return lambda: fn(
        a_c.data_ptr(), sab, sat, b_c.data_ptr(), None, out.data_ptr(), *sizes, 0, threads
    )


def _measure(case: str, B: int, T: int, D: int, repeat: int) -> dict[str, Any]:
    a, b, structure = _inputs(case, B, T, D)
    out = torch.empty_like(b)
    few = max(1, repeat // 2)
    t = {
        "pass": timeit(_pass(case, a, b, out), repeat=repeat)["median"],
        "scan fwd": timeit(lambda: scan(a, b, structure=structure), repeat=repeat)["median"],
        "chunked fwd": timeit(lambda: scan(a, b, structure=structure, backend="torch"), repeat=few)[
            "median"
        ],
        "loop fwd": timeit(_loop_fwd(case, a, b), repeat=few)["median"],
        "scan fwd+bwd": timeit(_scan_fwd_bwd(a, b, structure, "auto"), repeat=repeat)["median"],
        "loop fwd+bwd": timeit(_loop_fwd_bwd(case, a, b), repeat=few, warmup=0)["median"],
    }
    kernel = _kernel_prealloc(a, b, structure)
    t_kernel = timeit(kernel, repeat=repeat)["median"] if kernel else None
    row: dict[str, Any] = {"case": case}
    row.update({f"{k} ms": ms(v) if v else None for k, v in t.items()})
    row["kernel ms"] = ms(t_kernel) if t_kernel else None
    # effective bandwidth: bytes of a and b read plus h written, per second
    nbytes = sum(x.numel() * x.element_size() for x in (a, b, b))
    row["pass GB/s"] = nbytes / t["pass"] / 1e9
    row["kernel GB/s"] = nbytes / t_kernel / 1e9 if t_kernel else None
    row["kernel/pass"] = t_kernel / t["pass"] if t_kernel else None
    row["scan/pass"] = t["scan fwd"] / t["pass"]
    row["loop/scan fwd"] = t["loop fwd"] / t["scan fwd"]
    row["loop/scan fwd+bwd"] = t["loop fwd+bwd"] / t["scan fwd+bwd"]
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    B, T, D = args.batch, args.length, args.features
    if args.quick:
        B, T, D = 2, 256, 64
    repeat = args.repeat
    rows = []
    for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
        rows.append(_measure(case, B, T, D, repeat))
        print(f"  {case}: done", flush=True)
    cols = [
        "case",
        "pass ms",
        "kernel ms",
        "scan fwd ms",
        "chunked fwd ms",
        "loop fwd ms",
        "scan fwd+bwd ms",
        "loop fwd+bwd ms",
        "pass GB/s",
        "kernel GB/s",
        "kernel/pass",
        "scan/pass",
        "loop/scan fwd",
        "loop/scan fwd+bwd",
    ]
    print(
        f"\nscan, float32, batch {B}, length {T}, features {D}, "
        f"{torch.get_num_threads()} threads (times: median of {repeat})\n"
    )
    print(markdown_table(rows, cols))
    print("\ntargets: scan/pass <= 1.5, loop/scan fwd >= 2.5, loop/scan fwd+bwd >= 4.0")
    payload = {
        "benchmark": "scan",
        "shape": {"batch": B, "length": T, "features": D, "dtype": "float32"},
        "targets": TARGETS,
        "rows": rows,
        "machine": machine_info(),
    }
    if args.out:
        print(f"results: {write_json(args.out, payload)}")
    return payload
