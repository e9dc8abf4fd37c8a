"""Strict pydantic base model whose errors tell the user which option to change."""
from __future__ import annotations

import types
import typing
from typing import Any, Optional, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict

ModelT = TypeVar("ModelT", bound="StrictModel")
# A hostile request can hold 10,000 unknown keys or a 20,000-character value: the error names the
# first problems, each quoted briefly, so it still fits a gRPC status or a log line.
MAX_PROBLEMS = 10
MAX_LINE_CHARS = 500


class StrictModel(BaseModel):
    """Forbids unknown fields so a misspelt option is an error, not silently ignored.

    ``strict``: no conversion that changes meaning: ``True`` is not the int 1, ``"no"`` is not
    False, ``1.7`` is not an int, ``"0.5"`` is not a float (an int still counts as a float).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, arbitrary_types_allowed=True,
                              strict=True)


def _nested_model(annotation: Any) -> Optional[type[BaseModel]]:
    """The BaseModel class inside ``annotation`` (``Model`` or ``Optional[Model]``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for member in typing.get_args(annotation):
            found = _nested_model(member)
            if found is not None:
                return found
    return None


def _locate(model_cls: type[BaseModel], loc: tuple) -> tuple[str, type[BaseModel]]:
    """Dotted option name of an error location, and the model class that holds its last part.

    The walk stops at the first part that is not a nested model (union member tags, list indexes).
    """
    names, holder, owner = [], model_cls, model_cls
    for part in loc:
        if owner is None:
            break
        names.append(str(part))
        holder = owner
        field = owner.model_fields.get(part)
        owner = _nested_model(field.annotation) if field is not None else None
    return ".".join(names), holder


def _describe(model_cls: type[BaseModel], errors: list[dict[str, Any]]) -> list[str]:
    """One line per problem; a union's alternatives (one pydantic error each) share one line."""
    lines: list[str] = []
    bad_values: dict[str, tuple[Any, list[str]]] = {}
    listed: set[type[BaseModel]] = set()  # the valid options are listed once per model, keeping errors short
    for error in errors:
        where, holder = _locate(model_cls, error["loc"])
        if error["type"] == "extra_forbidden" and holder in listed:
            lines.append(f"unknown option '{where}'")
        elif error["type"] == "extra_forbidden":
            listed.add(holder)
            valid = ", ".join(sorted(holder.model_fields))
            lines.append(f"unknown option '{where}'; valid options here are: {valid}")
        elif error["type"] == "value_error":  # raised by our validators: the message names the option
            lines.append(error["msg"].removeprefix("Value error, "))
        else:
            _given, reasons = bad_values.setdefault(where, (error.get("input"), []))
            if error["msg"] not in reasons:
                reasons.append(error["msg"])
    lines += [f"invalid value for '{where}' (got {given!r}): {' / '.join(reasons)}"
              for where, (given, reasons) in bad_values.items()]
    return _bounded(lines)


def _bounded(lines: list[str]) -> list[str]:
    """At most MAX_PROBLEMS lines of at most MAX_LINE_CHARS characters each, saying what was left out."""
    shown = [line if len(line) <= MAX_LINE_CHARS else f"{line[:MAX_LINE_CHARS]}... ({len(line)} characters)"
             for line in lines[:MAX_PROBLEMS]]
    if len(lines) > MAX_PROBLEMS:
        shown.append(f"and {len(lines) - MAX_PROBLEMS} more problems")
    return shown


def validate_options(model_cls: type[ModelT], options: dict[str, Any], what: str) -> ModelT:
    """Builds ``model_cls`` from ``options``; raises ValueError naming each bad field and the valid ones."""
    try:
        return model_cls(**options)
    except pydantic.ValidationError as exc:
        raise ValueError(f"{what}: {'; '.join(_describe(model_cls, exc.errors()))}") from None
