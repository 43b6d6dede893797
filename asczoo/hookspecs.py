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
:mod:`asczoo.interfaces`.
"""

from __future__ import annotations

import pluggy

PROJECT = "asczoo"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def asczoo_register_backbones(register):
    """Register 2D backbones: ``register(name, factory)``.

    ``factory(*, in_chans=3, **options) -> asczoo.interfaces.Backbone``: a module mapping
    ``(B, C_in, F, T)`` to a feature map ``(B, C, F', T')``, that also maps the paper's placement
    names (``res2_1``) to its own module paths. Recipe ``backbone`` sections call it.
    """


@hookspec
def asczoo_register_inflators(register):
    """Register inflators: ``register(name, factory)``.

    ``factory(**options) -> asczoo.interfaces.Inflator``: turns a 2D backbone into one that runs on
    segment sequences ``(B, N, C, F, T)``, with the 2D weights carried over.
    """


@hookspec
def asczoo_register_relation_blocks(register):
    """Register relation blocks: ``register(name, factory)``.

    ``factory(*, channels, **options) -> nn.Module`` mapping ``(B, N, C, F, T)`` to the same shape:
    the block returns ``X + R(X)`` (its own residual sum), with ``R`` zero at initialisation.
    ``channels`` is supplied by the host (the width of the residual block the relation block follows);
    every other option comes from the recipe's ``relation`` section.
    """


@hookspec
def asczoo_register_aggregators(register):
    """Register neighbourhood aggregators for relation blocks: ``register(name, factory)``.

    ``factory(*, channels, **options) -> nn.Module`` mapping pair embeddings ``(B, P, k, C)`` to
    point embeddings ``(B, P, C)`` (max, mean, attentive pooling, ...).
    """


@hookspec
def asczoo_register_position_encodings(register):
    """Register position encodings for relation blocks: ``register(name, factory)``.

    ``factory(**options) -> nn.Module`` mapping centre positions ``(B or 1, P, 1, 3)`` and neighbour
    positions ``(B, P, k, 3)`` to an encoding ``(B, P, k, D)``; the module exposes ``out_dim = D``.
    """


@hookspec
def asczoo_register_heads(register):
    """Register classification heads: ``register(name, factory)``.

    ``factory(*, in_features, num_classes, **options) -> nn.Module`` mapping a feature map
    ``(B, N, C, F, T)`` to logits ``(B, num_classes)``.
    """


@hookspec
def asczoo_register_frontends(register):
    """Register audio frontends: ``register(name, factory)``.

    ``factory(**config) -> asczoo.interfaces.Frontend``: callable as
    ``frontend(waveform (channels, samples), sample_rate) -> (N, 3, F, T)``, with a serialisable
    ``config`` and an ``output_shape``.
    """


@hookspec
def asczoo_register_datasets(register):
    """Register datasets: ``register(name, factory)``.

    ``factory(root, *, split, fold, frontend, cache_dir, **options) -> torch.utils.data.Dataset`` of
    ``(features (N, 3, F, T), label)`` pairs with ``.classes`` and ``.files``. Optional attributes of
    the factory (``frontend_defaults``, ``folds``, ``task``, ``synthesize``) are read by
    :func:`asczoo.datasets.dataset_defaults`.
    """


@hookspec
def asczoo_register_augmentations(register):
    """Register batch augmentations: ``register(name, factory)``.

    ``factory(**options) -> callable(features (B, N, 3, F, T), targets (B, K)) -> (features, targets)``,
    applied per batch on the training device; ``targets`` are class probabilities so mixup can blend.
    """


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
