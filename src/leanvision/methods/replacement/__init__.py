"""Replacement Learning (v1) with optional RepL-v2-style variants; see specs/replacement_learning.md.

- :func:`apply_replacement` is a model transform usable with any method (local learning included);
- :class:`ReplacementLearning` (registered as ``"replacement"``) is that transform + E2E training;
- :func:`replace_module` / :class:`ReplacedBlock` work on any (prev, target, next) triple of modules;
- :func:`export_model` materialises the fused weights into a plain model, :func:`load_replaced_state`
  rebuilds a trained replacement from its saved options and state dict and exports it;
- a detector's block list is its backbone's Bottlenecks (``DetectionModel.blocks``), so the same
  transform applies to YOLOv8 / GSO-YOLO (``leanvision detect train --method replacement``);
- ``surrogate="lite"`` (:mod:`.lite`) evaluates a cheaper replaced block, our reconstruction of
  RepL v2 (spec §2.5); ``"full"`` (v1) is the default.

Composing with local learning: apply the transform to the model first, then cut ``model.blocks``
into modules. A replaced block whose neighbour sits in another module makes that neighbour receive
gradient from two losses (its own module's and, through the fusion, the replaced block's module);
pass ``detach_neighbors=True`` for strict gradient isolation. All backward passes of a step must run
before the optimizer step (the fusion saved the neighbours' tensors; updating them in place in
between is an autograd error, as for any weight reused in two graphs). To copy part of a model (an
EMA auxiliary copy, say), copy plain blocks: :meth:`ReplacedBlock.materialize` gives one; a deepcopy
of a ReplacedBlock on its own would carry private copies of its neighbours.
"""

from . import lite  # noqa: F401  (registers the "lite" surrogate)
from .block import ReplacedBlock, Surrogate, adapt, materialize_replaced, register_surrogate, replace_module
from .lite import lite_surrogate
from .method import ReplacementLearning, add_cli_arguments, options_from_args
from .select import ineligibility, select_blocks
from .transform import ReplacementReport, apply_replacement, export_model, load_replaced_state

__all__ = [
    "ReplacedBlock",
    "ReplacementLearning",
    "ReplacementReport",
    "adapt",
    "add_cli_arguments",
    "apply_replacement",
    "export_model",
    "ineligibility",
    "lite_surrogate",
    "load_replaced_state",
    "materialize_replaced",
    "options_from_args",
    "register_surrogate",
    "replace_module",
    "select_blocks",
    "Surrogate",
]
