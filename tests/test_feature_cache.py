"""The feature cache: extraction, statistics, resuming after a kill, invalidation, atomic writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import asczoo
from asczoo.atomic import atomic_save_safetensors, atomic_write
from asczoo.cli import main as cli
from asczoo.data.checks import DataError
from asczoo.data.feature_cache import (
    MANIFEST_SUFFIX, compute_normalization, extract, load_normalization,
)
from data_fixtures import TINY_FRONTEND, make_dcase_tree, one_thread, write_clip  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")
pytest.importorskip("soundfile")  # audio fixtures need libsndfile

NAME = "dcase2019-task1a"


@pytest.fixture()
def root(tmp_path):
    path = tmp_path / "data"
    make_dcase_tree(path)  # 18 clips: 12 train, 6 evaluate
    return path


def shards(cache: Path) -> dict[str, tuple[dict, list]]:
    """Each complete shard's metadata and features (safetensors orders its header freely, so not bytes)."""
    from safetensors import safe_open

    out = {}
    for path in sorted(cache.glob("*/shards/*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            out[path.name] = (f.metadata(), f.get_tensor("features").tolist())
    return out


def manifests(cache: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(cache.glob(f"*/*{MANIFEST_SUFFIX}"))]


def test_extract_stores_every_clip_and_the_training_statistics(root, tmp_path):
    cache = tmp_path / "cache"
    info = extract(NAME, root, frontend=TINY_FRONTEND, cache_dir=cache, dtype="float32", shard_size=5, progress=False)
    assert info.files == 18 and info.shards_computed == 4 and info.shards_reused == 0
    assert info.manifest.is_file() and info.mean.shape == info.std.shape == (3, 32)
    (manifest,) = manifests(cache)
    assert manifest["frontend"] == asczoo.create_frontend(**TINY_FRONTEND).config
    assert manifest["normalization"]["files"] == 12 and manifest["normalization"]["split"] == "train"
    # statistics: exactly those of the training split's features
    train = asczoo.create_dataset(NAME, root, frontend=TINY_FRONTEND)
    mean, std = compute_normalization(train)
    torch.testing.assert_close(info.mean, mean, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(info.std, std, atol=1e-4, rtol=1e-5)
    loaded = load_normalization(cache)
    torch.testing.assert_close(loaded[0], info.mean)
    torch.testing.assert_close(loaded[1], info.std)
    cached = asczoo.create_dataset(NAME, root, frontend=TINY_FRONTEND, cache_dir=cache)
    torch.testing.assert_close(cached.normalization()[0], info.mean)
    torch.testing.assert_close(cached[5][0], train[5][0])  # float32 storage: exact
    # running again reuses everything
    again = extract(NAME, root, frontend=TINY_FRONTEND, cache_dir=cache, dtype="float32", shard_size=5, progress=False)
    assert again.shards_computed == 0 and again.shards_reused == 4


def test_float16_is_half_the_size_and_keys_differ_by_config(root, tmp_path):
    cache = tmp_path / "cache"
    extract(NAME, root, frontend=TINY_FRONTEND, cache_dir=cache, dtype="float32", progress=False)
    extract(NAME, root, frontend=TINY_FRONTEND, cache_dir=cache, dtype="float16", progress=False)
    sizes = sorted(sum(f.stat().st_size for f in d.glob("shards/*")) for d in cache.iterdir())
    assert len(sizes) == 2 and sizes[0] < 0.6 * sizes[1]
    other = {**TINY_FRONTEND, "n_mels": 16}
    extract(NAME, root, frontend=other, cache_dir=cache, progress=False)
    assert len(list(cache.iterdir())) == 3
    assert load_normalization(cache, other)[0].shape == (3, 16)
    with pytest.raises(ValueError, match="3 extractions"):
        load_normalization(cache)
    with pytest.raises(FileNotFoundError, match="asczoo extract"):
        load_normalization(tmp_path / "nowhere")


KILLER = textwrap.dedent("""
    import os, signal, sys
    import torch
    import asczoo.data.feature_cache as fc
    torch.set_num_threads(1)
    from asczoo.atomic import atomic_write
    real, calls = fc.atomic_save_safetensors, []
    def dying(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) == 3:  # third shard: die half-way through writing it
            with atomic_write(path) as f:
                f.write(b"half a shard")
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        real(tensors, path, metadata)
    fc.atomic_save_safetensors = dying
    fc.extract("dcase2019-task1a", sys.argv[1], frontend={frontend}, cache_dir=sys.argv[2], shard_size=4,
               progress=False)
""")


def test_a_killed_extraction_resumes_and_equals_an_uninterrupted_one(root, tmp_path):
    cache = tmp_path / "killed"
    script = KILLER.format(frontend=repr(TINY_FRONTEND))
    result = subprocess.run([sys.executable, "-c", script, str(root), str(cache)], capture_output=True, text=True)
    assert result.returncode == -9, result.stderr  # SIGKILL
    assert len(shards(cache)) == 2 and not manifests(cache)  # complete shards only, nothing marked complete
    assert list(cache.glob("*/shards/.*.tmp"))  # the half-written shard stayed a temporary file
    with pytest.raises(FileNotFoundError):
        load_normalization(cache)
    resumed = extract(NAME, root, frontend=TINY_FRONTEND, cache_dir=cache, shard_size=4, progress=False)
    assert resumed.shards_reused == 2 and resumed.shards_computed == 3
    clean = tmp_path / "clean"
    extract(NAME, root, frontend=TINY_FRONTEND, cache_dir=clean, shard_size=4, progress=False)
    assert shards(cache) == shards(clean)
    assert manifests(cache) == manifests(clean)


def test_a_changed_file_recomputes_only_its_shard(root, tmp_path):
    cache = tmp_path / "cache"
    extract(NAME, root, frontend=TINY_FRONTEND, cache_dir=cache, shard_size=4, progress=False)
    target = "audio/bus-helsinki-1-0-a.wav"
    before = asczoo.create_dataset(NAME, root, frontend=TINY_FRONTEND, cache_dir=cache)
    index = before.files.index(target)
    write_clip(root / target, 999, tone=3000.0)
    os.utime(root / target, ns=(1, 1))  # a different modification time whatever the clock resolution
    again = extract(NAME, root, frontend=TINY_FRONTEND, cache_dir=cache, shard_size=4, progress=False)
    assert again.shards_computed == 1 and again.shards_reused == 4
    assert len(shards(cache)) == 5 + 1  # the old version of that one shard stays, unused
    after = asczoo.create_dataset(NAME, root, frontend=TINY_FRONTEND, cache_dir=cache)
    live = asczoo.create_dataset(NAME, root, frontend=TINY_FRONTEND)
    torch.testing.assert_close(after[index][0], live[index][0], atol=0.02, rtol=2e-3)
    assert not torch.allclose(after[index][0], before[index][0], atol=0.5)


def test_a_dataset_builds_or_refreshes_its_cache_by_itself(root, tmp_path):
    cache = tmp_path / "cache"
    first = asczoo.create_dataset(NAME, root, split="evaluate", frontend=TINY_FRONTEND, cache_dir=cache)
    assert len(manifests(cache)) == 1 and len(first) == 6
    target = root / first.files[0]
    write_clip(target, 12345, tone=3500.0)
    os.utime(target, ns=(2, 2))
    refreshed = asczoo.create_dataset(NAME, root, split="evaluate", frontend=TINY_FRONTEND, cache_dir=cache)
    live = asczoo.create_dataset(NAME, root, split="evaluate", frontend=TINY_FRONTEND)
    torch.testing.assert_close(refreshed[0][0], live[0][0], atol=0.02, rtol=2e-3)
    assert not torch.allclose(refreshed[0][0], first[0][0], atol=0.5)


def test_parallel_extraction_gives_the_same_cache(root, tmp_path):
    extract(NAME, root, frontend=TINY_FRONTEND, cache_dir=tmp_path / "a", shard_size=6, progress=False)
    extract(NAME, root, frontend=TINY_FRONTEND, cache_dir=tmp_path / "b", shard_size=6, workers=2, progress=False)
    assert shards(tmp_path / "a") == shards(tmp_path / "b")


def test_bad_files_stop_extraction_without_a_manifest_or_are_skipped(root, tmp_path):
    cache = tmp_path / "cache"
    bad = root / "audio/park-barcelona-0-1-a.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    with pytest.raises(DataError, match="park-barcelona-0-1-a.wav: unreadable"):
        extract(NAME, root, frontend=TINY_FRONTEND, cache_dir=cache, shard_size=4, progress=False)
    assert not manifests(cache) and len(shards(cache)) == 4  # the good shards are kept for later
    with pytest.raises(DataError, match="unreadable"):
        asczoo.create_dataset(NAME, root, frontend=TINY_FRONTEND, cache_dir=cache)
    info = extract(NAME, root, frontend=TINY_FRONTEND, cache_dir=cache, shard_size=4, skip_bad=True, progress=False)
    assert info.files == 17 and [p.kind for p in info.skipped] == ["unreadable"]
    assert info.shards_reused == 4 and info.shards_computed == 1
    (manifest,) = manifests(cache)
    assert list(manifest["skipped"]) == ["audio/park-barcelona-0-1-a.wav"]
    ds = asczoo.create_dataset(NAME, root, frontend=TINY_FRONTEND, cache_dir=cache, skip_bad=True)
    assert "audio/park-barcelona-0-1-a.wav" not in ds.files and len(ds) == 11
    assert [p.kind for p in ds.skipped] == ["unreadable"]
    with pytest.raises(DataError, match="left out when the cache was built with --skip-bad"):
        asczoo.create_dataset(NAME, root, frontend=TINY_FRONTEND, cache_dir=cache)


FRONTEND_ARGS = [arg for key, value in TINY_FRONTEND.items() if key != "plugin"
                 for arg in ("--frontend", f"{key}={value}")]


def test_extract_command(root, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert cli(["extract", str(root), "--dataset", NAME, "--cache", str(cache), "--no-progress", *FRONTEND_ARGS]) == 0
    out = capsys.readouterr().out
    assert "18 clips" in out and MANIFEST_SUFFIX in out
    assert load_normalization(cache)[0].shape == (3, 32)
    (root / "audio/bus-helsinki-1-1-a.wav").unlink()
    assert cli(["extract", str(root), "--cache", str(cache), "--no-progress", *FRONTEND_ARGS]) == 1
    assert "bus-helsinki-1-1-a.wav: missing" in capsys.readouterr().err
    assert cli(["extract", str(root), "--cache", str(cache), "--no-progress", "--skip-bad", *FRONTEND_ARGS]) == 0
    assert "skipped" in capsys.readouterr().err
    assert cli(["extract", str(root), "--fold", "x"]) == 2


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path):
    target = tmp_path / "sub" / "file.bin"
    with atomic_write(target) as f:
        f.write(b"first")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write(b"second, half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"first"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]  # no temporary left behind
    with atomic_write(tmp_path / "t.txt", "w") as f:
        f.write("text é")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "text é"
    from safetensors.torch import load_file

    atomic_save_safetensors({"x": torch.arange(4.0)}, tmp_path / "x.safetensors", {"note": "hi"})
    torch.testing.assert_close(load_file(tmp_path / "x.safetensors")["x"], torch.arange(4.0))
    with pytest.raises(TypeError, match="strings"):
        atomic_save_safetensors({"x": torch.zeros(1)}, tmp_path / "y.safetensors", {"n": 1})
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "z", "a"):
            pass


def test_a_clip_dataset_never_extracts_create_dataset_does(root, tmp_path):
    """Constructing a dataset reads no audio and writes no cache; the host's create_dataset extracts."""
    from asczoo.data.frontend import create_frontend
    from asczoo.plugins import get_part

    cache = tmp_path / "cache"
    factory = get_part("dataset", NAME).factory
    direct = factory(str(root), split="evaluate", fold=1, frontend=create_frontend(**TINY_FRONTEND),
                     cache_dir=str(cache))
    assert direct.needs_extraction and not cache.exists()
    with pytest.raises(DataError, match="no complete extraction covers"):
        direct[0]
    opened = asczoo.create_dataset(NAME, root, split="evaluate", frontend=TINY_FRONTEND, cache_dir=cache)
    assert not opened.needs_extraction and len(manifests(cache)) == 1
    assert direct.attach_cache() and len(direct) == len(opened) == 6
