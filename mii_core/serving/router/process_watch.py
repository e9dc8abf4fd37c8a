"""Whether each replica's process, and under tensor parallelism each of its ranks, still runs."""
from __future__ import annotations

import logging
import threading

from mii_core.serving.metadata import lost_ranks
from mii_core.serving.router.replicas import ReplicaPool, ReplicaState

log = logging.getLogger("mii_core.serving.router")
MONITOR_SECONDS = 0.2


class ProcessWatch:
    """Marks a replica lost for good once its process or one of its ranks is gone."""

    def __init__(self, pool: ReplicaPool) -> None:
        self.pool = pool

    def check(self, replica: ReplicaState) -> bool:
        """Marks ``replica`` lost if one of its ranks or its process is gone; True if it is lost."""
        if not replica.alive:
            return True
        gone = lost_ranks(replica.rank_pids)
        if gone:
            self.pool.mark_lost(replica, f"lost {', '.join(gone)}")
            replica.end_process_group()  # the launcher ends the other ranks too; this makes sure
            return True
        code = replica.process.poll() if replica.process else None
        if code is not None:
            what = "DeepSpeed's launcher of it (pdsh, ssh)" if replica.host else "its process"
            self.pool.mark_lost(replica, f"{what} exited with code {code}")
            return True
        return False

    def link_broke(self, replica: ReplicaState, error: Exception) -> None:
        """A link to ``replica`` broke: if its process (or one of its ranks) is gone, it is lost for good."""
        if not self.check(replica):
            log.warning("%s: link broke (%s) but the process lives", replica.name, error)

    def start(self, stopping: threading.Event) -> None:
        """Checks every replica each MONITOR_SECONDS, from a daemon thread, until ``stopping`` is set."""
        def watch() -> None:
            while not stopping.wait(MONITOR_SECONDS):
                for replica in self.pool.replicas:
                    self.check(replica)
        threading.Thread(target=watch, name="router-processes", daemon=True).start()
