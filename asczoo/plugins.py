"""Plugin loading and the part registries.

Every part (backbone, inflator, relation block, head, frontend, dataset, ...) reaches asczoo through a
plugin: a module registered under the entry-point group ``asczoo``, built-in ones included. Each
entry point is imported and asked for its registrations in isolation, so a broken plugin is reported
(a warning, and ``asczoo plugins`` shows the error) while the others keep working. That includes a
plugin whose import calls ``sys.exit()`` or raises ``KeyboardInterrupt``.

Environment:
    ``ASCZOO_STRICT_PLUGINS=1``      any plugin failure raises :class:`PluginError`.
    ``ASCZOO_DISABLE_PLUGINS=a,b``   skip the named entry points (or in-process plugins).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import threading
import traceback
import warnings
from importlib import metadata
from typing import Any, Callable

import pluggy

from asczoo import environment, hookspecs
from asczoo.parts import PART_KINDS, RECIPE_HOOK, TRAINING_RECIPE_HOOK
from asczoo.names import NAME_RE

ENTRY_POINT_GROUP = "asczoo"

#: kind of part -> the hook that registers it (from the table :data:`asczoo.parts.PART_KINDS`).
PART_HOOKS: dict[str, str] = {kind.name: kind.hook for kind in PART_KINDS}
#: what a plugin's import or registration may raise without ending the host: a plugin calling
#: ``sys.exit(3)`` or raising ``KeyboardInterrupt`` at import is a broken plugin, not a request to stop
#: (it took every command down with rc 3 and no message, ``asczoo plugins`` included)
_ISOLATED = (Exception, SystemExit, KeyboardInterrupt)
#: ``@hookimpl`` options that would mean nothing here: each plugin's registrations are collected alone
_REFUSED_OPTIONS = ("tryfirst", "trylast", "hookwrapper", "wrapper")



class PluginError(RuntimeError):
    """A plugin failed to load or made an invalid registration."""


class UnknownPartError(KeyError):
    """A recipe or call named a part no loaded plugin provides."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly.
        return str(self.args[0]) if self.args else ""


@dataclasses.dataclass(frozen=True)
class Part:
    """One registered part: its kind, name, factory and the plugin that owns it."""

    kind: str
    name: str
    factory: Callable[..., Any]
    owner: str
    description: str = ""


@dataclasses.dataclass
class PluginRecord:
    """What happened to one plugin: loaded, failed (with the error) or disabled."""

    name: str
    source: str  # "entry point <dist>" or "in-process"
    status: str  # "loaded" | "failed" | "disabled"
    error: str = ""
    parts: list[str] = dataclasses.field(default_factory=list)
    version: str = ""
    #: the installed distribution (pip package) the entry point came from; "" for in-process plugins
    distribution: str = ""


@dataclasses.dataclass(frozen=True)
class RecipeSource:
    """A recipe file or mapping contributed by a plugin."""

    source: Any
    owner: str


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _disabled_names() -> set[str]:
    raw = os.environ.get("ASCZOO_DISABLE_PLUGINS", "")
    return {item.strip() for item in raw.split(",") if item.strip()}


def _first_doc_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


