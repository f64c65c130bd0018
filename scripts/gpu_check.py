#!/usr/bin/env python
"""Check rnnx on a GPU: every layer against the CPU, speed against torch.nn and peers.

Run from a checkout (torch and numpy are all it needs; Lightning for the training
smoke, flash-linear-attention and mamba-ssm for their rows, each skipped with a reason
when it cannot be imported)::

    PYTHONPATH=src python scripts/gpu_check.py --quick --out gpu_check.json   # ~3 min
    PYTHONPATH=src python scripts/gpu_check.py --out gpu_check.json           # ~6 min
    PYTHONPATH=src python scripts/gpu_check.py --device cpu --quick           # dry run

Sections (docs/gpu.md describes every column and the JSON file):

1. ``correctness``: every registered layer, built on the CPU and copied to the device,
   forward and backward in its default mode there (``mode="auto"`` resolves per device)
   against the CPU: max relative error of the outputs, final state and gradients (input,
   parameters) in float32, and under bf16 autocast (states must stay float32/complex64).
   Plus host synchronisations (CUDA's sync debug mode) in a forward, a forward with
   ``lengths`` and a one-token decode step. ``--quick``: the default mode; otherwise
   every mode on the device against the CPU reference mode.
2. ``timing``: forward+backward ms of every layer (batch 8, length 2048, d_model 256) in
   float32 (and bf16 autocast without ``--quick``), and decode ms per token.
3. ``comparisons``: rnnx LSTM/GRU (cuDNN backend) against torch.nn.LSTM/GRU (target
   <= 1.2x); ParaGRU's Newton mode against its recurrent mode (target: faster);
   sLSTM newton vs recurrent; Mamba's chunk mode against Mamba-2's SSD at the same
   state size; flash-linear-attention and mamba-ssm kernels where importable.
4. ``train``: ``rnnx train --accelerator <device>`` for a few steps (needs Lightning).

Nothing aborts the run: an exception in one measurement is recorded in its row
(``error``) and the script goes on; the JSON file is rewritten after every section, so a
run that is killed still leaves what it measured. ``--budget`` seconds (default 210 with
``--quick``, 540 without) skip the optional parts once spent.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
try:
    import rnnx  # noqa: F401
except ImportError:  # run from a checkout without PYTHONPATH=src
    sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

import rnnx.layers as layers  # noqa: E402
from rnnx._tree import leaves  # noqa: E402

T0 = time.time()


# --------------------------------------------------------------------------- helpers


def say(*parts: Any) -> None:
    print(*parts, flush=True)


def short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (complex: on real and imaginary parts)."""
    a, b = a.detach().cpu(), b.detach().cpu()
    if a.is_complex() or b.is_complex():
        a, b = (
            torch.view_as_real(a.to(torch.complex128)),
            torch.view_as_real(b.to(torch.complex128)),
        )
    a, b = a.double(), b.double()
    if a.shape != b.shape:
        return math.inf
    scale = max(float(b.abs().max()) if b.numel() else 0.0, 1e-6)
    return float((a - b).abs().max()) / scale if a.numel() else 0.0


def fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        if v == 0:
            return "0"
        if abs(v) >= 100:
            return f"{v:.0f}"
        if abs(v) < 1e-2:
            return f"{v:.1e}"
        return f"{v:.{nd}g}"
    return str(v)


def table(rows: list[dict[str, Any]], cols: list[str]) -> None:
    if not rows:
        say("  (no rows)")
        return
    cells = [[fmt(r.get(c))[:70] for c in cols] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(cols)]
    say("  " + "  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for x in cells:
        say("  " + "  ".join(v.ljust(w) for v, w in zip(x, widths)))


def median_ms(fn, device: torch.device, repeat: int, warmup: int = 1, slow_s: float = 20.0):
    """Median wall ms of ``fn()`` (synchronised). If the first call takes longer than
    ``slow_s`` seconds it is the only sample (a Python time loop on a GPU)."""
    t0 = time.perf_counter()
    fn()
    sync(device)
    first = time.perf_counter() - t0
    if first > slow_s:
        return 1e3 * first, 1
    for _ in range(max(0, warmup - 1)):
        fn()
    sync(device)
    times = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times), len(times)


