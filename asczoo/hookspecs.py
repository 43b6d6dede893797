"""The asczoo hook specifications: one hook per kind of part a plugin can add.

A plugin is a module (or object) registered under the entry-point group ``asczoo``. It implements
any of the hooks below with ``@asczoo.hookimpl``. Every hook receives a ``register`` callback
instead of returning values, so the host sees, validates and attributes every registration:

    register(name, factory, *, description=None)

``name`` is a lower-case identifier (letters, digits, ``-`` and ``_``), unique per kind across all
plugins: a second registration of a taken name is refused with a message naming both owners.
``factory`` is a callable; its keyword arguments are what a recipe section may set, and their type
annotations are checked when a recipe is read. ``description`` defaults to the first line of the
factory's docstring. The interfaces each factory's product must honour are in
:mod:`asczoo.interfaces`; the kinds of part, their factories and what asczoo passes them are the table
:data:`asczoo.parts.PART_KINDS`, from which the part hooks below are made.

``@asczoo.hookimpl`` takes ``specname=`` (implement a hook under another function name) and
``optionalhook=``; ``tryfirst``, ``trylast``, ``hookwrapper`` and ``wrapper`` would have no meaning
here (every plugin's registrations are collected on their own) and are refused with an error.
"""

from __future__ import annotations

import pluggy

from asczoo.parts import PART_KINDS, PartKind

PROJECT = "asczoo"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


def _part_hookspec(kind: PartKind):
    """The hook specification of one kind of part, documented from :data:`asczoo.parts.PART_KINDS`."""

    def spec(register):
        pass

    spec.__name__ = spec.__qualname__ = kind.hook
    spec.__doc__ = kind.hook_doc()
    spec.__module__ = __name__
    return hookspec(spec)


# One hook per kind of part, in the table's order: asczoo_register_backbones, ..._inflators,
# ..._relation_blocks, ..._aggregators, ..._position_encodings, ..._heads, ..._frontends, ..._datasets,
# ..._augmentations.
for _kind in PART_KINDS:
    globals()[_kind.hook] = _part_hookspec(_kind)
del _kind


@hookspec
def asczoo_register_recipes(register):
    """Register model recipes: ``register(source)``.

    ``source`` is a path to a YAML file laid out like ``registry.yaml`` or an already-parsed mapping.
    The recipes are validated with the same rules as ``registry.yaml``.
    """


@hookspec
def asczoo_register_training_recipes(register):
    """Register training recipes: ``register(source)``.

    ``source`` is a path to a YAML file of training recipes (the two-stage paper recipes, a
    quick-start) or an already-parsed mapping; ``asczoo train NAME`` finds them by name.
    """
