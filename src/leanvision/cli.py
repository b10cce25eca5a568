"""The ``leanvision`` command: train, val, predict, export, bench, demo, models, methods (and detect, for detectors)."""

from __future__ import annotations

import argparse
import os
import sys

import yaml

from .config import ConfigError, TrainConfig, build_config, field_names, flag_name


def parse_kv(items: list[str] | None) -> dict:
    """``["modules=16", "mlaan_span=2"]`` -> ``{"modules": 16, "mlaan_span": 2}`` (values read as YAML scalars)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"expected KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip().replace("-", "_")] = yaml.safe_load(v)
    return out


def add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a classifier with a method (E2E, local learning, replacement)",
                       description="Train a block-list classifier. A --config YAML sets defaults; flags override it.")
    p.add_argument("--config", help="YAML file of train options (keys as below, with _ or -)")
    g = p.add_argument_group("what to train")
    g.add_argument("--model", help="model name (leanvision models), or timm/<name>; default resnet32")
    g.add_argument("--data", help="cifar10 | cifar100 | svhn | stl10 | imagenet | digits | a folder/.tar(.gz) path")
    g.add_argument("--data-dir", help="folder holding the official dataset files for a named dataset")
    g.add_argument("--subset", type=int, help="train on N images drawn with the seed (quick runs)")
    g = p.add_argument_group("method")
    g.add_argument("--method", help="e2e | dgl | infopro | dgl+mlaan | infopro+mlaan | greedy | replacement; "
                   "--replace-interval/--replace-blocks with another method replace blocks inside it")
    g.add_argument("--modules", type=int, help="local learning: number of gradient-isolated modules K "
                   "(the papers' labelling, e.g. 16 for per-block ResNet-32, 55 for per-block ResNet-110)")
    g.add_argument("--split", help="local learning: auto (published table if one exists, else balanced block "
                   "counts) | table | blocks (balanced block counts) | memory (balanced activation memory) | "
                   "a table name (resnet32, resnet110, resnet34, resnet101, infopro*, infopro*-stl10) | "
                   "end blocks such as 1.2,2.1,3.0")
    g.add_argument("--method-opt", action="append", metavar="KEY=VALUE",
                   help="further method option (repeatable), e.g. preset=release (local learning: the authors' "
                   "released settings and LR rule), ema_momentum=0.995, span=2, detach_neighbors=true")
    from .methods.replacement import add_cli_arguments as add_replacement_arguments

    add_replacement_arguments(p)
    g = p.add_argument_group("optimisation (default: the published recipe of the model/data)")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int, help="global batch size (split across processes)")
    g.add_argument("--optimizer", choices=["sgd", "adamw"])
    g.add_argument("--lr", type=float)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--momentum", type=float)
    g.add_argument("--warmup-epochs", type=int)
    g.add_argument("--lr-schedule", choices=["cosine", "release"],
                   help="cosine (default): warm-up then cosine, set every step, LR > 0 to the last step; "
                        "release: the authors' rule, set once per epoch (the last epoch has LR 0)")
    g.add_argument("--patience", type=int, help="stop after N epochs without a better test accuracy")
    g = p.add_argument_group("execution")
    g.add_argument("--amp", choices=["none", "bf16", "fp16"])
    g.add_argument("--channels-last", action="store_true", default=None)
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile each block")
    g.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    g.add_argument("--workers", type=int)
    g.add_argument("--seed", type=int)
    g.add_argument("--steps-per-epoch", type=int, help="cap on batches per epoch")
    from .engine.pipeline.flags import add_pipeline_arguments

    add_pipeline_arguments(g)
    g = p.add_argument_group("output")
    g.add_argument("--project", help="parent folder of runs (default runs/train)")
    g.add_argument("--name", help="run folder name (default MODEL-METHOD-DATA)")
    g.add_argument("--resume", metavar="RUN",
                   help="continue a run (its folder or last.pt) with its saved config, in its folder; only "
                        "--epochs (to extend it), --device and --no-progress may be given with it")
    g.add_argument("--overwrite", action="store_true", default=None, help="allow writing into an existing run folder")
    g.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    p.set_defaults(func=cmd_train)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's config: a --config YAML overridden by the flags given, or, with --resume, the saved run's."""
    from .methods.replacement import options_from_args

    flags = {name: getattr(args, name, None) for name in field_names()}
    opts = {k: getattr(args, k) for k in ("modules", "split") if getattr(args, k, None) is not None}
    opts.update(parse_kv(args.method_opt))
    rep = {k: v for k, v in options_from_args(args).items() if v is not None and k not in ("interval", "blocks")}
    flags.update(method_options=opts or None, replace_options=rep or None)
    if args.resume:
        from .engine.resume import config_for_resume
        from .engine.run import upgrade_saved_config

        if args.config:
            raise ConfigError("--resume restores the run's own config; drop --config (a config with a new "
                              "--name starts a new run)")
        return config_for_resume(TrainConfig, args.resume, flags, upgrade=upgrade_saved_config,
                                 where=lambda k: _OPTION_FLAGS.get(k, flag_name(k)))
    return build_config(TrainConfig, args.config, flags)


