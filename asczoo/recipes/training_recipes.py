"""Training recipes: what ``asczoo train NAME`` runs, read from YAML and validated like ``registry.yaml``.

A training-recipe file (``plugins/asczoo_plugins/training_recipes/*.yaml``, a plugin's own, or any
path given to ``asczoo train``) is read with ``yaml.safe_load``::

    version: 1
    recipes:
      dcase2019-atresn-net-resnet18:
        description: ATReSN-Net on ResNet-18, DCASE 2019 Task 1a, fold 1 (paper, section 3)
        data: {dataset: dcase2019-task1a, fold: 1}
        seed: 0
        stages:
          - name: stage1                    # segment model on single segments
            model: resnet18-segments        # a registry model; `overrides` are merged into its recipe
            unit: segment                   # segment: each clip's N segments are N samples
            epochs: 105
            batch_size: 128
            optimizer: {name: sgd, lr: 0.1, momentum: 0.9, weight_decay: 1.0e-4, nesterov: true}
            schedule: {name: step, step_epochs: 30, gamma: 0.1}
            augment: [{plugin: lr-swap, per: batch}]
          - name: stage2
            model: atresn-net-resnet18
            init_from: stage1               # an earlier stage (its kept model), or a model folder
            epochs: 100
            ...
      dcase2018-atresn-net-resnet18:
        extends: dcase2019-atresn-net-resnet18      # deep-merged over the named recipe
        data: {dataset: dcase2018-task1a}

Stages are a list, but a mapping merged into it addresses its items by index or by name, so
``extends`` and overrides can change one stage: ``stages: {stage2: {epochs: 3}}``, or on the command
line ``--set stages.1.epochs=3`` / ``--set stages.stage2.epochs=3`` (indices count from 0).

Every section is checked when the file is read: unknown keys, wrong types and impossible values are
refused with a :class:`~asczoo.recipes.schema.RecipeError` that names the file, the recipe and the key in the
dotted form ``--set`` uses (``stages.1.optimizer.lr``). Models, datasets and augmentations must be
known to a loaded plugin (for a plugin's own file, a recipe whose parts are missing is only marked
unavailable, as with model recipes).
"""

from __future__ import annotations

import copy
import inspect
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence


from asczoo import plugins
from asczoo.names import NAME_RE
from asczoo.recipes._named import CachedRegistry, NamedEntry, NamedRegistry, read_recipe_file
from asczoo.recipes.model_recipes import model_recipe
from asczoo.recipes.merge import merge
from asczoo.recipes.overrides import parse_overrides
from asczoo.recipes.schema import RecipeError, check_arguments
from asczoo.recipes.settings import DataSettings, EngineSettings, StageSettings, check_distill

RECIPE_KEYS = {"description", "extends", "paper", "notes", "data", "seed", "engine", "stages"}
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


# -- the schema: each section is a keyword-only signature (checked with check_arguments) ---------------

#: the section schemas (kept under their former names)
data_section, engine_section, stage_section = DataSettings, EngineSettings, StageSettings


def sgd(*, lr: float, momentum: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
        dampening: float = 0.0) -> None:
    """SGD (with Nesterov momentum if ``nesterov``): the paper's optimiser for both stages."""


def adam(*, lr: float, betas: list[float] = (0.9, 0.999), weight_decay: float = 0.0, eps: float = 1e-8) -> None:
    """Adam (L2 weight decay)."""


def adamw(*, lr: float, betas: list[float] = (0.9, 0.999), weight_decay: float = 0.01, eps: float = 1e-8) -> None:
    """AdamW (decoupled weight decay)."""


def step(*, step_epochs: int, gamma: float = 0.1) -> None:
    """lr x ``gamma`` every ``step_epochs`` epochs (the paper: x0.1 every 30, resp. 40)."""


def multistep(*, milestones: list[int], gamma: float = 0.1) -> None:
    """lr x ``gamma`` at each listed epoch."""


def cosine(*, min_lr: float = 0.0) -> None:
    """Cosine decay from lr to ``min_lr`` over the stage's epochs."""


def constant() -> None:
    """A constant learning rate."""


OPTIMIZERS = {"sgd": sgd, "adam": adam, "adamw": adamw}
SCHEDULES = {"step": step, "multistep": multistep, "cosine": cosine, "constant": constant}


# -- merging with stages addressable by index or name ---------------------------------------------------

#: ``--set`` items (``stages.1.epochs=3``) -> a nested mapping for :func:`merge` (the one parser)
parse_set = parse_overrides


# -- validation -------------------------------------------------------------------------------------------

