"""``python -m mii_core.replica_main DEPLOYMENT_FOLDER INDEX``: one replica process of a deployment (or one
rank of it), as the router starts it (``serving/launch.py``).

This entry point sits above both the pipeline and serving: it gives ``serving.replica`` the way to build
the :class:`~mii_core.pipeline.Pipeline` it serves, so that nothing in ``mii_core.serving`` imports the
pipeline (the pipeline owns its engine service, which lives in serving).
"""
from __future__ import annotations

import sys

from mii_core.pipeline import Pipeline
from mii_core.serving.replica import run_replica


def main(argv: list[str] | None = None) -> int:
    return run_replica(Pipeline, argv)


if __name__ == "__main__":
    sys.exit(main())
