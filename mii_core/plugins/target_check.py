"""Whether a registered ``"module:Name"`` target exists, found without importing its module.

``mii-core plugins`` must stay light (no torch: tests/test_lazy_imports.py), yet a misspelt class should
show there, not first as an error at ``pipeline()``. So the module is located with ``find_spec`` (which
imports only its parent packages) and its source is read with ``ast`` for a top-level definition of the
name: a class, function, assignment or import. A module that makes names on demand (a module-level
``__getattr__``) or has no readable source is given the benefit of the doubt.
"""
from __future__ import annotations

import ast
import importlib.util
from typing import Optional


def missing_target(target: str) -> Optional[str]:
    """None when ``target`` looks importable, else why not (for a listing line)."""
    module_name, _, attr = target.partition(":")
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError) as exc:
        return f"its module cannot be found ({type(exc).__name__}: {exc})"
    if spec is None:
        return f"no module '{module_name}' is installed"
    name = attr.split(".")[0]
    if not name:
        return None
    names = _top_level_names(spec)
    if names is None or name in names or "__getattr__" in names:
        return None
    return f"module '{module_name}' defines no '{name}'"


def _top_level_names(spec) -> Optional[set[str]]:
    try:
        source = spec.loader.get_source(spec.name) if spec.loader is not None else None
    except (ImportError, OSError):
        return None
    if source is None:
        return None
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None  # importing it would say more than we can
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.Name,)) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names