class _Unavailable(RecipeError):
    """A recipe names a model, dataset or augmentation that no loaded plugin provides."""


def _coerce_numbers(section: dict[str, Any], factory: Any) -> dict[str, Any]:
    """YAML 1.1 reads ``1e-4`` as a string; accept it where the signature wants a number."""
    out = dict(section)
    for key, param in inspect.signature(factory).parameters.items():
        value = out.get(key)
        if isinstance(value, str) and _FLOAT_RE.match(value.strip()) and "float" in str(param.annotation):
            out[key] = float(value)
    return out


def _check_section(value: Any, factory: Any, where: str) -> dict[str, Any]:
    """Check a mapping against ``factory``'s keyword-only signature; return it with defaults filled in."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise RecipeError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
    value = _coerce_numbers(dict(value), factory)
    check_arguments(factory, value, where=where)
    out = {}
    for key, param in inspect.signature(factory).parameters.items():
        default = param.default if param.default is not inspect.Parameter.empty else None
        out[key] = copy.deepcopy(value.get(key, list(default) if isinstance(default, tuple) else default))
    return out


def _positive(value: Any, where: str, key: str, *, integer: bool = False, zero: bool = False) -> None:
    if value is None:
        return
    bad = not math.isfinite(value) or (value < 0 if zero else value <= 0)
    if bad:
        kind = "integer" if integer else "number"
        raise RecipeError(f"{where}: key '{key}' must be a {'non-negative' if zero else 'positive'} {kind}, got {value!r}")


def _in_range(value: Any, where: str, key: str, low: float, high: float, *, high_open: bool = False) -> None:
    """Refuse a number outside ``[low, high]`` (``[low, high)`` with ``high_open``), NaN included."""
    if value is None:
        return
    ok = math.isfinite(value) and low <= value and (value < high if high_open else value <= high)
    if not ok:
        raise RecipeError(f"{where}: key '{key}' must be in [{low:g}, {high:g}{')' if high_open else ']'}, got {value!r}")


def _check_hyperparameters(stage: dict[str, Any], where: str) -> None:
    """Ranges of the optimiser and schedule numbers (types were checked against the signatures).

    A negative momentum or decay factor, or a NaN/Inf learning rate, trains to NaN weights with rc 0;
    refusing them here names the key before anything runs.
    """
    opt, owhere = stage["optimizer"], f"{where}, key 'optimizer'"
    _positive(opt["lr"], owhere, "lr")
    _positive(opt.get("weight_decay"), owhere, "weight_decay", zero=True)
    for key in ("momentum", "dampening"):
        _in_range(opt.get(key), owhere, key, 0.0, 1.0)
    for i, beta in enumerate(opt.get("betas") or ()):
        _in_range(beta, owhere, f"betas.{i}", 0.0, 1.0, high_open=True)
    _positive(opt.get("eps"), owhere, "eps")
    sched, swhere = stage["schedule"], f"{where}, key 'schedule'"
    _positive(sched.get("gamma"), swhere, "gamma")
    _positive(sched.get("min_lr"), swhere, "min_lr", zero=True)
    if sched["name"] == "step":
        _positive(sched["step_epochs"], swhere, "step_epochs", integer=True)
    for i, epoch in enumerate(sched.get("milestones") or ()):
        _positive(epoch, swhere, f"milestones.{i}", integer=True)


def _named(spec: Any, table: Mapping[str, Any], where: str, what: str) -> dict[str, Any]:
    """``{name: X, **options}`` checked against ``table[X]``'s signature."""
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping):
        raise RecipeError(f"{where}: expected a mapping with a 'name' key, got {type(spec).__name__} {spec!r}")
    name = spec.get("name")
    if name not in table:
        raise RecipeError(f"{where}: key 'name' is {name!r}; expected one of the {what}: {', '.join(sorted(table))}")
    options = _check_section({k: v for k, v in spec.items() if k != "name"}, table[name], where)
    return {"name": name, **options}


