"""mii_core.legacy's image tasks (plugin mii-tasks-vision) against HF's zero-shot-image-classification
pipeline and diffusers' Stable Diffusion pipelines on tiny random checkpoints built here: same scores,
same images for the same seed (within float error), bad input named, a bad query failing only itself."""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

import mii_core.legacy as mii
from mii_core.legacy.task import QueryError
from support.tiny_vision import build_tiny_clip, build_tiny_stable_diffusion, png_bytes, random_image

diffusers = pytest.importorskip("diffusers")
SIZE = {"height": 32, "width": 32, "num_inference_steps": 2}
LABELS = ["cat", "dog", "red car", "a tree"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    make = tmp_path_factory.mktemp
    return {"clip": build_tiny_clip(make("clip")), "sd": build_tiny_stable_diffusion(make("sd")),
            "inpaint": build_tiny_stable_diffusion(make("sd-inpaint"), inpainting=True)}


@pytest.fixture
def deploy(folders):
    names = []

    def make(task, folder_key, **config):
        name = f"{task}-{len(names)}"
        handle = mii.deploy(task=task, model=str(folders[folder_key]), deployment_name=name,
                            deployment_type="non-persistent", mii_config={"batch_wait_ms": 50.0, **config})
        names.append(name)
        return handle

    yield make
    for name in names:
        mii.terminate(name)


def concurrently(handle, queries, **options):
    with ThreadPoolExecutor(len(queries)) as pool:
        futures = [pool.submit(handle.query, q, **options) for q in queries]
    return futures


def assert_scores_equal(ours, theirs):
    assert [entry["label"] for entry in ours] == [entry["label"] for entry in theirs]
    assert [entry["score"] for entry in ours] == pytest.approx([entry["score"] for entry in theirs], abs=1e-5)
    assert list(ours[0]) == ["score", "label"]


def test_zero_shot_equals_hf_pipeline_for_pil_bytes_and_path(deploy, folders, tmp_path):
    handle = deploy("zero-shot-image-classification", "clip")
    hf = transformers.pipeline("zero-shot-image-classification", model=str(folders["clip"]), device="cpu")
    images = [random_image(seed) for seed in range(4)]
    path = tmp_path / "image.jpg"
    images[3].save(path)
    given = [images[0], png_bytes(images[1]), images[2], str(path)]
    label_sets = [LABELS, LABELS[:2], ["house", "panda in space", "cat"], LABELS[1:]]
    futures = concurrently(handle, [{"image": g, "candidate_labels": labels} for g, labels in zip(given, label_sets)])
    for future, image, labels in zip(futures, images[:3] + [Image.open(path)], label_sets):
        assert_scores_equal(future.result().response, hf(image, candidate_labels=labels))
    assert max(mii.api.get_deployment(handle.deployment_name).batcher.batch_sizes) > 1  # batched together


def test_zero_shot_bad_queries_name_the_key_and_fail_alone(deploy):
    handle = deploy("zero-shot-image-classification", "clip")
    good = {"image": random_image(0), "candidate_labels": LABELS}
    bad = [{"image": b"not an image", "candidate_labels": LABELS}, {"image": random_image(1), "candidate_labels": []},
           {"image": "/no/such/file.png", "candidate_labels": LABELS}, {"image": random_image(1)}]
    futures = concurrently(handle, [good, *bad, good])
    messages = ["'image' does not decode as an image", "'candidate_labels' must be a non-empty list",
                "'image' names no file", "has no 'candidate_labels' key"]
    for future, message in zip(futures[1:5], messages):
        with pytest.raises(QueryError, match=message):
            future.result()
    assert_scores_equal(futures[0].result().response, futures[5].result().response)


def diffusers_images(folder, pipeline_class="StableDiffusionPipeline", seed=0, **call):
    pipe = getattr(diffusers, pipeline_class).from_pretrained(str(folder))
    pipe.set_progress_bar_config(disable=True)
    return pipe(**call, **SIZE, generator=torch.Generator().manual_seed(seed)).images


def assert_images_close(ours, theirs, tolerance=2):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.size == b.size
        difference = np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max()
        assert difference <= tolerance, f"pixels differ by up to {difference}"


def test_text_to_image_equals_diffusers_for_the_same_seed(deploy, folders):
    handle = deploy("text-to-image", "sd")
    queries = [{"query": ["a panda in space", "a red house"]}, {"prompt": "a cat", "negative_prompt": "a dog"},
               {"prompt": "a tree"}]
    seeds = [3, 4, 5]
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(handle.query, q, seed=s, **SIZE) for q, s in zip(queries, seeds)]
    results = [f.result() for f in futures]
    expected = [diffusers_images(folders["sd"], seed=3, prompt=["a panda in space", "a red house"]),
                diffusers_images(folders["sd"], seed=4, prompt="a cat", negative_prompt="a dog"),
                diffusers_images(folders["sd"], seed=5, prompt="a tree")]
    for result, images in zip(results, expected):
        assert_images_close(result.images, images)  # MII's result.images
        assert result.response.nsfw_content_detected is None  # the tiny checkpoint has no safety checker
    with pytest.raises(AttributeError, match="this result has no 'imgs' \\(its response is of type ImageResponse\\)"):
        results[0].imgs
    assert max(mii.api.get_deployment(handle.deployment_name).batcher.batch_sizes) > 1
    # another seed gives another image (the comparison above can fail)
    other = handle.query({"prompt": "a tree"}, seed=6, **SIZE).images[0]
    assert np.abs(np.asarray(other, dtype=int) - np.asarray(expected[2][0], dtype=int)).max() > 10


