"""rnnx.ops.selective_scan against mamba_ssm's ``selective_scan_ref`` and a recurrent loop.

Shape (the issue's target): batch 4, D 256 channels, N 16 states, length 2048, float32,
Δ = softplus(delta + bias), D skip and z gate on (Mamba's usual call).

* ``fwd``: rnnx's fused native kernel (``backend="native"``) and chunked PyTorch path
  against ``mamba_ssm.ops.selective_scan_interface.selective_scan_ref`` (plain PyTorch: it
  materialises exp(ΔA) and ΔBu of size (B, D, L, N) and loops over time), on the same
  inputs; the outputs are compared (max |difference| / max |output|).
* ``fwd+bwd``: against rnnx's recurrent reference (a loop over ``unbind(1)`` with stack at
  the end: linear-cost backward). mamba's reference is not timed backward: its per-step
  slicing of (B, D, L, N) tensors makes its backward quadratic in L (minutes at L = 2048).
* ``peak MiB``: extra peak memory of one forward+backward (fresh process each): the
  native path keeps checkpoints every ``--chunk`` steps, the reference every step.
* ``decode``: one-token :meth:`Mamba.step` latency (d_model = D / 2, so d_inner = D) after
  prefills of growing length (minimum over runs): it must stay flat in the position.

The peer: ``pip install einops`` and, without CUDA,
``MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE pip install --no-deps
--no-build-isolation mamba-ssm`` (in a scratch venv; put its site-packages on PYTHONPATH
after rnnx's). The module is loaded from its file without running ``mamba_ssm/__init__``
(which needs triton and transformers), with stand-ins for the missing CUDA extension
``selective_scan_cuda`` and the triton layer norm, which ``selective_scan_ref`` never calls.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import statistics
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from rnnx.bench._common import (
    import_peer,
    machine_info,
    markdown_table,
    ms,
    peak_memory,
    timeit,
    write_json,
)
from rnnx.ops.selective_scan import selective_scan, selective_scan_reference

DESCRIPTION = "Mamba selective scan vs mamba_ssm's selective_scan_ref and a recurrent loop"

TARGETS = {"mamba ref / native fwd": 10.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--dim", type=int, default=256, help="channels D")
    parser.add_argument("--state", type=int, default=16, help="state size N")
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--chunk", type=int, default=64, help="checkpoint interval / chunk")
    parser.add_argument("--no-peer", action="store_true", help="skip mamba_ssm")
    parser.add_argument("--no-memory", action="store_true", help="skip peak-memory runs")
    parser.add_argument(
        "--positions", default="0,1024,4096,16384", help="decode positions (comma-separated)"
    )


# ------------------------------------------------------------------ the peer


def load_mamba_module(relative: str, stand_ins: dict[str, dict[str, Any]]) -> tuple[Any, str]:
    """A module of an installed mamba_ssm, loaded from its file without running
    ``mamba_ssm/__init__`` (which needs triton and transformers); ``stand_ins`` maps the
    names of modules it imports but never uses here to their attributes (e.g. the CUDA
    extension). Returns ``(module, "")`` or ``(None, why not)``."""
    _, why = import_peer("einops")
    if why:
        return None, f"einops (needed by mamba_ssm): {why}"
    spec = importlib.util.find_spec("mamba_ssm")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None, "mamba_ssm is not installed (see this benchmark's docstring)"
    root = Path(next(iter(spec.submodule_search_locations)))
    path = root / relative
    if not path.exists():
        return None, f"{path} not found"
    stubs: dict[str, types.ModuleType] = {}
    # Bare package objects, so that importing mamba_ssm.utils.torch or
    # mamba_ssm.ops.triton.* does not run mamba_ssm/__init__.py.
    for name, folder in (
        ("mamba_ssm", root),
        ("mamba_ssm.ops", root / "ops"),
        ("mamba_ssm.ops.triton", root / "ops" / "triton"),
        ("mamba_ssm.utils", root / "utils"),
    ):
        module = types.ModuleType(name)
        module.__path__ = [str(folder)]
        stubs[name] = module
    for name, attributes in stand_ins.items():
        module = types.ModuleType(name)
        for key, value in attributes.items():
            setattr(module, key, value)
        stubs[name] = module
    before = set(sys.modules)
    sys.modules.update({k: v for k, v in stubs.items() if k not in before})
    try:
        spec_file = importlib.util.spec_from_file_location(f"_mamba_{path.stem}", path)
        if spec_file is None or spec_file.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec_file)
        spec_file.loader.exec_module(module)
        return module, ""
    except Exception as exc:  # any failure: the peer is skipped with the reason
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    finally:  # the loaded module keeps what it needs; drop the stand-ins
        for name in set(sys.modules) - before:
            if name.startswith("mamba_ssm") or name in stand_ins:
                del sys.modules[name]


def load_mamba_reference() -> tuple[Any | None, str]:
    """``selective_scan_ref`` from an installed mamba_ssm, or ``(None, why not)``."""
    module, why = load_mamba_module(
        "ops/selective_scan_interface.py",
        {
            "selective_scan_cuda": {},  # the CUDA extension, absent without CUDA
            "mamba_ssm.ops.triton.layer_norm": {"_layer_norm_fwd": None},  # triton
        },
    )
    return (None, why) if module is None else (module.selective_scan_ref, "")


K = TypeVar("K")  # the keys of time_in_turns' callables


def no_grad(fn: Callable[[], Any]) -> Callable[[], Any]:
    def call() -> Any:
        with torch.no_grad():
            return fn()

    return call


def time_in_turns(fns: dict[K, Callable[[], Any]], rounds: int) -> dict[K, float]:
    """Median wall time (seconds) of each callable, measured in turns: every round runs
    each callable once, so a change in the load of this shared machine hits all alike
    and the ratios between them hold. One warm-up run each first."""
    for fn in fns.values():
        fn()
    runs: dict[K, list[float]] = {k: [] for k in fns}
    for _ in range(max(1, rounds)):
        for k, fn in fns.items():
            runs[k].append(timeit(fn, repeat=1, warmup=0)["min"])
    return {k: statistics.median(v) for k, v in runs.items()}


def decode_latency(layer: Any, positions: list[int], repeat: int) -> list[dict[str, float]]:
    """One-token ``layer.step`` latency (microseconds) after a prefill of each length in
    ``positions``, batch 1. The positions are timed in turns, several rounds, and each
    keeps its minimum: a shared machine adds noise to a sub-millisecond call, never speed,
    and turns keep a drift in the machine's load from looking like a trend in position."""
    states = {}
    with torch.no_grad():
        s = layer.init_state(1)
        at = 0
        for p in sorted(positions):
            while at < p:  # prefill up to the position, in chunks
                n = min(4096, p - at)
                _, s = layer.step(torch.randn(1, n, layer.d_model), s)
                at += n
            states[p] = s
        token = torch.randn(1, 1, layer.d_model)
        best = dict.fromkeys(states, float("inf"))
        for _ in range(max(4, 2 * repeat)):
            for p, s in states.items():
                t = timeit(functools.partial(layer.step, token, s), repeat=10, warmup=1)
                best[p] = min(best[p], t["min"])
    first = best[min(best)]
    return [{"position": p, "step us": v * 1e6, "vs first": v / first} for p, v in best.items()]


