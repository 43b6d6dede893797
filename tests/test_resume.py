"""``kill -9`` in the middle of training, ``--resume``, and the same result as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from test_training import make_data, tiny_recipe

#: fields that measure time, not what was learned
TIMING = {"seconds", "clips_per_s", "segments_per_s"}


def _start(recipe_file: Path, data: Path, run: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "asczoo", "train", str(recipe_file), "--data", str(data), "--out", str(run), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )


def _kill_when(proc: subprocess.Popen, ready, what: str, timeout: float = 240.0) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds (polled every 20 ms)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {what}:\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _epoch(run: Path, stage: str) -> int:
    try:
        return json.loads((run / stage / "checkpoint.json").read_text())["epoch"]
    except (OSError, ValueError):
        return 0


def _rows(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in path.read_text().splitlines()]


def test_kill_9_and_resume_equals_an_uninterrupted_run(tmp_path):
    from asczoo.training import train

    data = make_data(tmp_path / "data")
    recipe = tiny_recipe(stage1_epochs=3, stage2_epochs=2)
    recipe_file = tmp_path / "tiny.yaml"
    recipe_file.write_text(yaml.safe_dump({"version": 1, "recipes": {"tiny": recipe}}))

    # Interrupted twice, through the command line: in stage 1 as soon as its first checkpoint is
    # complete (the process is then inside epoch 2), and in stage 2 right after its first epoch.
    interrupted = tmp_path / "interrupted"
    proc = _start(recipe_file, data, interrupted)
    _kill_when(proc, lambda: _epoch(interrupted, "stage1") >= 1, "the first stage-1 checkpoint")
    assert not (interrupted / "stage1" / "done.json").exists()
    proc = _start(recipe_file, data, interrupted, "--resume")
    _kill_when(proc, lambda: _epoch(interrupted, "stage2") >= 1, "the first stage-2 checkpoint")
    assert not (interrupted / "stage2" / "done.json").exists()
    proc = _start(recipe_file, data, interrupted, "--resume")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "stage1: finished earlier" in out and "stage2: resuming after epoch" in out

    # Uninterrupted, in this process, with the features streamed instead of held (same batches).
    straight = train(recipe, data=data, out=tmp_path / "straight", overrides=["engine.data_on_device=false"])

    a = load_file(str(straight.model_dir / "model.safetensors"))
    b = load_file(str(interrupted / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for stage in ("stage1", "stage2"):
        done = json.loads((interrupted / stage / "done.json").read_text())
        assert done["accuracy"] == straight.stages[stage].accuracy
        assert done["confusion"] == straight.stages[stage].confusion
        assert _rows(interrupted / stage / "metrics.jsonl") == _rows(straight.run_dir / stage / "metrics.jsonl")
    assert _rows(interrupted / "metrics.jsonl") == _rows(straight.run_dir / "metrics.jsonl")
    # each checkpoint is complete and the old ones are gone; nothing half-written is left behind
    names = sorted(p.name for p in (interrupted / "stage2" / "checkpoints").iterdir())
    assert names == sorted({"epoch-0002.safetensors", "epoch-0002.state.pt",
                            f"best-{straight.stages['stage2'].best_epoch:04d}.safetensors"})
    state = torch.load(interrupted / "stage2" / "checkpoints" / "epoch-0002.state.pt", weights_only=True)
    assert state["epoch"] == 2 and {"optimizer", "scheduler", "rng", "history"} <= set(state)


def test_resume_refuses_a_different_recipe(tmp_path):
    from asczoo.arguments import RecipeError
    from asczoo.training import train

    data = make_data(tmp_path / "data")
    recipe = tiny_recipe(stage1_epochs=1)
    recipe["stages"] = recipe["stages"][:1]
    run = tmp_path / "run"
    train(recipe, data=data, out=run)
    with pytest.raises(RecipeError, match=r"stages\.0\.optimizer\.lr"):
        train(recipe, data=data, out=run, resume=True, overrides=["stages.0.optimizer.lr=0.5"])
    # engine settings may change; a finished run resumes to the same result
    again = train(recipe, data=data, out=run, resume=True, overrides=["engine.num_workers=1"])
    assert again.stages["stage1"].accuracy == json.loads((run / "stage1" / "done.json").read_text())["accuracy"]


# -- issue 14: refusing what cannot be resumed -----------------------------------------------------------------

def _one_checkpoint(directory: Path):
    from asczoo.checkpoint import Checkpointer, rng_state

    ckpt = Checkpointer(directory)
    state = {"optimizer": {}, "scheduler": {}, "rng": rng_state(), "history": "[]", "best": "", "epoch": 1}
    ckpt.save(epoch=1, model_state={"w": torch.ones(2)}, state=state)
    return ckpt


@pytest.mark.parametrize("damage", ["not-json", "foreign", "outside", "absolute", "pickle", "missing"])
def test_a_corrupt_foreign_or_hostile_checkpoint_is_refused_with_the_reason(tmp_path, damage):
    import pickle

    from asczoo.checkpoint import CheckpointError

    ckpt = _one_checkpoint(tmp_path / "stage1")
    pointer = json.loads(ckpt.pointer.read_text())
    secret = tmp_path / "secret.safetensors"
    secret.write_bytes(b"not yours")
    expected = {"not-json": "not the JSON", "foreign": "format", "outside": "key 'weights'",
                "absolute": "key 'state'", "pickle": "never unpickles", "missing": "does not exist"}[damage]
    if damage == "not-json":
        ckpt.pointer.write_text("{epoch: 3,")
    elif damage == "foreign":
        ckpt.pointer.write_text(json.dumps({"epoch": 3, "model": "x"}))
    elif damage == "outside":
        ckpt.pointer.write_text(json.dumps({**pointer, "weights": "../../../../../etc/passwd"}))
    elif damage == "absolute":
        ckpt.pointer.write_text(json.dumps({**pointer, "state": str(secret)}))
    elif damage == "pickle":
        class Planted:
            def __reduce__(self):
                return (os.system, ("touch " + str(tmp_path / "pwned"),))

        (ckpt.directory / pointer["state"]).write_bytes(pickle.dumps({"epoch": Planted()}))
    else:
        (ckpt.directory / pointer["weights"]).unlink()
    with pytest.raises(CheckpointError, match=expected) as info:
        info_ = ckpt.latest()
        ckpt.load(info_)
    message = str(info.value)
    assert "\n" not in message and "weights_only=False" not in message
    assert not (tmp_path / "pwned").exists()


def test_resume_locks_the_run_and_refuses_another_data_root(tmp_path):
    from asczoo.arguments import RecipeError
    from asczoo.training import RunLock, RunLockedError, train

    data = make_data(tmp_path / "data")
    recipe = tiny_recipe(stage1_epochs=1)
    recipe["stages"] = recipe["stages"][:1]
    run = tmp_path / "run"
    train(recipe, data=data, out=run)

    held = RunLock(run)
    held.acquire()  # another run is going on in this directory
    with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
        train(recipe, data=data, out=run, resume=True)
    held.release()

    moved = tmp_path / "moved"
    os.rename(data, moved)
    with pytest.raises(RecipeError, match="allow-data-change"):
        train(recipe, data=moved, out=run, resume=True)
    again = train(recipe, data=moved, out=run, resume=True, allow_data_change=True)
    assert again.stages["stage1"].accuracy == json.loads((run / "stage1" / "done.json").read_text())["accuracy"]


def test_a_corrupt_done_record_is_refused_with_the_reason(tmp_path):
    from asczoo.arguments import RecipeError
    from asczoo.training import _run_stage

    stage_dir = tmp_path / "run" / "stage1"
    stage_dir.mkdir(parents=True)
    (stage_dir / "done.json").write_text('{"name": "stage1", "evil": 1}')
    with pytest.raises(RecipeError, match=r"done\.json: not the record of a finished stage"):
        _run_stage("r", {}, 0, {"name": "stage1"}, runtime=None, run_dir=tmp_path / "run", root=tmp_path,
                   cache_dir=tmp_path, data_cache={}, results={}, callbacks=(), say=print)