def test_text_to_image_bad_queries_fail_alone(deploy):
    handle = deploy("text-to-image", "sd")
    bad = [({"prompt": ""}, {}), ({"prompt": "a cat"}, {"height": 30}), ({"prompt": "a cat"}, {"steps": 2}),
           ({"prompt": ["a", "b"], "negative_prompt": ["x", "y", "z"]}, {})]
    messages = ["'prompt' must be a non-empty string", "'height' must be a multiple of 8",
                r"unknown text-to-image option\(s\) \['steps'\]", "2 prompts and 3 negative prompts"]
    with ThreadPoolExecutor(len(bad) + 1) as pool:
        futures = [pool.submit(handle.query, q, **{**SIZE, **o}) for q, o in bad]
        futures.append(pool.submit(handle.query, {"prompt": "a cat"}, seed=1, **SIZE))
    for future, message in zip(futures, messages):
        with pytest.raises(QueryError, match=message):
            future.result()
    assert len(futures[-1].result().images) == 1
    with pytest.raises(QueryError, match="text-to-image query has no 'prompt' key"):
        handle.query({"text": "a cat"})


def test_inpainting_equals_diffusers_and_checks_the_mask(deploy, folders):
    handle = deploy("text-to-image-inpainting", "inpaint")
    image, mask = random_image(7, (32, 32)), Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    with ThreadPoolExecutor(2) as pool:
        good = pool.submit(handle.query, {"prompt": "a cat", "image": png_bytes(image), "mask_image": mask},
                           seed=2, **SIZE)
        bad = pool.submit(handle.query, {"prompt": "a cat", "image": image, "mask_image": Image.new("L", (16, 32))},
                          seed=2, **SIZE)
    expected = diffusers_images(folders["inpaint"], "StableDiffusionInpaintPipeline", seed=2, prompt="a cat",
                                image=image, mask_image=mask)
    assert_images_close(good.result().images, expected)
    with pytest.raises(QueryError, match=r"'mask_image' is 16x32 but its 'image' is 32x32"):
        bad.result()


def test_enable_cuda_graph_off_cuda_is_refused_with_a_logged_reason(deploy, caplog):
    with caplog.at_level(logging.WARNING):
        deploy("text-to-image", "sd", enable_cuda_graph=True, device="cpu")
        deploy("zero-shot-image-classification", "clip", enable_cuda_graph=True, device="cpu")
    assert "enable_cuda_graph ignored for text-to-image: CUDA graphs need a CUDA device" in caplog.text
    assert "the zero-shot-image-classification task model ZeroShotImageClassification captures no CUDA graphs" \
        in caplog.text


def test_a_diffusers_folder_model_type_comes_from_model_index(tmp_path):
    (tmp_path / "model_index.json").write_text('{"_class_name": "StableDiffusionXLPipeline"}')
    with pytest.raises(ValueError, match=r"task 'text-to-image' for model_type 'StableDiffusionXLPipeline'.*"
                                         r"served for: StableDiffusionPipeline"):
        mii.deploy(task="text-to-image", model=str(tmp_path), deployment_name="x", deployment_type="non-persistent")
    (tmp_path / "model_index.json").write_text('{"unet": ["diffusers", "UNet2DConditionModel"]}')
    with pytest.raises(ValueError, match="has no '_class_name'"):
        mii.deploy(task="text-to-image", model=str(tmp_path), deployment_name="x", deployment_type="non-persistent")
    (tmp_path / "model_index.json").unlink()
    with pytest.raises(ValueError, match="neither config.json .* nor model_index.json"):
        mii.deploy(task="text-to-image", model=str(tmp_path), deployment_name="x", deployment_type="non-persistent")
