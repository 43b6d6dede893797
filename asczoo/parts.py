"""The kinds of part a plugin can add: one table, from which everything else is derived.

Each :class:`PartKind` names its hook, its factory contract, the arguments asczoo passes itself, the
model recipe section that names such a part (if any) and the conformance check of
:mod:`asczoo.testing`. The hook specifications (:mod:`asczoo.hookspecs`), the host's lookup
(:mod:`asczoo.plugins`), the recipe sections (:mod:`asczoo.recipes`), the dataset arguments and
``asczoo.testing.CHECKS`` are built from :data:`PART_KINDS`; the table of CONTRIBUTING.md is
:func:`markdown_table` (a test keeps them equal). This module imports nothing of asczoo.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class PartKind:
    """One kind of part."""

    #: the kind, as in ``asczoo.plugins.get_part(kind, name)``
    name: str
    #: the hook a plugin implements to register parts of this kind
    hook: str
    #: "backbones", for documentation
    plural: str
    #: the factory's call, for documentation
    factory: str
    #: what the factory returns, for documentation
    returns: str
    #: keyword arguments asczoo passes itself; a recipe may not set them
    host_arguments: tuple[str, ...] = ()
    #: keyword arguments asczoo fills in when a recipe leaves them out
    host_defaults: tuple[str, ...] = ()
    #: the model recipe section naming a part of this kind (None: not part of a model recipe)
    section: str | None = None
    #: the :mod:`asczoo.testing` function that checks a part of this kind
    check: str = ""
    #: more documentation for the hook specification
    notes: str = ""

    @property
    def passed(self) -> tuple[str, ...]:
        """Every argument asczoo passes, set or defaulted."""
        return self.host_defaults + self.host_arguments

    def hook_doc(self) -> str:
        """The hook specification's docstring."""
        doc = f"Register {self.plural}: ``register(name, factory)``.\n\n``{self.factory}`` -> {self.returns}."
        if self.passed:
            doc += f" asczoo passes {', '.join(f'``{a}``' for a in self.passed)} itself"
            doc += f"; the recipe section ``{self.section}`` gives the rest." if self.section else "."
        return doc + (f"\n\n{self.notes}" if self.notes else "")


PART_KINDS: tuple[PartKind, ...] = (
    PartKind(
        "backbone", "asczoo_register_backbones", "2D backbones", "factory(*, in_chans, **options)",
        "an ``asczoo.interfaces.Backbone``: ``(B, C_in, F, T) -> (B, C, F', T')``",
        host_defaults=("in_chans",), section="backbone", check="check_backbone",
        notes="The backbone also maps the paper's placement names (``res2_1``) to its own module paths.",
    ),
    PartKind(
        "inflator", "asczoo_register_inflators", "inflators", "factory(**options)",
        "an ``asczoo.interfaces.Inflator``: a 2D backbone -> a segment-sequence backbone and its "
        "``SegmentLayout``", section="inflator", check="check_inflator",
        notes="The 2D weights are carried over: parameter names stay those of the 2D backbone.",
    ),
    PartKind(
        "relation_block", "asczoo_register_relation_blocks", "relation blocks", "factory(*, channels, **options)",
        "an ``nn.Module`` (optionally an ``asczoo.interfaces.RelationBlock``): ``(B, N, C, F, T) -> (B, N, C, F, T)``",
        host_arguments=("channels",), section="relation", check="check_relation_block",
        notes="The block returns ``X + R(X)`` (its own residual sum), with ``R`` zero at initialisation; "
              "``channels`` is the width of the residual block it follows.",
    ),
    PartKind(
        "aggregator", "asczoo_register_aggregators", "neighbourhood aggregators", "factory(*, channels, **options)",
        "an ``nn.Module`` (optionally an ``asczoo.interfaces.Aggregator``): pair embeddings "
        "``(B, P, k, C) -> (B, P, C)``", host_arguments=("channels",), check="check_aggregator",
    ),
    PartKind(
        "position_encoding", "asczoo_register_position_encodings", "position encodings", "factory(**options)",
        "an ``nn.Module`` with ``out_dim``: centres ``(B or 1, P, 1, 3)``, neighbours ``(B, P, k, 3)`` -> "
        "``(B, P, k, out_dim)``", check="check_position_encoding",
    ),
    PartKind(
        "head", "asczoo_register_heads", "classification heads", "factory(*, in_features, num_classes, **options)",
        "an ``nn.Module``: ``(B, N, C, F, T) -> (B, num_classes)`` logits",
        host_arguments=("in_features", "num_classes"), section="head", check="check_head",
    ),
    PartKind(
        "frontend", "asczoo_register_frontends", "audio frontends", "factory(**config)",
        "an ``asczoo.interfaces.Frontend``: ``frontend(waveform (channels, samples), rate) -> (N, 3, F, T)``",
        section="frontend", check="check_frontend",
        notes="Its ``config`` (with ``plugin``) is saved with the weights and rebuilds the same frontend.",
    ),
    PartKind(
        "dataset", "asczoo_register_datasets", "datasets",
        "factory(root, *, split, fold, frontend, cache_dir, **options)",
        "an ``asczoo.interfaces.Dataset`` of ``(features (N, 3, F, T), label)``, usually an "
        "``asczoo.data.ClipDataset``", host_arguments=("root", "split", "fold", "frontend", "cache_dir"),
        check="check_dataset",
        notes="Optional attributes of the factory (``frontend_defaults``, ``folds``, ``task``, ``synthesize``) "
              "are read by :func:`asczoo.data.datasets.dataset_defaults`.",
    ),
    PartKind(
        "augmentation", "asczoo_register_augmentations", "batch augmentations", "factory(**options)",
        "a callable ``(features (B, N, 3, F, T), targets (B, K)) -> (features, targets)``",
        check="check_augmentation",
        notes="Applied per batch on the training device; ``targets`` are class probabilities so mixup can blend.",
    ),
)

#: kind name -> its entry
KINDS: dict[str, PartKind] = {kind.name: kind for kind in PART_KINDS}
#: model recipe section -> the kind of part it names, in recipe order
SECTIONS: dict[str, PartKind] = {kind.section: kind for kind in PART_KINDS if kind.section}

RECIPE_HOOK = "asczoo_register_recipes"
TRAINING_RECIPE_HOOK = "asczoo_register_training_recipes"


def markdown_table() -> str:
    """CONTRIBUTING.md's table of the part hooks."""
    def code(text: str) -> str:
        return text.replace("``", "`")

    rows = ["| hook | the factory | asczoo passes | it returns |", "|---|---|---|---|"]
    for kind in PART_KINDS:
        passed = ", ".join(f"`{a}`" for a in kind.passed)
        rows.append(f"| `{kind.hook}(register)` | `{kind.factory}` | {passed} | {code(kind.returns)} |")
    return "\n".join(rows)
