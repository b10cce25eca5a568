"""One flag vocabulary for every sub-command: the same spelling for the same thing, the others kept as aliases.

The tasks grew their own words (``leanvision train --batch-size --lr``, ``detect train --batch --lr0``, the
ultralytics spelling). :func:`unify_flags` runs once over the finished ``leanvision`` parser: wherever a
sub-command has a flag of one of the groups below, it answers to every spelling of the group, ``--help`` shows
the canonical one (the first) and names the others, and errors name the canonical one. The parsed value keeps
its ``dest``, so each task's config is untouched: ``--batch 64`` and ``--batch-size 64`` give the same config.
The same table gives the keys of ``--config`` YAML files (:func:`key_spellings`): ``batch: 64`` and
``batch_size: 64`` set the same field in ``leanvision train`` and in ``leanvision detect train``.
"""

from __future__ import annotations

import argparse

# (canonical, aliases...): the canonical spelling is the more common one in PyTorch tooling (timm, torchvision)
SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("--batch-size", "--batch"),
    ("--lr", "--lr0"),
    ("--imgsz", "--img-size", "--image-size"),
)


def key_spellings(fields, synonyms=SYNONYMS) -> dict[str, str]:
    """YAML key -> config field, for every spelling the flags accept: each field's own name and, when the field's
    flag (``--batch-size`` for ``batch_size``) is in a synonym group, every spelling of the group written as a key
    (``batch``, ``batch_size``). A spelling that is another field's own name is left to that field, as
    :func:`unify_flags` leaves a flag to the sub-command's own. Keys use ``_``; a file may write ``-`` instead."""

    def key(flag: str) -> str:
        return flag.lstrip("-").replace("-", "_")

    out = {f: f for f in fields}
    for f in fields:
        for group in synonyms:
            if "--" + f.replace("_", "-") in group:
                for spelling in group:
                    out.setdefault(key(spelling), f)
    return out


def subparsers(parser: argparse.ArgumentParser):
    """``parser`` and every sub-command parser below it (each once)."""
    seen, todo = set(), [parser]
    while todo:
        p = todo.pop()
        if id(p) in seen:
            continue
        seen.add(id(p))
        yield p
        for action in p._actions:  # argparse keeps sub-commands as a _SubParsersAction's choices
            if isinstance(action, argparse._SubParsersAction):
                todo.extend(action.choices.values())


def unify_flags(parser: argparse.ArgumentParser, synonyms=SYNONYMS) -> argparse.ArgumentParser:
    """Give every flag of a synonym group all the group's spellings, in ``parser`` and all its sub-commands.

    A spelling another flag of the same sub-command already uses is left to that flag.
    """
    for p in subparsers(parser):
        table = p._option_string_actions  # option string -> action: what parsing looks up
        for action in list(p._actions):
            for group in synonyms:
                if not set(action.option_strings) & set(group):
                    continue
                canonical = group[0]
                if table.get(canonical, action) is not action:
                    continue  # the canonical name means something else here
                for s in group:
                    if table.get(s, action) is action:
                        table[s] = action
                action.option_strings = [canonical] + [s for s in action.option_strings if s not in group]
                if action.metavar is None and action.nargs != 0:  # "--lr LR", not "--lr LR0"
                    action.metavar = canonical.lstrip("-").replace("-", "_").upper()
                aliases = [s for s in group[1:] if table.get(s) is action]
                if aliases and action.help is not argparse.SUPPRESS:
                    action.help = f"{action.help or ''} (also {', '.join(aliases)})".strip()
    return parser
