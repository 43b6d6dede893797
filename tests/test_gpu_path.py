"""The training step on the GPU path, checked on its CPU proxies (issue 13): no host synchronisation or
per-step host tensor, IEEE float32 fold statistics, compiled DDP with global batch norm in one graph,
compiled two-stage training equal to eager, and a rank barrier that outlasts the group's timeout."""

from __future__ import annotations

import copy
import datetime
import os
import time

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from test_training import TINY, make_data, tiny_recipe

#: aten ops that mean "the host waits for the device" (reading a value back) or "a tensor was made from
#: host data" (then copied to the device): neither belongs in a training step
HOST_OPS = ("_local_scalar_dense", "lift_fresh", "lift_fresh_copy")


class HostOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.names: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in HOST_OPS:
            self.count += 1
            self.names[name] = self.names.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("gpu-path") / "data")


def _one_stage(batch_size: int, **engine) -> dict:
    """ATReSN-Net trained from scratch with the stage-2 augmentation (lr-swap), one epoch."""
    recipe = tiny_recipe(data_on_device=True, **engine)
    stage = recipe["stages"][1]
    stage.pop("init_from")
    stage.update(epochs=1, batch_size=batch_size, eval_at_start=False)
    stage["overrides"]["head"] = {"dropout": 0.0}
    recipe["stages"] = [stage]
    return recipe


def test_training_steps_read_nothing_back_and_build_no_host_tensors(scenes, tmp_path, monkeypatch):
    """Twice the steps (half the batch) in one epoch: the host reads and host-made tensors must not
    grow with the steps (the per-epoch ones: checkpoint, evaluation, the epoch's index copy stay)."""
    from asczoo.training import train
    from asczoo_plugins.relation import layers

    monkeypatch.setattr(layers, "HOST_DECISION_DEVICES", ())  # the fold as on an accelerator
    train(_one_stage(6), data=scenes, out=tmp_path / "warm", log=lambda *_: None)  # the feature cache
    counts = []
    for batch in (6, 3):  # 4, then 8 steps over the 24 training clips
        with HostOps() as ops:
            train(_one_stage(batch), data=scenes, out=tmp_path / f"b{batch}", log=lambda *_: None)
        counts.append((ops.count, ops.names))
    assert counts[0][0] == counts[1][0], counts


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_steps_do_not_synchronise(scenes, tmp_path):
    """``torch.cuda.set_sync_debug_mode("warn")`` warns at every synchronising call; as on the CPU, the
    count must not grow with the number of steps (evaluation and checkpoints read values on purpose)."""
    import warnings

    from asczoo.training import train

    counts = []
    torch.cuda.set_sync_debug_mode("warn")
    try:
        train(_one_stage(6, device="cuda"), data=scenes, out=tmp_path / "warm", log=lambda *_: None)
        for batch in (6, 3):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                train(_one_stage(batch, device="cuda", precision="bf16"), data=scenes, out=tmp_path / f"b{batch}",
                      log=lambda *_: None)
            counts.append(sum("synchroniz" in str(w.message) for w in caught))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert counts[0] == counts[1], counts
