"""Who is who in a pipelined job: P stages times R data-parallel replicas from torchrun's ``WORLD_SIZE``.

Rank ``r * P + p`` is stage ``p`` of replica ``r``, so the P stages of one replica are neighbours (one node
holds whole pipelines when ``--nproc_per_node`` is a multiple of P). Each stage has a process group of its R
replicas, which all-reduce that stage's gradients; each replica has a group of its P stages (weight refreshes
and epoch-end agreement).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.distributed as dist

from ...config import ConfigError


@dataclass
class Topology:
    stages: int
    replicas: int
    rank: int = 0
    stage_groups: list = field(default_factory=list, repr=False)  # per stage: its R replicas (None if R == 1)
    pipe_groups: list = field(default_factory=list, repr=False)  # per replica: its P stages (None if P == 1)

    @property
    def world(self) -> int:
        return self.stages * self.replicas

    @property
    def stage(self) -> int:
        return self.rank % self.stages

    @property
    def replica(self) -> int:
        return self.rank // self.stages

    def rank_of(self, stage: int, replica: int | None = None) -> int:
        return (self.replica if replica is None else replica) * self.stages + stage

    def describe_rank(self, rank: int) -> str:
        return f"rank {rank} (stage {rank % self.stages}, replica {rank // self.stages})"

    @property
    def stage_group(self):
        return self.stage_groups[self.stage] if self.stage_groups else None

    @property
    def pipe_group(self):
        return self.pipe_groups[self.replica] if self.pipe_groups else None

    @property
    def is_first(self) -> bool:
        return self.stage == 0

    @property
    def is_last(self) -> bool:
        return self.stage == self.stages - 1


def replicas_for(stages: int, world: int) -> int:
    """R = N / P; ConfigError when torchrun's N is not a multiple of ``--pipeline P``."""
    if stages < 1:
        raise ConfigError(f"--pipeline {stages}: the number of stages must be at least 1")
    if world % stages:
        raise ConfigError(
            f"--pipeline {stages}: torchrun started {world} process(es) (WORLD_SIZE), which is not a multiple of "
            f"{stages} stages; start N = {stages} x R processes (torchrun --nproc_per_node {stages}, or "
            f"{2 * stages} for 2 data-parallel replicas)")
    return world // stages


def build_topology(stages: int, rank: int, world: int) -> Topology:
    """The topology of this process; creates the process groups (every rank must call it, in step)."""
    topo = Topology(stages, replicas_for(stages, world), rank)
    if dist.is_initialized() and world > 1:
        # new_group is collective over the whole world: every rank creates every group, in the same order
        if topo.replicas > 1:
            topo.stage_groups = [dist.new_group([r * stages + p for r in range(topo.replicas)])
                                 for p in range(stages)]
        if stages > 1:
            topo.pipe_groups = [dist.new_group([r * stages + p for p in range(stages)])
                                for r in range(topo.replicas)]
    return topo
