"""The one deep merge of recipes, overrides and ``--set`` values, for model and training recipes alike."""

from __future__ import annotations

import copy
from typing import Any, Mapping

from asczoo.recipes.schema import RecipeError


def merge(base: Any, override: Any, *, path: str = "") -> Any:
    """Deep-merge ``override`` into a copy of ``base``.

    Mappings merge key by key; a mapping merged into a list addresses its items by index (``"1"`` or
    ``1``), by their ``name``, or all of them (``"*"``); any other value replaces (``None`` included: ``{"relation": None}``
    drops a model's relation blocks). In ``optimizer`` and ``schedule`` sections another ``name``
    switches the kind (:data:`NAMED_SECTIONS`). ``path`` is the dotted key, for messages.
    """
    if isinstance(override, Mapping) and isinstance(base, Mapping):
        out = copy.deepcopy(dict(base))
        for key, value in override.items():
            sub = f"{path}.{key}" if path else str(key)
            if key in NAMED_SECTIONS and key in out:
                out[key] = _merge_named(out[key], value, path=sub)
            else:
                out[key] = merge(out[key], value, path=sub) if key in out else copy.deepcopy(value)
        return out
    if isinstance(override, Mapping) and isinstance(base, list):
        out = copy.deepcopy(base)
        for key, value in override.items():
            # "*" addresses every item: stages.*.overrides.backbone.channels=[...] narrows every stage's model
            for index in range(len(out)) if key == "*" else [_list_index(out, key, path)]:
                out[index] = merge(out[index], value, path=f"{path}.{index if key == '*' else key}")
        return out
    return copy.deepcopy(override)


#: sections that pick one of several kinds by ``name``; each kind has options of its own
NAMED_SECTIONS = ("optimizer", "schedule")


def _merge_named(base: Any, override: Any, *, path: str) -> Any:
    """Merge into an ``optimizer`` or ``schedule`` section: another ``name`` switches the kind, and the
    section is then the override alone (``schedule.name=cosine`` over a step schedule must not keep its
    ``step_epochs``); the same name, or none, merges option by option."""
    if isinstance(base, str):
        base = {"name": base}
    if isinstance(override, str):
        override = {"name": override}
    if isinstance(override, Mapping) and isinstance(base, Mapping) and "name" in override \
            and override["name"] != base.get("name"):
        return copy.deepcopy(dict(override))
    return merge(base, override, path=path)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any] | None) -> dict[str, Any]:
    """:func:`merge` of two mappings; no override gives a copy of ``base``."""
    return copy.deepcopy(dict(base)) if override is None else merge(dict(base), override)


def _list_index(items: list, key: Any, path: str) -> int:
    if isinstance(key, int) and not isinstance(key, bool) or isinstance(key, str) and key.isdigit():
        index = int(key)
        if not 0 <= index < len(items):
            raise RecipeError(f"key '{path}.{key}': index {index} is out of range (there are {len(items)} items, "
                              "counted from 0)")
        return index
    names = [item.get("name") if isinstance(item, Mapping) else None for item in items]
    if key in names:
        return names.index(key)
    known = ", ".join(str(n) for n in names if n is not None) or "none"
    raise RecipeError(f"key '{path}.{key}': no item named {key!r} (names: {known}; or use an index from 0)")
