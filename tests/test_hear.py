"""The HEAR 2021 API (``asczoo.hear``) and the HEAR submission validator on it (issue 17, item 2).

The validator (``hearvalidator`` 2021.0.2 on PyPI) imports TensorFlow; CI installs it with
``pip install tensorflow-cpu`` and ``pip install --no-deps hearvalidator==2021.0.2`` (its own
requirement names the ``tensorflow`` distribution, which tensorflow-cpu provides under another name).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from model_fixtures import seed_hub_cache

import asczoo
import asczoo.hear as hear
from asczoo.testing import tiny_overrides

#: a tiny model at a sample rate HEAR accepts (16, 22.05, 44.1 or 48 kHz)
HEAR_TINY = tiny_overrides(frontend={"sample_rate": 16000, "n_fft": 512, "hop_length": 256})


def saved(name: str, folder: Path, overrides=HEAR_TINY) -> Path:
    torch.manual_seed(0)
    model = asczoo.create_model(name, overrides=overrides)
    with torch.no_grad():  # live relation blocks: their output scale starts at 0
        for block in model.relations.values():
            block.output.norm.weight.fill_(1.0)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def relation_folder(tmp_path_factory):
    return saved("atresn-net-resnet18", tmp_path_factory.mktemp("hear") / "atresn")


def test_attributes_and_shapes(relation_folder):
    model = hear.load_model(relation_folder, device="cpu")
    assert model.sample_rate == 16000 and isinstance(model.scene_embedding_size, int)
    audio = torch.rand(3, int(3.74 * 16000)) * 2 - 1
    scene = hear.get_scene_embeddings(audio, model)
    assert scene.shape == (3, model.scene_embedding_size) and scene.dtype == torch.float32
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    assert emb.shape[:2] == ts.shape and emb.shape == (3, ts.shape[1], model.timestamp_embedding_size)
    assert torch.allclose(torch.diff(ts), torch.full_like(ts[:, 1:], hear.TIMESTAMP_HOP_MS))
    assert ts[0, -1] <= 3740 and ts.shape[1] == 3740 // 50 + 1


def test_batched_equals_one_by_one(relation_folder):
    """The batch (and the windows of a long sound) do not leak into each other's embeddings."""
    model = hear.load_model(relation_folder, device="cpu", batch_size=3)
    audio = torch.rand(4, int(5.2 * 16000)) * 2 - 1
    together = hear.get_scene_embeddings(audio, model)
    alone = torch.cat([hear.get_scene_embeddings(a[None], model) for a in audio])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)
    e_all, _ = hear.get_timestamp_embeddings(audio, model)
    e_one, _ = hear.get_timestamp_embeddings(audio[2:3], model)
    torch.testing.assert_close(e_all[2:3], e_one, rtol=0, atol=1e-5)


def test_scene_embedding_is_what_the_head_pools(relation_folder):
    model = hear.load_model(relation_folder, device="cpu")
    audio = torch.rand(2, model.clip_samples) * 2 - 1  # exactly one clip window
    features = model.frontend.batch(audio[:, None], model.sample_rate)
    with torch.no_grad():
        expected = model.model.forward_features(features).mean(dim=(1, 3, 4))
    torch.testing.assert_close(hear.get_scene_embeddings(audio, model), expected, rtol=0, atol=1e-6)


def test_hub_name_loads_from_the_cache(relation_folder, hf_cache):  # noqa: F811
    seed_hub_cache(hf_cache, "someone/atresn-hear", relation_folder, "1" * 40)
    model = hear.load_model("hf-hub:someone/atresn-hear", device="cpu")
    assert model.model.name == "atresn-net-resnet18"


def test_bad_input_errors(relation_folder):
    model = hear.load_model(relation_folder, device="cpu")
    with pytest.raises(ValueError, match=r"\(n_sounds, n_samples\) mono at 16000 Hz"):
        hear.get_scene_embeddings(torch.zeros(2, 1, 16000), model)
    with pytest.raises(ValueError, match="saved model folder"):
        hear.load_model()


def _validator() -> str:
    exe = shutil.which("hear-validator") or str(Path(sys.executable).with_name("hear-validator"))
    assert os.path.exists(exe), ("hear-validator is not installed: pip install tensorflow-cpu && "
                                 "pip install --no-deps hearvalidator==2021.0.2 (see .ci/run)")
    return exe


@pytest.mark.slow
@pytest.mark.parametrize("name,overrides", [
    ("atresn-net-resnet18", HEAR_TINY),   # a relation model
    ("resnet18-3d", None),                # a baseline at the real size (48 kHz, 10 s clips)
])
def test_hear_validator_accepts_the_module(name, overrides, tmp_path):
    folder = saved(name, tmp_path / name, overrides)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    run = subprocess.run([_validator(), "asczoo.hear", "-m", str(folder), "-d", "cpu"],
                         capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0 and "Looks good!" in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]
