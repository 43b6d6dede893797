"""The one named registry behind model recipes and training recipes.

A registry holds named recipes read from YAML files or mappings (``version: 1`` plus one top-level
section: ``models`` or ``recipes``). Names follow :data:`asczoo.names.NAME_RE`, each is defined once,
and ``extends`` names another recipe of the same registry; the chain is checked for unknown names and
cycles here. How a recipe is validated once its chain is known is the subclass's business
(:class:`asczoo.recipes.model_recipes.RecipeRegistry`,
:class:`asczoo.recipes.training_recipes.TrainingRecipeRegistry`).
"""

from __future__ import annotations

import copy
import fnmatch
import os
import threading
from pathlib import Path
from typing import Any, Callable, Generic, Mapping, TypeVar

import yaml

from asczoo import plugins, safe_yaml
from asczoo.names import NAME_RE
from asczoo.recipes.schema import RecipeError


class NamedEntry:
    """One named recipe: its raw mapping, where it came from, and whether its parts are available."""

    def __init__(self, name: str, raw: dict[str, Any], origin: str, owner: str) -> None:
        self.name, self.raw, self.origin, self.owner = name, raw, origin, owner
        self.resolved: dict[str, Any] | None = None
        self.unavailable: str = ""  # reason, when a part's plugin is not loaded

    @property
    def description(self) -> str:
        return str((self.resolved or self.raw).get("description", ""))


class NamedRegistry:
    """Named recipes with ``extends``: reading, name rules, chains, listing and lookup."""

    #: what a recipe is called in messages, and the top-level key of its files
    kind = "recipe"
    section = "models"

    def __init__(self) -> None:
        self.entries: dict[str, NamedEntry] = {}

    def read(self, source: Any, *, owner: str) -> tuple[str, dict[str, Any]]:
        """``(origin for messages, {name: raw recipe})`` of one file or mapping."""
        return read_recipe_file(source, owner=owner, section=self.section, kind=self.kind)

    def add_entries(self, origin: str, owner: str, data: Mapping[str, Any]) -> list[str]:
        """Add a file's recipes (names checked, none defined twice); returns their names."""
        for name, raw in data.items():
            where = f"{origin}: recipe {name!r}"
            if not isinstance(name, str) or not NAME_RE.match(name):
                raise RecipeError(f"{origin}: recipe name {name!r} must be lower-case letters, digits, '-' or '_'")
            if name in self.entries:
                raise RecipeError(f"{where} is defined twice: in {self.entries[name].origin} and in {origin}")
            if not isinstance(raw, dict):
                raise RecipeError(f"{where}: expected a mapping of sections, got {type(raw).__name__}")
        for name, raw in data.items():
            self.entries[name] = NamedEntry(name, raw, origin, owner)
        return list(data)

    def parent(self, name: str, chain: tuple[str, ...] = ()) -> str | None:
        """The recipe ``name`` extends (checked: a known recipe, no cycle through ``chain``), or None."""
        entry = self.entries[name]
        parent = entry.raw.get("extends")
        if parent is None:
            return None
        where = f"{entry.origin}: recipe {name!r}"
        if not isinstance(parent, str) or parent not in self.entries:
            raise RecipeError(f"{where}: key 'extends' names {parent!r}, which is not a known {self.kind}")
        if parent in chain or parent == name:
            raise RecipeError(f"{where}: key 'extends' forms a cycle: {' -> '.join((*chain, name, parent))}")
        return parent

    def names(self, pattern: str = "*", *, include_unavailable: bool = False) -> list[str]:
        return sorted(n for n, e in self.entries.items()
                      if fnmatch.fnmatchcase(n, pattern) and (include_unavailable or not e.unavailable))

    def get(self, name: str) -> NamedEntry:
        if name not in self.entries:
            raise KeyError(self.unknown_message(name))
        entry = self.entries[name]
        if entry.unavailable:
            raise KeyError(self.unavailable_message(name, entry))
        return entry

    def unknown_message(self, name: str) -> str:
        return f"no {self.kind} named {name!r}"

    def unavailable_message(self, name: str, entry: NamedEntry) -> str:
        return f"{self.kind} {name!r} cannot be used here: {entry.unavailable}"


def read_recipe_file(
    source: Any, *, owner: str, section: str, kind: str
) -> tuple[str, dict[str, Any]]:
    """Read a versioned recipe file (a path, YAML via ``safe_load``) or an already-parsed mapping.

    Returns ``(origin for messages, {name: raw recipe})`` from the top-level ``section`` key
    (``models`` for model recipes, ``recipes`` for training recipes). ``kind`` names the file in
    errors ("recipe", "training recipe"). Shared by both registries so both read files alike.
    """
    file_keys = {"version", section}
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        origin = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise RecipeError(f"{origin}: cannot read {kind} file: {exc.strerror or exc}") from exc
        try:
            data = safe_yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise RecipeError(f"{origin}: not valid YAML: {exc}") from exc
    elif isinstance(source, Mapping):
        origin = f"<{kind}s from {owner}>"
        data = copy.deepcopy(dict(source))
    else:
        raise RecipeError(f"{kind} source from {owner!r} must be a path or a mapping, got {type(source).__name__}")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{origin}: expected a mapping with a {section!r} key at the top level")
    unknown = set(data) - file_keys
    if unknown:
        raise RecipeError(
            f"{origin}: unknown top-level key(s) {', '.join(sorted(map(repr, unknown)))}; "
            f"expected {', '.join(sorted(file_keys))}"
        )
    if data.get("version", 1) != 1:
        raise RecipeError(f"{origin}: key 'version' is {data.get('version')!r}; this asczoo reads version 1")
    entries = data.get(section) or {}
    if not isinstance(entries, dict):
        raise RecipeError(f"{origin}: key {section!r} must be a mapping of recipe names to recipes")
    return origin, entries


R = TypeVar("R")


class CachedRegistry(Generic[R]):
    """A process-wide registry, built on first use and rebuilt after the plugins change.

    ``build(host)`` reads every source the plugin ``host`` offers (and whatever else the registry
    holds) into a fresh registry. :meth:`get` returns the built one while the same host serves the
    plugins; :meth:`invalidate` (called by :func:`asczoo.plugins.on_change` when a plugin is added
    or removed in-process) drops it. ``lock`` guards building and any change made to the registry
    built, so two threads never build it twice nor see half of one.
    """

    def __init__(self, build: Callable[[Any], R]) -> None:
        self._build = build
        self._value: R | None = None
        self._host: Any = None
        self.lock = threading.RLock()
        plugins.on_change(self.invalidate)

    def get(self) -> R:
        with self.lock:
            host = plugins.host()
            if self._value is None or self._host is not host:
                self._value, self._host = self._build(host), host
            return self._value

    def invalidate(self) -> None:
        with self.lock:
            self._value = None

