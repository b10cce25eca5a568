"""Start a YOLOv8 or GSO-YOLO from weights written by another tool: ultralytics' ``yolov8n.pt`` or a ``.safetensors``.

No ultralytics code is needed or run. An ultralytics checkpoint pickles whole ``nn.Module`` objects;
:func:`~leanvision.ops.plain_pickle.load_torch_zip` reads it into inert records of each module's state, and
this module walks those records: the model's layer table (``model.model``, one row per ``model.N``), each
row's class name and its tensors in module order (parameters, persistent buffers, then children: the order
of ``state_dict``). A ``.safetensors`` file (or a torch-saved bare state dict) holds tensor names only,
``model.N.xxx`` as leanvision and ultralytics both write them; its rows' kinds are read from those names.

Mapping (:func:`load_yolo_weights`) goes by structure, not by trusting the file's names: the file's rows and
the model's rows that hold tensors are paired in order by kind (Conv, C2f, SPPF, Detect ...), so GSO-YOLO's
extra rows (GOM at 9, SCM at 11) are skipped and every YOLOv8 row still finds its counterpart; inside a
row, tensors pair by position (pickled modules, whose order the file keeps) or by name within the row
(state dicts, whose order a file does not keep), and a pair is copied only when the shapes agree. A layer
whose shapes differ (the class layer when the class count differs) keeps its fresh initialisation and is
listed in the :class:`LoadReport`, as are the model's rows the file has nothing for.

Refused with one line naming the file (:class:`WeightsError`): a file that is no YOLOv8 checkpoint, another
YOLO family (v5, v9, v10, 11 ...: read from the module class names and the yaml stored in the file), another
task (segment, pose, obb, classify), a damaged file, or one naming functions outside torch's tensor rebuilders.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from leanvision.models.yolo import SCALES, DetectionModel, create_detector
from leanvision.ops.plain_pickle import PickledObject, PlainPickleError, load_torch_zip


class WeightsError(ValueError):
    """A weights file that cannot start this detector; the message names the file and what it holds."""


# The layer classes of a YOLOv8 detection model as ultralytics pickles it (rows, then what rows hold).
YOLOV8_ROWS = {"Conv", "C2f", "SPPF", "Upsample", "Concat", "Detect"}
# Other families, by a layer class only they use (checked in this order) ...
_FAMILY_LAYERS = [
    ({"C3k2", "C2PSA", "C3k"}, "YOLO11"), ({"A2C2f", "AAttn", "ABlock"}, "YOLO12"),
    ({"v10Detect", "SCDown", "PSA", "C2fCIB"}, "YOLOv10"), ({"RepNCSPELAN4", "ADown", "SPPELAN", "CBLinear"}, "YOLOv9"),
    ({"C2fAttn", "ImagePoolingAttn", "WorldDetect"}, "YOLO-World"), ({"RTDETRDecoder", "HGStem"}, "RT-DETR"),
    ({"C3", "C3TR", "C3Ghost", "SPP", "Focus"}, "YOLOv5"), ({"SimFusion_4in", "RepVGGDW"}, "YOLOv6"),
]
# ... and other tasks, by their model or head class.
_TASKS = {"SegmentationModel": "segment", "Segment": "segment", "PoseModel": "pose", "Pose": "pose",
          "OBBModel": "obb (oriented boxes)", "OBB": "obb (oriented boxes)", "ClassificationModel": "classify",
          "Classify": "classify", "WorldModel": "open-vocabulary (YOLO-World)", "YOLOEModel": "open-vocabulary (YOLOE)",
          "RTDETRDetectionModel": "RT-DETR detection"}
_SCALE_OF_WIDTH = {int(-(-64 * w // 8) * 8): s for s, (_, w, _) in SCALES.items()}  # row 0's width -> scale


@dataclass
class WeightRow:
    """One row of the file's layer table: ``model.<index>``, its kind and its tensors (names relative to the row)."""

    index: int
    kind: str
    tensors: list[tuple[str, torch.Tensor]]
    positional: bool  # pair with the model's tensors by order (pickled modules) or by name (state dicts)