def validate_training_recipe(recipe: Mapping[str, Any], *, where: str, check_parts: bool = True) -> dict[str, Any]:
    """Check a merged training recipe and return it normalised (defaults filled in).

    ``where`` prefixes every message (``file: recipe 'name'``); keys are named in ``--set`` form. With
    ``check_parts`` the models, the dataset and the augmentations must be known to loaded plugins.
    """
    if not isinstance(recipe, Mapping):
        raise RecipeError(f"{where}: expected a mapping of sections, got {type(recipe).__name__}")
    unknown = set(recipe) - RECIPE_KEYS
    if unknown:
        hint = ("; a stage's model is stages.NAME.model=..., its parts stages.NAME.overrides.SECTION.KEY=VALUE "
                "(every stage: stages.*.overrides.backbone.channels=[16,32,64,128])"
                if unknown & {"model", "overrides", "backbone", "relation", "head", "frontend"} else "")
        raise RecipeError(f"{where}: unknown key(s) {', '.join(sorted(map(repr, unknown)))}; "
                          f"expected some of {', '.join(sorted(RECIPE_KEYS - {'extends'}))}{hint}")
    out: dict[str, Any] = {k: copy.deepcopy(v) for k, v in recipe.items() if k in ("description", "paper", "notes")}
    out.setdefault("description", "")
    seed = recipe.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise RecipeError(f"{where}: key 'seed' must be a non-negative integer, got {seed!r}")
    out["seed"] = seed
    out["data"] = data = _check_section(recipe.get("data"), data_section, f"{where}, section 'data'")
    if data["fold"] is not None:
        _positive(data["fold"], f"{where}, section 'data'", "fold", integer=True)
    for key in ("options", "synth"):
        data[key] = dict(data[key] or {}) if key == "options" else data[key]
    out["engine"] = engine = _check_section(recipe.get("engine"), engine_section, f"{where}, section 'engine'")
    for key in ("eval_batch_size", "threads"):
        _positive(engine[key], f"{where}, section 'engine'", key, integer=True)
    if isinstance(engine["num_workers"], int):
        _positive(engine["num_workers"], f"{where}, section 'engine'", "num_workers", integer=True, zero=True)
    if not re.match(r"^(auto|cpu|mps|cuda(:\d+)?)$", engine["device"]):
        raise RecipeError(f"{where}, section 'engine': key 'device' is {engine['device']!r}; "
                          "expected auto, cpu, cuda, cuda:N or mps")

    stages = recipe.get("stages")
    if not isinstance(stages, list) or not stages:
        raise RecipeError(f"{where}: key 'stages' must be a non-empty list of stages")
    out["stages"] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(stages):
        swhere = f"{where}, section 'stages.{i}'"
        if isinstance(raw, Mapping) and isinstance(raw.get("name"), str):
            swhere += f" ({raw['name']})"
        stage = _check_section(raw, stage_section, swhere)
        if not NAME_RE.match(stage["name"]):
            raise RecipeError(f"{swhere}: key 'name' {stage['name']!r} must be lower-case letters, digits, '-' or '_'")
        if stage["name"] in seen or stage["name"].isdigit():
            raise RecipeError(f"{swhere}: key 'name' {stage['name']!r} is used twice (or is a number)")
        seen[stage["name"]] = i
        for key in ("epochs", "batch_size", "eval_every"):
            _positive(stage[key], swhere, key, integer=True)
        if not 0.0 <= stage["label_smoothing"] < 1.0:
            raise RecipeError(f"{swhere}: key 'label_smoothing' must be in [0, 1), got {stage['label_smoothing']!r}")
        stage["overrides"] = dict(stage["overrides"] or {})
        stage["optimizer"] = _named(stage["optimizer"], OPTIMIZERS, f"{swhere}, key 'optimizer'", "optimisers")
        stage["schedule"] = _named(stage["schedule"] or "constant", SCHEDULES, f"{swhere}, key 'schedule'", "schedules")
        _check_hyperparameters(stage, swhere)
        augment = stage["augment"] or []
        if not isinstance(augment, list):
            raise RecipeError(f"{swhere}: key 'augment' must be a list of augmentations ({{plugin: NAME, ...}})")
        stage["augment"] = [_augmentation(a, f"{swhere}, key 'augment.{j}'", check_parts) for j, a in enumerate(augment)]
        source = stage["init_from"]
        if source is not None and NAME_RE.match(source) and not Path(source).exists():
            if source not in seen or seen[source] >= i:
                raise RecipeError(f"{swhere}: key 'init_from' is {source!r}, which is neither an earlier stage "
                                  f"({', '.join(n for n, j in seen.items() if j < i) or 'none'}) nor an existing path")
        if stage["eval_at_start"] is None:
            stage["eval_at_start"] = source is not None
        stage["distill"] = check_distill(stage["distill"], where=swhere,
                                         earlier=[n for n, j in seen.items() if j < i])
        out["stages"].append(stage)
    if check_parts:
        _check_parts(out, where)
    return out


