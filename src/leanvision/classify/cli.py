"""``leanvision val`` and ``leanvision predict``: use a trained classifier from its checkpoint alone."""

from __future__ import annotations

import argparse

from ..config import RUN_NAME, ConfigError, argtype, at_least


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
