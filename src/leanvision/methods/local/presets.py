"""Option values of the local-learning methods: our defaults and ``preset="release"``.

``preset="release"`` selects what the authors' released code does (spec specs/local_learning.md
§2-§4; docs/local_learning_release.md lists every difference with our defaults and why):

- dgl: the MLAAN repository's ``resnetDGL.py`` with the options of its run scripts (InfoPro's
  1c2f head, cross-entropy, feature_dim 128, widen 1);
- infopro: InfoPro's ``resnet.py`` with its run scripts (1c2f head, SupCon "contrast" mode, the
  published loss-weight table, weights over the module index);
- dgl+mlaan: ``resnetMLAAN.py`` (the model the MLAAN CIFAR ``train.py`` builds) with the README's
  command: cascade span 2, EMA of the last LAM only, momentum 0.995;
- infopro+mlaan: ``resnetInfoProbin.py`` with the MLAAN run scripts' options: span 3, EMA of the
  last LAM only (momentum 0.995) whose parameters SGD also trains, independent head SupCon,
  cascaded head cross-entropy, loss weights (5, 0.5, 0, 0) interpolated over the *stage* index.

All four also take the release's per-epoch warm-up + cosine LR rule (``lr_schedule="release"``,
through :meth:`LocalLearning.recipe_defaults`), a published split table (``split="table"``: the
release has no other splits), and the release's init of the heads' convolutions (N(0, 2/(k*k*C_out)),
the backbone's rule, which the release's init loop also applies to its heads and decoders).

An option the user passes explicitly wins over the preset; :func:`resolve_options` reports which.
"""

from __future__ import annotations

PRESETS = ("release",)
LOCAL_METHODS = ("greedy", "dgl", "infopro", "dgl+mlaan", "infopro+mlaan")

# Our defaults for every method (spec §8 decisions); per-method ones are filled in by defaults().
_COMMON = {
    "split": None,  # "auto": a published table where one exists, else balanced block counts
    "feature_dim": 128,
    "widen": 1,
    "head_init": "torch",
    "lambda_index": "module",
    "span": 3,
    "w_x": 0.001,
    "w_y": 0.999,
    "ema_momentum": 0.995,
    "ema_update": "all",
    "ema_blocks": "first",
    "ema_trainable": False,
    "bn_updates": "release",
}

# What the release does, per method (see the module docstring). Values equal to our defaults are
# listed too, so the preset keeps meaning the release if a default changes.
_RELEASE_COMMON = {"split": "table", "feature_dim": 128, "widen": 1, "head_init": "release"}
_RELEASE_MLAAN = {
    "w_x": 0.001,
    "w_y": 0.999,
    "ema_momentum": 0.995,
    "ema_update": "last_only",
    "ema_blocks": "first",
    "bn_updates": "release",
}
RELEASE: dict[str, dict] = {
    "dgl": {**_RELEASE_COMMON, "head": "1c2f"},
    "infopro": {**_RELEASE_COMMON, "head": "1c2f", "loss_mode": "contrast", "lambda_index": "module"},
    "dgl+mlaan": {
        **_RELEASE_COMMON,
        **_RELEASE_MLAAN,
        "span": 2,
        "ema_trainable": False,
        "head": "linear",
        "cascade_head": "linear",
    },
    "infopro+mlaan": {
        **_RELEASE_COMMON,
        **_RELEASE_MLAAN,
        "span": 3,
        "ema_trainable": True,
        "head": "1c2f",
        "cascade_head": "1c2f",
        "loss_mode": "softmax",
        "indep_loss_mode": "contrast",
        "lambdas": (5.0, 0.5, 0.0, 0.0),
        "lambda_index": "stage",
    },
}
# Trainer fields the release's train.py fixes, applied by the trainer where the user left them unset.
RELEASE_RECIPE = {"lr_schedule": "release"}


def defaults(name: str) -> dict:
    """Our default option values for local-learning method ``name``."""
    base, mlaan = name.split("+")[0], name.endswith("+mlaan")
    out = dict(_COMMON)
    out["head"] = "linear" if base == "greedy" or (mlaan and base == "dgl") else "1c2f"
    out["cascade_head"] = "linear" if base == "dgl" else "1c2f"
    out["loss_mode"] = "contrast" if base == "infopro" and not mlaan else "softmax"
    out["indep_loss_mode"] = None  # None: the same as loss_mode
    out["lambdas"] = None  # None: the published table for the dataset, else DEFAULT_LAMBDAS
    return out


def resolve_options(name: str, preset: str | None, given: dict) -> tuple[dict, list[str]]:
    """Option values for method ``name``: the user's, then the preset's, then our defaults.

    Args:
        name: "greedy", "dgl", "infopro", "dgl+mlaan" or "infopro+mlaan".
        preset: None or "release".
        given: the options the user passed (``None`` = not passed).

    Returns:
        (values of every option in :func:`defaults`, names of the preset's options the user overrode).
    """
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"preset={preset!r} is not valid; choose one of {', '.join(PRESETS)}")
    if preset is not None and name not in RELEASE:
        raise ValueError(f"preset={preset!r} exists for {', '.join(RELEASE)}; {name!r} has no released code")
    chosen = RELEASE[name] if preset else {}
    out, overridden = defaults(name), []
    for key in out:
        if given.get(key) is not None:
            out[key] = given[key]
            if key in chosen and _differs(given[key], chosen[key]):
                overridden.append(key)
        elif key in chosen:
            out[key] = chosen[key]
    return out, overridden


def _differs(a, b) -> bool:
    if isinstance(b, tuple):
        return tuple(a) != b
    return a != b
