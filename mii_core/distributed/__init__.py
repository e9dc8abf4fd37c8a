"""Tensor parallelism across processes: the launcher's environment, the process group, and the few
collectives the pipeline adds to the model's own (one broadcast of sampled tokens per step).

Design (see docs/architecture.md): every rank runs the same script with the same requests, so every
rank runs the same deterministic scheduler and KV allocation; only rank 0 samples, and each step's
sampled token ids reach the other ranks in one broadcast.
"""
from mii_core.distributed.launch_env import LaunchEnv, read_launch_env
from mii_core.distributed.parallel_context import ParallelContext, RankFailure
from mii_core.distributed.process_group import init_parallel_context

__all__ = ["LaunchEnv", "ParallelContext", "RankFailure", "init_parallel_context", "read_launch_env"]