def _augmentation(spec: Any, where: str, check_parts: bool) -> dict[str, Any]:
    """An ``augment`` item: a plugin name, or ``{plugin: NAME, **options}`` as in model recipes."""
    if isinstance(spec, str):
        spec = {"plugin": spec}
    if not isinstance(spec, Mapping) or not isinstance(spec.get("plugin"), str):
        raise RecipeError(f"{where}: expected an augmentation name or {{plugin: NAME, ...options}}, got {spec!r}")
    options = {k: v for k, v in spec.items() if k != "plugin"}
    if check_parts:
        try:
            part = plugins.get_part("augmentation", spec["plugin"])
        except plugins.UnknownPartError as exc:
            raise _Unavailable(f"{where}: key 'plugin': {exc}") from None
        options = _coerce_numbers(options, part.factory)
        check_arguments(part.factory, options, where=where)
    return {"plugin": spec["plugin"], **options}


def _check_parts(recipe: dict[str, Any], where: str) -> None:
    try:
        plugins.get_part("dataset", recipe["data"]["dataset"])
    except plugins.UnknownPartError as exc:
        raise _Unavailable(f"{where}, section 'data': key 'dataset': {exc}") from None
    resolved = {}
    for i, stage in enumerate(recipe["stages"]):
        swhere = f"{where}, section 'stages.{i}' ({stage['name']})"
        try:
            model = model_recipe(stage["model"], overrides=stage["overrides"] or None)
        except KeyError as exc:
            raise _Unavailable(f"{swhere}: key 'model': {exc.args[0] if exc.args else exc}") from None
        except RecipeError as exc:
            raise RecipeError(f"{swhere}: key 'overrides': {exc}") from None
        resolved[stage["name"]] = model
        source = stage["init_from"]
        if source in resolved and source != stage["name"]:
            if resolved[source]["backbone"] != model["backbone"]:
                raise RecipeError(
                    f"{swhere}: key 'init_from': stage {source!r} trains the backbone "
                    f"{resolved[source]['backbone']}, which cannot initialise {model['backbone']}; "
                    "give both stages the same backbone overrides")
            if resolved[source]["frontend"] != model["frontend"]:
                raise RecipeError(f"{swhere}: key 'init_from': stage {source!r} uses another frontend; "
                                  "give both stages the same frontend overrides")
        if stage["unit"] == "segment" and model.get("relation"):
            raise RecipeError(f"{swhere}: key 'unit': a model with relation blocks needs whole clips (unit: clip)")


# -- files and the registry of training recipes ---------------------------------------------------------

#: one named training recipe (kept under its former name)
TrainingRecipeEntry = NamedEntry


class TrainingRecipeRegistry(NamedRegistry):
    """Named training recipes from plugins (and files read on request), ``extends`` resolved."""

    kind, section = "training recipe", "recipes"

    def add_source(self, source: Any, *, owner: str, strict: bool, resolve: bool = True) -> list[str]:
        """Read one file or mapping. ``resolve=False`` defers validation (files that extend each other
        are all read first); ``strict`` raises on parts no plugin provides instead of marking the
        recipe unavailable."""
        origin, data = self.read(source, owner=owner)
        added = self.add_entries(origin, owner, data)
        if resolve:
            try:
                for name in added:
                    self.resolve(name, strict=strict)
            except RecipeError:
                for name in added:
                    self.entries.pop(name, None)
                raise
        return added

    def resolve(self, name: str, *, strict: bool) -> dict[str, Any]:
        entry = self.entries[name]
        if entry.resolved is not None:
            return entry.resolved
        where = f"{entry.origin}: recipe {name!r}"
        body = self._raw_chain(name)
        parent = entry.raw.get("extends")
        if parent is not None:
            self.resolve(parent, strict=strict)
            entry.unavailable = entry.unavailable or self.entries[parent].unavailable
        try:
            entry.resolved = validate_training_recipe(body, where=where)
        except _Unavailable as exc:
            if strict:
                raise RecipeError(str(exc)) from None
            entry.unavailable = str(exc)
            entry.resolved = validate_training_recipe(body, where=where, check_parts=False)
        return entry.resolved

    def _raw_chain(self, name: str, chain: tuple[str, ...] = ()) -> dict[str, Any]:
        """The recipe's body with its ``extends`` chain merged, before validation (defaults not filled)."""
        entry = self.entries[name]
        body = {k: v for k, v in entry.raw.items() if k != "extends"}
        parent = self.parent(name, chain)
        if parent is None:
            return copy.deepcopy(body)
        where = f"{entry.origin}: recipe {name!r}"
        base = self._raw_chain(parent, (*chain, name))
        base.pop("description", None)
        try:
            return merge(base, body)
        except RecipeError as exc:
            raise RecipeError(f"{where}: {exc}") from None

    def unknown_message(self, name: str) -> str:
        close = [n for n in self.entries if any(part in n for part in name.split("-") if len(part) > 3)][:6]
        hint = f"; similar: {', '.join(sorted(close))}" if close else ""
        return f"no training recipe named {name!r}{hint} (see `asczoo train --list`)"

    def unavailable_message(self, name: str, entry: NamedEntry) -> str:
        return f"training recipe {name!r} cannot run here: {entry.unavailable}"


