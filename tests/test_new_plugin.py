"""``asczoo new-plugin``: derived names, refusals, and generated packages that install and pass their tests.

The packages are installed (editable, ``--no-deps``) into a throwaway virtual environment that sees
this environment's packages, so the environment the suite runs in is never changed and nothing needs
uninstalling.
"""

from __future__ import annotations

import importlib.util
import os
import site
import subprocess
import sys
import sysconfig
import tomllib
import uuid
import venv
from pathlib import Path

import pytest
import yaml

import asczoo
from asczoo import scaffold
from asczoo.cli import main
from asczoo.testing import plugin_import_problems


def can_build_without_isolation() -> bool:
    """setuptools builds editable wheels by itself from 70.1 on; before, it needs the ``wheel`` package."""
    import setuptools

    major, minor = (int(v) for v in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


class ThrowawayEnv:
    """A virtual environment on top of this one, for installing packages under test.

    It sees every package of the running environment (whether that is a system Python or a virtual
    environment itself) through a ``.pth`` file that adds its site directories, ``.pth`` files and
    editable installs included, after the new environment's own.
    """

    def __init__(self, root: Path) -> None:
        venv.EnvBuilder(with_pip=False).create(root)
        self.python = root / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
        self.bin = self.python.parent
        purelib = Path(sysconfig.get_path("purelib", vars={"base": str(root), "platbase": str(root)}))
        parents = [p for p in dict.fromkeys([*site.getsitepackages(), site.getusersitepackages()]) if Path(p).is_dir()]
        (purelib / "_parent_environment.pth").write_text(
            "".join(f"import site; site.addsitedir({p!r})\n" for p in parents), encoding="utf-8")

    def pip_install(self, *folders: Path) -> None:
        """``pip install --no-deps -e FOLDER ...`` into this environment (no network when the
        build backend is available here; otherwise pip's build isolation fetches setuptools)."""
        cmd = [sys.executable, "-m", "pip", "--python", str(self.python), "install", "--no-deps",
               "--disable-pip-version-check", "--no-input"]
        if can_build_without_isolation():
            cmd.append("--no-build-isolation")
        for folder in folders:
            cmd += ["-e", str(folder)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        assert done.returncode == 0, f"pip install failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.python), *args], capture_output=True, text=True, cwd=cwd, env=self.environ())

    def environ(self) -> dict[str, str]:
        """The environment for commands run in it: its ``bin`` first on PATH; one thread (tiny tensors)."""
        path = os.pathsep.join([str(self.bin), os.environ.get("PATH", "")])
        return {**os.environ, "PATH": path, "VIRTUAL_ENV": str(self.bin.parent), "OMP_NUM_THREADS": "1"}


def unique_name(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:8]}"


def test_names_follow_the_plugin_name():
    names = scaffold.plugin_names("asczoo-my-block")
    assert (names.name, names.distribution, names.module, names.factory) == (
        "my-block", "asczoo-my-block", "asczoo_my_block", "my_block")
    assert names.class_name == "MyBlock" and names.recipe == "my-block-net-resnet18"
    assert scaffold.plugin_names("smooth_max", "aggregator").class_name == "SmoothMaxPool"
    assert scaffold.plugin_names("smooth", "aggregator").recipe == "atresn-net-resnet18-smooth"
    assert scaffold.plugin_names("maxmean", "head").recipe == "resnet18-3d-maxmean"
    major, minor = asczoo.__version__.split(".")[:2]
    assert names.asczoo_requirement.startswith(f"asczoo>={major}.{minor},<")


@pytest.mark.parametrize("kind", scaffold.KINDS)
def test_generated_sources_are_valid_and_public_api_only(kind, tmp_path):
    root, files = scaffold.write_plugin("my-thing", kind=kind, directory=tmp_path)
    assert root == tmp_path / "asczoo-my-thing"
    for path in files:
        if path.suffix == ".py":
            compile(path.read_text(), str(path), "exec")
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["asczoo"] == {"my-thing": "asczoo_my_thing"}
    assert project["project"]["name"] == "asczoo-my-thing"
    recipes = yaml.safe_load((root / "asczoo_my_thing" / "recipes.yaml").read_text())
    assert list(recipes["models"]) == [scaffold.plugin_names("my-thing", kind).recipe]
    assert plugin_import_problems(root) == []


def test_refusals(tmp_path, capsys):
    with pytest.raises(ValueError, match="lower-case"):
        scaffold.plugin_names("My_Block")
    with pytest.raises(ValueError, match="kind"):
        scaffold.plugin_names("fine", "backbone-ish")
    assert main(["new-plugin", "atresn", "--directory", str(tmp_path)]) == 2
    assert "already registered by plugin 'relation'" in capsys.readouterr().err
    assert main(["new-plugin", "registry", "--directory", str(tmp_path)]) == 2  # a plugin's name
    assert "plugin named 'registry'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())

    assert main(["new-plugin", "my-block", "--directory", str(tmp_path)]) == 0
    block = tmp_path / "asczoo-my-block" / "asczoo_my_block" / "block.py"
    block.write_text("# edited\n")
    (tmp_path / "asczoo-my-block" / "NOTES.md").write_text("mine\n")
    assert main(["new-plugin", "my-block", "--directory", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert block.read_text() == "# edited\n"
    assert main(["new-plugin", "my-block", "--directory", str(tmp_path), "--force"]) == 0
    assert "class MyBlock" in block.read_text()
    assert (tmp_path / "asczoo-my-block" / "NOTES.md").read_text() == "mine\n"


def test_generated_packages_install_and_pass_their_own_tests(tmp_path, capsys):
    """One package per kind, under unique names: generated, installed, their tests run and pass."""
    work = tmp_path / "work"
    work.mkdir()
    names = {kind: scaffold.plugin_names(unique_name(f"scaffold-{kind[:3]}"), kind) for kind in scaffold.KINDS}
    for kind, n in names.items():
        assert main(["new-plugin", n.name, "--kind", kind, "--directory", str(work)]) == 0
    out = capsys.readouterr().out
    assert f"pip install -e {work / names['relation'].distribution}" in out

    env = ThrowawayEnv(tmp_path / "venv")
    packages = [work / n.distribution for n in names.values()]
    env.pip_install(*packages)

    tests = env.run("-m", "pytest", "-q", "-p", "no:cacheprovider", *(str(p / "tests") for p in packages), cwd=work)
    report = tests.stdout + tests.stderr
    assert tests.returncode == 0, report[-4000:]
    assert "9 passed" in report and "skipped" not in report, report[-2000:]

    cli = env.run("-c", "from asczoo.cli import main; main(['list']); main(['plugins'])")
    for n in names.values():
        assert n.recipe in cli.stdout, cli.stdout + cli.stderr
        assert f"{n.name} 0.1.0  [loaded]" in cli.stdout, cli.stdout
    # installed in the throwaway environment only
    assert names["relation"].recipe not in asczoo.list_models()
