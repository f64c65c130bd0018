"""Shared tools of the benchmarks: timing, peak memory, peers, tables and JSON."""

from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import importlib
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

import rnnx


def timeit(fn: Callable[[], Any], *, repeat: int = 5, warmup: int = 1) -> dict[str, float]:
    """Wall time of ``fn()`` in seconds: median and min over ``repeat`` runs after
    ``warmup`` runs. The garbage collector is paused while timing."""
    for _ in range(warmup):
        fn()
    times = []
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(max(1, repeat)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    finally:
        if gc_was:
            gc.enable()
    return {"median": statistics.median(times), "min": min(times), "runs": len(times)}


def interleaved(
    fns: dict[str, Callable[[], Any]], repeat: int, *, warmup: int = 2
) -> dict[str, float]:
    """Median wall time in seconds of each function, run in alternating rounds (every
    contender once per round) after ``warmup`` rounds, so that drift of a shared
    machine's load hits every contender alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(max(1, repeat) + warmup):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _peak_rss() -> int:
    """This process's peak resident memory in bytes.

    Linux's VmHWM belongs to the address space, which is new after exec. ``ru_maxrss``
    is not: a child started by fork+exec (multiprocessing's "spawn") inherits the
    parent's peak, so a parent that once used more memory than the child measures
    would hide the child's whole peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak_child(conn, target: str, kwargs: dict[str, Any]) -> None:
    module, _, func = target.rpartition(":")
    fn = getattr(importlib.import_module(module), func)
    torch.set_num_threads(kwargs.pop("_threads", torch.get_num_threads()))
    setup = fn(**kwargs)  # returns the callable to measure, after building its inputs
    gc.collect()
    before = _peak_rss()
    setup()
    after = _peak_rss()
    conn.send(after - before)
    conn.close()


def peak_memory(target: str, **kwargs: Any) -> int:
    """Extra peak resident memory (bytes) of one call, measured in a fresh process.

    ``target`` is ``"module:function"``; the function takes ``kwargs``, builds its
    inputs and returns a zero-argument callable, whose run is measured alone (the
    process's peak before the call is subtracted). CPU only; a fresh process per
    measurement because a process's peak never goes down.
    """
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    kwargs.setdefault("_threads", torch.get_num_threads())
    proc = ctx.Process(target=_peak_child, args=(child, target, kwargs))
    proc.start()
    value = parent.recv()
    proc.join()
    return int(value)


def import_peer(module: str) -> tuple[Any | None, str]:
    """Import a peer library to compare with; ``(module, "")`` or ``(None, reason)``."""
    try:
        return importlib.import_module(module), ""
    except Exception as exc:  # a peer may fail in many ways (missing CUDA, deps)
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0][:200]


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "rnnx": rnnx.__version__,
        "python": platform.python_version(),
        "commit": commit,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "thp_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE", "0"),
    }


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write the results atomically (a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def ms(seconds: float) -> float:
    return seconds * 1e3
