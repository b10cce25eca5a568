"""``leanvision bench`` and ``leanvision demo``."""

from __future__ import annotations

import shlex
import sys
from dataclasses import replace

from ..config import ConfigError, TrainConfig, argtype, at_least, build_config
from ..engine.progress import progress_bar
from .recipes import RECIPES
from .report import add_ratios, busy_warning, write_outputs
from .rows import parse_rows


def add_bench_parser(sub) -> None:
    p = sub.add_parser(
        "bench", help="run (model, method) rows side by side and tabulate cost and gain",
        description="Rows are MODEL:METHOD[:key=value,...] (e.g. resnet110:e2e resnet110:dgl+mlaan:modules=55) "
                    "or YAML files with a 'rows' list. With --steps N each row trains N steps on one random "
                    "batch (resources only); otherwise each row really trains for --epochs on --data.")
    p.add_argument("rows", nargs="+", help="MODEL:METHOD[:key=value,...] or rows.yaml; or 'overhead' to time the "
                   "trainer against a bare PyTorch loop; or 'detect ...' for the detector bench; or "
                   "'pipeline ROWS' for pipelined local learning against one process (--pipeline-stages, --threads)")
    p.add_argument("--steps", type=argtype(int, at_least(1)),
                   help="resource-only rows: timed steps per row (after warm-up)")
    p.add_argument("--rounds", type=argtype(int, at_least(1)), default=1,
                   help="resource rows: time in this many rounds with the rows taking turns (median per row), "
                        "for machines shared with other work; memory is still measured row by row")
    p.add_argument("--same-process", action="store_true",
                   help="resource rows: run all rows in this process (default: each row in a fresh process, so "
                        "that its peak resident memory is its own)")
    p.add_argument("--memory-profile", metavar="OUT.png",
                   help="resource rows: also record one step of each row, memory over time by module, and plot "
                        "the rows one above the other into this PNG")
    p.add_argument("--recipe", choices=sorted(RECIPES), help="a named, fixed recipe (e.g. cifar10-short)")
    p.add_argument("--data", help="dataset name or path for training rows")
    p.add_argument("--data-dir")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--amp", choices=["none", "bf16", "fp16"])
    p.add_argument("--channels-last", action="store_true", default=None)
    p.add_argument("--device")
    p.add_argument("--seed", type=int)
    p.add_argument("--steps-per-epoch", type=int)
    p.add_argument("--lr-schedule", choices=["cosine", "release"],
                   help="training rows: the LR rule, over the recipe's (cifar10-short pins release, the rule its "
                        "BENCHMARKS.md numbers were measured with)")
    p.add_argument("--out", default="runs/bench", help="folder for bench.md, bench.json, bench.png and runs")
    p.add_argument("--json", help="also write the rows as JSON here")
    p.add_argument("--title", default="leanvision bench")
    p.add_argument("--pipeline-stages", help="'pipeline' rows: stage counts to compare with one process, e.g. 2,4")
    p.add_argument("--threads", type=int, help="'pipeline' rows: threads per process (default 1)")
    p.add_argument("--micro-batches", type=int, metavar="M",
                   help="'pipeline' rows: micro-batches per batch of the pipelined runs (default 1; the "
                        "one-process run always trains on whole batches)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bars (also off when the output is not a terminal)")
    p.set_defaults(func=cmd_bench)


def base_config(args, recipe: str | None) -> TrainConfig:
    """The recipe's values (if any) with the flags given on top, checked (errors name the flag)."""
    flags = {k: getattr(args, k, None) for k in ("data", "data_dir", "epochs", "batch_size", "amp", "channels_last",
                                                  "device", "seed", "steps_per_epoch",
                                                  "lr_schedule")}
    return build_config(TrainConfig, None, {**(RECIPES[recipe] if recipe else {}),
                                            "progress": getattr(args, "progress", True),
                                            **{k: v for k, v in flags.items() if v is not None}})


