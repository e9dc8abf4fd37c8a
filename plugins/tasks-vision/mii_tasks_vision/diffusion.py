"""text-to-image and text-to-image-inpainting with Stable Diffusion through ``diffusers``' pipelines.

text-to-image batches concurrent queries: those asking for the same steps, guidance and size share one
pipeline call. Each query's starting noise is drawn from its own generator exactly as diffusers draws it
(one ``randn_tensor`` of the query's whole shape), so a query's images are those diffusers' pipeline makes
alone with the same seed, up to float error. Inpainting runs each query in a pipeline call of its own
(diffusers also draws from the generator while encoding the image, so a shared call would change them)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, Sequence

import diffusers
import PIL.Image
import torch
from diffusers.utils.torch_utils import randn_tensor

from mii_core.legacy.task import Prepared, QueryError, TaskModel
from mii_tasks_vision.images import decode_image, png_bytes
from mii_tasks_vision.unet_graph import CudaGraphUNet

log = logging.getLogger(__name__)
ONE_ROW = 1  # a query is one row of the batcher whatever its prompt's length (the text encoder truncates)
GROUPING_OPTIONS = ("num_inference_steps", "guidance_scale", "height", "width")


@dataclass(frozen=True, slots=True)
class ImageResponse:
    """MII's image reply: ``images`` (PIL, one per prompt) and ``nsfw_content_detected`` (one flag per image,
    or None when the checkpoint has no safety checker)."""

    images: list[PIL.Image.Image]
    nsfw_content_detected: Optional[list[bool]]


@dataclass(slots=True)
class _Query:
    prompts: list[str]
    negative_prompts: list[str]
    settings: dict[str, Any]  # the GROUPING_OPTIONS, defaults filled in
    generator: Optional[torch.Generator]
    latents: Optional[torch.Tensor] = None  # text-to-image: the starting noise
    images: Optional[dict[str, PIL.Image.Image]] = None  # inpainting: image and mask_image


class DiffusionTask(TaskModel):
    """What both Stable Diffusion tasks share: loading, prompts and options, generators, CUDA graphs."""

    pipeline_class: ClassVar[str]
    required_keys = ("prompt",)
    optional_keys = ("negative_prompt",)
    option_names = ("negative_prompt", "seed", "generator") + GROUPING_OPTIONS
    prompt_alias = "query"  # MII's text-to-image also takes its prompts under "query"

    def __init__(self, task: str, pipe: Any, device: str) -> None:
        super().__init__(task)
        self.pipe, self.device = pipe, device

    @classmethod
    def load(cls, model_dir: Path, *, task: str, device: str, dtype: Any) -> "DiffusionTask":
        pipe = getattr(diffusers, cls.pipeline_class).from_pretrained(model_dir, dtype=dtype)
        pipe.set_progress_bar_config(disable=True)
        return cls(task, pipe.to(device), device)

    @property
    def max_length(self) -> int:
        return ONE_ROW

    def enable_cuda_graph(self) -> None:
        if not str(self.device).startswith("cuda"):
            log.warning("enable_cuda_graph ignored for %s: CUDA graphs need a CUDA device, this deployment runs "
                        "on %s", self.task, self.device)
            return
        CudaGraphUNet.install(self.pipe.unet)

    def check_keys(self, query: Mapping[str, Any]) -> None:
        if isinstance(query, Mapping) and self.prompt_alias in query and "prompt" not in query:
            query = {"prompt" if k == self.prompt_alias else k: v for k, v in query.items()}
        super().check_keys(query)

    def query_parts(self, query: Mapping[str, Any], options: Mapping[str, Any]) -> _Query:
        prompts = _strings(query.get("prompt", query.get(self.prompt_alias)), self.task, "prompt")
        negative = query.get("negative_prompt", options.get("negative_prompt"))
        negatives = [""] * len(prompts) if negative is None else _strings(negative, self.task, "negative_prompt",
                                                                          allow_empty=True)
        if len(negatives) == 1 < len(prompts):
            negatives = negatives * len(prompts)
        if len(negatives) != len(prompts):
            raise QueryError(f"the {self.task} query has {len(prompts)} prompts and {len(negatives)} negative "
                             "prompts; give one negative prompt, or one per prompt")
        return _Query(prompts, negatives, self._settings(options), self._generator(options))

    def _settings(self, options: Mapping[str, Any]) -> dict[str, Any]:
        size = self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor
        settings = {"num_inference_steps": options.get("num_inference_steps", 50),
                    "guidance_scale": options.get("guidance_scale", 7.5),
                    "height": options.get("height", size), "width": options.get("width", size)}
        for name in ("num_inference_steps", "height", "width"):
            if not isinstance(settings[name], int) or isinstance(settings[name], bool) or settings[name] <= 0:
                raise QueryError(f"the {self.task} option '{name}' must be a positive integer, got {settings[name]!r}")
        for name in ("height", "width"):
            if settings[name] % 8:
                raise QueryError(f"the {self.task} option '{name}' must be a multiple of 8, got {settings[name]}")
        if not isinstance(settings["guidance_scale"], (int, float)) or isinstance(settings["guidance_scale"], bool):
            raise QueryError(f"the {self.task} option 'guidance_scale' must be a number, "
                             f"got {settings['guidance_scale']!r}")
        return settings

    def _generator(self, options: Mapping[str, Any]) -> Optional[torch.Generator]:
        if "generator" in options and "seed" in options:
            raise QueryError(f"give the {self.task} query a seed or a generator, not both")
        if "generator" in options:
            if not isinstance(options["generator"], torch.Generator):
                raise QueryError(f"the {self.task} option 'generator' must be a torch.Generator, "
                                 f"got {type(options['generator']).__name__}")
            return options["generator"]
        seed = options.get("seed")
        if seed is None:
            return None
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**64:
            raise QueryError(f"the {self.task} option 'seed' must be an integer in [0, 2**64), got {seed!r}")
        return torch.Generator(device=self.device).manual_seed(seed)

    def collate(self, prepared: Sequence[Prepared], pad_to: int) -> list[_Query]:
        return [p.data for p in prepared]

    def respond(self, prepared: Prepared, outputs: Any, row: int) -> ImageResponse:
        return outputs[row]

    def to_plain(self, response: ImageResponse) -> dict[str, Any]:
        """The images as PNG bytes (lossless: a client sees the pixels the pipeline made)."""
        first = response.images[0]
        return {"images": [png_bytes(image) for image in response.images],
                "nsfw_content_detected": response.nsfw_content_detected, "mode": first.mode, "size": list(first.size)}

    def call_pipeline(self, prompts: list[str], negatives: list[str], settings: dict, **inputs: Any) -> list:
        """One pipeline call → (images, nsfw flags) per image."""
        with torch.inference_mode():
            output = self.pipe(prompt=prompts, negative_prompt=negatives, **settings, **inputs)
        flags = output.nsfw_content_detected
        return [(image, None if flags is None else bool(flags[i])) for i, image in enumerate(output.images)]


class TextToImage(DiffusionTask):
    """Query ``{"prompt" (or "query"): str | [str, ...], "negative_prompt"?: ...}`` → ``ImageResponse``."""

    pipeline_class = "StableDiffusionPipeline"

    def prepare(self, query: Mapping[str, Any], options: Mapping[str, Any]) -> Prepared:
        parts = self.query_parts(query, options)
        scale = self.pipe.vae_scale_factor
        shape = (len(parts.prompts), self.pipe.unet.config.in_channels,
                 parts.settings["height"] // scale, parts.settings["width"] // scale)
        # as diffusers' prepare_latents draws it: the query's whole noise at once, from its own generator
        parts.latents = randn_tensor(shape, generator=parts.generator, device=torch.device(self.device),
                                     dtype=self.pipe.text_encoder.dtype)
        return Prepared(ONE_ROW, parts, options)

    def run(self, batch: list[_Query]) -> list[ImageResponse]:
        groups: dict[tuple, list[int]] = {}
        for row, query in enumerate(batch):
            groups.setdefault(tuple(query.settings[name] for name in GROUPING_OPTIONS), []).append(row)
        responses: list[Any] = [None] * len(batch)
        for rows in groups.values():
            queries = [batch[row] for row in rows]
            generators = [q.generator for q in queries for _ in q.prompts]
            results = self.call_pipeline(
                [p for q in queries for p in q.prompts], [n for q in queries for n in q.negative_prompts],
                queries[0].settings, latents=torch.cat([q.latents for q in queries]),
                # only ancestral schedulers draw while stepping; each image from its own query's generator
                generator=generators if all(g is not None for g in generators) else None)
            for row, query in zip(rows, queries):
                mine, results = results[:len(query.prompts)], results[len(query.prompts):]
                responses[row] = _image_response(mine)
        return responses


class Inpainting(DiffusionTask):
    """Query ``{"prompt": str | [str, ...], "image": ..., "mask_image": ..., "negative_prompt"?: ...}`` (images
    as PIL, bytes or a local path; white mask pixels are repainted) → ``ImageResponse``."""

    pipeline_class = "StableDiffusionInpaintPipeline"
    required_keys = ("prompt", "image", "mask_image")
    image_keys = ("image", "mask_image")

    def prepare(self, query: Mapping[str, Any], options: Mapping[str, Any]) -> Prepared:
        parts = self.query_parts(query, options)
        image = decode_image(query["image"], self.task, "image")
        mask = decode_image(query["mask_image"], self.task, "mask_image")
        if mask.size != image.size:
            raise QueryError(f"the {self.task} query's 'mask_image' is {mask.size[0]}x{mask.size[1]} but its "
                             f"'image' is {image.size[0]}x{image.size[1]}; give a mask of the image's size")
        parts.images = {"image": image, "mask_image": mask}
        return Prepared(ONE_ROW, parts, options)

    def run(self, batch: list[_Query]) -> list[ImageResponse]:
        return [_image_response(self.call_pipeline(q.prompts, q.negative_prompts, q.settings,
                                                   generator=q.generator, **q.images))
                for q in batch]


def _image_response(results: list) -> ImageResponse:
    flags = [flag for _, flag in results]
    return ImageResponse([image for image, _ in results], None if None in flags else flags)


def _strings(value: Any, task: str, key: str, allow_empty: bool = False) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, (list, tuple)) or not values or not all(
            isinstance(v, str) and (v or allow_empty) for v in values):
        raise QueryError(f"the {task} query's '{key}' must be a non-empty string or a non-empty list of them, "
                         f"got {value!r}"[:300])
    return list(values)
