"""Model recipes: ``registry.yaml`` and users' own recipe files.

A registry file is YAML (read with ``yaml.safe_load``)::

    version: 1
    models:
      atresn-net-resnet18:
        description: ATReSN-Net on ResNet-18 (paper, section 3.1)
        backbone: {plugin: timm-resnet, arch: resnet18}
        inflator: {plugin: inflate-3d}
        relation: {plugin: atresn, k: 4, placement: [res2_1, res2_2, res3_1, res3_2]}
        head:     {plugin: avgpool-fc, dropout: 0.5}
        frontend: {plugin: dcase-logmel}
        weights:                      # tags: published weights, `name.tag`
          dcase2019: {repo_id: org/atresn-net-resnet18, revision: <commit sha>}
      atresn-net-resnet18-cos:
        extends: atresn-net-resnet18  # deep-merged over the named recipe
        relation: {distance: cosine}

Sections name their part with ``plugin``; the other keys are that part's arguments and are checked
against the factory's signature when the file is read. Users add files through the environment
variable ``ASCZOO_REGISTRY`` (paths separated by ``os.pathsep``) or :func:`register_recipes`.
"""

from __future__ import annotations

import copy
import os
import re
import warnings
from typing import Any, Mapping


from asczoo import plugins
from asczoo.names import NAME_RE, split_name
from asczoo.parts import SECTIONS as SECTION_KINDS
from asczoo.recipes._named import CachedRegistry, NamedEntry, NamedRegistry, read_recipe_file  # noqa: F401 - re-exported
from asczoo.recipes.merge import deep_merge
from asczoo.recipes.schema import RecipeError, check_arguments
from asczoo.interfaces import AFTER_BLOCK, BEFORE_FINAL_ACTIVATION, PLACEMENT_NAME_PATTERN

#: model recipe sections and the kind of part each names (from :data:`asczoo.parts.PART_KINDS`)
SECTIONS = tuple(SECTION_KINDS)
SECTION_KIND = {section: kind.name for section, kind in SECTION_KINDS.items()}
#: parameters the host passes to factories itself; recipes may not set them
HOST_SUPPLIED = {section: kind.host_arguments for section, kind in SECTION_KINDS.items()}
#: keys of a ``relation`` section that the host consumes (placement), not the block factory
RELATION_HOST_KEYS = ("placement", "position", "per_placement")
RECIPE_KEYS = {*SECTIONS, "description", "extends", "num_classes", "classes", "weights", "paper", "notes", "task"}
#: ``task`` values: one class per clip (softmax, cross-entropy) or any number (sigmoid, binary cross-entropy)
TASKS = ("single-label", "multi-label")
REQUIRED_SECTIONS = ("backbone", "inflator", "head", "frontend")
WEIGHT_KEYS = {"repo_id", "revision", "description", "metrics", "license", "default"}
_PLACEMENT_RE = re.compile(PLACEMENT_NAME_PATTERN)
ENV_VAR = "ASCZOO_REGISTRY"


#: one named recipe (kept under its former name)
RecipeEntry = NamedEntry


class RecipeRegistry(NamedRegistry):
    """All model recipes known to this process, resolved (``extends`` applied) and validated."""

    kind, section = "recipe", "models"

    def add_source(self, source: Any, *, owner: str, strict: bool) -> list[str]:
        """Read one file or mapping; ``strict`` raises on parts no plugin provides, else marks the
        recipe unavailable (used for plugins' own files, so a disabled plugin does not break listing)."""
        origin, models = self.read(source, owner=owner)
        added = self.add_entries(origin, owner, models)
        for name in added:  # resolve after all of the file's names exist (extends may point forward)
            try:
                self._resolve(name, strict=strict)
            except RecipeError:
                for n in added:
                    self.entries.pop(n, None)
                raise
        return added

    def _resolve(self, name: str, *, strict: bool, chain: tuple[str, ...] = ()) -> dict[str, Any]:
        entry = self.entries[name]
        if entry.resolved is not None:
            return entry.resolved
        where = f"{entry.origin}: recipe {name!r}"
        raw = entry.raw
        unknown = set(raw) - RECIPE_KEYS
        if unknown:
            raise RecipeError(
                f"{where}: unknown key(s) {', '.join(sorted(map(repr, unknown)))}; "
                f"expected some of {', '.join(sorted(RECIPE_KEYS))}"
            )
        body = {k: v for k, v in raw.items() if k != "extends"}
        parent = self.parent(name, chain)
        if parent is not None:
            parent_resolved = self._resolve(parent, strict=strict, chain=(*chain, name))
            # Published weights and descriptions belong to the recipe that states them; the paper's
            # figures too, unless the child comes from the same file/plugin (a variant of its own).
            not_inherited = {"weights", "description"}
            if self.entries[parent].owner != entry.owner or self.entries[parent].origin != entry.origin:
                not_inherited.add("paper")
            base = {k: v for k, v in parent_resolved.items() if k not in not_inherited}
            body = deep_merge(base, body)
            if self.entries[parent].unavailable and not entry.unavailable:
                entry.unavailable = self.entries[parent].unavailable
        try:
            resolved = validate_recipe(body, where=where)
        except UnavailablePart as exc:
            if strict:
                raise RecipeError(str(exc)) from None
            entry.unavailable = str(exc)
            resolved = body
        entry.resolved = resolved
        return resolved

    def unknown_message(self, name: str) -> str:
        close = [n for n in self.entries if name.split("-")[0] in n][:5]
        hint = f"; similar: {', '.join(sorted(close))}" if close else ""
        return f"no model named {name!r} in the registry{hint} (see `asczoo list`)"

    def unavailable_message(self, name: str, entry: NamedEntry) -> str:
        return f"model {name!r} cannot be built here: {entry.unavailable}"


