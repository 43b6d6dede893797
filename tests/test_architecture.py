"""The package's shape: import layers (import-linter contracts), no circles, names parsed in one place."""

from __future__ import annotations

import ast
import sys
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


def test_one_layout_without_aliases():
    """The flat paths of the old layout are gone (no import hook hands them out); each public name is
    found at its one real path, and the hub (an I/O layer) offers nothing that builds a model."""
    import importlib.util

    import asczoo
    import asczoo.hub

    for old in ("asczoo.datasets", "asczoo.engine", "asczoo.model", "asczoo.frontend", "asczoo.export", "asczoo.quantize"):
        assert importlib.util.find_spec(old) is None, old
    assert not any(type(f).__name__ == "_MovedModules" for f in sys.meta_path)
    from asczoo.models.pretrained import from_pretrained

    assert asczoo.from_pretrained is from_pretrained
    assert not hasattr(asczoo.hub, "from_pretrained")


def test_every_command_module_is_listed():
    """The CLI lists its commands by plain import (no lookup by string); a module added to
    asczoo/commands but left out of ``MODULES`` would be a command nobody can run."""
    import pkgutil

    from asczoo import commands

    on_disk = {i.name for i in pkgutil.iter_modules(commands.__path__) if not i.name.startswith("_")}
    assert {m.__name__.rpartition(".")[2] for m in commands.MODULES} == on_disk


def test_no_import_by_string_of_asczoo_modules():
    """import_module / __import__ / sys.modules lookups hide dependencies from the circle checks; none
    names an asczoo module (environment.py imports third-party distributions by name: allowed)."""
    # files that import a package asczoo generated (not one of its own modules), with the reason
    generated = {"asczoo/deploy/dcase_package.py": "imports the DCASE package it just wrote, from the staging folder, "
                                                   "to check it computes what asczoo does before it is moved into place"}
    offenders = []
    for package in ("asczoo", "plugins/asczoo_plugins"):
        for path in (ROOT / package).rglob("*.py"):
            if path.relative_to(ROOT).as_posix() in generated:
                continue
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    func = node.func
                    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                    if name in ("import_module", "__import__"):
                        arg = node.args[0] if node.args else None
                        if not (isinstance(arg, ast.Constant) or path.name == "environment.py"):
                            offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} (computed name)")
                        elif isinstance(arg, ast.Constant) and str(arg.value).startswith("asczoo"):
                            offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
                elif (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute)
                      and node.value.attr == "modules"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} (sys.modules lookup)")
    assert offenders == []


def test_shared_circle_check_finds_no_circle():
    """../shared/tools/import_circles.py (counts every way of importing, also by string) on asczoo/."""
    tool = ROOT.parent / "shared" / "tools" / "import_circles.py"
    if not tool.is_file():
        pytest.skip(f"{tool} is not here (CI has ../shared beside the clone)")
    import subprocess

    run = subprocess.run([sys.executable, str(tool), str(ROOT / "asczoo")], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_version_module_matches_pyproject():
    import tomllib

    from asczoo.version import __version__

    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"] == __version__ == asczoo.__version__
