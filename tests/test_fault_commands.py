"""Issue 24 item 4: the commands added in the last rounds (``package``, ``quantize``, ``cv``, ``export
--with-frontend``) survive the faults the older ones do.

- A full disk mid-write leaves nothing half-written (no partial output, no temporary file), and running
  the command again gives what an uninterrupted run gives.
- ``kill -9`` mid-write, then the same command: its result equals an uninterrupted run's and nothing
  the killed process left (``.tmp`` files, ``.staging`` folders) survives the rerun; ``cv`` resumes.
- Two processes on one output: the second is refused at once, naming the holder, and the first one's
  output is untouched.

Faults are injected where every asczoo write ends, ``os.fsync`` (safetensors, JSON and ONNX files are all
written through :mod:`asczoo.atomic`): the Nth call raises ``ENOSPC``, as a full file system does, or
the process sends itself SIGKILL there. Odd N: each file's fsync is followed by its folder's, whose
errors asczoo ignores (not every file system can sync a folder).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
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


#: runs ``asczoo ARGV...`` and SIGKILLs itself at the Nth fsync, or at the first fsync of a file whose path
#: contains PATTERN (argv[1]: N or PATTERN)
KILL_AT_FSYNC = textwrap.dedent("""
    import os, signal, sys
    import torch
    torch.set_num_threads(1)
    point, calls, real = sys.argv[1], [], os.fsync
    def fsync(fd):
        calls.append(fd)
        here = os.readlink(f"/proc/self/fd/{fd}")
        if (point.isdigit() and len(calls) == int(point)) or (not point.isdigit() and point in here):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(fd)
    os.fsync = fsync
    from asczoo.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def _killed(point: int | str, argv: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", KILL_AT_FSYNC, str(point), *argv], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == -signal.SIGKILL, f"not killed at {point!r} (rc {result.returncode}):\n{result.stderr}"


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob(".*")
                  if p.name.endswith((".tmp", ".staging", ".lock")))


@pytest.mark.parametrize("command, n", [("quantize", 1), ("quantize", 5), ("package", 3), ("package", 9)])
def test_kill_9_mid_write_then_the_same_command_equals_a_clean_run(saved, tmp_path, command, n):
    argv = (["quantize", str(saved), "--to", "fp16", "--no-parity"] if command == "quantize"
            else ["package", str(saved), "--name", "Doe_TU_task1_1"])
    assert main([*argv, "--out", str(tmp_path / "clean" / "out")]) == 0
    target = tmp_path / "killed" / "out"
    _killed(n, [*argv, "--out", str(target)])
    assert not target.exists()  # the output appears whole or not at all
    assert any(name.endswith(".staging") for name in _leftovers(target.parent)), _leftovers(target.parent)
    assert main([*argv, "--out", str(target)]) == 0
    assert _tree(target) == _tree(tmp_path / "clean" / "out")
    assert [p.name for p in target.parent.iterdir()] == ["out"]  # the killed run's staging folder is gone


def test_kill_9_mid_export_with_frontend_keeps_the_old_file_and_a_rerun_cleans_up(saved, tmp_path):
    pytest.importorskip("onnx")
    clean, out = tmp_path / "clean.onnx", tmp_path / "killed" / "model.onnx"
    argv = ["export", str(saved), "--with-frontend", "--no-verify"]
    assert main([*argv[:2], str(clean), *argv[2:]]) == 0
    out.parent.mkdir()
    out.write_bytes(b"the previous export")
    _killed(1, [*argv[:2], str(out), *argv[2:]])
    assert out.read_bytes() == b"the previous export"
    assert _leftovers(out.parent), "the kill left no temporary file: it came too late to test anything"
    assert main([*argv[:2], str(out), *argv[2:]]) == 0
    assert out.read_bytes() == clean.read_bytes()
    assert [p.name for p in out.parent.iterdir()] == ["model.onnx"]


HOLD_OUTPUT = textwrap.dedent("""
    import sys
    from asczoo.atomic import exclusive_output
    with exclusive_output(sys.argv[1]):
        print("held", flush=True)
        sys.stdin.read()
""")