@dataclass
class YoloWeights:
    """What a weights file holds, read without building anything.

    Attributes:
        path: the file. source: what it is, in words ("an ultralytics YOLOv8n checkpoint (ultralytics 8.3.0, EMA
            weights)"). rows: the layer table's rows that hold tensors. family: ``yolov8`` or ``gso-yolo``.
        scale: n/s/m/l/x. nc, names: its classes. imgsz: the training size it records, if any.
        overrides: GSO-YOLO switches read from a state dict (``gom``/``scm`` off when their rows are empty).
    """

    path: Path
    source: str
    rows: list[WeightRow]
    family: str
    scale: str
    nc: int
    names: list[str]
    imgsz: int | None = None
    overrides: dict = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        return f"{self.family}{'-' if self.family == 'gso-yolo' else ''}{self.scale}"

    def numel(self) -> int:
        return sum(t.numel() for r in self.rows for _, t in r.tensors)


@dataclass
class LoadReport:
    """What :func:`load_yolo_weights` did: ``loaded`` of ``total`` model tensors came from the file."""

    source: str
    model: str
    loaded: int = 0
    total: int = 0
    used_numel: int = 0
    file_numel: int = 0
    reinitialised: list[str] = field(default_factory=list)  # the model's layers whose shapes differ from the file's
    not_in_file: list[str] = field(default_factory=list)  # the model's rows the file has nothing for
    unused: list[str] = field(default_factory=list)  # the file's rows the model has no place for

    @property
    def complete(self) -> bool:
        return self.loaded == self.total and not self.unused

    def __str__(self) -> str:
        lines = [f"weights: {self.loaded}/{self.total} tensors of {self.model} loaded from {self.source}"]
        if self.reinitialised:
            lines.append(f"  re-initialised (shapes differ from the file's): {', '.join(self.reinitialised)}")
        if self.not_in_file:
            lines.append(f"  not in the file, kept as initialised: {', '.join(self.not_in_file)}")
        if self.unused:
            lines.append(f"  in the file but unused: {', '.join(self.unused)}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ reading


def read_yolo_weights(path: str | Path) -> YoloWeights:
    """Read an ultralytics YOLOv8 checkpoint (``.pt``), a ``.safetensors`` or a torch-saved bare state dict.

    Raises:
        WeightsError: naming the file: not such a file, another YOLO family or task, damaged, or it names
            functions outside torch's tensor rebuilders (nothing from the file is ever run).
        FileNotFoundError: no such file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    if path.suffix.lower() == ".safetensors":
        return _read_safetensors(path)
    try:
        obj = load_torch_zip(path)
    except PlainPickleError as e:
        raise WeightsError(str(e)) from None
    if isinstance(obj, dict) and obj and all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        return weights_from_state_dict(obj, path, "a state dict saved with torch.save")
    model, which = _pickled_model(obj, path)
    return _read_pickled_model(model, path, obj if isinstance(obj, dict) else {}, which)


def _pickled_model(obj, path: Path) -> tuple[PickledObject, str]:
    """The model a checkpoint holds: the EMA's when the file has one (what ultralytics validated), else ``model``."""
    if isinstance(obj, PickledObject):
        return obj, "model"
    if isinstance(obj, dict):
        for key in ("ema", "model"):
            if isinstance(obj.get(key), PickledObject):
                return obj[key], "EMA weights" if key == "ema" else "model weights"
        keys = ", ".join(sorted(map(str, obj))[:8])
        raise WeightsError(f"{path}: a torch file with keys {keys or '(none)'}, but no model; expected a "
                           f"leanvision checkpoint, an ultralytics YOLOv8 .pt (with 'model' or 'ema') or a state dict")
    raise WeightsError(f"{path}: a torch file holding a {type(obj).__name__}; expected a leanvision checkpoint, "
                       f"an ultralytics YOLOv8 .pt or a state dict")


def _read_pickled_model(model: PickledObject, path: Path, ckpt: dict, which: str) -> YoloWeights:
    cls = model.cls_name
    if model.cls_module.startswith("models.") or cls == "Model":  # the yolov5 repository's own format
        raise WeightsError(f"{path}: a YOLOv5 checkpoint of the yolov5 repository ({model.qualname}); only "
                           f"YOLOv8 detection weights (or leanvision's own) can start a leanvision detector")
    if cls in _TASKS:
        raise WeightsError(f"{path}: an ultralytics {_TASKS[cls]} model ({cls}), not a detection model; use the "
                           f"detection weights (e.g. yolov8n.pt, not yolov8n-seg.pt)")
    table = (model.get("_modules") or {}).get("model")
    if cls != "DetectionModel" or not isinstance(table, PickledObject):
        raise WeightsError(f"{path}: holds a {model.qualname}, not an ultralytics YOLOv8 DetectionModel")
    rows_in = (table.get("_modules") or {}).items()
    yaml = model.get("yaml") if isinstance(model.get("yaml"), dict) else {}
    layer_names = {m.cls_name for _, r in rows_in for m in _walk(r)}
    row_kinds = [getattr(r, "cls_name", type(r).__name__) for _, r in rows_in]
    task = next((_TASKS[n] for n in row_kinds if n in _TASKS), None)
    if task:
        raise WeightsError(f"{path}: an ultralytics {task} model (its head is {row_kinds[-1]}), not a detection "
                           f"model; use the detection weights")
    family = _family(layer_names, str(yaml.get("yaml_file", "")))
    if family or not set(row_kinds) <= YOLOV8_ROWS:
        odd = sorted(set(row_kinds) - YOLOV8_ROWS) or sorted(layer_names - YOLOV8_ROWS)[:6]
        raise WeightsError(f"{path}: a {family or 'non-YOLOv8'} checkpoint (its layers include {', '.join(odd)}); "
                           f"only YOLOv8 detection weights (or leanvision's own) can start a leanvision detector")
    rows = []
    for key, row in rows_in:
        tensors = _module_tensors(row, path, f"model.{key}")
        if tensors:
            rows.append(WeightRow(int(key), row.cls_name, tensors, positional=True))
    if not rows:
        raise WeightsError(f"{path}: its model holds no tensors")
    head = next((r for _, r in rows_in if r.cls_name == "Detect"), None)
    nc = yaml.get("nc") if isinstance(yaml.get("nc"), int) else head.get("nc") if head else None
    names = _names(model.get("names"), nc)
    scale = yaml.get("scale") if yaml.get("scale") in SCALES else _scale_from_width(rows[0].tensors[0][1], path)
    version = ckpt.get("version")
    args = ckpt.get("train_args") if isinstance(ckpt.get("train_args"), dict) else {}
    source = (f"{path} (an ultralytics YOLOv8{scale} checkpoint{f', ultralytics {version}' if version else ''}, "
              f"{len(names)} classes, {which})")
    imgsz = args.get("imgsz") if isinstance(args.get("imgsz"), int) else None
    return YoloWeights(path, source, rows, "yolov8", scale, len(names), names, imgsz)


def _walk(obj):
    """Every PickledObject module under ``obj`` (itself included), through ``_modules``."""
    if isinstance(obj, PickledObject):
        yield obj
        for child in (obj.get("_modules") or {}).values():
            yield from _walk(child)


def _module_tensors(obj, path: Path, where: str) -> list[tuple[str, torch.Tensor]]:
    """A pickled module's tensors in ``state_dict`` order: parameters, persistent buffers, then each child's."""
    if not isinstance(obj, PickledObject) or not isinstance(obj.state, dict):
        raise WeightsError(f"{path}: {where} is not a module with a recorded state (damaged file?)")
    skip = obj.get("_non_persistent_buffers_set") or set()
    out = []
    for group in ("_parameters", "_buffers"):
        for name, t in (obj.get(group) or {}).items():
            if t is None or (group == "_buffers" and name in skip):
                continue
            if not torch.is_tensor(t):
                raise WeightsError(f"{path}: {where}.{name} is a {type(t).__name__}, not a tensor")
            out.append((name, t))
    for name, child in (obj.get("_modules") or {}).items():
        if child is not None:
            out += [(f"{name}.{k}", t) for k, t in _module_tensors(child, path, f"{where}.{name}")]
    return out


def _family(layer_names: set[str], yaml_file: str) -> str | None:
    """Another YOLO family's name when its layers (or its yaml's file name) show one; None for YOLOv8."""
    for marks, family in _FAMILY_LAYERS:
        if marks & layer_names:
            return family
    m = re.match(r"yolo(v?\d+)", Path(yaml_file).name.lower())
    if m and m.group(1) not in ("v8", "8"):
        return f"YOLO{m.group(1)}"  # yolov9t.yaml -> YOLOv9, yolo11n.yaml -> YOLO11
    return None


def _names(raw, nc: int | None) -> list[str]:
    if isinstance(raw, dict) and raw and all(isinstance(k, int) for k in raw):
        return [str(raw.get(i, f"class{i}")) for i in range(max(raw) + 1)]
    if isinstance(raw, (list, tuple)) and raw:
        return [str(n) for n in raw]
    return [f"class{i}" for i in range(nc or 80)]


def _scale_from_width(first: torch.Tensor, path: Path) -> str:
    scale = _SCALE_OF_WIDTH.get(int(first.shape[0]))
    if scale is None:
        raise WeightsError(f"{path}: its first layer has {first.shape[0]} channels, which is no YOLOv8 scale "
                           f"({', '.join(f'{w}: {s}' for w, s in _SCALE_OF_WIDTH.items())})")
    return scale


# ------------------------------------------------------------------------------------------ state dicts

_ROW_KEY = re.compile(r"^model\.(\d+)\.(.+)$")


def _kind_from_names(names: set[str]) -> str:
    """A row's kind from its tensor names (leanvision and ultralytics name YOLOv8 rows alike)."""
    if any(n.startswith("cv2.0.0.") for n in names) and any(n.startswith("dfl.") for n in names):
        return "Detect"
    if any(n.startswith("channel_attention.") for n in names):
        return "GOM"
    if any(n.startswith("conv1x1.") for n in names):
        return "SCM"
    if names and all(n.split(".")[0] in ("conv", "bn") for n in names):
        return "Conv"
    heads = {n.split(".")[0] for n in names}
    if heads == {"cv1", "cv2", "m"} and any(re.match(r"m\.\d+\.cv1\.conv\.", n) for n in names):
        return "C2f"
    if heads == {"cv1", "cv2"}:
        return "SPPF"
    return "unknown (" + ", ".join(sorted(heads)[:4]) + ")"


def weights_from_state_dict(state: dict[str, torch.Tensor], path: str | Path, what: str,
                            names: list[str] | None = None) -> YoloWeights:
    """A state dict named ``model.N.xxx`` (leanvision's ``DetectionModel`` or ultralytics') as :class:`YoloWeights`.

    Args:
        state: name -> tensor. path: the file, for messages. what: what the file is, in words.
        names: the class names, when the file records them.
    """
    path = Path(path)
    by_row: dict[int, list[tuple[str, torch.Tensor]]] = {}
    strays = []
    for key, t in state.items():
        m = _ROW_KEY.match(key)
        if m is None:
            strays.append(key)
            continue
        by_row.setdefault(int(m.group(1)), []).append((m.group(2), t))
    if strays or not by_row:
        raise WeightsError(f"{path}: {what} whose tensor names ({', '.join((strays or list(state))[:3])} ...) are not "
                           f"a YOLOv8 model's (model.N.conv.weight ...)")
    rows = [WeightRow(i, _kind_from_names({n for n, _ in ts}), ts, positional=False)
            for i, ts in sorted(by_row.items())]
    odd = [f"model.{r.index}: {r.kind}" for r in rows if r.kind.startswith("unknown")]
    if odd:
        raise WeightsError(f"{path}: {what} with rows that are no YOLOv8 or GSO-YOLO layer ({'; '.join(odd[:3])})")
    head = rows[-1]
    if head.kind != "Detect" or head.index not in (22, 24):
        raise WeightsError(f"{path}: {what} without a YOLOv8 Detect head at model.22 (or GSO-YOLO's model.24)")
    family = "gso-yolo" if head.index == 24 else "yolov8"
    overrides = {}
    if family == "gso-yolo":
        present = {r.index for r in rows}
        overrides = {k: False for k, i in (("gom", 9), ("scm", 11)) if i not in present}
    cls = dict(head.tensors).get("cv3.0.2.bias")
    nc = int(cls.shape[0]) if cls is not None else len(names or [])
    names = list(names) if names and len(names) == nc else [f"class{i}" for i in range(nc)]
    scale = _scale_from_width(rows[0].tensors[0][1] if rows[0].index == 0 else torch.empty(0), path)
    return YoloWeights(path, f"{path} ({what}, {family} {scale}, {nc} classes)", rows, family, scale, nc, names,
                       overrides=overrides)


def _read_safetensors(path: Path) -> YoloWeights:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a readable .safetensors file ({str(e).splitlines()[0][:200]}); the file is "
                           f"truncated or damaged") from None
    names = None
    try:
        parsed = json.loads(meta.get("names", "null"))
        names = _names(parsed, None) if parsed else None
    except (json.JSONDecodeError, TypeError):
        pass
    return weights_from_state_dict(state, path, "a .safetensors state dict", names)