def read_source(source: Any, owner: str) -> tuple[str, dict[str, Any]]:
    """A training-recipe file or mapping -> ``(origin for messages, {name: raw recipe})``."""
    return read_recipe_file(source, owner=owner, section="recipes", kind="training recipe")


def _build_registry(host: Any) -> TrainingRecipeRegistry:
    """The training recipes that the plugins of ``host`` registered, each resolved once all are read."""
    reg = TrainingRecipeRegistry()
    for src in host.training_recipe_sources:
        try:
            reg.add_source(src.source, owner=src.owner, strict=False, resolve=False)
        except RecipeError as exc:
            if host.strict:
                raise
            warnings.warn(f"training recipes from plugin {src.owner!r} skipped: {exc}", RuntimeWarning,
                          stacklevel=3)
    for name in list(reg.entries):  # after every file is read: `extends` may cross files
        try:
            reg.resolve(name, strict=False)
        except RecipeError as exc:
            if host.strict:
                raise
            reg.entries[name].unavailable = str(exc)
            warnings.warn(f"training recipe {name!r} is invalid and was skipped: {exc}", RuntimeWarning,
                          stacklevel=3)
    return reg


_CACHE: CachedRegistry[TrainingRecipeRegistry] = CachedRegistry(_build_registry)


def registry() -> TrainingRecipeRegistry:
    """The training recipes that plugins registered (``asczoo_register_training_recipes``)."""
    return _CACHE.get()


def invalidate() -> None:
    """Drop the cached registry; rebuilt on next use (a plugin was added in-process)."""
    _CACHE.invalidate()


def list_training_recipes(pattern: str = "*") -> list[str]:
    """Sorted names of the training recipes that can run here, filtered with shell-style wildcards."""
    return registry().names(pattern)


def load(recipe: str | os.PathLike | Mapping[str, Any], overrides: Mapping[str, Any] | Sequence[str] | None = None,
         ) -> tuple[str, dict[str, Any]]:
    """Resolve a training recipe -> ``(name, validated recipe)``.

    ``recipe``: a registered name, a YAML file (with one recipe, or ``FILE:NAME`` to pick one), or a
    mapping (one recipe's sections). ``overrides``: a nested mapping or ``--set`` strings, merged
    before validation (so a bad override is reported with its key).
    """
    if isinstance(overrides, (list, tuple)):
        overrides = parse_set(overrides)
    if isinstance(recipe, Mapping):
        name, where, body = "custom", "<training recipe mapping>", copy.deepcopy(dict(recipe))
        if "extends" in body:
            parent = registry().get(body.pop("extends"))
            body = merge(registry()._raw_chain(parent.name), body)
    else:
        text = os.fspath(recipe)
        file, _, pick = text.partition(":") if not Path(text).exists() and ":" in text else (text, "", "")
        if Path(file).suffix in (".yaml", ".yml") or Path(file).exists():
            reg = TrainingRecipeRegistry()
            for existing, entry in registry().entries.items():  # a file may extend a registered recipe
                reg.entries[existing] = entry
            origin, data = read_source(file, owner=file)
            if not data:
                raise RecipeError(f"{origin}: no recipes in the file")
            if pick and pick not in data:
                raise RecipeError(f"{origin}: no recipe named {pick!r} (recipes: {', '.join(data)})")
            if not pick and len(data) > 1:
                raise RecipeError(f"{origin}: holds {len(data)} recipes ({', '.join(data)}); pick one as {file}:NAME")
            name = pick or next(iter(data))
            for n, raw in data.items():
                reg.entries[n] = TrainingRecipeEntry(n, raw, origin, file)
            where = f"{origin}: recipe {name!r}"
            body = reg._raw_chain(name)
        else:
            name = text
            entry = registry().get(name)
            where = f"{entry.origin}: recipe {name!r}"
            body = registry()._raw_chain(name)
    if overrides:
        try:
            body = merge(body, overrides)
        except RecipeError as exc:
            raise RecipeError(f"{where}: override {exc}") from None
        where += " with overrides"
    return name, validate_training_recipe(body, where=where)
