"""``asczoo new-plugin``: the skeleton of a plugin package that installs and passes its tests as written.

For ``NAME`` (say ``my-block``) and a kind of part, :func:`write_plugin` writes::

    asczoo-my-block/
        pyproject.toml             entry point ``my-block = "asczoo_my_block"`` of group ``asczoo``
        README.md
        asczoo_my_block/
            __init__.py            the hook implementations: the part and the recipes
            block.py               a minimal working part (aggregator.py / head.py for those kinds)
            recipes.yaml           a recipe that uses the part
        tests/
            test_asczoo_my_block.py  asczoo's conformance suite, the recipe, public-API-only imports

The part, the entry point and the plugin are all named ``NAME``; the distribution is
``asczoo-NAME`` and the import package ``asczoo_NAME``. The kinds:

* ``relation``: a relation block, each point plus a projection of the mean of its k most similar
  points in other segments (``asczoo.ops``), zero-initialised; recipe ``NAME-net-resnet18``.
* ``aggregator``: a learned-temperature smooth maximum over the k neighbours; recipe
  ``atresn-net-resnet18-NAME`` (ATReSN-Net with this aggregator).
* ``head``: mean and max pooling over (N, F, T), dropout, linear; recipe ``resnet18-3d-NAME``.
"""

from __future__ import annotations

import dataclasses
import re
import string
from pathlib import Path

from asczoo.version import __version__

KINDS = ("relation", "aggregator", "head")
_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*\Z")  # \Z: no trailing newline
_PART_KIND = {"relation": "relation_block", "aggregator": "aggregator", "head": "head"}


@dataclasses.dataclass(frozen=True)
class PluginNames:
    """Every name derived from the plugin name, so that templates and docs agree."""

    name: str
    kind: str

    @property
    def distribution(self) -> str:
        return "asczoo-" + self.name.replace("_", "-")

    @property
    def module(self) -> str:
        return "asczoo_" + self.name.replace("-", "_")

    @property
    def factory(self) -> str:
        return self.name.replace("-", "_")

    @property
    def class_name(self) -> str:
        base = "".join(part.capitalize() for part in re.split(r"[-_]", self.name))
        suffix = {"relation": "Block", "aggregator": "Pool", "head": "Head"}[self.kind]
        return base if base.endswith(suffix) else base + suffix

    @property
    def part_module(self) -> str:
        return {"relation": "block", "aggregator": "aggregator", "head": "head"}[self.kind]

    @property
    def recipe(self) -> str:
        return {
            "relation": f"{self.name}-net-resnet18",
            "aggregator": f"atresn-net-resnet18-{self.name}",
            "head": f"resnet18-3d-{self.name}",
        }[self.kind]

    @property
    def asczoo_requirement(self) -> str:
        major, minor = (int(v) for v in __version__.split(".")[:2])
        upper = f"{major + 1}.0" if major else f"0.{minor + 1}"
        return f"asczoo>={major}.{minor},<{upper}"

    def mapping(self) -> dict[str, str]:
        return {
            "name": self.name, "kind": self.kind, "distribution": self.distribution, "module": self.module,
            "factory": self.factory, "cls": self.class_name, "part_module": self.part_module,
            "recipe": self.recipe, "asczoo_requirement": self.asczoo_requirement,
        }


def plugin_names(name: str, kind: str = "relation") -> PluginNames:
    """Validate ``name`` (``asczoo-`` prefix optional) and ``kind``; return the derived names."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    if name.startswith(("asczoo-", "asczoo_")):
        name = name[len("asczoo-"):]
    if not _NAME_RE.match(name):
        raise ValueError(
            f"name {name!r} must be lower-case letters and digits, words joined by '-' or '_', "
            "starting with a letter (e.g. 'my-block')"
        )
    return PluginNames(name, kind)


def render(names: PluginNames) -> dict[str, str]:
    """The files of the package: relative path -> content."""
    values = names.mapping()
    files = {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        f"{names.module}/__init__.py": INIT[names.kind],
        f"{names.module}/{names.part_module}.py": PART[names.kind],
        f"{names.module}/recipes.yaml": RECIPES[names.kind],
        f"tests/test_{names.module}.py": TESTS[names.kind],
    }
    return {path: string.Template(text).substitute(values) for path, text in files.items()}


def check_name_is_free(names: PluginNames) -> None:
    """Refuse a name already taken here by a part of the same kind or by a plugin (they must be unique)."""
    from asczoo import plugins

    kind = _PART_KIND[names.kind]
    if names.name in plugins.list_parts(kind):
        owner = plugins.get_part(kind, names.name).owner
        raise ValueError(
            f"a {kind.replace('_', ' ')} named {names.name!r} is already registered by plugin "
            f"{owner!r}; pick another name"
        )
    if any(record.name == names.name for record in plugins.plugin_records()):
        raise ValueError(f"a plugin named {names.name!r} is already installed; pick another name")


def write_plugin(name: str, *, kind: str = "relation", directory: str | Path = ".", force: bool = False,
                 check_free: bool = True) -> tuple[Path, list[Path]]:
    """Write the package ``asczoo-NAME`` under ``directory``; returns its folder and the files written.

    An existing folder is refused unless ``force`` (then the generated files are overwritten and
    anything else in it is left alone).
    """
    names = plugin_names(name, kind)
    if check_free:
        check_name_is_free(names)
    root = Path(directory) / names.distribution
    if root.exists() and not force:
        raise ValueError(f"{root} already exists (use --force to overwrite the generated files)")
    written = []
    for relative, content in render(names).items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        written.append(path)
    return root, written


# -- templates (string.Template: ${name}, ${module}, ...) -------------------------------------------

PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "${distribution}"
version = "0.1.0"
description = "An asczoo ${kind} plugin: ${name}."
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["${asczoo_requirement}", "torch"]

[project.optional-dependencies]
test = ["pytest>=8"]

# asczoo finds the plugin through this entry point: plugin name = module with the hook implementations.
[project.entry-points.asczoo]
${name} = "${module}"

[tool.setuptools]
packages = ["${module}"]

[tool.setuptools.package-data]
${module} = ["*.yaml"]

[tool.pytest.ini_options]
testpaths = ["tests"]
"""