class UnavailablePart(RecipeError):
    """A recipe names a part that no loaded plugin provides."""


def validate_recipe(recipe: dict[str, Any], *, where: str) -> dict[str, Any]:
    """Check a fully merged recipe (sections, plugin names, arguments, weights); return it normalised."""
    unknown = set(recipe) - RECIPE_KEYS
    if unknown:
        raise RecipeError(
            f"{where}: unknown key(s) {', '.join(sorted(map(repr, unknown)))}; "
            f"expected some of {', '.join(sorted(RECIPE_KEYS - {'extends'}))}"
        )
    for section in REQUIRED_SECTIONS:
        if recipe.get(section) is None:
            raise RecipeError(f"{where}: missing section {section!r} (a mapping with a 'plugin' key)")
    out = copy.deepcopy(recipe)
    out.setdefault("relation", None)
    num_classes = out.get("num_classes")
    classes = out.get("classes")
    if classes is not None:
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes) or not classes:
            raise RecipeError(f"{where}: key 'classes' must be a non-empty list of strings")
        if len(set(classes)) != len(classes):
            raise RecipeError(f"{where}: key 'classes' has duplicate names")
        if num_classes is not None and num_classes != len(classes):
            raise RecipeError(
                f"{where}: key 'num_classes' is {num_classes} but 'classes' lists {len(classes)} names"
            )
    if num_classes is not None and (not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1):
        raise RecipeError(f"{where}: key 'num_classes' must be a positive integer, got {num_classes!r}")
    if out.get("task", TASKS[0]) not in TASKS:
        raise RecipeError(f"{where}: key 'task' is {out['task']!r}; expected {' or '.join(TASKS)}")
    for section in SECTIONS:
        spec = out.get(section)
        if spec is None:
            continue
        swhere = f"{where}, section {section!r}"
        if not isinstance(spec, dict):
            raise RecipeError(f"{swhere}: expected a mapping with a 'plugin' key, got {type(spec).__name__}")
        plugin = spec.get("plugin")
        if not isinstance(plugin, str):
            raise RecipeError(f"{swhere}: key 'plugin' must name a registered {SECTION_KIND[section].replace('_', ' ')}")
        args = {k: v for k, v in spec.items() if k != "plugin"}
        if section == "relation":
            args = _check_relation_host_keys(args, swhere)
        try:
            part = plugins.get_part(SECTION_KIND[section], plugin)
        except plugins.UnknownPartError as exc:
            raise UnavailablePart(f"{swhere}: key 'plugin': {exc}") from None
        check_arguments(part.factory, args, where=swhere, supplied_by_host=HOST_SUPPLIED[section])
        if section == "relation":
            for placement, extra in (spec.get("per_placement") or {}).items():
                check_arguments(
                    part.factory, deep_merge(args, extra),
                    where=f"{swhere}, per_placement {placement!r}", supplied_by_host=HOST_SUPPLIED[section],
                )
    _check_weights(out.get("weights"), where)
    return out