@pytest.mark.parametrize("command", ["quantize", "package", "export"])
def test_a_second_process_on_one_output_is_refused_and_the_first_is_untouched(saved, tmp_path, capsys, command):
    target = tmp_path / ("model.onnx" if command == "export" else "out")
    argv = {"quantize": ["quantize", str(saved), "--to", "fp16", "--no-parity", "--out", str(target)],
            "package": ["package", str(saved), "--name", "Doe_TU_task1_1", "--out", str(target)],
            "export": ["export", str(saved), str(target), "--with-frontend", "--no-verify"]}[command]
    holder = subprocess.Popen([sys.executable, "-c", HOLD_OUTPUT, str(target)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(argv) == 2
        assert f"{target} is being written by another asczoo process (pid {holder.pid} on " in capsys.readouterr().err
        assert not target.exists()
    finally:
        holder.communicate("", timeout=60)
    assert holder.returncode == 0
    assert main(argv) == 0 and target.exists()


def _cv_setup(tmp_path: Path) -> tuple[list[str], Path]:
    import yaml
    from test_field_protocols import synth, two_stages

    data = synth("esc50", tmp_path / "data", clips=60, seconds=1.0)
    recipe = two_stages("esc50", epochs=2)
    recipe["stages"] = recipe["stages"][:1]
    recipe_file = tmp_path / "esc.yaml"
    recipe_file.write_text(yaml.safe_dump({"version": 1, "recipes": {"esc-tiny": recipe}}))
    return ["cv", str(recipe_file), "--data", str(data), "--folds", "1,2", "--no-progress"], data


def _cv_result(out: Path) -> dict[str, object]:
    from safetensors.torch import load_file

    summary = json.loads((out / "cv.json").read_text())
    weights = {k: {name: t.tolist() for name, t in load_file(out / f"fold{k}" / "model" / "model.safetensors").items()}
               for k in (1, 2)}
    return {"folds": summary["folds"], "mean": summary["mean"], "std": summary["std"], "weights": weights}


#: four places to die: fold 1's first checkpoint, fold 1's model half saved, fold 2's first epoch record,
#: the summary after every fold is done
CV_KILL_POINTS = ["fold1/stage1/checkpoints/.epoch-0001.state.pt", "fold1/stage1/model/.config.json",
                  "fold2/stage1/.checkpoint.json", "cv/.cv.json"]


@pytest.mark.slow
def test_cv_killed_at_four_points_resumes_to_the_same_weights_and_figures(tmp_path):
    argv, _ = _cv_setup(tmp_path)
    assert main([*argv, "--out", str(tmp_path / "clean")]) == 0
    out = tmp_path / "cv"
    for point in CV_KILL_POINTS:
        _killed(point, [*argv, "--out", str(out)])
    assert not (out / "cv.json").exists()
    assert main([*argv, "--out", str(out)]) == 0
    assert _cv_result(out) == _cv_result(tmp_path / "clean")
    assert _leftovers(out) == ["fold1/.lock", "fold2/.lock"]  # the run locks (never stale); no temporary file


@pytest.mark.slow
@pytest.mark.parametrize("n", [9, 39])  # checkpoint.json, done.json (the cache exists)
def test_cv_on_a_full_disk_stops_with_the_file_and_a_retry_with_space_equals_a_clean_run(tmp_path, monkeypatch,
                                                                                         capsys, n):
    argv, _ = _cv_setup(tmp_path)
    assert main([*argv, "--out", str(tmp_path / "clean")]) == 0
    out = tmp_path / "cv"
    calls = _fill_disk_at(monkeypatch, n)
    assert main([*argv, "--out", str(out)]) == 2
    assert len(calls) >= n
    assert "No space left on device" in capsys.readouterr().err
    assert not [p for p in out.rglob("*.tmp")]  # nothing half-written
    monkeypatch.undo()
    assert main([*argv, "--out", str(out)]) == 0
    assert _cv_result(out) == _cv_result(tmp_path / "clean")


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 4 MiB tmpfs, a real file system that fills up; skipped where mounting is not allowed (not root)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("command", ["quantize", "package"])
def test_a_real_full_file_system_leaves_nothing_and_a_retry_with_space_succeeds(saved, tmp_path, small_tmpfs, capsys,
                                                                                command):
    argv = (["quantize", str(saved), "--to", "fp16", "--no-parity"] if command == "quantize"
            else ["package", str(saved), "--name", "Doe_TU_task1_1"])
    assert main([*argv, "--out", str(tmp_path / "clean" / "out")]) == 0
    need = _size(tmp_path / "clean" / "out")
    free = os.statvfs(small_tmpfs)
    filler = small_tmpfs / "filler"
    filler.write_bytes(b"\0" * (free.f_bavail * free.f_frsize - need // 2))  # room for half the output
    target = small_tmpfs / "out"
    assert main([*argv, "--out", str(target)]) == 2
    assert f"{target}: could not be written (No space left on device); nothing was written" in capsys.readouterr().err
    assert sorted(p.name for p in small_tmpfs.iterdir()) == ["filler"]
    filler.unlink()
    assert main([*argv, "--out", str(target)]) == 0
    assert _tree(target) == _tree(tmp_path / "clean" / "out")