def cmd_bench(args) -> int:

    from ..engine.distributed import resolve_device
    from ..ops.memory import mark_import_rss
    from .runner import run_rows

    mark_import_rss(force=True)  # for --same-process rows (a row in its own process marks its own)

    if args.rows == ["overhead"]:  # `leanvision bench overhead`: the trainer vs a bare loop
        from .overhead import trainer_overhead

        res = trainer_overhead(batch_size=args.batch_size or 128, steps=args.steps or 10,
                               device=str(resolve_device(args.device or "auto")))
        print(" | ".join(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}" for k, v in res.items()))
        return 0
    if args.rows[0] == "pipeline":  # `leanvision bench pipeline ROWS`: pipelined local learning vs one process
        from .pipeline import cmd_pipeline

        return cmd_pipeline(args, args.rows[1:])
    rows = parse_rows(args.rows)
    base = base_config(args, args.recipe)
    if not args.steps and args.epochs is None and not args.recipe:
        raise ConfigError("give --steps N (resource-only rows) or --epochs N / --recipe (training rows)")
    if args.rounds > 1 and not args.steps:
        raise ConfigError(f"--rounds {args.rounds} needs --steps (resource rows)")
    if args.memory_profile and not args.steps:
        raise ConfigError("--memory-profile needs --steps (resource rows)")
    if args.memory_profile and not args.memory_profile.lower().endswith(".png"):
        raise ConfigError(f"--memory-profile {args.memory_profile}: expected a .png file name")
    device = resolve_device(base.device)
    done: list[dict] = []
    busy = busy_warning() if args.steps else None  # resource rows are timings
    if busy:
        print(busy, file=sys.stderr, flush=True)
    bar = progress_bar(total=len(rows), show=args.progress, desc="bench rows", unit="row", leave=True)

    def show(r):
        done.append(r)
        bar.update(1)
        bar.write(f"  done: {r['model']}:{r['method']} {r.get('settings') or ''}")

    with bar:
        run_rows(rows, base, args.steps, args.out, device, on_row=show, rounds=args.rounds,
                 same_process=args.same_process, profile=bool(args.memory_profile))
    profiles = [(f"{r['model']}:{r['method']}" + (f":{r['settings']}" if r.get("settings") else ""),
                 r.pop("memory_profile")) for r in done if "memory_profile" in r]
    command = "leanvision " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 1 else ""
    md = write_outputs(add_ratios(done), args.out, args.title, "leanvision bench " + command.split(" ", 1)[-1],
                       args.json)
    print(md)
    print(f"wrote {args.out}/bench.md, bench.json, bench.png")
    if profiles:
        from pathlib import Path

        from .memory_profile import plot_memory_profiles

        Path(args.memory_profile).parent.mkdir(parents=True, exist_ok=True)
        plot_memory_profiles(profiles, args.memory_profile)
        print(f"wrote {args.memory_profile}")
    return 0


DEMO_ROWS = ["resnet20:e2e", "resnet20:dgl:modules=4", "resnet20:dgl+mlaan:modules=4",
             "resnet20:replacement:interval=2"]


def add_demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="the built-in demo: methods side by side on the bundled digits data")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--epochs", type=argtype(int, at_least(1)))
    p.add_argument("--rows", nargs="+", help=f"override the rows (default: {' '.join(DEMO_ROWS)})")
    p.add_argument("--no-detect", action="store_true", help="skip the detector part of the demo")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bars (also off when the output is not a terminal)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    import torch

    from ..methods import list_methods
    from .runner import run_rows

    base = TrainConfig(**{**RECIPES["demo"], "progress": args.progress})
    if args.epochs:
        base = replace(base, epochs=args.epochs)
    wanted = parse_rows(args.rows or DEMO_ROWS)
    rows = [r for r in wanted if r.method in list_methods()]
    print(f"leanvision demo: {len(rows)} rows on the bundled digits data ({base.epochs} epochs each, CPU is fine)")
    busy = busy_warning()  # the demo's table compares step times
    if busy:
        print(busy, file=sys.stderr, flush=True)
    with progress_bar(total=len(rows), show=args.progress, desc="demo rows", unit="row", leave=True) as bar:
        def show(r):
            bar.update(1)
            bar.write(f"  {r['model']}:{r['method']} {r.get('settings') or ''}: test acc {r['accuracy']:.3f}")

        results = run_rows(rows, base, None, f"{args.out}/classify", torch.device("cpu"), on_row=show)
    md = write_outputs(results, f"{args.out}/classify", "leanvision demo (digits, CPU)", "leanvision demo")
    print(md)
    if not args.no_detect:
        try:
            from ..detect.demo import run_detect_demo
        except ImportError:
            run_detect_demo = None
        if run_detect_demo is not None:
            run_detect_demo(f"{args.out}/detect", progress=args.progress)
    return 0
