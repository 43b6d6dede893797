"""DistributedDataParallel on CPU: 2 processes (torchrun, gloo) compute what 1 process computes on the
same global batches.

"The same" holds when nothing is drawn per rank and batch norm sees the global batch: the recipe turns
on ``engine.sync_batchnorm`` (statistics over all ranks, :class:`asczoo.training.engine.GlobalBatchNorm`) and
leaves out random augmentation and dropout. Each global batch is split over the ranks (unevenly in
stage 2: 5 clips as 3 + 2), gradients are averaged by DDP with the loss weighted so that the average
is the global-batch mean, evaluation is split over the ranks and its confusion matrix summed, and only
rank 0 writes. The results then agree up to float rounding of the reductions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from test_training import make_data, tiny_recipe


def _recipe() -> dict:
    recipe = tiny_recipe(stage1_epochs=2, stage2_epochs=2, sync_batchnorm=True)
    for stage in recipe["stages"]:
        stage["augment"] = []
    recipe["stages"][1]["batch_size"] = 5
    recipe["stages"][1]["overrides"]["head"] = {"dropout": 0.0}
    return recipe


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="needs torch.distributed with the gloo backend")
def test_two_gloo_processes_match_one_process(tmp_path):
    from asczoo.training.runs import train

    data = make_data(tmp_path / "data")
    recipe = _recipe()
    recipe_file = tmp_path / "tiny.yaml"
    recipe_file.write_text(yaml.safe_dump({"version": 1, "recipes": {"tiny": recipe}}))
    ddp_run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "asczoo", "train", str(recipe_file), "--data", str(data), "--out", str(ddp_run)],
        capture_output=True, text=True, env=env, timeout=400,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "DDP 2 processes, synced batch norm" in proc.stdout
    assert proc.stdout.count("stage1 epoch 2/2") == 1  # rank 0 alone reports (and writes)

    single = train(recipe, data=data, out=tmp_path / "single")

    a = load_file(str(single.model_dir / "model.safetensors"))
    b = load_file(str(ddp_run / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=2e-5, msg=key)
    for stage in ("stage1", "stage2"):
        done = json.loads((ddp_run / stage / "done.json").read_text())
        assert done["accuracy"] == single.stages[stage].accuracy
        assert done["confusion"] == single.stages[stage].confusion
        assert sum(map(sum, done["confusion"])) == 16  # every held-out clip counted once over the ranks
        for mine, theirs in zip(done["history"], single.stages[stage].history):
            assert mine["epoch"] == theirs["epoch"]
            for key in ("train_loss", "eval_loss"):
                if key in theirs:
                    assert mine[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-5), (stage, key)
