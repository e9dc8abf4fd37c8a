"""``python -m mii_core.replica_main DEPLOYMENT_FOLDER INDEX``: one replica process of a deployment (or one
rank of it), as the router starts it (``serving/launch.py``).

This entry point sits above both the pipeline and serving: it gives ``serving.replica`` the way to build
the :class:`~mii_core.pipeline.Pipeline` it serves, so that nothing in ``mii_core.serving`` imports the
pipeline (the pipeline owns its engine service, which lives in serving). A deployment started by
``mii_core.legacy.deploy(..., deployment_type="local")`` runs a task model instead (``legacy/replica.py``).
"""
from __future__ import annotations

import sys
from pathlib import Path

from mii_core.pipeline import Pipeline
from mii_core.serving.metadata import load_record
from mii_core.serving.replica import run_replica


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:3]
    record = load_record(Path(args[0]))
    if record is not None and record.legacy is not None:  # an MII Legacy deployment: a task model, not an engine
        from mii_core.legacy.replica import run_task_replica

        return run_task_replica(record, int(args[1]))
    return run_replica(Pipeline, argv)


if __name__ == "__main__":
    sys.exit(main())
