"""``leanvision export``: a classifier or detector checkpoint -> ONNX or TorchScript."""

from __future__ import annotations

from ..config import argtype, at_least, between


def cmd_export(args) -> int:
    from .convert import export_checkpoint

    path, meta = export_checkpoint(args.weights, args.format, imgsz=args.imgsz, dynamic=args.dynamic,
                                   batch=args.batch, nms=args.nms, conf=args.conf, iou=args.iou,
                                   max_det=args.max_det, out=args.out, opset=args.opset)
    print(f"{meta['task']} model of {args.weights} exported to {path} ({args.format})\n"
          f"  input:  {meta['input']}\n  output: {meta['output']}")
    return 0


def add_export_parser(sub) -> None:
    p = sub.add_parser("export", help="export a classifier or detector checkpoint to ONNX or TorchScript",
                       description="Write the model of a best.pt/last.pt (of `leanvision train` or `leanvision detect "
                                   "train`) as one ONNX or TorchScript file, input RGB images in [0, 1]. A "
                                   "classifier's graph normalises and ends in logits; a detector's ends in decoded "
                                   "boxes and scores, or with --nms in the final detections.")
    p.add_argument("--weights", required=True, help="a best.pt or last.pt")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript"],
                   help="onnx (needs pip install 'leanvision[export]') or torchscript (torch.jit, deprecated by "
                        "PyTorch but loadable with torch.jit.load alone)")
    p.add_argument("--imgsz", type=argtype(int, at_least(1)), help="square input side (default: the training size; "
                   "detectors: a multiple of 32)")
    p.add_argument("--dynamic", action="store_true", help="ONNX: a variable batch size (classifiers) or batch, "
                   "height and width (detectors)")
    p.add_argument("--batch", type=argtype(int, at_least(1)), default=1, help="batch size of the exported input "
                   "(default 1)")
    p.add_argument("--out", help="output file (default: WEIGHTS with .onnx or .torchscript)")
    p.add_argument("--opset", type=argtype(int, at_least(7)), help="ONNX opset (default: the exporter's)")
    g = p.add_argument_group("detectors: NMS in the graph")
    g.add_argument("--nms", action="store_true", help="end the graph in the final detections (K, 7): image, x1, y1, "
                   "x2, y2, score, class (ONNX NonMaxSuppression)")
    g.add_argument("--conf", type=argtype(float, between(0, 1)), default=0.25, help="confidence threshold (default "
                   "0.25, as predict)")
    g.add_argument("--iou", type=argtype(float, between(0, 1)), default=0.7, help="NMS IoU threshold (default 0.7)")
    g.add_argument("--max-det", type=argtype(int, at_least(1)), default=300, help="detections per image (default 300)")
    p.set_defaults(func=cmd_export)


