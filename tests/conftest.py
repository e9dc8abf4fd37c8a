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
import transformers  # noqa: E402

from support.oracle import HFOracle  # noqa: E402
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
    """pipeline(path, **model_options) -> mii_core pipeline, shared within a test module.

    Pipelines are destroyed when the module ends so their KV caches do not pile up.
    """
    import mii_core

    made = {}

    def get(path, **model_options):
        key = (str(path), repr(sorted(model_options.items())))
        if key not in made:
            made[key] = mii_core.pipeline(str(path), **model_options)
        return made[key]

    yield get
    for pipe in made.values():
        pipe.destroy()


@pytest.fixture(params=VARIANTS)
def variant(request):
    return request.param