# ------------------------------------------------------------------ inputs and runs


def make_inputs(batch: int, dim: int, state: int, length: int, seed: int = 0) -> dict[str, Any]:
    """Mamba-like inputs (batch-first): Δ = softplus(delta + bias) around 0.01-0.1."""
    g = torch.Generator().manual_seed(seed)
    return {
        "u": torch.randn(batch, length, dim, generator=g),
        "delta": torch.randn(batch, length, dim, generator=g) * 0.5 - 3.0,
        "A": -torch.arange(1, state + 1, dtype=torch.float32).repeat(dim, 1),
        "B": torch.randn(batch, length, state, generator=g),
        "C": torch.randn(batch, length, state, generator=g),
        "D": torch.ones(dim),
        "z": torch.randn(batch, length, dim, generator=g),
        "delta_bias": torch.randn(dim, generator=g) * 0.1,
    }


def _rnnx(inp: dict[str, Any], variant: str, chunk: int):
    """``variant``: ``"native"``, ``"chunked"`` (backend ``"torch"``) or ``"reference"``
    (:func:`selective_scan_reference`, the loop over time)."""
    args = (inp["u"], inp["delta"], inp["A"], inp["B"], inp["C"], inp["D"], inp["z"])
    common: dict[str, Any] = {"delta_bias": inp["delta_bias"], "delta_softplus": True}
    if variant == "reference":
        return selective_scan_reference(*args, **common)[0]
    backend = "torch" if variant == "chunked" else variant
    return selective_scan(*args, **common, chunk_size=chunk, backend=backend)[0]


