"""The ``leanvision`` command: train, val, predict, export, bench, demo, models, methods (and detect, for detectors)."""

from __future__ import annotations

import argparse
import os
import sys

from .config import ConfigError


def cmd_models(args) -> int:
    from .data.cache import cache_root
    from .engine.progress import progress_bar
    from .models import list_detectors, list_models, list_timm_models

    found = {"classify": list_models(args.pattern), "detect": list_detectors(args.pattern), "timm": []}
    if args.task in (None, "timm"):  # each timm name is checked once per timm version, then read from the cache
        def bar(names, total):
            return progress_bar(names, total=total, show=args.progress, unit="model",
                                desc="checking timm models against the block-list contract (once per timm version)")

        found["timm"] = list_timm_models(args.pattern, cache_file=cache_root() / "timm-block-check.json",
                                         progress=bar)
    if args.task:  # names only, one per line, for scripts
        print("\n".join(found[args.task]))
        return 0
    for task, how in (("classify", "classifiers (leanvision train --model NAME)"),
                      ("detect", "detectors (leanvision detect train --model NAME)"),
                      ("timm", "timm classifiers wrapped as block lists (leanvision train --model timm/NAME)")):
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
    # Each task package registers its own sub-commands. An import error in one is a real breakage: let it show.
    from .bench.cli import add_bench_parser, add_demo_parser
    from .bench.detect import add_detect_bench_parser
    from .classify.cli import add_classify_parsers, add_train_parser
    from .detect.cli import add_detect_parser
    from .export.cli import add_export_parser

    add_train_parser(sub)
    add_classify_parsers(sub)
    add_export_parser(sub)
    add_bench_parser(sub)
    add_demo_parser(sub)
    add_detect_bench_parser(add_detect_parser(sub))  # `detect bench` lives in bench/, a layer above detect/
    p = sub.add_parser("models", help="list registered classifiers and detectors, and timm/ names when timm is "
                       "installed (each timm name is listed only if it passes leanvision's block-list check, "
                       "run once per timm version and cached)")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style wildcard, e.g. 'resnet*' or '*yolo*'")
    p.add_argument("--task", choices=["classify", "detect", "timm"],
                   help="list only these models (timm: the timm/ names), names only")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar while timm models are checked (also off when the output is not a terminal)")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("methods", help="list training methods")
    p.set_defaults(func=cmd_methods)
    from .flags import unify_flags

    return unify_flags(parser)  # one spelling per idea in every sub-command, the others as aliases


def user_errors() -> tuple[type[BaseException], ...]:
    """The library's own error types: a message for the user, no traceback (anything else is a bug and shows one)."""
    from .data.base import DatasetError
    from .detect.data.check import DatasetCheckError
    from .detect.data.formats import DatasetFormatError
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