# the flags that fill the option mappings of TrainConfig
_OPTION_FLAGS = {"method_options": "--modules/--split/--method-opt", "replace_options": "--replace-*"}


def cmd_train(args) -> int:
    from .engine.distributed import is_main_process
    from .engine.run import train

    cfg = config_from_args(args)
    res = train(cfg)
    final = res["final"]
    if final and is_main_process():  # the other processes of a torchrun job have no test metrics
        print(f"last-epoch test accuracy: {final.get('val_acc', float('nan')):.4f} "
              f"(best-epoch, selected on the test set: {res['best_epoch_acc']:.4f} at epoch {res['best_epoch']})")
    return 0


def cmd_models(args) -> int:
    from .models import list_detectors, list_models

    found = {"classify": list_models(args.pattern), "detect": list_detectors(args.pattern)}
    if args.task:  # names only, one per line, for scripts
        print("\n".join(found[args.task]))
        return 0
    for task, how in (("classify", "classifiers (leanvision train --model NAME)"),
                      ("detect", "detectors (leanvision detect train --model NAME)")):
        if found[task]:
            print(how + ":\n" + "\n".join("  " + n for n in found[task]))
    if not any(found.values()):
        print(f"no model matches {args.pattern!r}")
    return 0


def cmd_methods(args) -> int:
    from .methods import list_methods

    print("\n".join(list_methods()))
    return 0


def version_text() -> str:
    """``leanvision --version``: this package's version and the PyTorch and Python it runs on."""
    import platform

    import torch

    from . import __version__

    return f"leanvision {__version__} (torch {torch.__version__}, Python {platform.python_version()})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leanvision", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=version_text())
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_parser(sub)
    # Each task package registers its own sub-commands. An import error in one is a real breakage: let it show.
    from .bench.cli import add_bench_parser, add_demo_parser
    from .classify.cli import add_classify_parsers
    from .detection.cli import add_detect_parser
    from .export.cli import add_export_parser

    add_classify_parsers(sub)
    add_export_parser(sub)
    add_bench_parser(sub)
    add_demo_parser(sub)
    add_detect_parser(sub)
    p = sub.add_parser("models", help="list registered classifiers and detectors")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style wildcard, e.g. 'resnet*' or '*yolo*'")
    p.add_argument("--task", choices=["classify", "detect"], help="list only this task's models, names only")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("methods", help="list training methods")
    p.set_defaults(func=cmd_methods)
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    """The library's own error types: a message for the user, no traceback (anything else is a bug and shows one)."""
    from .data.base import DatasetError
    from .detection.det_check import DatasetCheckError
    from .detection.det_formats import DatasetFormatError
    from .engine.checkpoint import CheckpointError

    return ConfigError, CheckpointError, DatasetError, DatasetFormatError, DatasetCheckError, FileNotFoundError


def main(argv: list[str] | None = None) -> int:
    """Run a command; exit code 0 on success, 2 for a user's mistake (bad input), 1 when training diverged."""
    from .engine.trainer import NonFiniteError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["bench", "detect"]:  # `leanvision bench detect ...` is the detector bench
        argv = ["detect", "bench", *argv[2:]]
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (*user_errors(), NonFiniteError) as e:
        if os.environ.get("LEANVISION_DEBUG"):
            raise
        rank = os.environ.get("RANK", "0")
        where = f" (process {rank})" if rank != "0" else ""
        print(f"leanvision {args.command}{where}: error: {e}", file=sys.stderr)
        return 1 if isinstance(e, NonFiniteError) else 2


if __name__ == "__main__":
    sys.exit(main())