def _check_relation_host_keys(args: dict[str, Any], where: str) -> dict[str, Any]:
    placement = args.pop("placement", None)
    if placement is None or not isinstance(placement, list) or not placement:
        raise RecipeError(f"{where}: key 'placement' must be a non-empty list such as [res2_1, res2_2]")
    for item in placement:
        if not isinstance(item, str) or not _PLACEMENT_RE.match(item):
            raise RecipeError(f"{where}: key 'placement' has {item!r}; expected names like 'res2_1' (stage 2, block 1) or a backbone's own name such as 'stage3' or 'blocks_4_1' (module names with '_' for '.')")
    if len(set(placement)) != len(placement):
        raise RecipeError(f"{where}: key 'placement' lists a block twice")
    position = args.pop("position", AFTER_BLOCK)
    if position not in (AFTER_BLOCK, BEFORE_FINAL_ACTIVATION):
        raise RecipeError(
            f"{where}: key 'position' is {position!r}; expected {AFTER_BLOCK!r} or {BEFORE_FINAL_ACTIVATION!r}"
        )
    per = args.pop("per_placement", None) or {}
    if not isinstance(per, dict):
        raise RecipeError(f"{where}: key 'per_placement' must map placements to option mappings")
    for key, extra in per.items():
        if key not in placement:
            raise RecipeError(f"{where}: key 'per_placement' names {key!r}, which is not in 'placement'")
        if not isinstance(extra, dict):
            raise RecipeError(f"{where}: per_placement {key!r} must be a mapping of options")
    return args


def _check_weights(weights: Any, where: str) -> None:
    if weights is None:
        return
    if not isinstance(weights, dict):
        raise RecipeError(f"{where}: key 'weights' must map tags to {{repo_id, revision}}")
    for tag, spec in weights.items():
        twhere = f"{where}, weights tag {tag!r}"
        if not isinstance(tag, str) or not NAME_RE.match(tag):
            raise RecipeError(f"{twhere}: tag must be lower-case letters, digits, '-' or '_'")
        if not isinstance(spec, dict):
            raise RecipeError(f"{twhere}: expected a mapping with 'repo_id' and 'revision'")
        unknown = set(spec) - WEIGHT_KEYS
        if unknown:
            raise RecipeError(f"{twhere}: unknown key(s) {', '.join(sorted(map(repr, unknown)))}")
        if not isinstance(spec.get("repo_id"), str) or "/" not in spec["repo_id"]:
            raise RecipeError(f"{twhere}: key 'repo_id' must be a Hub repository id like 'org/name'")
        if not isinstance(spec.get("revision"), str) or not spec["revision"]:
            raise RecipeError(f"{twhere}: key 'revision' must pin a commit (40 hex digits) or a tag")


# -- process-wide registry ----------------------------------------------------------------------

_USER_SOURCES: list[Any] = []


def _build_registry(host: Any) -> RecipeRegistry:
    """All recipes: plugins' files first, then ``ASCZOO_REGISTRY`` files, then :func:`register_recipes`."""
    reg = RecipeRegistry()
    for src in host.recipe_sources:
        try:
            reg.add_source(src.source, owner=src.owner, strict=False)
        except RecipeError as exc:
            if host.strict:
                raise
            warnings.warn(f"recipes from plugin {src.owner!r} skipped: {exc}", RuntimeWarning, stacklevel=3)
    for path in filter(None, os.environ.get(ENV_VAR, "").split(os.pathsep)):
        reg.add_source(path, owner=f"${ENV_VAR}", strict=True)
    for src in _USER_SOURCES:
        reg.add_source(src, owner="register_recipes()", strict=True)
    return reg


_CACHE: CachedRegistry[RecipeRegistry] = CachedRegistry(_build_registry)


def registry() -> RecipeRegistry:
    """All recipes: plugins' files first, then ``ASCZOO_REGISTRY`` files, then :func:`register_recipes`."""
    return _CACHE.get()


def register_recipes(source: str | os.PathLike | Mapping[str, Any]) -> list[str]:
    """Add recipes from a YAML file (or a mapping laid out like one); returns the names added.

    The recipes are validated at once, strictly: an unknown plugin, key or wrong type raises
    :class:`~asczoo.recipes.schema.RecipeError` naming the file, the recipe and the key.
    """
    with _CACHE.lock:
        names = registry().add_source(source, owner="register_recipes()", strict=True)
        _USER_SOURCES.append(source)
        return names


def invalidate() -> None:
    """Drop the resolved registry; it is rebuilt on next use (plugins or ``ASCZOO_REGISTRY`` changed)."""
    _CACHE.invalidate()


def forget_user_recipes() -> None:
    """Remove recipes added with :func:`register_recipes` (tests)."""
    with _CACHE.lock:
        _USER_SOURCES.clear()
        invalidate()


def model_recipe(name: str, *, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The resolved recipe of a registry model (``extends`` applied, ``overrides`` merged, validated)."""
    arch, _ = split_name(name)
    recipe = copy.deepcopy(registry().get(arch).resolved)
    if overrides:
        if not isinstance(overrides, Mapping):
            raise RecipeError(f"create_model({name!r}): overrides must be a nested mapping, got {type(overrides).__name__}")
        recipe = deep_merge(recipe, overrides)
        recipe = validate_recipe(recipe, where=f"create_model({name!r}) with overrides")
    return recipe
