"""Work in a fresh process (spawn): the GPU steps (checkpoint, pipeline) so that the orchestrating process
never holds a CUDA context beside the servers, and the load generator so that it has its own GIL."""

import multiprocessing
from concurrent.futures import ProcessPoolExecutor


def in_child(timeout_s, fn, *args):
    """fn(*args) in a new spawned process; its return value (picklable) or its exception."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result(timeout=timeout_s)