def _mamba(ref, inp: dict[str, Any]):
    # mamba's layout is channels-first: u, delta, z (B, D, L); B, C (B, N, L)
    t = {k: inp[k].transpose(1, 2) for k in ("u", "delta", "B", "C", "z")}
    out = ref(
        t["u"],
        t["delta"],
        inp["A"],
        t["B"],
        t["C"],
        inp["D"],
        t["z"],
        inp["delta_bias"],
        True,
    )
    return out.transpose(1, 2)


def fwd_bwd_callable(
    backend: str, batch: int, dim: int, state: int, length: int, chunk: int
) -> Any:
    """A zero-argument forward+backward of ``backend`` (also the peak-memory target).

    Runs the backend once on a short input first, so that one-time costs (loading the
    native library, allocator pools) are not counted as the call's memory."""
    warm = make_inputs(1, dim, state, 2 * chunk)
    warm["u"].requires_grad_()
    _rnnx(warm, backend, chunk).sum().backward()
    inp = make_inputs(batch, dim, state, length)
    for k in ("u", "delta", "B", "C", "z"):
        inp[k].requires_grad_()

    def fn() -> None:
        for v in inp.values():
            v.grad = None
        _rnnx(inp, backend, chunk).sum().backward()

    return fn


# ------------------------------------------------------------------ run