README = """\
# ${distribution}

An [asczoo](https://pypi.org/project/asczoo/) plugin that adds the ${kind} `${name}` and the recipe
`${recipe}`.

```
pip install -e .            # or, once published: pip install ${distribution}
asczoo plugins              # ${name} [loaded]
asczoo list '${recipe}'
python -m pytest -q         # asczoo's conformance suite and this package's tests
```

```python
import asczoo

model = asczoo.create_model("${recipe}")
```

Generated by `asczoo new-plugin`; see asczoo's CONTRIBUTING.md for the hooks, the part interfaces,
the conformance suite and how to publish.
"""

_INIT_HEAD = '''\
"""${distribution}: the asczoo plugin ``${name}`` (entry point of group ``asczoo``, see pyproject.toml)."""

from __future__ import annotations

from pathlib import Path

from asczoo import hookimpl
from ${module}.${part_module} import ${cls}, ${factory}

__all__ = ["${cls}", "${factory}"]

RECIPES = Path(__file__).with_name("recipes.yaml")
'''

_INIT_RECIPES = '''

@hookimpl
def asczoo_register_recipes(register):
    register(RECIPES)
'''

INIT = {
    "relation": _INIT_HEAD + '''

@hookimpl
def asczoo_register_relation_blocks(register):
    register("${name}", ${factory})
''' + _INIT_RECIPES,
    "aggregator": _INIT_HEAD + '''

@hookimpl
def asczoo_register_aggregators(register):
    register("${name}", ${factory})
''' + _INIT_RECIPES,
    "head": _INIT_HEAD + '''

@hookimpl
def asczoo_register_heads(register):
    register("${name}", ${factory})
''' + _INIT_RECIPES,
}

