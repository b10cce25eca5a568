"""The ``leanvision train`` flags of pipelined local learning (kept here so the parser gains four lines)."""

from __future__ import annotations


def add_pipeline_arguments(group) -> None:
    group.add_argument("--pipeline", type=int, metavar="P",
                       help="local learning only: run the modules as P pipeline stages, one process each, under "
                            "torchrun --nproc_per_node P*R (R data-parallel replicas of every stage)")
    group.add_argument("--pipeline-split", metavar="N1,N2,...",
                       help="modules per stage, in order (default: balanced by each module's measured FLOPs)")
    group.add_argument("--pipeline-schedule", choices=["overlap", "sync"],
                       help="overlap (default): stages work on different batches at once, a bounded queue between "
                            "them; sync: exactly the single-process updates (MLAAN's cascade and EMA cross stages "
                            "every step)")
    group.add_argument("--micro-batches", type=int, metavar="M",
                       help="--pipeline: split each replica's batch into M equal micro-batches that follow each other "
                            "through the stages; every module accumulates its gradients over them and steps once per "
                            "batch (less activation memory per stage; BatchNorm sees micro-batch statistics). "
                            "Default 1: the whole batch, exactly the single-process run")
