"""The router: the deployment's Backend, in front of its replicas, in rooms of one job each.

- ``replicas.py``: each replica's state and the pool that picks one (least outstanding work: the live
  replica with the fewest prompts in flight; ties: the one picked longest ago).
- ``failover.py``: a request in flight. A replica that breaks the link before it reported the
  request's start (queued there, or unreachable) costs the request nothing: it goes to another
  replica. Once a replica reported the start, losing it ends the request with an error that says so.
- ``admission.py``: at most ``max_queued_requests`` requests wait to start (past that ``QueueFull``);
  none enter once shutting down, and those in flight are ended then.
- ``process_watch.py``: replica processes are polled every ``MONITOR_SECONDS``, so a dead one stops
  getting requests and is reported by ``health()`` within that time. A tensor-parallel replica is
  watched rank by rank (the pids its rank 0 reports): one lost rank makes the replica lost, with the
  rank named, and what is left of it is ended.
- ``load_poll.py``: each live replica's load (running sequences, KV blocks) every ``HEALTH_SECONDS``.
- ``metrics.py``: observers (the REST plugin's metrics) hear time to first token, inter-token
  latency, tokens and each request's outcome.
- ``shutdown.py``: the replicas' processes stopped, politely first.
- ``router.py``: :class:`Router`, the Backend the transports receive, composing the rooms above.
"""
from mii_core.serving.router.replicas import ReplicaState
from mii_core.serving.router.router import Router

__all__ = ["ReplicaState", "Router"]