PART = {
    "relation": '''\
"""The relation block ``${name}``: each point gets a projection of the mean of its k most similar
points in other segments.

The contract, checked by ``asczoo.testing.check_relation_block``: ``factory(*, channels, **options)``
returns a module mapping ``(B, N, C, F, T)`` to the same shape as ``x + relation(x)``, whose output scale
starts at zero so that a fresh block is the identity. The factory's keyword arguments, with their type
annotations, are what a recipe's ``relation`` section may set.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from asczoo.ops import from_points, gather_neighbours, semantic_knn, to_points


class ${cls}(nn.Module):
    """``x + BN(W mean_s x_s)`` over the k nearest points ``x_s`` from other segments."""

    def __init__(self, channels: int, *, k: int, distance: str) -> None:
        super().__init__()
        self.k = k
        self.distance = distance
        self.proj = nn.Linear(channels, channels, bias=False)
        self.norm = nn.BatchNorm1d(channels)
        nn.init.zeros_(self.norm.weight)  # a fresh block adds exactly zero

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c, f, t = x.shape
        points = to_points(x)  # (B, P, C) with P = N * F * T
        index = semantic_knn(points, self.k, segment_size=f * t, distance=self.distance)  # (B, P, k)
        context = gather_neighbours(points, index).mean(dim=2)  # (B, P, C)
        relation = self.norm(self.proj(context).transpose(1, 2)).transpose(1, 2)
        return x + from_points(relation, (n, f, t))

    def describe(self) -> dict[str, Any]:
        """What ``asczoo info`` shows for this block."""
        params = sum(p.numel() for p in self.parameters())
        return {"block": "${name}", "k": self.k, "distance": self.distance, "params": params}


def ${factory}(*, channels: int, k: int = 4, distance: Literal["l2", "cosine"] = "l2") -> ${cls}:
    """Mean of the k most similar points from other segments, projected; zero-initialised output."""
    if k < 1:
        raise ValueError(f"${name}: k must be positive, got {k}")
    return ${cls}(channels, k=k, distance=distance)
''',
    "aggregator": '''\
"""The aggregator ``${name}``: a smooth maximum over the k neighbours with a learned temperature.

The contract, checked by ``asczoo.testing.check_aggregator``: ``factory(*, channels, **options)``
returns a module mapping pair embeddings ``(B, P, k, C)`` to point embeddings ``(B, P, C)``.
A relation block picks it by name: ``relation: {aggregator: ${name}}`` in a recipe.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ${cls}(nn.Module):
    """``tau * log(mean_s exp(e_s / tau))`` per channel: the mean for large tau, the maximum as tau -> 0."""

    def __init__(self, channels: int, *, temperature: float) -> None:
        super().__init__()
        self.log_tau = nn.Parameter(torch.full((channels,), math.log(temperature)))

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        tau = self.log_tau.exp()
        return tau * (torch.logsumexp(e / tau, dim=2) - math.log(e.shape[2]))


def ${factory}(*, channels: int, temperature: float = 1.0) -> ${cls}:
    """Smooth maximum over the neighbours with a learned per-channel temperature."""
    if temperature <= 0:
        raise ValueError(f"${name}: temperature must be positive, got {temperature}")
    return ${cls}(channels, temperature=temperature)
''',
    "head": '''\
"""The head ``${name}``: mean and max pooling over segments, frequency and time; dropout; linear.

The contract, checked by ``asczoo.testing.check_head``: ``factory(*, in_features, num_classes,
**options)`` returns a module mapping a feature map ``(B, N, C, F, T)`` to logits ``(B, num_classes)``.
"""

from __future__ import annotations

import torch
from torch import nn


class ${cls}(nn.Module):
    """Concatenated mean and max over (N, F, T), dropout, linear."""

    def __init__(self, in_features: int, num_classes: int, *, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * in_features, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([features.mean(dim=(1, 3, 4)), features.amax(dim=(1, 3, 4))], dim=1)
        return self.fc(self.dropout(pooled))


def ${factory}(*, in_features: int, num_classes: int, dropout: float = 0.5) -> ${cls}:
    """Mean and max pooling over (N, F, T), dropout, linear."""
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"${name}: dropout must be in [0, 1), got {dropout}")
    return ${cls}(in_features, num_classes, dropout=dropout)
''',
}

RECIPES = {
    "relation": """\
# Recipes of ${distribution}, validated like asczoo's registry.yaml when the plugin loads.
version: 1
models:
  ${recipe}:
    extends: resnet18-3d
    description: 3D ResNet-18 with ${name} relation blocks after res2_1, res2_2, res3_1 and res3_2.
    relation: {plugin: ${name}, k: 4, placement: [res2_1, res2_2, res3_1, res3_2]}
""",
    "aggregator": """\
# Recipes of ${distribution}, validated like asczoo's registry.yaml when the plugin loads.
version: 1
models:
  ${recipe}:
    extends: atresn-net-resnet18
    description: ATReSN-Net on ResNet-18 with the ${name} aggregator instead of attentive pooling.
    relation: {aggregator: ${name}}
""",
    "head": """\
# Recipes of ${distribution}, validated like asczoo's registry.yaml when the plugin loads.
version: 1
models:
  ${recipe}:
    extends: resnet18-3d
    description: 3D ResNet-18 with the ${name} head (mean and max pooling).
    head: {plugin: ${name}}
""",
}

_TEST_HEAD = '''\
"""Tests of ${distribution}: asczoo's conformance suite, the recipe, public API only.

Run ``python -m pytest -q`` in the package folder after ``pip install -e .``.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest
import torch

try:  # asczoo finds the plugin through the installed entry point
    metadata.distribution("${distribution}")
except metadata.PackageNotFoundError:
    pytest.skip("${distribution} is not installed: pip install -e .", allow_module_level=True)

import asczoo  # noqa: E402
from asczoo import testing  # noqa: E402

PACKAGE = Path(__file__).resolve().parents[1] / "${module}"


def test_conformance():
    testing.${check}("${name}")


def test_recipe_builds_and_trains():
    assert "${recipe}" in asczoo.list_models()
    model = asczoo.create_model("${recipe}", num_classes=3, overrides=testing.tiny_overrides())
    logits = model(torch.randn(2, *model.input_shape))
    assert logits.shape == (2, 3)
    logits.logsumexp(dim=1).sum().backward()


def test_uses_public_asczoo_api_only():
    testing.check_plugin_imports(PACKAGE)
'''

TESTS = {
    kind: string.Template(_TEST_HEAD).safe_substitute(check=check)
    for kind, check in (("relation", "check_relation_block"), ("aggregator", "check_aggregator"),
                        ("head", "check_head"))
}
