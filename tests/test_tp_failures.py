"""Tensor-parallel failures: a rank that dies ends the other with an error naming it, in bounded time;
launching fewer ranks than tensor_parallel asks for is a clear error."""
from __future__ import annotations

import subprocess
import time

import pytest

from support.tp_launch import start_ranks_by_hand

BOUND_S = 60  # the collective timeout is 30 s; gloo notices a closed connection at once


def rank0_after_rank1_fails(model_path, tmp_path, still: str, **env) -> tuple[list, str]:
    """Two ranks generating; rank 1 fails at step 3 as ``env`` says. Returns the ranks (all ended) and rank
    0's stderr once it has ended; fails the test if rank 0 still runs after BOUND_S (``still``: what it does)."""
    job = {"name": "llama", "path": str(model_path), "options": {}, "token_lists": [[1, 5, 6, 7, 8]],
           "max_new_tokens": 40}
    ranks = start_ranks_by_hand([job], tmp_path, MII_TEST_DIE_RANK="1", MII_TEST_DIE_AT_STEP="3", **env)
    try:
        _out, err = ranks[0].communicate(timeout=BOUND_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"rank 0 still {still} {BOUND_S} s after rank 1 failed")
    finally:
        for rank in ranks:
            rank.kill()
            rank.wait()
    return ranks, err


def test_a_killed_rank_ends_the_other_with_an_error_naming_it(checkpoint, tmp_path):
    model_path = checkpoint("gqa")
    started = time.monotonic()
    ranks, err = rank0_after_rank1_fails(model_path, tmp_path, "runs", MII_CORE_DIST_TIMEOUT="30")
    assert ranks[1].returncode == -9  # the test really killed rank 1
    assert ranks[0].returncode != 0
    assert "RankFailure: rank 0 of 2: lost rank(s) 1" in err, err[-3000:]
    assert time.monotonic() - started < BOUND_S


def test_a_stalled_rank_ends_the_other_after_the_collective_timeout(checkpoint, tmp_path):
    ranks, err = rank0_after_rank1_fails(checkpoint("gqa"), tmp_path, "waits", MII_TEST_DIE_SIGNAL="SIGSTOP",
                                         MII_CORE_DIST_TIMEOUT="5")
    assert ranks[0].returncode != 0
    assert "RankFailure: rank 0 of 2: lost rank(s) 1" in err, err[-3000:]


def test_fewer_ranks_than_tensor_parallel_is_a_clear_error(checkpoint, monkeypatch):
    import mii_core

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ValueError, match=r"tensor_parallel=2 but this process was launched as one of 1 rank.*"
                                         r"deepspeed --num_gpus 2 .*torchrun --nproc_per_node 2"):
        mii_core.pipeline(str(checkpoint("gqa")), tensor_parallel=2)


def test_launcher_environment_is_read_and_checked():
    from mii_core.distributed import LaunchEnv, read_launch_env

    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "node-a", "MASTER_PORT": "29600"}
    assert read_launch_env(env) == LaunchEnv(3, 4, 1, "node-a", 29600)
    assert read_launch_env({}) == LaunchEnv(0, 1, 0, "127.0.0.1", None)
    with pytest.raises(ValueError, match=r"RANK=4 is not below WORLD_SIZE=4"):
        read_launch_env({**env, "RANK": "4"})
    with pytest.raises(ValueError, match=r"WORLD_SIZE='two' must be an integer >= 1"):
        read_launch_env({**env, "WORLD_SIZE": "two"})
