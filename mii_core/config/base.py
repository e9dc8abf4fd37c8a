"""Strict pydantic base model whose errors tell the user which option to change."""
from __future__ import annotations

from typing import Any, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict

ModelT = TypeVar("ModelT", bound="StrictModel")


class StrictModel(BaseModel):
    """Forbids unknown fields so a misspelt option is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, arbitrary_types_allowed=True)


def _describe(model_cls: type[BaseModel], error: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in error["loc"]) or model_cls.__name__
    if error["type"] == "extra_forbidden":
        valid = ", ".join(sorted(model_cls.model_fields))
        return f"unknown option '{where}'; valid options are: {valid}"
    return f"invalid value for '{where}': {error['msg']} (got {error.get('input')!r})"


def validate_options(model_cls: type[ModelT], options: dict[str, Any], what: str) -> ModelT:
    """Builds ``model_cls`` from ``options``; raises ValueError naming each bad field and the valid ones."""
    try:
        return model_cls(**options)
    except pydantic.ValidationError as exc:
        problems = "; ".join(_describe(model_cls, err) for err in exc.errors())
        raise ValueError(f"{what}: {problems}") from None
