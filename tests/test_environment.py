"""A broken dependency is named at its cause (package, versions, fix); `asczoo doctor`; install consistency."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from asczoo import environment

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "ASCZOO_STRICT_PLUGINS"})


def test_diagnose_names_the_package_its_version_and_the_fix():
    try:
        import asczoo_no_such_dependency  # noqa: F401
    except ImportError as exc:
        text = environment.diagnose(exc)
    assert "'asczoo_no_such_dependency' failed to load" in text and "not installed" in text
    assert "fix: pip install asczoo_no_such_dependency" in text and "torch " in text


def test_torchaudio_failure_names_torchaudio_and_how_to_fix_it():
    error = OSError("/x/site-packages/torchaudio/lib/libtorchaudio.so: undefined symbol: "
                    "torch_exception_get_what_without_backtrace")
    text = environment.diagnose(error)
    assert "'torchaudio' failed to load" in text and "pip uninstall -y torchaudio" in text


BROKEN_TIMM = "import sys; sys.modules['timm'] = None\nfrom asczoo.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def test_every_command_names_a_broken_dependency_at_its_cause():
    out = _run(BROKEN_TIMM, "list")
    assert "asczoo: warning: built-in plugin" in out.stderr and "'timm' failed to load" in out.stderr
    assert "fix: pip install" in out.stderr and "asczoo doctor" in out.stderr


def test_quickstart_stops_before_training_when_a_dependency_is_broken(tmp_path):
    out = _run(BROKEN_TIMM, "quickstart", "--out", str(tmp_path / "qs"))
    assert out.returncode == 2, out.stderr
    assert "asczoo quickstart: error:" in out.stderr and "'timm' failed to load" in out.stderr
    assert not (tmp_path / "qs" / "data").exists()  # nothing synthesised, nothing trained


def test_doctor_reports_versions_plugins_devices_and_openmp():
    out = subprocess.run([sys.executable, "-m", "asczoo", "doctor"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    for needle in ("torch ", "timm ", "onnxruntime", "plugins:", "dcase-logmel", "devices: cuda",
                   "mps", "openmp: ", "GOMP_SPINCOUNT", "no problems found"):
        assert needle in out.stdout, needle
    broken = _run(BROKEN_TIMM, "doctor")
    assert broken.returncode == 1 and "problem: built-in plugin" in broken.stdout


def test_pyproject_lock_and_readme_agree():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_req = next(d for d in project["dependencies"] if d.startswith("torch"))
    assert torch_req == "torch>=2.11,<3", "a range, never one release: installing asczoo keeps the user's torch"
    assert not any(d.startswith("torchaudio") for d in project["dependencies"]), "asczoo does not need torchaudio"
    lock = dict(line.split("==", 1) for line in (ROOT / "requirements/lock.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert lock["torch"].split("+")[0] == environment.TESTED_TORCH[0]
    assert lock["torchaudio"].split("+")[0] == "2.11.0"  # the one that loads beside torch 2.11.0
    for extra in ("test", "hear", "demo"):
        for requirement in project["optional-dependencies"][extra]:
            name = re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")
            assert any(k.lower().replace("_", "-") == name for k in lock), f"{name} is not in the lock"
    readme = (ROOT / "README.md").read_text()
    assert "torch>=2.11,<3" in readme and "bash .ci/lock" in readme
    for tested in environment.TESTED_TORCH:
        assert tested in readme, tested
    ci = (ROOT / ".ci/run").read_text()
    assert "-c requirements/lock.txt" in ci and ".ci/smoke.py" in ci
