"""Shared fixtures: tiny checkpoints (built once per session), HF oracles, engine pipelines.

The engine (`mii_core`) is imported only inside the `pipeline` fixture, so the checkpoint
builder and oracle tests run even while the engine cannot be imported.
"""

from __future__ import annotations

import os
import re

import torch

# Without CUDA, Triton kernels run under Triton's interpreter. The switch is read when triton is first
# imported (its own library functions are decorated then), and transformers imports it below.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

# the deployments' fixtures (demo, deploy, chat_checkpoint, a private MII cache): one definition per session
pytest_plugins = ["support.serving_fixtures"]

import transformers  # noqa: E402

from support.serving import xdist_worker  # noqa: E402

# Under pytest-xdist (`make test` runs one worker per core) each worker, and each deployment or rank it
# starts, takes its share of the cores: torch's default of one thread per core in every worker makes them
# fight over the same cores.
if "PYTEST_XDIST_WORKER" in os.environ:
    _threads = max(1, (os.cpu_count() or 1) // xdist_worker()[1])
    torch.set_num_threads(_threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(_threads))

from support import pipeline_pool  # noqa: E402
from support.oracle import HFOracle  # noqa: E402
from support.pipeline_pool import PipelinePool  # noqa: E402
from support.tiny_llama import VARIANT_SEEDS, VARIANTS, build_tiny_llama

# Keep load reports and progress bars out of the test output.
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()


@pytest.fixture(scope="session", autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """checkpoint(variant="gqa", **builder_options) -> path, each distinct one built once."""
    built = {}

    def build(variant: str = "gqa", **options):
        key = (variant, tuple(sorted(options.items())))
        if key not in built:
            label = re.sub(r"[^A-Za-z0-9]+", "-", f"{variant}-{options}").strip("-")
            folder = tmp_path_factory.mktemp(label[:60])
            built[key] = build_tiny_llama(folder, variant=variant, seed=VARIANT_SEEDS[variant], **options)
        return built[key]

    return build


@pytest.fixture(scope="session")
def oracle():
    """oracle(path) -> HFOracle for that checkpoint (loaded once)."""
    loaded = {}

    def get(path) -> HFOracle:
        if str(path) not in loaded:
            loaded[str(path)] = HFOracle(path)
        return loaded[str(path)]

    return get


@pytest.fixture(scope="module")
def pipeline():
    """pipeline(path, **model_options) -> mii_core pipeline, shared within a test module (at most
    pipeline_pool.LIVE of those test bodies asked for stay alive; see support/pipeline_pool.py).

    Pipelines are destroyed when the module ends so their KV caches do not pile up.
    """
    import mii_core

    pool = PipelinePool(mii_core.pipeline)
    yield pool.get
    pool.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Marks the test body's run, so the pipeline pool never destroys one the running test asked for."""
    pipeline_pool.test_body_started(item.nodeid)
    try:
        return (yield)
    finally:
        pipeline_pool.test_body_ended()


@pytest.fixture(params=VARIANTS)
def variant(request):
    return request.param