@contextlib.contextmanager
def sync_counter(device: torch.device):
    """Count the host synchronisations CUDA's sync debug mode reports inside the block
    (``out["n"]``, ``out["where"]``: the first few code locations)."""
    out: dict[str, Any] = {"n": None, "where": []}
    if device.type != "cuda":
        yield out
        return
    old = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield out
        finally:
            torch.cuda.set_sync_debug_mode(old)
    hits = [w for w in caught if "synchroniz" in str(w.message)]
    out["n"] = len(hits)
    seen = []
    for w in hits:
        loc = f"{Path(w.filename).name}:{w.lineno}"
        if loc not in seen:
            seen.append(loc)
    out["where"] = seen[:4]


class Report:
    def __init__(self, path: Path, args: argparse.Namespace) -> None:
        self.path = path
        self.data: dict[str, Any] = {"meta": {}, "args": vars(args), "sections": {}}

    def section(self, name: str, payload: Any) -> None:
        self.data["sections"][name] = payload
        self.write()

    def write(self) -> None:
        self.data["elapsed_s"] = round(time.time() - T0, 1)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(self.path.suffix + ".tmp")
            tmp.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
            os.replace(tmp, self.path)
        except OSError as exc:
            say(f"  (could not write {self.path}: {exc})")


def meta(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "device": str(device),
        "RNNX_NATIVE": os.environ.get("RNNX_NATIVE", "(unset)"),
        "cores": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    with contextlib.suppress(Exception):
        info["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=ROOT,
        ).stdout.strip()
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(
            gpu=p.name,
            gpu_memory_gib=round(p.total_memory / 2**30, 1),
            cudnn=torch.backends.cudnn.version(),
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    return info


# --------------------------------------------------------------------------- layers


def build(name: str, d: int, seed: int = 0):
    torch.manual_seed(seed)
    return layers.get(name)(d)


def backend_of(layer, device: torch.device) -> str | None:
    fn = getattr(layer, "resolved_backend", None)
    if fn is None:
        return None
    try:
        return fn(device)
    except Exception as exc:
        return f"? ({short(exc)})"


def loss_weights(y: torch.Tensor, state, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    wy = torch.randn(y.shape, generator=g)
    ws = [torch.randn(s.shape, generator=g) for s in leaves(state)]
    return wy, ws


def loss_of(y, state, wy, ws):
    dev = y.device
    total = (y.float() * wy.to(dev)).sum()
    for s, w in zip(leaves(state), ws):
        s = s.real if s.is_complex() else s
        total = total + (s.float() * w.to(dev)).sum()
    return total


def run_once(layer, x: torch.Tensor, weights, autocast: bool):
    """Forward + backward; returns (y, state, {name: grad}) on the CPU."""
    layer.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    dev = x.device
    ctx = torch.autocast(dev.type, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with ctx:
        y, state = layer(x)
    wy, ws = weights if weights is not None else loss_weights(y, state)
    loss_of(y, state, wy, ws).backward()
    grads = {"x": x.grad}
    grads.update({n: p.grad for n, p in layer.named_parameters() if p.grad is not None})
    return y, state, grads, (wy, ws)


def compare_runs(a, b) -> dict[str, Any]:
    """Errors of run ``a`` (device) against run ``b`` (CPU)."""
    ya, sa, ga, _ = a
    yb, sb, gb, _ = b
    out = {"y_rel": rel(ya, yb)}
    out["state_rel"] = max((rel(p, q) for p, q in zip(leaves(sa), leaves(sb))), default=0.0)
    worst, where = 0.0, None
    for n, g in gb.items():
        e = rel(ga[n], g) if ga.get(n) is not None else math.inf
        if e > worst:
            worst, where = e, n
    out["grad_rel"], out["grad_worst"] = worst, where
    return out


def input_shape(cls, B: int, T: int, D: int) -> tuple[int, ...]:
    """The input of a layer at the run's (B, T, D): a sequence layer's ``(B, T, D)``; a
    spatial layer's frames ``(B, min(T, 24), D, 12, 12)`` (a video of T frames of D
    channels at the sequence layers' T would not say more and cost far more)."""
    if getattr(cls, "kind", "sequence") == "spatial":
        return (B, min(T, 24), D, 12, 12)
    return (B, T, D)


def check_layer(name: str, device: torch.device, shape, quick: bool, tol32: float, tol16: float):
    B, T, D = shape
    rows = []

    ref_layer = build(name, D).eval()
    cls = type(ref_layer)
    g = torch.Generator().manual_seed(1)
    x_cpu = torch.randn(*input_shape(cls, B, T, D), generator=g)
    dev_layer = copy.deepcopy(ref_layer).to(device)
    dev_modes = [dev_layer.mode] if quick else list(cls.modes)
    cpu_mode = ref_layer.mode if quick else cls.reference_mode
    with ref_layer.using_mode(cpu_mode):
        ref = run_once(ref_layer, x_cpu, None, autocast=False)
    weights = ref[3]
    for mode in dev_modes:
        row: dict[str, Any] = {
            "layer": name,
            "cpu_mode": cpu_mode,
            "mode": mode,
            "backend": backend_of(dev_layer, device),
        }
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with dev_layer.using_mode(mode):
                    got = run_once(dev_layer, x_cpu.to(device), weights, autocast=False)
                    row.update(compare_runs(got, ref))
                    row["ok32"] = max(row["y_rel"], row["state_rel"], row["grad_rel"]) <= tol32
                    got16 = run_once(dev_layer, x_cpu.to(device), weights, autocast=True)
                    e16 = compare_runs(got16, ref)
                    row["bf16_y_rel"] = e16["y_rel"]
                    row["bf16_grad_rel"] = e16["grad_rel"]
                    row["bf16_grad_worst"] = e16["grad_worst"]
                    same = all(p.dtype == q.dtype for p, q in zip(leaves(got16[1]), leaves(got[1])))
                    finite = all(
                        bool(torch.isfinite(t).all())
                        for t in [*got16[2].values(), *leaves(got16[1])]
                        if t is not None
                    )
                    row["bf16_state_dtype_ok"] = same
                    row["ok16"] = same and finite and e16["y_rel"] <= tol16
            except Exception as exc:
                row["error"] = short(exc)
                row["trace"] = traceback.format_exc(limit=6)[-1500:]
        notes = sorted({str(w.message).splitlines()[0][:160] for w in caught})
        row["warnings"] = [n for n in notes if "synchroniz" not in n][:3]
        rows.append(row)
    # host synchronisations in the default mode
    sync_row = rows[0]
    T = x_cpu.shape[1]  # a spatial layer's input has fewer frames (input_shape)
    try:
        x = x_cpu.to(device)
        with torch.no_grad():
            dev_layer.eval()
            # (no explicit synchronize inside the counted blocks: only the layer's own)
            sync(device)
            with sync_counter(device) as s_fwd:
                dev_layer(x)
            sync(device)
            lengths = torch.full((B,), T, dtype=torch.long, device=device)
            lengths[0] = max(1, T // 2)
            with sync_counter(device) as s_len:
                dev_layer(x, lengths=lengths)
            sync(device)
            _, state = dev_layer(x[:, : max(1, T // 4)])
            sync(device)
            with sync_counter(device) as s_dec:
                dev_layer.step(x[:, :1], state)
            sync(device)
        sync_row["sync_fwd"] = s_fwd["n"]
        sync_row["sync_lengths"] = s_len["n"]
        sync_row["sync_decode"] = s_dec["n"]
        sync_row["sync_where"] = sorted({*s_fwd["where"], *s_len["where"], *s_dec["where"]})
    except Exception as exc:
        sync_row.setdefault("error", f"sync check: {short(exc)}")
    return rows


# --------------------------------------------------------------------------- timing


def fwd_bwd_fn(module, x: torch.Tensor, autocast: bool, call=None):
    xr = x.detach().clone().requires_grad_()
    ctx = (lambda: torch.autocast(x.device.type, dtype=torch.bfloat16)) if autocast else None

    def fn():
        module.zero_grad(set_to_none=True)
        xr.grad = None
        with ctx() if ctx else contextlib.nullcontext():
            out = call(module, xr) if call else module(xr)
            y = out[0] if isinstance(out, tuple) else out
            loss = y.float().square().mean()
        loss.backward()

    return fn


def decode_ms(layer, x: torch.Tensor, device: torch.device, tokens: int) -> float:
    layer.eval()
    with torch.no_grad():
        _, state = layer(x[:, :16])
        step = x[:, 16:17]
        for _ in range(3):
            _, state = layer.step(step, state)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(tokens):
            _, state = layer.step(step, state)
        sync(device)
    layer.train()
    return 1e3 * (time.perf_counter() - t0) / tokens


def time_layer(name, device, shape, repeat, bf16: bool, tokens: int):
    B, T, D = shape
    row: dict[str, Any] = {"layer": name}
    try:
        layer = build(name, D).to(device)
        row["mode"] = layer.mode
        row["backend"] = backend_of(layer, device)
        x = torch.randn(*input_shape(type(layer), B, T, D), device=device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            row["fwd_bwd_ms"], row["runs"] = median_ms(fwd_bwd_fn(layer, x, False), device, repeat)
            if bf16:
                row["fwd_bwd_bf16_ms"], _ = median_ms(fwd_bwd_fn(layer, x, True), device, repeat)
            info = getattr(layer, "newton_info", None)
            if isinstance(info, list):
                info = next((i for i in info if i is not None), None)
            if info is not None:
                row["newton_iters"] = info.iterations
                row["newton_adjoint_iters"] = getattr(info, "adjoint_iterations", None)
                row["newton_fell_back"] = info.fell_back
            row["decode_ms_per_token"] = decode_ms(layer, x, device, tokens)
        row["warnings"] = sorted({str(w.message).splitlines()[0][:160] for w in caught})[:3]
    except Exception as exc:
        row["error"] = short(exc)
    finally:
        with contextlib.suppress(Exception):
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return row


def compare(name, rnnx_fn, base_name, base_fn, device, repeat, target=None, note=""):
    row: dict[str, Any] = {"comparison": name, "baseline": base_name, "note": note}
    try:
        row["rnnx_ms"], _ = median_ms(rnnx_fn(), device, repeat)
    except Exception as exc:
        row["error"] = f"rnnx: {short(exc)}"
        return row
    try:
        row["baseline_ms"], _ = median_ms(base_fn(), device, repeat)
    except Exception as exc:
        row["error"] = f"baseline: {short(exc)}"
        return row
    row["ratio"] = row["rnnx_ms"] / row["baseline_ms"]
    if target is not None:
        row["target"] = target
        row["met"] = row["ratio"] <= target
    return row


def comparisons(device, shape, repeat, quick: bool) -> list[dict[str, Any]]:
    B, T, D = shape
    rows = []
    x = torch.randn(B, T, D, device=device)
    nn = torch.nn
    # LSTM / GRU against torch.nn on cuDNN (the same weights)
    for rname, tcls in (("lstm", nn.LSTM), ("gru", nn.GRU)):
        try:
            torch.manual_seed(0)
            ref = tcls(D, D, batch_first=True).to(device)
            ours = layers.get(rname).from_torch(ref)
            rows.append(
                compare(
                    f"{rname} ({ours.resolved_backend(device)}) vs torch.nn.{tcls.__name__}",
                    lambda ours=ours: fwd_bwd_fn(ours, x, False),
                    f"torch.nn.{tcls.__name__}",
                    lambda ref=ref: fwd_bwd_fn(ref, x, False),
                    device,
                    repeat,
                    target=1.2,
                    note="fwd+bwd float32",
                )
            )
            if not quick:
                rows.append(
                    compare(
                        f"{rname} bf16 autocast vs torch.nn.{tcls.__name__} bf16 autocast",
                        lambda ours=ours: fwd_bwd_fn(ours, x, True),
                        f"torch.nn.{tcls.__name__}",
                        lambda ref=ref: fwd_bwd_fn(ref, x, True),
                        device,
                        repeat,
                        note="rnnx runs the recurrence in float32 under autocast, torch.nn bf16",
                    )
                )
        except Exception as exc:
            rows.append({"comparison": f"{rname} vs torch.nn", "error": short(exc)})
    # Newton against the step-by-step loop, same layer
    for name, seq_mode, target in (("paragru", "recurrent", 1.0), ("slstm", "recurrent", None)):
        if quick and target is None:
            continue
        try:
            newton = build(name, D).to(device)
            newton.mode = "newton"
            seq = copy.deepcopy(newton)
            seq.mode = seq_mode
            row = compare(
                f"{name} newton vs {seq_mode}",
                lambda n=newton: fwd_bwd_fn(n, x, False),
                f"{name} {seq_mode}",
                lambda s=seq: fwd_bwd_fn(s, x, False),
                device,
                max(1, repeat // 2),
                target=target,
                note=f"T={T}, fwd+bwd",
            )
            info = newton.newton_info
            info = info[0] if isinstance(info, list) and info else info
            if info is not None:
                row["newton_iters"] = info.iterations
            rows.append(row)
        except Exception as exc:
            rows.append({"comparison": f"{name} newton", "error": short(exc)})
    # Mamba's chunk mode against Mamba-2's SSD at the same state size
    for n_state in (16,) if quick else (16, 64):
        try:
            torch.manual_seed(0)
            m1 = layers.get("mamba")(D, d_state=n_state, mode="chunk").to(device)
            m2 = layers.get("mamba2")(D, d_state=n_state).to(device)
            rows.append(
                compare(
                    f"mamba chunk vs mamba2 (d_state {n_state})",
                    lambda m=m1: fwd_bwd_fn(m, x, False),
                    f"mamba2 {m2.mode}",
                    lambda m=m2: fwd_bwd_fn(m, x, False),
                    device,
                    repeat,
                    target=1.0,
                    note="same d_model, expand 2 and d_state; fwd+bwd",
                )
            )
            if not quick:
                m1s = copy.deepcopy(m1)
                m1s.mode = "scan"
                rows.append(
                    compare(
                        f"mamba chunk vs mamba scan (d_state {n_state})",
                        lambda m=m1: fwd_bwd_fn(m, x, False),
                        "mamba scan",
                        lambda m=m1s: fwd_bwd_fn(m, x, False),
                        device,
                        max(1, repeat // 2),
                    )
                )
        except Exception as exc:
            rows.append({"comparison": f"mamba chunk vs mamba2 ({n_state})", "error": short(exc)})
    return rows


# --------------------------------------------------------------------------- peers


def peers(device, shape, repeat) -> list[dict[str, Any]]:
    """flash-linear-attention and mamba-ssm kernels against rnnx's ops, where importable."""
    B, T, D = shape
    rows: list[dict[str, Any]] = []
    if device.type != "cuda":
        return [{"comparison": "fla / mamba-ssm", "skipped": "CUDA only"}]
    from rnnx.ops.chunk import gla
    from rnnx.ops.delta import delta_rule
    from rnnx.ops.selective_scan_chunk import selective_scan_chunk
    from rnnx.ops.ssd import ssd

    H, K = 4, 64

    def grads_fn(fn, *tensors):
        ts = [t.detach().clone().requires_grad_() for t in tensors]

        def run():
            for t in ts:
                t.grad = None
            out = fn(*ts)
            out = out[0] if isinstance(out, tuple) else out
            out.float().square().mean().backward()

        return run

    q, k, v = (torch.randn(B, T, H, K, device=device) for _ in range(3))
    k = torch.nn.functional.normalize(k, dim=-1)
    gate = torch.nn.functional.logsigmoid(torch.randn(B, T, H, K, device=device)) / 16
    beta = torch.rand(B, T, H, device=device)
    try:
        from fla.ops.delta_rule import chunk_delta_rule
        from fla.ops.gla import chunk_gla

        rows.append(
            compare(
                "gla op vs fla chunk_gla",
                lambda: grads_fn(lambda a, b, c, d: gla(a, b, c, d), q, k, v, gate),
                "fla chunk_gla",
                lambda: grads_fn(lambda a, b, c, d: chunk_gla(a, b, c, d), q, k, v, gate),
                device,
                repeat,
                note=f"B{B} T{T} H{H} K=V={K}",
            )
        )
        rows.append(
            compare(
                "delta_rule op vs fla chunk_delta_rule",
                lambda: grads_fn(lambda a, b, c, d: delta_rule(a, b, c, d), q, k, v, beta),
                "fla chunk_delta_rule",
                lambda: grads_fn(lambda a, b, c, d: chunk_delta_rule(a, b, c, d), q, k, v, beta),
                device,
                repeat,
                note=f"B{B} T{T} H{H} K=V={K}",
            )
        )
    except Exception as exc:
        rows.append({"comparison": "fla", "skipped": short(exc)})
    E, N = 2 * D, 16
    u = torch.randn(B, T, E, device=device)
    delta = torch.randn(B, T, E, device=device) - 2
    A = -torch.exp(torch.randn(E, N, device=device) * 0.5)
    Bm, Cm = torch.randn(B, T, N, device=device), torch.randn(B, T, N, device=device)
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

        rows.append(
            compare(
                "selective_scan_chunk vs mamba-ssm selective_scan_fn",
                lambda: grads_fn(
                    lambda a, b, c, d, e: selective_scan_chunk(a, b, c, d, e, delta_softplus=True),
                    u,
                    delta,
                    A,
                    Bm,
                    Cm,
                ),
                "mamba-ssm selective_scan_fn (CUDA)",
                lambda: grads_fn(
                    lambda a, b, c, d, e: selective_scan_fn(
                        a.transpose(1, 2),
                        b.transpose(1, 2),
                        c,
                        d.transpose(1, 2),
                        e.transpose(1, 2),
                        delta_softplus=True,
                    ),
                    u,
                    delta,
                    A,
                    Bm,
                    Cm,
                ),
                device,
                repeat,
                note=f"B{B} T{T} D{E} N{N}",
            )
        )
    except Exception as exc:
        rows.append({"comparison": "mamba-ssm selective_scan_fn", "skipped": short(exc)})
    P = 64
    Hs = E // P
    xs = torch.randn(B, T, Hs, P, device=device)
    dts = torch.randn(B, T, Hs, device=device) - 2
    As = -torch.exp(torch.randn(Hs, device=device))
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

        Bg, Cg = Bm.unsqueeze(2), Cm.unsqueeze(2)
        rows.append(
            compare(
                "ssd op vs mamba-ssm mamba_chunk_scan_combined",
                lambda: grads_fn(
                    lambda a, b, c, d, e: ssd(a, b, c, d, e, dt_softplus=True), xs, dts, As, Bg, Cg
                ),
                "mamba-ssm mamba_chunk_scan_combined (Triton)",
                lambda: grads_fn(
                    lambda a, b, c, d, e: mamba_chunk_scan_combined(
                        a, b, c, d, e, chunk_size=64, dt_softplus=True
                    ),
                    xs,
                    dts,
                    As,
                    Bg,
                    Cg,
                ),
                device,
                repeat,
                note=f"B{B} T{T} H{Hs} P{P} N{N}",
            )
        )
    except Exception as exc:
        rows.append({"comparison": "mamba-ssm mamba_chunk_scan_combined", "skipped": short(exc)})
    return rows


# --------------------------------------------------------------------------- train


def train_smoke(device: torch.device, timeout: int) -> dict[str, Any]:
    try:
        import lightning  # noqa: F401
    except Exception as exc:
        return {"status": "skipped", "reason": f"Lightning not importable ({short(exc)})"}
    out_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"rnnx-gpu-check-{os.getpid()}"
    cmd = [
        sys.executable,
        "-m",
        "rnnx.cli",
        "train",
        "--accelerator",
        device.type,
        "--model",
        "paragru",
        "--task",
        "parity",
        "--d-model",
        "32",
        "--n-layers",
        "2",
        "--max-steps",
        "5",
        "--batch-size",
        "16",
        "--limit-batches",
        "5",
        "--no-progress",
        "--out-dir",
        str(out_dir),
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "seconds": timeout, "command": " ".join(cmd[2:])}
    res: dict[str, Any] = {
        "status": "ok" if proc.returncode == 0 else f"exit {proc.returncode}",
        "seconds": round(time.time() - t0, 1),
        "command": "rnnx " + " ".join(cmd[3:]),
        "tail": (proc.stdout + proc.stderr)[-1200:],
    }
    with contextlib.suppress(Exception):
        r = json.loads((out_dir / "results.json").read_text())
        res.update(steps=r.get("steps"), accelerator=r.get("accelerator"), test=r.get("test"))
    return res


# --------------------------------------------------------------------------- main


def parse_shape(text: str) -> tuple[int, int, int]:
    b, t, d = (int(v) for v in text.split(","))
    return b, t, d


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (a dry run)")
    p.add_argument("--quick", action="store_true", help="the default modes only, fewer runs")
    p.add_argument("--out", default="gpu_check.json", help="JSON results (rewritten per section)")
    p.add_argument("--layers", default="", help="comma-separated layer names (default: all)")
    p.add_argument("--shape", default="", help="B,T,D of the timings (cuda: 8,2048,256)")
    p.add_argument("--check-shape", default="2,64,64", help="B,T,D of the correctness checks")
    p.add_argument("--repeat", type=int, default=0, help="timed runs (default 3 quick, 7 full)")
    p.add_argument("--tokens", type=int, default=0, help="decode tokens timed (default 64)")
    p.add_argument("--budget", type=float, default=0, help="soft time budget in seconds")
    p.add_argument("--no-train", action="store_true", help="skip the rnnx train smoke")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        say(
            f"gpu_check: --device {args.device} but torch {torch.__version__} sees no GPU; "
            "use --device cpu for a dry run"
        )
        return 2
    cpu_dry = device.type == "cpu"
    shape = parse_shape(args.shape) if args.shape else ((2, 128, 32) if cpu_dry else (8, 2048, 256))
    check_shape = parse_shape(args.check_shape)
    repeat = args.repeat or (3 if args.quick else 7)
    tokens = args.tokens or (16 if cpu_dry else 64)
    budget = args.budget or (210.0 if args.quick else 540.0)
    names = [n for n in args.layers.split(",") if n] or layers.names()
    unknown = [n for n in names if n not in layers.names()]
    if unknown:
        say(f"gpu_check: unknown layer(s) {unknown}; known: {', '.join(layers.names())}")
        return 2
    report = Report(Path(args.out), args)
    report.data["meta"] = meta(device)
    report.data["meta"].update(timing_shape=shape, check_shape=check_shape, repeat=repeat)
    report.write()
    say("== gpu_check", json.dumps(report.data["meta"]))
    warnings.filterwarnings("ignore", message=".*TF32.*")

    def over_budget(what: str) -> bool:
        spent = time.time() - T0
        if spent > budget:
            say(f"-- skipped {what}: {spent:.0f} s spent of the {budget:.0f} s budget")
            return True
        return False

    # 1. correctness
    say(
        f"\n== correctness: {device} vs cpu, B,T,D = {check_shape} "
        f"({'default modes' if args.quick else 'every mode'})"
    )
    tol32, tol16 = 2e-3, 5e-2
    rows: list[dict[str, Any]] = []
    # float32 means float32 here: no TF32 in cuDNN or matrix products while checking
    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    for name in names:
        t0 = time.time()
        try:
            got = check_layer(name, device, check_shape, args.quick, tol32, tol16)
        except Exception as exc:
            got = [{"layer": name, "error": short(exc)}]
        for r in got:
            r["seconds"] = round(time.time() - t0, 1)
        rows += got
        report.section("correctness", rows)
        r = got[0]
        say(
            f"  {name:16s} {r.get('mode', '?'):10s} y {fmt(r.get('y_rel'))} "
            f"grad {fmt(r.get('grad_rel'))} bf16 {fmt(r.get('bf16_y_rel'))} "
            f"sync {r.get('sync_fwd')}/{r.get('sync_lengths')}/{r.get('sync_decode')}"
            + (f"  ERROR {r['error']}" if "error" in r else "")
        )
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    cols = [
        "layer",
        "mode",
        "backend",
        "y_rel",
        "state_rel",
        "grad_rel",
        "ok32",
        "bf16_y_rel",
        "bf16_grad_rel",
        "ok16",
        "sync_fwd",
        "sync_lengths",
        "sync_decode",
    ]
    table(rows, cols)

    # 2. timing
    timing: list[dict[str, Any]] = []
    if not over_budget("timing"):
        say(f"\n== timing: fwd+bwd ms, B,T,D = {shape}; decode ms/token ({tokens} tokens)")
        for name in names:
            if over_budget(f"timing of {name} and after"):
                break
            r = time_layer(name, device, shape, repeat, bf16=not args.quick, tokens=tokens)
            timing.append(r)
            report.section("timing", timing)
            say(
                f"  {name:16s} {r.get('mode', '?'):10s} {fmt(r.get('fwd_bwd_ms'))} ms, decode "
                f"{fmt(r.get('decode_ms_per_token'))} ms/token"
                + (f"  ERROR {r['error']}" if "error" in r else "")
            )
        cols = [
            "layer",
            "mode",
            "backend",
            "fwd_bwd_ms",
            "fwd_bwd_bf16_ms",
            "decode_ms_per_token",
            "newton_iters",
        ]
        table(timing, cols)

    # 3. comparisons and peers
    comp: list[dict[str, Any]] = []
    if not over_budget("comparisons"):
        say(f"\n== comparisons (B,T,D = {shape})")
        comp = comparisons(device, shape, repeat, args.quick)
        report.section("comparisons", comp)
        table(
            comp,
            [
                "comparison",
                "rnnx_ms",
                "baseline_ms",
                "ratio",
                "target",
                "met",
                "newton_iters",
                "error",
            ],
        )
    if not over_budget("peers"):
        say("\n== peers (flash-linear-attention, mamba-ssm)")
        pr = peers(device, shape, repeat)
        report.section("peers", pr)
        table(pr, ["comparison", "rnnx_ms", "baseline_ms", "ratio", "skipped", "error"])

    # 4. train
    if args.no_train:
        report.section("train", {"status": "skipped", "reason": "--no-train"})
    elif not over_budget("train"):
        say(f"\n== rnnx train --accelerator {device.type} (a few steps)")
        tr = train_smoke(device, timeout=150 if args.quick else 300)
        report.section("train", tr)
        say("  " + json.dumps({k: v for k, v in tr.items() if k != "tail"}))
        if tr.get("status") not in ("ok", "skipped"):
            say(tr.get("tail", ""))

    # summary
    failures = [r["layer"] for r in rows if r.get("error") or r.get("ok32") is False]
    bf16_failures = [r["layer"] for r in rows if r.get("ok16") is False]
    targets = [
        {k: r.get(k) for k in ("comparison", "ratio", "target", "met")}
        for r in comp
        if r.get("target") is not None
    ]
    summary = {
        "correctness_failures": sorted(set(failures)),
        "bf16_failures": sorted(set(bf16_failures)),
        "timing_errors": [r["layer"] for r in timing if r.get("error")],
        "targets": targets,
        "elapsed_s": round(time.time() - T0, 1),
    }
    report.section("summary", summary)
    say("\n== summary")
    say(json.dumps(summary, indent=2))
    say(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
