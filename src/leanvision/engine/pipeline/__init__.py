"""Local learning pipelined over processes with torch.distributed: P stages x R data-parallel replicas.

- :mod:`.topology`: ranks, stages, replicas and their process groups;
- :mod:`.assign`: modules per stage, balanced by measured FLOPs or ``--pipeline-split``;
- :mod:`.comm`: activations and labels between stages, the bounded queue, the watchdog;
- :mod:`.stage`: one stage's modules, optimizer, training step and evaluation (schedules ``sync``/``overlap``);
- :mod:`.consolidate`: per-stage checkpoints -> one ordinary checkpoint;
- :mod:`.fit`: the epoch loop of ``leanvision train --pipeline P``.

How a method's modules and auxiliary networks are cut into stages is the method's business:
``methods/local/stages.py``.

BatchNorm running statistics with R > 1 replicas: the replicas all-reduce gradients only, so each keeps the
running statistics of its own shard (and micro-batches); weights stay identical across replicas, statistics do
not. Only replica 0 writes stage files (:meth:`.fit._Job.save`), so the consolidated checkpoint holds replica
0's statistics, replica 0 alone evaluates, and a resume loads replica 0's into every replica. Training never
reads running statistics (BatchNorm in training mode uses each batch's own), so the weights do not depend on
this; they are not averaged because only evaluation reads them. Tested in tests/test_pipeline_microbatch.py
(``test_two_stages_times_two_replicas_with_two_micro_batches_is_data_parallel_gradient_accumulation``).
"""

from __future__ import annotations


def data_ways(pipeline: int | None, rank: int, world: int) -> tuple[int, int]:
    """(number of data-parallel shards, this process's shard): the world, or the replicas under ``--pipeline``."""
    if not pipeline:
        return world, rank
    from .topology import replicas_for

    return replicas_for(pipeline, world), rank // pipeline


def fit_pipeline(*args, **kwargs) -> dict:
    """See :func:`.fit.fit_pipeline` (imported when called, so the CLI parser stays light)."""
    from .fit import fit_pipeline as fit

    return fit(*args, **kwargs)
