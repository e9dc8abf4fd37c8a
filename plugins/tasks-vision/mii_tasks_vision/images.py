"""A query's image, given as a PIL image, encoded bytes (PNG, JPEG, ...) or a local file path, as an RGB
PIL image (EXIF rotation applied, as transformers' ``load_image`` does); anything else is the query's error."""
from __future__ import annotations

import io
import os
from typing import Any

import PIL.Image
import PIL.ImageOps

from mii_core.legacy.task import QueryError


def png_bytes(image: PIL.Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def decode_image(value: Any, task: str, key: str) -> PIL.Image.Image:
    image = _open(value, task, key)
    try:
        image = PIL.ImageOps.exif_transpose(image)
        return image.convert("RGB")
    except (OSError, ValueError) as exc:  # a truncated or corrupt file fails when its pixels are read
        raise QueryError(f"the {task} query's '{key}' does not decode as an image: {exc}") from None


def _open(value: Any, task: str, key: str) -> PIL.Image.Image:
    if isinstance(value, PIL.Image.Image):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        source: Any = io.BytesIO(bytes(value))
    elif isinstance(value, (str, os.PathLike)):
        if not os.path.isfile(value):
            raise QueryError(f"the {task} query's '{key}' names no file: {str(value)[:200]!r} (give a PIL image, "
                             "the image's bytes, or a local file path)")
        source = value
    else:
        raise QueryError(f"the {task} query's '{key}' must be a PIL image, the image's bytes or a local file "
                         f"path, got {type(value).__name__}")
    try:
        image = PIL.Image.open(source)
        image.load()
        return image
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as exc:
        raise QueryError(f"the {task} query's '{key}' does not decode as an image: {exc}") from None
