"""Each replica's share of a deployment (MII's ``ReplicaConfig``): its host, GPUs and ports.

The port layout is MII's and the one the launcher binds (``serving/ports.py``, ``serving/launch.py``):
replica i owns the ``tensor_parallel`` ports after ``port_number + i * tensor_parallel`` (``port_number``
itself is the front end's), and its ranks meet on ``torch_dist_port + 100·i``.
"""
from __future__ import annotations

from typing import Optional

from pydantic import Field

from mii_core.config.base import StrictModel
from mii_core.config.placement import ReplicaPlacement

DIST_PORT_STRIDE = 100  # replica i's ranks rendezvous on torch_dist_port + 100·i


class ReplicaConfig(StrictModel):
    hostname: str = ""
    tensor_parallel_ports: list[int] = Field(default_factory=list)  # the first is the replica's own link
    torch_dist_port: Optional[int] = None
    gpu_indices: list[int] = Field(default_factory=list)  # empty: the replica runs on the CPU

    def placement(self) -> ReplicaPlacement:
        return ReplicaPlacement(self.hostname, tuple(self.gpu_indices))


def replica_ports(port_number: int, index: int, tensor_parallel: int) -> list[int]:
    """The ports replica ``index`` owns: one per rank, after the front end's ``port_number``."""
    first = port_number + 1 + index * tensor_parallel
    return list(range(first, first + tensor_parallel))


def replica_dist_port(torch_dist_port: int, index: int) -> int:
    """Where replica ``index``'s ranks meet (torch.distributed's master port)."""
    return torch_dist_port + DIST_PORT_STRIDE * index


def replica_configs(placements: list[ReplicaPlacement], port_number: int, tensor_parallel: int,
                    torch_dist_port: int) -> list[ReplicaConfig]:
    return [ReplicaConfig(hostname=placement.host, gpu_indices=list(placement.devices),
                          tensor_parallel_ports=replica_ports(port_number, index, tensor_parallel),
                          torch_dist_port=replica_dist_port(torch_dist_port, index))
            for index, placement in enumerate(placements)]
