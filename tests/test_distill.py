"""Knowledge distillation as a stage option: loss, teacher checks, cached teacher logits, a tiny run."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import asczoo
from asczoo.arguments import RecipeError
from asczoo.distill import check_compatible, check_spec, distillation_loss
from data_fixtures import one_thread  # noqa: F401
from test_training import TINY, make_data

pytestmark = pytest.mark.usefixtures("one_thread")


def test_loss_is_weighted_ce_plus_tau_squared_kl():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    labels = torch.tensor([0, 1, 2, 3, 0])
    ce = F.cross_entropy(student, labels, reduction="none")
    tau, lam = 3.0, 0.3
    kl = F.kl_div(F.log_softmax(student / tau, -1), F.log_softmax(teacher / tau, -1), log_target=True,
                  reduction="none").sum(-1)
    expected = (1 - lam) * ce + lam * tau**2 * kl
    torch.testing.assert_close(distillation_loss(student, teacher, ce, weight=lam, tau=tau), expected)
    # a student that equals the teacher pays only the hard part
    torch.testing.assert_close(distillation_loss(teacher, teacher, ce, weight=lam, tau=tau), (1 - lam) * ce)


def test_spec_is_checked():
    assert check_spec({"teachers": ["t"]}, where="r", earlier=["t"]) == {"teachers": ["t"], "lambda": 0.5, "tau": 2.0,
                                                                       "batch_size": 64}
    with pytest.raises(RecipeError, match="'nobody' is neither an earlier stage"):
        check_spec({"teachers": ["nobody"]}, where="r", earlier=["t"])
    with pytest.raises(RecipeError, match="lambda"):
        check_spec({"teachers": ["t"], "lambda": 1.5}, where="r", earlier=["t"])
    with pytest.raises(RecipeError, match="tau"):
        check_spec({"teachers": ["t"], "tau": 0}, where="r", earlier=["t"])


def test_teachers_with_other_classes_or_frontend_are_refused_naming_both():
    student = asczoo.create_model("resnet18-3d", overrides=TINY, num_classes=4)
    other_classes = asczoo.create_model("resnet18-3d", overrides=TINY, num_classes=5)
    with pytest.raises(ValueError, match=r"teacher t1 \(resnet18-3d\) has classes .*the student resnet18-3d has"):
        check_compatible(student, [("t1", other_classes, None)])
    frontend = copy.deepcopy(TINY)
    frontend["frontend"]["n_mels"] = 16
    other_frontend = asczoo.create_model("resnet18-3d", overrides=frontend, num_classes=4)
    with pytest.raises(ValueError, match=r"teacher t2 .*another frontend.*n_mels: 16 vs 32"):
        check_compatible(student, [("t2", other_frontend, None)])


@pytest.mark.parametrize("on_device", ["auto", False], ids=["in-memory", "streamed"])
def test_a_student_stage_distils_from_an_earlier_stage_with_cached_teacher_logits(tmp_path, capsys, on_device):
    data = make_data(tmp_path / "data")
    stage = {"model": "resnet18-3d", "overrides": copy.deepcopy(TINY), "unit": "clip", "epochs": 1, "batch_size": 8,
             "optimizer": {"name": "sgd", "lr": 0.01}}
    recipe = {"description": "kd", "data": {"dataset": "dcase2019-task1a", "fold": 1}, "seed": 1,
              "engine": {"threads": 1, "num_workers": 0, "progress": False, "data_on_device": on_device},
              "stages": [{"name": "teacher", **stage},
                         {"name": "student", **copy.deepcopy(stage),
                          "distill": {"teachers": ["teacher"], "lambda": 0.7, "tau": 2.0}}]}
    asczoo.train(recipe, data=data, out=tmp_path / "run")
    cached = list((data / ".asczoo-cache" / "teachers").glob("*.safetensors"))
    assert len(cached) == 1
    from safetensors.torch import load_file

    logits = load_file(str(cached[0]))["logits"]
    teacher = asczoo.from_pretrained(tmp_path / "run" / "teacher" / "model")
    ds = asczoo.create_dataset("dcase2019-task1a", data, split="train", fold=1, frontend=teacher.frontend_config,
                               cache_dir=data / ".asczoo-cache")
    with torch.no_grad():
        expected = teacher(torch.stack([ds[i][0] for i in range(len(ds))]).float())
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    # the student stage again from scratch: the teacher logits are read back, not recomputed
    import shutil

    shutil.rmtree(tmp_path / "run" / "student")
    capsys.readouterr()
    asczoo.train(recipe, data=data, out=tmp_path / "run", resume=True)
    assert "teacher logits of 24 clips read from" in capsys.readouterr().out