class PluginHost:
    """Loads plugins and holds the registries of parts and recipe sources."""

    def __init__(self, *, load_entry_points: bool = True) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.parts: dict[str, dict[str, Part]] = {kind: {} for kind in PART_HOOKS}
        self.recipe_sources: list[RecipeSource] = []
        self.training_recipe_sources: list[RecipeSource] = []
        self.records: dict[str, PluginRecord] = {}
        self.strict = _env_flag("ASCZOO_STRICT_PLUGINS")
        self.disabled = _disabled_names()
        if load_entry_points:
            self._load_entry_points()

    # -- loading -------------------------------------------------------------------------------

    def _entry_points(self) -> list[metadata.EntryPoint]:
        eps = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
        seen: set[tuple[str, str]] = set()
        unique = []
        for ep in eps:  # the same distribution can be visible twice (editable + site-packages)
            key = (ep.name, ep.value)
            if key not in seen:
                seen.add(key)
                unique.append(ep)

        def order(ep: metadata.EntryPoint) -> tuple[int, str]:
            dist = ep.dist.name if ep.dist is not None else ""
            return (0 if dist == "asczoo" else 1, ep.name)  # built-ins first, then by name

        return sorted(unique, key=order)

    def _load_entry_points(self) -> None:
        for ep in self._entry_points():
            dist = ep.dist.name if ep.dist is not None else "?"
            version = ep.dist.version if ep.dist is not None else ""
            source = f"entry point {ep.value} ({dist})"
            if ep.name in self.disabled:
                self.records[ep.name] = PluginRecord(ep.name, source, "disabled", version=version)
                continue
            try:
                plugin = ep.load()
            except _ISOLATED as exc:  # any import failure, sys.exit() and KeyboardInterrupt included
                self._fail(ep.name, source, exc, version=version)
                continue
            if self.add_plugin(plugin, ep.name, source=source, version=version) and ep.dist is not None:
                self.records[ep.name].distribution = ep.dist.name

    def add_plugin(self, plugin: Any, name: str, *, source: str = "in-process", version: str = "") -> bool:
        """Register one plugin object and collect its parts; returns False if it failed.

        Registrations are staged and committed only if every hook of the plugin succeeds, so a
        failing plugin leaves no half of itself behind.
        """
        if name in self.records and self.records[name].status == "loaded":
            raise PluginError(f"a plugin named {name!r} is already loaded ({self.records[name].source})")
        if name in self.disabled:
            self.records[name] = PluginRecord(name, source, "disabled", version=version)
            return False
        try:
            self.pm.register(plugin, name=name)
        except _ISOLATED as exc:  # pluggy validates hook signatures here
            self._fail(name, source, exc, version=version)
            return False
        staged: list[Part] = []
        staged_recipes: list[RecipeSource] = []
        staged_training: list[RecipeSource] = []
        try:
            self._check_hookimpls(plugin)
            for kind, hook_name in PART_HOOKS.items():
                for impl in self._impls(hook_name, plugin):
                    impl.function(register=self._make_register(kind, name, staged))
            for impl in self._impls(RECIPE_HOOK, plugin):
                impl.function(register=lambda source: staged_recipes.append(RecipeSource(source, name)))
            for impl in self._impls(TRAINING_RECIPE_HOOK, plugin):
                impl.function(register=lambda source: staged_training.append(RecipeSource(source, name)))
        except _ISOLATED as exc:  # any registration failure, sys.exit() and KeyboardInterrupt included
            self.pm.unregister(plugin)
            self._fail(name, source, exc, version=version)
            return False
        for part in staged:
            self.parts[part.kind][part.name] = part
        self.recipe_sources.extend(staged_recipes)
        self.training_recipe_sources.extend(staged_training)
        self.records[name] = PluginRecord(
            name, source, "loaded", parts=[f"{p.kind}:{p.name}" for p in staged], version=version
        )
        return True

    def _check_hookimpls(self, plugin: Any) -> None:
        """Refuse hook implementations that would be silently ignored: an unknown hook name (unless
        ``optionalhook``), or an option that has no meaning for registration hooks."""
        for caller in self.pm.get_hookcallers(plugin) or []:
            for impl in caller.get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                if not caller.has_spec() and not impl.optionalhook:
                    known = ", ".join(sorted((*PART_HOOKS.values(), RECIPE_HOOK, TRAINING_RECIPE_HOOK)))
                    raise PluginError(f"hook implementation {caller.name!r} matches no asczoo hook "
                                      f"(known: {known}); mark it optionalhook=True if that is intended")
                used = [option for option in _REFUSED_OPTIONS if getattr(impl, option, False)]
                if used:
                    raise PluginError(
                        f"hook implementation {caller.name!r} sets {', '.join(o + '=True' for o in used)}, "
                        "which asczoo does not support: every plugin's registrations are collected on their "
                        "own, so ordering and wrapping mean nothing (specname= and optionalhook= work)"
                    )

    def _impls(self, hook_name: str, plugin: Any) -> list[Any]:
        hook = getattr(self.pm.hook, hook_name)
        return [impl for impl in hook.get_hookimpls() if impl.plugin is plugin]

    def _make_register(self, kind: str, owner: str, staged: list[Part]) -> Callable[..., None]:
        def register(name: str, factory: Callable[..., Any], *, description: str | None = None) -> None:
            if not isinstance(name, str) or not NAME_RE.match(name):
                raise PluginError(
                    f"plugin {owner!r} registered {kind} name {name!r}: expected lower-case letters, "
                    "digits, '-' and '_', starting with a letter or digit"
                )
            if not callable(factory):
                raise PluginError(f"plugin {owner!r} registered {kind} {name!r} with a non-callable factory")
            taken = self.parts[kind].get(name) or next(
                (p for p in staged if p.kind == kind and p.name == name), None
            )
            if taken is not None:
                raise PluginError(
                    f"{kind} {name!r} is registered twice: by plugin {taken.owner!r} and by plugin {owner!r}; "
                    f"the registration by {owner!r} was refused"
                )
            desc = description if description is not None else _first_doc_line(factory)
            staged.append(Part(kind, name, factory, owner, desc))

        return register

    def _fail(self, name: str, source: str, exc: BaseException, *, version: str = "") -> None:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        cause = environment.diagnose(exc)  # a dependency that does not load: named, with its fix
        if cause:
            detail = f"{cause} [{detail.splitlines()[0][:300]}]"
        self.records[name] = PluginRecord(name, source, "failed", error=detail, version=version)
        message = f"asczoo plugin {name!r} ({source}) failed"
        if self.strict:
            raise PluginError(f"{message}: {detail} [ASCZOO_STRICT_PLUGINS=1]") from exc
        warnings.warn(f"{message} and was skipped: {detail}", RuntimeWarning, stacklevel=3)

    # -- lookup --------------------------------------------------------------------------------

    def get(self, kind: str, name: str) -> Part:
        """The part of this kind and name, or an :class:`UnknownPartError` that says what exists."""
        if kind not in self.parts:
            raise UnknownPartError(f"unknown part kind {kind!r}; expected one of {sorted(self.parts)}")
        try:
            return self.parts[kind][name]
        except KeyError:
            known = ", ".join(sorted(self.parts[kind])) or "none"
            hint = ""
            failed = [r.name for r in self.records.values() if r.status != "loaded"]
            if failed:
                hint = f"; plugins not loaded: {', '.join(sorted(failed))} (see `asczoo plugins`)"
            raise UnknownPartError(
                f"no {kind.replace('_', ' ')} named {name!r} is registered (known: {known}){hint}. "
                f"Install the plugin package that provides it (entry-point group {ENTRY_POINT_GROUP!r})."
            ) from None