# ------------------------------------------------------------------------------------------------ mapping


def _target_rows(model: DetectionModel) -> list[tuple[int, str, list[tuple[str, torch.Tensor]]]]:
    return [(i, type(m).__name__, list(m.state_dict(keep_vars=True).items())) for i, m in enumerate(model.model)
            if len(m.state_dict())]


def load_yolo_weights(model: DetectionModel, weights: YoloWeights, strict: bool = False) -> LoadReport:
    """Copy ``weights`` into ``model`` by structure (see the module docstring) and say what was not copied.

    Args:
        strict: raise unless every tensor of the model and of the file found its counterpart (val, predict).

    Raises:
        WeightsError: ``strict`` and something did not fit; or less than half of the file's weights fit the
            model at all (another scale: the message names the one to build).
    """
    name = f"{'gso-yolo-' if any(type(m).__name__ in ('GOM', 'SCM') for m in model.model) else 'yolov8'}{model.scale}"
    report = LoadReport(weights.source, name, file_numel=weights.numel())
    targets = _target_rows(model)
    report.total = sum(len(ts) for _, _, ts in targets)
    copies: list[tuple[torch.Tensor, torch.Tensor]] = []
    j = 0
    for src in weights.rows:
        k = next((k for k in range(j, len(targets)) if targets[k][1] == src.kind), None)
        if k is None:
            report.unused.append(f"model.{src.index} ({src.kind})")
            continue
        report.not_in_file += [f"model.{i} ({kind})" for i, kind, _ in targets[j:k]]
        j = k + 1
        index, kind, tgt = targets[k]
        if src.positional and len(src.tensors) != len(tgt):
            report.reinitialised.append(f"model.{index} ({kind}: {len(src.tensors)} tensors in the file, "
                                        f"{len(tgt)} here)")
            continue
        pairs = list(zip(src.tensors, tgt)) if src.positional else _pairs_by_name(src, tgt, index, report)
        bad: dict[str, tuple] = {}  # leaf module -> (file's shape, model's shape) of its first differing tensor
        for (_, s), (t_name, t) in pairs:
            if s.shape != t.shape:
                bad.setdefault(t_name.rsplit(".", 1)[0], (s.shape, t.shape))
        shown = {}  # a Conv block's conv and bn are listed as the block
        for owner, shapes in bad.items():
            shown.setdefault(re.sub(r"\.(conv|bn)$", "", owner), shapes)
        report.reinitialised += [f"model.{index}.{owner} ({_shape(s)} in the file, {_shape(t)} here)"
                                 for owner, (s, t) in shown.items()]
        for (_, s), (t_name, t) in pairs:
            if t_name.rsplit(".", 1)[0] not in bad:
                copies.append((t, s))
    report.not_in_file += [f"model.{i} ({kind})" for i, kind, _ in targets[j:]]
    report.loaded = len(copies)
    report.used_numel = sum(s.numel() for _, s in copies)
    if report.used_numel < 0.5 * report.file_numel:
        raise WeightsError(f"{weights.path}: only {report.used_numel / max(report.file_numel, 1):.0%} of its weights "
                           f"fit {name}: the file holds a {weights.model_name} ({weights.nc} classes); build that "
                           f"model (--model {weights.model_name}, or gso-yolo-{weights.scale} for GSO-YOLO)")
    if strict and not (report.complete and not report.reinitialised and not report.not_in_file):
        raise WeightsError(f"{weights.path}: does not fit {name} exactly\n{report}")
    with torch.no_grad():
        for t, s in copies:
            t.copy_(s.to(t.dtype))
    return report


def _pairs_by_name(src: WeightRow, tgt: list, index: int, report: LoadReport) -> list:
    have = dict(src.tensors)
    missing = sorted({n.rsplit(".", 1)[0] for n, _ in tgt if n not in have})
    report.reinitialised += [f"model.{index}.{m} (not in the file)" for m in missing]
    wanted = {n for n, _ in tgt}
    extra = [n for n, _ in src.tensors if n not in wanted]
    report.unused += [f"model.{index}.{n}" for n in extra]
    return [((n, have[n]), (n, t)) for n, t in tgt if n in have]


def _shape(s: torch.Size) -> str:
    return "x".join(map(str, s)) or "scalar"


def detector_from_weights(weights: YoloWeights | str | Path) -> tuple[DetectionModel, YoloWeights]:
    """The detector a weights file describes (its family, scale and classes), loaded exactly; eval mode.

    Raises:
        WeightsError: the file is not usable (see :func:`read_yolo_weights`) or does not fit exactly.
    """
    if not isinstance(weights, YoloWeights):
        weights = read_yolo_weights(weights)
    model = create_detector(weights.model_name, nc=weights.nc, names=weights.names, **weights.overrides)
    load_yolo_weights(model, weights, strict=True)
    return model.eval(), weights

