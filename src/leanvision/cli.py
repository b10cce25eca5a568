"""The ``leanvision`` command: train, bench, demo, models, methods (and detect, for detectors)."""

from __future__ import annotations

import argparse
import os
import sys

import yaml

from .config import ConfigError, TrainConfig, field_names, load_yaml


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
    g = p.add_argument_group("execution")
    g.add_argument("--amp", choices=["none", "bf16", "fp16"])
    g.add_argument("--channels-last", action="store_true", default=None)
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile each block")
    g.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    g.add_argument("--workers", type=int)
    g.add_argument("--seed", type=int)
    g.add_argument("--steps-per-epoch", type=int, help="cap on batches per epoch")
    g = p.add_argument_group("output")
    g.add_argument("--project", help="parent folder of runs (default runs/train)")
    g.add_argument("--name", help="run folder name (default MODEL-METHOD-DATA)")
    g.add_argument("--resume", help="continue from this last.pt")
    g.add_argument("--overwrite", action="store_true", default=None, help="allow writing into an existing run folder")
    g.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    p.set_defaults(func=cmd_train)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = load_yaml(args.config) if args.config else {}
    opts = dict(values.pop("method_options", None) or {})
    for key in ("modules", "split"):
        if getattr(args, key, None) is not None:
            opts[key] = getattr(args, key)
    opts.update(parse_kv(args.method_opt))
    from .methods.replacement import options_from_args

    rep = {k: v for k, v in options_from_args(args).items() if v is not None and k not in ("interval", "blocks")}
    if rep:
        values["replace_options"] = {**values.get("replace_options", {}), **rep}
    for name in field_names():
        v = getattr(args, name, None)
        if v is not None:
            values[name] = v
    return TrainConfig(**values, method_options=opts)


def cmd_train(args) -> int:
    from .engine.run import train

    cfg = config_from_args(args)
    res = train(cfg)
    final = res["final"]
    if final:
        print(f"last-epoch test accuracy: {final.get('val_acc', float('nan')):.4f} "
              f"(best-epoch, selected on the test set: {res['best_epoch_acc']:.4f} at epoch {res['best_epoch']})")
    return 0


def cmd_models(args) -> int:
    from .models import list_models

    print("\n".join(list_models(args.pattern)))
    return 0


def cmd_methods(args) -> int:
    from .methods import list_methods

    print("\n".join(list_methods()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leanvision", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_parser(sub)
    from .bench.cli import add_bench_parser, add_demo_parser

    add_bench_parser(sub)
    add_demo_parser(sub)
    try:
        from .detection.cli import add_detect_parser
    except ImportError:  # the detector CLI is optional while it is being built
        add_detect_parser = None
    if add_detect_parser is not None:
        add_detect_parser(sub)
    p = sub.add_parser("models", help="list registered classifiers")
    p.add_argument("pattern", nargs="?", default="*")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("methods", help="list training methods")
    p.set_defaults(func=cmd_methods)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["bench", "detect"]:  # `leanvision bench detect ...` is the detector bench
        argv = ["detect", "bench", *argv[2:]]
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, ValueError, FileNotFoundError, TypeError) as e:
        if os.environ.get("LEANVISION_DEBUG"):
            raise
        print(f"leanvision {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
