"""Issue 24 item 6 (part): a full disk in the middle of ``asczoo quantize`` or ``asczoo export
--with-frontend`` leaves nothing half-written (no partial output, no temporary file), and running the
command again gives what an uninterrupted run gives.

The full disk is simulated where every asczoo write ends, ``os.fsync`` (safetensors, JSON and ONNX files
are all written through :mod:`asczoo.atomic`): the Nth call raises ``ENOSPC``, as a full file system does.
Odd N: each file's fsync is followed by its folder's, whose errors asczoo ignores (not every file system
can sync a folder).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

import asczoo
from asczoo.cli import main
from asczoo.testing.tiny import tiny_overrides


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = asczoo.create_model("resnet18-3d", overrides=tiny_overrides(), num_classes=3).eval()
    folder = tmp_path_factory.mktemp("fault") / "model"
    model.save_pretrained(folder)
    return folder


def _fill_disk_at(monkeypatch, n: int) -> list[int]:
    calls, real = [], os.fsync

    def fsync(fd):
        calls.append(fd)
        if len(calls) == n:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def _tree(folder: Path) -> dict[str, object]:
    """Every file's content; a safetensors file as its metadata and tensors (its header's metadata
    order is a hash map's, not the same from run to run)."""
    from safetensors import safe_open

    out: dict[str, object] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if path.suffix == ".safetensors":
            with safe_open(str(path), "pt") as f:
                out[name] = (f.metadata(), {k: f.get_tensor(k).tolist() for k in sorted(f.keys())})
        else:
            out[name] = path.read_bytes()
    return out


@pytest.mark.parametrize("n", [1, 3])
def test_quantize_on_a_full_disk_leaves_nothing_and_a_rerun_equals_a_clean_run(saved, tmp_path, monkeypatch, capsys,
                                                                             n):
    command = ["quantize", str(saved), "--to", "fp16", "--no-parity"]
    assert main([*command, "--out", str(tmp_path / "clean" / "q")]) == 0
    target = tmp_path / "full" / "q"
    calls = _fill_disk_at(monkeypatch, n)
    assert main([*command, "--out", str(target)]) == 2
    assert len(calls) >= n
    assert f"{target}: could not be written (No space left on device); nothing was written" in capsys.readouterr().err
    assert not target.exists() and list(target.parent.iterdir()) == []  # no output, no staging folder
    monkeypatch.undo()
    assert main([*command, "--out", str(target)]) == 0
    assert _tree(target) == _tree(tmp_path / "clean" / "q")


def test_export_with_frontend_on_a_full_disk_keeps_the_old_file(saved, tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    out = tmp_path / "model.onnx"
    out.write_bytes(b"the previous export")
    _fill_disk_at(monkeypatch, 1)
    assert main(["export", str(saved), str(out), "--with-frontend", "--no-verify"]) == 2
    assert out.read_bytes() == b"the previous export" and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


@pytest.mark.parametrize("n", [5])
def test_package_on_a_full_disk_leaves_nothing_and_a_rerun_equals_a_clean_run(saved, tmp_path, monkeypatch, capsys, n):
    command = ["package", str(saved), "--name", "Doe_TU_task1_1"]
    assert main([*command, "--out", str(tmp_path / "clean" / "pkg")]) == 0
    target = tmp_path / "full" / "pkg"
    calls = _fill_disk_at(monkeypatch, n)
    assert main([*command, "--out", str(target)]) == 2
    assert len(calls) >= n
    assert f"{target}: could not be written (No space left on device); nothing was written" in capsys.readouterr().err
    assert not target.exists() and list(target.parent.iterdir()) == []
    monkeypatch.undo()
    assert main([*command, "--out", str(target)]) == 0
    assert _tree(target) == _tree(tmp_path / "clean" / "pkg")
