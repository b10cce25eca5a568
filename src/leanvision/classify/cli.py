"""``leanvision val`` and ``leanvision predict``: use a trained classifier from its checkpoint alone."""

from __future__ import annotations

import argparse

import yaml

from ..config import RUN_NAME, ConfigError, TrainConfig, argtype, at_least, build_config, field_names, flag_name


def _output_flags(p: argparse.ArgumentParser, name: str) -> None:
    p.add_argument("--project", default="runs/classify", help="parent folder of the outputs (default runs/classify)")
    p.add_argument("--name", default=name, help=f"output folder name (default {name}, numbered when it exists)")
    p.add_argument("--overwrite", action="store_true", help="write into an existing PROJECT/NAME")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar (also off when "
                   "the output is not a terminal)")


def _out_dir(args):
    from ..engine.run_folder import output_folder

    if not RUN_NAME.ok(args.name):
        raise ConfigError(f"--name must be {RUN_NAME.text}, got {args.name!r}")
    return output_folder(args.project, args.name, args.overwrite)


def cmd_val(args) -> int:
    from .val import format_metrics, validate_classifier

    out = _out_dir(args)
    res = validate_classifier(args.weights, out, data=args.data, data_dir=args.data_dir, split=args.split,
                              batch_size=args.batch_size, device=args.device, workers=args.workers,
                              progress=args.progress)
    print(format_metrics(res, res["classes"]))
    print(f"confusion_matrix.csv, confusion_matrix.png and metrics.json written to {out}")
    return 0


def cmd_predict(args) -> int:
    from .predict import predict_classes

    out = _out_dir(args)
    recs = predict_classes(args.weights, args.source, out, top_k=args.top_k, batch_size=args.batch_size,
                           device=args.device, progress=args.progress)
    for r in recs[:10]:
        top = ", ".join(f"{t['name']} {t['score']:.3f}" for t in r["top"])
        print(f"{r['image']}: {top}")
    if len(recs) > 10:
        print(f"... ({len(recs) - 10} more)")
    print(f"{len(recs)} images classified; predictions.csv and predictions.json written to {out}")
    return 0


def add_classify_parsers(sub) -> None:
    """``val`` and ``predict`` for classifiers (``leanvision detect val|predict`` are the detectors')."""
    v = sub.add_parser("val", help="top-1, top-5 and per-class accuracy of a classifier checkpoint, confusion matrix",
                       description="Evaluate a best.pt/last.pt of `leanvision train`. The model, classes and "
                                   "normalisation come from the checkpoint; the data defaults to the run's own. "
                                   "Writes confusion_matrix.csv/.png and metrics.json to PROJECT/NAME.")
    v.add_argument("--weights", required=True, help="a best.pt or last.pt of `leanvision train`")
    v.add_argument("--data", help="dataset name or path, as for train (default: the one the run trained on)")
    v.add_argument("--data-dir", help="folder of a named dataset's official files (default: the run's)")
    v.add_argument("--split", choices=["test", "train"], default="test",
                   help="test (default; a folder tree's val/ when it has no test/) or train")
    v.add_argument("--batch-size", type=argtype(int, at_least(1)), default=256)
    v.add_argument("--workers", type=argtype(int, at_least(0)), help="loader processes for streamed datasets")
    _output_flags(v, "val")
    v.set_defaults(func=cmd_val)

    q = sub.add_parser("predict", help="top-k classes of images (a file, a folder or a glob) with a classifier",
                       description="Classify images with a best.pt/last.pt of `leanvision train`: the model, classes, "
                                   "input size and normalisation come from the checkpoint. Writes predictions.csv and "
                                   "predictions.json to PROJECT/NAME.")
    q.add_argument("--weights", required=True, help="a best.pt or last.pt of `leanvision train`")
    q.add_argument("--source", required=True, help="an image, a folder of images, or a glob such as 'photos/**/*.jpg' "
                   "(quote it)")
    q.add_argument("--top-k", type=argtype(int, at_least(1)), default=5, help="classes per image (default 5)")
    q.add_argument("--batch-size", type=argtype(int, at_least(1)), default=32)
    _output_flags(q, "predict")
    q.set_defaults(func=cmd_predict)


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
    p.add_argument("--config", help="YAML file of train options: keys as the flags below, with _ or - "
                   "(either spelling of a flag with an alias: batch or batch_size, lr or lr0)")
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
    from ..methods.replacement import add_cli_arguments as add_replacement_arguments

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
    from ..engine.pipeline.flags import add_pipeline_arguments

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
    from ..methods.replacement import options_from_args

    flags = {name: getattr(args, name, None) for name in field_names()}
    opts = {k: getattr(args, k) for k in ("modules", "split") if getattr(args, k, None) is not None}
    opts.update(parse_kv(args.method_opt))
    rep = {k: v for k, v in options_from_args(args).items() if v is not None and k not in ("interval", "blocks")}
    flags.update(method_options=opts or None, replace_options=rep or None)
    if args.resume:
        from ..engine.resume import config_for_resume
        from .train import upgrade_saved_config

        if args.config:
            raise ConfigError("--resume restores the run's own config; drop --config (a config with a new "
                              "--name starts a new run)")
        return config_for_resume(TrainConfig, args.resume, flags, upgrade=upgrade_saved_config,
                                 where=lambda k: _OPTION_FLAGS.get(k, flag_name(k)))
    return build_config(TrainConfig, args.config, flags)


# the flags that fill the option mappings of TrainConfig
_OPTION_FLAGS = {"method_options": "--modules/--split/--method-opt", "replace_options": "--replace-*"}


def cmd_train(args) -> int:
    from ..engine.distributed import is_main_process
    from ..ops.memory import mark_import_rss
    from .train import train

    mark_import_rss(force=True)  # torch and the training code are imported, nothing else exists: "above import"
    # starts here (forced: a command called again in one Python process measures from its own start)
    cfg = config_from_args(args)
    res = train(cfg)
    final = res["final"]
    if final and is_main_process():  # the other processes of a torchrun job have no test metrics
        print(f"last-epoch test accuracy: {final.get('val_acc', float('nan')):.4f} "
              f"(best-epoch, selected on the test set: {res['best_epoch_acc']:.4f} at epoch {res['best_epoch']})")
    return 0
