"""The README's command lines work as written (issue 14 item 8): run on tiny stand-ins of what they name."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from asczoo.cli import main
from data_fixtures import one_thread  # noqa: F401 - a fixture
from test_hub import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")
README = Path(__file__).resolve().parents[1] / "README.md"


def readme_command(name: str, containing: str = "") -> list[str]:
    """The README's ``$ asczoo NAME ...`` line (the one holding ``containing``) as arguments, without its
    comment."""
    lines = [line for line in README.read_text(encoding="utf-8").splitlines()
             if line.startswith(f"$ asczoo {name} ") and containing in line]
    assert len(lines) == 1, f"expected one `asczoo {name}` line with {containing!r} in README.md, found {lines}"
    return shlex.split(re.sub(r"\s+#.*$", "", lines[0]))[3:]


def test_readme_export_command(tmp_path, monkeypatch, capsys):
    """`asczoo export atresn-net-resnet18 ...` failed with "no published weights"; the README now exports
    the model a training run saved, which works."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    args = readme_command("export")
    train = readme_command("train", containing="--out")
    out = train[train.index("--out") + 1]
    # what the README's training line leaves behind: RUN/model (any saved model; the smallest is quickest)
    tiny_model("resnet18-segments").save_pretrained(tmp_path / out / "model")
    monkeypatch.chdir(tmp_path)
    assert main(["export", *args]) == 0
    assert (tmp_path / args[-1]).is_file()
    assert "onnxruntime matches PyTorch" in capsys.readouterr().out
