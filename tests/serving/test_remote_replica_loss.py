"""A replica on another host can vanish without closing its connections: marking it lost must end the
requests running there (their link streams abandoned, the loss named), never leave them waiting."""
from __future__ import annotations

from multiprocessing import Pipe

import pytest

from mii_core.serving.link import LinkBroken, RemoteBackend, RemoteStream
from mii_core.serving.router.replicas import ReplicaPool, ReplicaState


class Stream:
    def __init__(self) -> None:
        self.abandoned = None

    def abandon(self, reason: str) -> None:
        self.abandoned = reason


def pool_of_two() -> ReplicaPool:
    return ReplicaPool([ReplicaState(0, RemoteBackend(("127.0.0.1", 1), b"k")),
                        ReplicaState(1, RemoteBackend(("worker-1", 1), b"k"), host="worker-1")])


def test_marking_a_replica_lost_abandons_the_streams_running_there_only():
    pool = pool_of_two()
    local, remote, finished = Stream(), Stream(), Stream()
    pool.track(pool.replicas[0], local)
    pool.track(pool.replicas[1], remote)
    pool.track(pool.replicas[1], finished)
    pool.untrack(pool.replicas[1], finished)
    pool.mark_lost(pool.replicas[1], "ssh exited with code 255")
    assert remote.abandoned == "replica 1 on worker-1 is lost (ssh exited with code 255)"
    assert (local.abandoned, finished.abandoned) == (None, None)
    late = Stream()  # a request that reached the replica just as it was lost
    pool.track(pool.replicas[1], late)
    assert late.abandoned == remote.abandoned


def test_an_abandoned_link_stream_ends_with_the_reason_though_its_peer_says_nothing():
    ours, peer = Pipe()
    stream = RemoteStream(ours)
    stream.abandon("replica 1 on worker-1 is lost (ssh exited with code 255)")
    with pytest.raises(LinkBroken, match=r"replica 1 on worker-1 is lost \(ssh exited with code 255\)"):
        list(stream.events())
    peer.close()
