"""``--set key.path=value`` command-line overrides, turned into nested mappings.

Values are parsed as YAML scalars or flow collections (``8``, ``0.5``, ``true``, ``[8, 16]``,
``null``), so ``--set relation.k=8 --set backbone.channels=[16,32,64,128]`` does what it reads.
"""

from __future__ import annotations

from typing import Any, Iterable

import yaml

from asczoo import safe_yaml
from asczoo.arguments import RecipeError


def parse_override(item: str) -> dict[str, Any]:
    """``"a.b=1"`` -> ``{"a": {"b": 1}}``."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise RecipeError(f"--set {item!r}: expected KEY=VALUE with a dotted KEY such as relation.k=8")
    try:
        value = safe_yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise RecipeError(f"--set {item!r}: the value is not valid YAML: {exc}") from exc
    nested: dict[str, Any] = {}
    node = nested
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Several ``--set`` items merged into one nested mapping (later items win)."""
    from asczoo.recipes import deep_merge

    merged: dict[str, Any] = {}
    for item in items:
        merged = deep_merge(merged, parse_override(item))
    return merged
