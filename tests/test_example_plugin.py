"""The example third-party plugin ``plugins/asczoo-nonlocal``: its layout, its imports, and its own tests.

CI installs the package (``pip install -e plugins/asczoo-nonlocal``); here its own test suite is run
as its authors would run it, in a subprocess from its folder, so it sees asczoo only as an installed
dependency. Without the package installed those tests are skipped with the install command.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml

import asczoo
from asczoo.cli import main
from asczoo.testing import plugin_import_problems

PACKAGE = Path(__file__).resolve().parents[1] / "plugins" / "asczoo-nonlocal"


def installed() -> bool:
    try:
        metadata.distribution("asczoo-nonlocal")
    except metadata.PackageNotFoundError:
        return False
    return True


needs_install = pytest.mark.skipif(
    not installed(), reason="asczoo-nonlocal is not installed: pip install -e plugins/asczoo-nonlocal"
)


def test_package_layout():
    project = tomllib.loads((PACKAGE / "pyproject.toml").read_text())
    assert project["project"]["name"] == "asczoo-nonlocal"
    assert project["project"]["entry-points"]["asczoo"] == {"nonlocal": "asczoo_nonlocal"}
    assert any(dep.startswith("asczoo>=") for dep in project["project"]["dependencies"])
    assert (PACKAGE / "README.md").is_file()
    assert list((PACKAGE / "tests").glob("test_*.py"))
    recipes = yaml.safe_load((PACKAGE / "asczoo_nonlocal" / "recipes.yaml").read_text())
    assert recipes["models"]["nonlocal-net-resnet18"]["extends"] == "resnet18-3d"
    assert "*.yaml" in project["tool"]["setuptools"]["package-data"]["asczoo_nonlocal"]


def test_package_uses_public_api_only():
    assert plugin_import_problems(PACKAGE) == []


@needs_install
def test_installed_plugin_is_listed_and_builds(capsys):
    assert main(["list", "nonlocal*"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == ["nonlocal-net-resnet18", "nonlocal-net-resnet18-cross"]
    model = asczoo.create_model("nonlocal-net-resnet18", num_classes=4)
    assert sorted(model.relations) == ["res2_1", "res2_2", "res3_1", "res3_2"]
    assert model.relations["res3_1"].describe()["block"] == "nonlocal"


@needs_install
def test_package_own_tests_pass():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny tensors: one thread is fastest, and no oversubscription
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                          cwd=PACKAGE, capture_output=True, text=True, env=env)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert " passed" in output and "skipped" not in output and "failed" not in output, output[-2000:]