def run(args: argparse.Namespace) -> dict[str, Any]:
    B, D, N, L, K = args.batch, args.dim, args.state, args.length, args.chunk
    positions = [int(p) for p in args.positions.split(",") if p.strip()]
    if args.quick:
        B, D, N, L = 2, 64, 8, 256
        positions = [0, 64, 256]
    repeat = args.repeat
    inp = make_inputs(B, D, N, L)
    times: dict[str, float] = {}
    notes: list[str] = []

    with torch.no_grad():
        out_native = _rnnx(inp, "native", K)
    ref, why = (None, "--no-peer") if args.no_peer else load_mamba_reference()
    equal = None
    forward = {
        f"{b} fwd": no_grad(functools.partial(_rnnx, inp, b, K))
        for b in ("native", "chunked", "reference")
    }
    if ref is None:
        notes.append(f"mamba_ssm skipped: {why}")
        print(f"  mamba_ssm skipped: {why}", flush=True)
    else:
        with torch.no_grad():
            out_ref = _mamba(ref, inp)
        diff = float((out_ref - out_native).abs().max())
        scale = float(out_ref.abs().max())
        equal = {
            "max abs diff": diff,
            "max abs output": scale,
            "allclose(rtol=1e-4, atol=1e-5*scale)": bool(
                torch.allclose(out_native, out_ref, rtol=1e-4, atol=1e-5 * scale)
            ),
        }
        forward["mamba ref fwd"] = no_grad(lambda: _mamba(ref, inp))
        print(f"  mamba_ssm selective_scan_ref loaded (max |diff| {diff:.2e})", flush=True)
    times.update(time_in_turns(forward, repeat))
    print("  forward: done", flush=True)
    backward = {
        f"{b} fwd+bwd": fwd_bwd_callable(b, B, D, N, L, K)
        for b in ("native", "chunked", "reference")
    }
    times.update(time_in_turns(backward, repeat))
    print("  forward+backward: done", flush=True)

    memory: dict[str, float] = {}
    if not args.no_memory:
        for backend in ("native", "chunked", "reference"):
            memory[backend] = (
                peak_memory(
                    "rnnx.bench.selective_scan:fwd_bwd_callable",
                    backend=backend,
                    batch=B,
                    dim=D,
                    state=N,
                    length=L,
                    chunk=K,
                )
                / 2**20
            )
        print("  memory: done", flush=True)

    from rnnx.layers.mamba import Mamba

    torch.manual_seed(0)
    decode = decode_latency(Mamba(D // 2, d_state=N).eval(), positions, repeat)
    print("  decode: done", flush=True)

    def ratio(a: str, b: str) -> float | None:
        return times[a] / times[b] if times.get(a) and times.get(b) else None

    rows = [
        {
            "pass": "fwd",
            "native ms": ms(times["native fwd"]),
            "chunked ms": ms(times["chunked fwd"]),
            "rnnx reference ms": ms(times["reference fwd"]),
            "mamba ref ms": ms(times["mamba ref fwd"]) if times.get("mamba ref fwd") else None,
            "mamba ref / native": ratio("mamba ref fwd", "native fwd"),
            "reference / native": ratio("reference fwd", "native fwd"),
            "reference / chunked": ratio("reference fwd", "chunked fwd"),
        },
        {
            "pass": "fwd+bwd",
            "native ms": ms(times["native fwd+bwd"]),
            "chunked ms": ms(times["chunked fwd+bwd"]),
            "rnnx reference ms": ms(times["reference fwd+bwd"]),
            "mamba ref ms": None,
            "mamba ref / native": None,
            "reference / native": ratio("reference fwd+bwd", "native fwd+bwd"),
            "reference / chunked": ratio("reference fwd+bwd", "chunked fwd+bwd"),
        },
    ]
    cols = [
        "pass",
        "native ms",
        "chunked ms",
        "rnnx reference ms",
        "mamba ref ms",
        "mamba ref / native",
        "reference / native",
        "reference / chunked",
    ]
    print(
        f"\nselective scan, float32, batch {B}, D {D}, N {N}, length {L}, chunk {K}, "
        f"{torch.get_num_threads()} threads (times: median of {repeat} rounds, each "
        "path once per round)\n"
    )
    print(markdown_table(rows, cols))
    if equal is not None:
        print(
            f"\noutputs vs mamba_ssm: max |diff| {equal['max abs diff']:.2e} "
            f"(max |output| {equal['max abs output']:.3g}); "
            f"allclose: {equal['allclose(rtol=1e-4, atol=1e-5*scale)']}"
        )
    if memory:
        print("\nextra peak memory of one forward+backward (MiB):")
        print(markdown_table([{k: round(v, 1) for k, v in memory.items()}], list(memory)))
    print(f"\ndecode: Mamba(d_model={D // 2}, d_state={N}).step, batch 1, one token\n")
    print(markdown_table(decode, ["position", "step us", "vs first"]))
    print("\ntarget: mamba ref / native (fwd) >= 10")
    for n in notes:
        print(f"note: {n}")
    payload = {
        "benchmark": "selective_scan",
        "shape": {"batch": B, "dim": D, "state": N, "length": L, "chunk": K, "dtype": "float32"},
        "targets": TARGETS,
        "rows": rows,
        "outputs_vs_mamba": equal,
        "peak_mib": memory,
        "decode": decode,
        "notes": notes,
        "machine": machine_info(),
    }
    if args.out:
        print(f"results: {write_json(args.out, payload)}")
    return payload
