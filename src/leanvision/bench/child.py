"""One resource bench row in a fresh process: ``python -m leanvision.bench.child ROW.json RESULT.json``.

:func:`~.runner.measure_in_subprocess` writes ROW.json (the row, the base config, steps, device, threads) and
reads RESULT.json. The import baseline is taken once torch and the training code are imported, as
``leanvision train`` takes it, so the row's ``peak_rss_above_import_bytes`` is comparable to a training
run's. A bad setting is returned as ``{"error": "..."}`` (the parent shows it as one line).
"""

from __future__ import annotations

import json
import sys

import torch

from ..config import ConfigError, TrainConfig
from ..engine.run_folder import write_json
from ..ops.memory import mark_import_rss
from .rows import BenchRow
from .runner import measure_resources


def main(argv: list[str]) -> int:
    mark_import_rss()
    spec_path, out_path = argv
    with open(spec_path) as f:
        spec = json.load(f)
    torch.set_num_threads(spec["threads"])
    try:
        result = measure_resources(BenchRow(**spec["row"]), TrainConfig(**spec["base"]), spec["steps"],
                                   torch.device(spec["device"]), profile=spec["profile"])
    except ConfigError as e:
        write_json(out_path, {"error": str(e)})
        return 2
    write_json(out_path, result, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
