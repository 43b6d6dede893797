"""Checking recipe arguments against a part factory's signature.

A recipe section's keys become keyword arguments of the part's factory. Rather than making every
plugin write a schema, the factory's signature *is* the schema: unknown keys (unless the factory takes
``**kwargs``) and values that do not match the type annotation are reported with the recipe location.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from typing import Any, Callable, Iterable


class RecipeError(ValueError):
    """A recipe, registry file or override is invalid; the message names where and what."""


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if isinstance(tp, type):
        return {"int": "integer", "float": "number", "str": "string", "bool": "boolean",
                "list": "list", "dict": "mapping", "tuple": "list"}.get(tp.__name__, tp.__name__)
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple, typing.Sequence, Iterable):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    return str(tp)


def value_matches(value: Any, tp: Any) -> bool:
    """Whether a YAML-shaped value fits a (simple) type annotation; unknown annotations accept."""
    if tp is Any or tp is inspect.Parameter.empty:
        return True
    if tp is type(None) or tp is None:
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:  # NaN and Inf are never a setting: they silently turn weights into NaN
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if tp is str:
        return isinstance(value, str)
    if tp in (list, tuple):
        return isinstance(value, (list, tuple))
    if tp is dict:
        return isinstance(value, dict)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Literal:
        return value in args
    if origin in (typing.Union, types.UnionType):
        return any(value_matches(value, a) for a in args)
    if origin in (list, tuple, typing.Sequence, Iterable, typing.Iterable):
        if not isinstance(value, (list, tuple)):
            return False
        item_types = [a for a in args if a is not Ellipsis]
        if origin is tuple and args and Ellipsis not in args:
            return len(value) == len(args) and all(value_matches(v, a) for v, a in zip(value, args))
        return all(value_matches(v, item_types[0]) for v in value) if item_types else True
    if origin is dict:
        return isinstance(value, dict)
    return True


def check_arguments(
    factory: Callable[..., Any],
    arguments: dict[str, Any],
    *,
    where: str,
    supplied_by_host: Iterable[str] = (),
) -> None:
    """Raise :class:`RecipeError` naming ``where`` and the key if ``arguments`` do not fit ``factory``.

    ``supplied_by_host`` are parameters the host passes itself (e.g. ``channels``); a recipe may not
    set them.
    """
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    try:
        hints = typing.get_type_hints(factory)
    except Exception:  # noqa: BLE001 - unresolvable annotations: skip type checks, keep key checks
        hints = {}
    params = signature.parameters
    takes_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    host_keys = set(supplied_by_host)
    accepted = [
        n for n, p in params.items()
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        and n not in host_keys
    ]
    for key, value in arguments.items():
        if key in host_keys:
            raise RecipeError(f"{where}: key {key!r} is set by asczoo itself and cannot be given in a recipe")
        if key not in params or params[key].kind not in (
            inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD
        ):
            if takes_var_kw:
                continue
            raise RecipeError(
                f"{where}: unknown key {key!r}; this part accepts: {', '.join(sorted(accepted)) or 'no options'}"
            )
        tp = hints.get(key, params[key].annotation)
        if not value_matches(value, tp):
            if isinstance(value, float) and not math.isfinite(value):
                raise RecipeError(f"{where}: key {key!r} is {value!r}; expected a finite {_type_name(tp)}")
            raise RecipeError(
                f"{where}: key {key!r} has value {value!r} of type {type(value).__name__}; "
                f"expected {_type_name(tp)}"
            )
    missing = [
        n for n in accepted
        if params[n].default is inspect.Parameter.empty and n not in arguments
        and params[n].kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if missing:
        raise RecipeError(f"{where}: missing required key(s) {', '.join(map(repr, missing))}")
