"""MII's ``enable_cuda_graph`` on CUDA (skipped without a GPU; benchmarks/gpu_checks.sh runs it there):

- each encoder task and model type answers batches of 1 to 5 queries, at lengths straddling the length
  buckets, replayed from CUDA graphs, as HF does on each query alone (pipeline, or by hand from HF's logits);
- the graphs' output tensors equal the eager forward pass of the same batch, in float32, float16, bfloat16,
  also when a graph is replayed again after others;
- a deployment with ``enable_cuda_graph`` (the batcher's own thread captures) answers as HF's pipeline;
- the UNet's step replayed from its graph (``unet_graph.py``) equals diffusers' eager UNet for the same seeded
  inputs, and a Stable Diffusion pipeline's images with it equal those without.

The CPU twin of the first checks (static calls run eagerly): test_bucketed_forward.py."""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import transformers

import mii_core.legacy as mii
from support.tiny_encoders import ENCODERS
from mii_core.plugins import get_plugins
from support.encoder_batches import TASKS, HFOracle, check_batches
from support.legacy_oracles import assert_same

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
# GPU float32 against GPU float32 in other shapes (cuBLAS picks kernels by shape): a little above CPU's
REL, ABS = 1e-3, 1e-4


def load(task: str, model_type: str, folder, dtype=torch.float32):
    task_class = get_plugins().tasks.load_for(task, model_type)
    return task_class.load(folder, task=task, device="cuda", dtype=dtype)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("model_type", ENCODERS)
def test_graph_replays_answer_as_hf_alone(encoder, model_type, task):
    folder = encoder(model_type, task)
    model = load(task, model_type, folder)
    model.enable_cuda_graph()
    assert model.bucketed is not None, "enable_cuda_graph refused on CUDA"
    check_batches(model, HFOracle(task, folder, "cuda"), task, rel=REL, abs=ABS)
    assert {bucket for bucket, _ in model.bucketed.calls} == {1, 4, 8}
    assert model.bucketed.replays == 4


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours.float() - theirs.float()).abs().max() / theirs.float().abs().max())


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("model_type", ENCODERS)
def test_graph_outputs_equal_the_eager_forward(encoder, model_type, dtype, tolerance):
    folder = encoder(model_type, "feature-extraction")
    graphed, eager = load("feature-extraction", model_type, folder, dtype), load("feature-extraction", model_type,
                                                                                 folder, dtype)
    graphed.enable_cuda_graph()
    texts = ["Hello.", "Paris is the capital of France.", "The quick brown fox jumps over the lazy dog.",
             "Seattle is a city in Washington state.", "I love this movie, it was great!"]
    prepared = [graphed.prepare({"query": text}, {}) for text in texts]
    # 3 and 5 rows are replayed again after other graphs ran: their static buffers are refilled
    for rows, length in [(3, 32), (4, 32), (1, 64), (5, 32), (3, 32), (2, 64), (5, 32)]:
        batch = graphed.collate(prepared[:rows], length)
        ours, theirs = graphed.run(batch), eager.run(batch)
        for name in ("last_hidden_state", "pooler_output"):
            if name in theirs:
                assert getattr(ours, name).shape == getattr(theirs, name).shape
                assert relative_error(getattr(ours, name), getattr(theirs, name)) <= tolerance, (name, rows, length)
    assert sorted(graphed.bucketed.calls) == [(1, 64), (2, 64), (4, 32), (8, 32)]
    assert graphed.bucketed.replays == 7


def test_a_deployment_with_enable_cuda_graph_answers_as_hf(encoder, caplog):
    folder = encoder("bert", "fill-mask")
    hf = transformers.pipeline("fill-mask", model=str(folder), tokenizer=str(folder), device="cuda")
    texts = ["Hello I'm a [MASK] model.", "Paris is the [MASK] of France.", "[MASK] [MASK] is a city.",
             "The quick brown fox jumps over the lazy dog and the [MASK] is sunny in London today."]
    with caplog.at_level(logging.INFO):
        handle = mii.deploy(task="fill-mask", model=str(folder), deployment_name="graphs-gpu",
                            deployment_type="non-persistent",
                            mii_config={"device": "cuda", "enable_cuda_graph": True, "batch_wait_ms": 20.0,
                                        "length_buckets": [8, 16, 32]})
        try:
            for _ in range(2):  # the second round replays the graphs the first captured
                with ThreadPoolExecutor(len(texts)) as pool:
                    results = list(pool.map(lambda text: handle.query({"query": text}), texts))
                for text, result in zip(texts, results):
                    assert_same(result.response, hf(text), rel=REL, abs=ABS)
        finally:
            mii.terminate("graphs-gpu")
    assert "enable_cuda_graph ignored" not in caplog.text
    assert "captured the encoder's forward pass" in caplog.text


# ---- the UNet's step (plugins/tasks-vision) ----

@pytest.fixture(scope="module")
def diffusers():
    return pytest.importorskip("diffusers")


def seeded_unet_inputs(seed: int) -> dict:
    generator = torch.Generator("cuda").manual_seed(seed)
    return {"sample": torch.randn(2, 4, 16, 16, generator=generator, device="cuda"),
            "timestep": torch.tensor(37 + seed, device="cuda"),  # a 0-d tensor, as the pipelines pass it
            "encoder_hidden_states": torch.randn(2, 77, 32, generator=generator, device="cuda")}


def test_the_unet_graph_equals_diffusers_eager_unet(diffusers):
    from mii_tasks_vision.unet_graph import CudaGraphUNet
    from support.tiny_vision import sd_components

    unet = sd_components()["unet"].to("cuda").eval()
    inputs = [seeded_unet_inputs(seed) for seed in (0, 1, 2)]
    with torch.no_grad():
        eager = [unet(**step).sample for step in inputs]
        graphed = CudaGraphUNet.install(unet)
        replayed = [unet(**step).sample for step in inputs]  # the first captures, all replay
        as_tuple = unet(**inputs[1], return_dict=False)[0]
    assert len(graphed.graphs) == 1
    for ours, theirs in zip(replayed + [as_tuple], eager + [eager[1]]):
        assert relative_error(ours, theirs) <= 1e-5
    assert relative_error(eager[0], eager[1]) > 1e-2  # the inputs differ enough to tell the steps apart


def test_a_pipeline_with_the_unet_graph_makes_the_same_images(diffusers, tmp_path):
    from mii_tasks_vision.unet_graph import CudaGraphUNet
    from support.tiny_vision import build_tiny_stable_diffusion

    pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(build_tiny_stable_diffusion(tmp_path))).to("cuda")
    pipe.set_progress_bar_config(disable=True)
    call = dict(prompt=["a cat", "a dog"], height=32, width=32, num_inference_steps=2, output_type="np")
    eager = pipe(**call, generator=torch.Generator("cuda").manual_seed(0)).images
    graphed = CudaGraphUNet.install(pipe.unet)
    first = pipe(**call, generator=torch.Generator("cuda").manual_seed(0)).images
    again = pipe(**call, generator=torch.Generator("cuda").manual_seed(0)).images  # replayed
    assert len(graphed.graphs) == 1
    assert np.abs(first - eager).max() < 1e-3 and np.abs(again - eager).max() < 1e-3
