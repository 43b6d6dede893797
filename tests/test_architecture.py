"""The package's shape: import layers (import-linter contracts), no circles, names parsed in one place."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

import asczoo
from asczoo import names, plugins

ROOT = Path(__file__).resolve().parents[1]


def test_import_layers_hold():
    """The contracts of pyproject.toml's [tool.importlinter], as CI checks them with `lint-imports`."""
    cli = pytest.importorskip("importlinter.cli")
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        assert cli.lint_imports(config_filename=str(ROOT / "pyproject.toml")) == 0  # EXIT_STATUS_SUCCESS
    finally:
        os.chdir(cwd)


def _imports(path: Path, me: str, known: set[str]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            candidates = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        for name in candidates:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != me:
                found.add(name)
    return found


def test_no_import_circles_counting_imports_inside_functions():
    package = Path(asczoo.__file__).parent
    modules = {".".join(p.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in package.rglob("*.py")}
    inits = {m for m, p in modules.items() if p.name == "__init__.py"}
    graph = {m: _imports(p, m, set(modules)) - inits for m, p in modules.items() if m not in inits}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and not seen.add(nxt) and reaches(nxt, goal, seen)):
                return True
        return False

    circular = sorted(m for m in graph if reaches(m, m, set()))
    assert circular == []


@pytest.mark.parametrize("text, kind, name, extra", [
    ("atresn-net-resnet18", "registry", "atresn-net-resnet18", None),
    ("atresn-net-resnet18.dcase2019", "registry", "atresn-net-resnet18", "dcase2019"),
    ("hf-hub:org/model@v1", "hub", "org/model", "v1"),
    ("org/model", "hub", "org/model", None),
    ("local-dir:some/folder", "folder", "some/folder", None),
    ("./not-there/model", "folder", "./not-there/model", None),
])
def test_model_names_are_parsed_in_one_place(text, kind, name, extra):
    parsed = names.parse_model_name(text)
    assert (parsed.kind, parsed.name) == (kind, name)
    assert (parsed.tag if kind == "registry" else parsed.revision) == extra


def test_an_existing_folder_wins_over_a_hub_id(tmp_path, monkeypatch):
    (tmp_path / "org" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert names.parse_model_name("org/model").kind == "folder"


def test_plugin_changes_reach_the_recipe_registries_through_a_callback():
    calls = []
    plugins.on_change(lambda: calls.append(1))
    try:
        plugins.reset()
        assert calls == [1]
    finally:
        plugins._ON_CHANGE.pop()


def test_old_flat_module_paths_give_the_moved_modules():
    import asczoo.data.datasets
    import asczoo.datasets
    import asczoo.engine
    import asczoo.training.engine

    assert asczoo.datasets is asczoo.data.datasets and asczoo.engine is asczoo.training.engine
    assert asczoo.data.datasets.__spec__.name == "asczoo.data.datasets"
    from asczoo.hub import from_pretrained

    assert from_pretrained is asczoo.from_pretrained
