"""The ``rnnx`` command line: ``list``, ``train``, ``bench``.

Before torch is imported, the CLI asks torch's CPU allocator to back large tensors
with transparent huge pages (``THP_MEM_ALLOC_ENABLE=1``, a documented PyTorch
setting) unless the user set it. Sequence models allocate large fresh activations on
every step; with 4 KiB pages the first touch of each page faults, which costs about as
much as the computation of a memory-bound op (see docs/benchmarks.md). The library
itself never changes process-wide settings; only this entry point does.
"""

from __future__ import annotations

import os

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import argparse
import sys
from collections.abc import Sequence


def _cmd_list(args: argparse.Namespace) -> int:
    import rnnx.layers as layers

    rows = []
    for name in layers.names():
        cls = layers.get(name)
        modes = ", ".join(m + ("*" if m == cls.default_mode else "") for m in cls.modes)
        ct = "yes" if cls.continuous_time else ""
        rows.append((name, cls.__name__, cls.family, modes, ct, cls.paper))
    header = ("name", "class", "family", "modes (* default)", "continuous-time", "paper")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from rnnx import bench

    if args.threads:
        torch.set_num_threads(args.threads)
    todo = bench.names() if args.benchmark == "all" else [args.benchmark]
    for name in todo:
        module = bench.load(name)
        sub = argparse.Namespace(**vars(args))
        if args.benchmark == "all" or sub.out is None:
            sub.out = os.path.join(
                "benchmarks", "results", f"{name}{'-quick' if args.quick else ''}.json"
            )
        for key, value in _bench_defaults(module).items():
            if not hasattr(sub, key):
                setattr(sub, key, value)
        print(f"== rnnx bench {name}: {module.DESCRIPTION}", flush=True)
        module.run(sub)
    return 0


def _bench_defaults(module) -> dict:
    parser = argparse.ArgumentParser(add_help=False)
    module.add_arguments(parser)
    return vars(parser.parse_args([]))


def _cmd_train(args: argparse.Namespace) -> int:
    from rnnx.train.run import main_train

    return main_train(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnx", description="Recurrent sequence models on one contract."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p_list = sub.add_parser("list", help="every registered layer with its modes")
    p_list.set_defaults(func=_cmd_list)

    from rnnx.train.run import add_train_arguments

    p_train = sub.add_parser("train", help="train a model on a task (default: S4D on digits)")
    add_train_arguments(p_train)
    p_train.set_defaults(func=_cmd_train)

    from rnnx import bench

    p_bench = sub.add_parser("bench", help="speed and memory benchmarks (ratios vs baselines)")
    bsub = p_bench.add_subparsers(dest="benchmark", required=True)
    for name in [*bench.names(), "all"]:
        if name == "all":
            bp = bsub.add_parser("all", help="run every benchmark")
        else:
            module = bench.load(name)
            bp = bsub.add_parser(
                name,
                help=module.DESCRIPTION,
                description=module.__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
            module.add_arguments(bp)
        bp.add_argument("--quick", action="store_true", help="tiny shapes (a smoke run)")
        bp.add_argument("--repeat", type=int, default=5, help="timed runs per measurement")
        bp.add_argument("--threads", type=int, default=0, help="torch threads (0: keep)")
        bp.add_argument(
            "--out", default=None, help="JSON results path (default benchmarks/results/<name>.json)"
        )
    p_bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