_HOST: PluginHost | None = None
_LOCK = threading.RLock()
_IN_PROCESS: list[tuple[Any, str]] = []


def host() -> PluginHost:
    """The process-wide plugin host, created (and entry points loaded) on first use."""
    global _HOST
    with _LOCK:
        if _HOST is None:
            new = PluginHost()
            for plugin, name in _IN_PROCESS:
                new.add_plugin(plugin, name)
            _HOST = new
        return _HOST


def register_plugin(plugin: Any, name: str) -> bool:
    """Register a plugin object in-process (no packaging needed); it survives :func:`reset`.

    Returns False (and warns, or raises in strict mode) if it failed to register.
    """
    with _LOCK:
        current = host()  # load entry points (and earlier in-process plugins) first, then this one once
        ok = current.add_plugin(plugin, name)
        if ok:
            _IN_PROCESS.append((plugin, name))
        _invalidate_dependants()
        return ok


def unregister_plugin(name: str) -> None:
    """Remove an in-process plugin registered with :func:`register_plugin` and rebuild the registries."""
    with _LOCK:
        _IN_PROCESS[:] = [(p, n) for p, n in _IN_PROCESS if n != name]
        reset()


def reset() -> None:
    """Forget loaded plugins and recipes; the next lookup reloads them (re-reading the environment)."""
    global _HOST
    with _LOCK:
        _HOST = None
        _invalidate_dependants()


_ON_CHANGE: list[Callable[[], None]] = []


def on_change(callback: Callable[[], None]) -> None:
    """Call ``callback()`` whenever the set of plugins changes (a registry that caches what plugins
    contributed, such as the recipe registries, drops its cache there)."""
    with _LOCK:
        if callback not in _ON_CHANGE:
            _ON_CHANGE.append(callback)


def _invalidate_dependants() -> None:
    for callback in list(_ON_CHANGE):
        callback()


def get_part(kind: str, name: str) -> Part:
    """Look up a registered part by kind and name."""
    return host().get(kind, name)


def list_parts(kind: str) -> list[str]:
    """Sorted names of the registered parts of one kind."""
    return sorted(host().parts[kind])


def plugin_records() -> list[PluginRecord]:
    """What happened to every plugin, loaded or not."""
    return sorted(host().records.values(), key=lambda r: r.name)


def part_distribution(kind: str, name: str) -> tuple[str, str] | None:
    """The installed distribution and version that registered part ``kind``/``name`` (what ``pip
    install`` brings it back with), or None for a part registered in-process."""
    record = host().records.get(get_part(kind, name).owner)
    if record is None or not record.distribution:
        return None
    return record.distribution, record.version
