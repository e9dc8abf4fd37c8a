"""Local image-task deployments: CLIP zero-shot classification over gRPC (PIL images in, HF pipeline's
scores out; an undecodable image, an empty label list and a server path refused by name, then a good
query), Stable Diffusion text-to-image over gRPC (MII's ``result.images`` as PIL images equal to diffusers'
for the same seed), and inpainting over REST (base64 images; a mask of another size is a 400)."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import requests
import torch
import transformers
from PIL import Image

from mii_core.serving.errors import InvalidRequest
from support.legacy_serving import local_deployment, private_cache
from support.tiny_vision import build_tiny_clip, build_tiny_stable_diffusion, png_bytes, random_image

diffusers = pytest.importorskip("diffusers")
SIZE = {"height": 32, "width": 32, "num_inference_steps": 2}
LABELS = ["cat", "dog", "red car", "a tree"]


def b64_png(image: Image.Image) -> str:
    return base64.b64encode(png_bytes(image)).decode()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with private_cache(tmp_path_factory.mktemp("mii_cache")):
        yield


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("clip"))


def assert_images_close(ours, theirs, tolerance=2):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.size == b.size
        assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() <= tolerance


def test_zero_shot_over_grpc(cache, clip_folder):
    hf = transformers.pipeline("zero-shot-image-classification", model=str(clip_folder), device="cpu")
    with local_deployment("zero-shot-image-classification", clip_folder, "clip_deploy") as (handle, _):
        image = random_image(0)
        with pytest.raises(InvalidRequest, match="'image' does not decode as an image"):
            handle.query({"image": b"not an image", "candidate_labels": LABELS})
        with pytest.raises(InvalidRequest, match="'candidate_labels' must be a non-empty list"):
            handle.query({"image": image, "candidate_labels": []})
        with pytest.raises(InvalidRequest, match="has no 'image' key"):
            handle.query({"candidate_labels": LABELS})
        answer = handle.query({"image": image, "candidate_labels": LABELS}).response  # still serving
        expected = hf(image, candidate_labels=LABELS)
        assert [a["label"] for a in answer] == [e["label"] for e in expected]
        assert [a["score"] for a in answer] == pytest.approx([e["score"] for e in expected], abs=1e-5)


def test_text_to_image_over_grpc_equals_diffusers(cache, tmp_path_factory):
    folder = build_tiny_stable_diffusion(tmp_path_factory.mktemp("sd"))
    with local_deployment("text-to-image", folder, "sd_deploy") as (handle, _):
        result = handle.query({"query": ["a panda in space", "a red house"]}, seed=3, **SIZE)
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(folder))
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(prompt=["a panda in space", "a red house"], **SIZE, generator=torch.Generator().manual_seed(3))
    assert all(isinstance(image, Image.Image) for image in result.images)  # MII's result.images
    assert_images_close(result.images, expected.images)
    assert result.response.nsfw_content_detected is None and result.time_taken > 0


def test_inpainting_over_rest_with_base64_images(cache, tmp_path_factory):
    folder = build_tiny_stable_diffusion(tmp_path_factory.mktemp("sd-inpaint"), inpainting=True)
    image, mask = random_image(1, (32, 32)), Image.new("RGB", (32, 32), "white")
    with local_deployment("text-to-image-inpainting", folder, "inpaint_deploy", enable_restful_api=True,
                          restful_api_host="127.0.0.1") as (_, record):
        host, port = record.front_ends["rest"]
        url = f"http://{host}:{port}/mii/inpaint_deploy"
        query = {"prompt": "a cat", "image": b64_png(image), "mask_image": b64_png(random_image(2, (16, 16)))}
        refused = requests.post(url, json={**query, "kwargs": {"seed": 0, **SIZE}}, timeout=120)
        assert refused.status_code == 400 and "give a mask of the image's size" in refused.json()["error"]["message"]
        path = requests.post(url, json={**query, "image": "/etc/hostname"}, timeout=120)
        assert path.status_code == 400 and "neither image bytes nor base64" in path.json()["error"]["message"]
        answer = requests.post(url, json={**query, "mask_image": b64_png(mask), "kwargs": {"seed": 0, **SIZE}},
                               timeout=120).json()
    ours = [Image.open(io.BytesIO(base64.b64decode(data))) for data in answer["response"]["images"]]
    pipe = diffusers.StableDiffusionInpaintPipeline.from_pretrained(str(folder))
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(prompt="a cat", image=image, mask_image=mask, **SIZE, generator=torch.Generator().manual_seed(0))
    assert_images_close(ours, expected.images)
