"""ONNX export of every registry model, checked with onnxruntime against PyTorch (within 1e-4)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from data_fixtures import one_thread  # noqa: F401 - fixture
from torch import nn

import asczoo
from asczoo.cli import main
from asczoo.deploy.export import VERIFY_BATCHES, ExportError, export_onnx
from model_fixtures import CLASSES, features, randomise, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

#: every model the registry can build here: the relation presets (built-in and plugins') and baselines;
#: each is exported at the full input with a dynamic batch (``slow``, below)
MODELS = asczoo.list_models()
#: exported with a dynamic batch axis (the CLI's default); the others with a fixed batch, which
#: exercises the same operators at a third of the export time
DYNAMIC = "atresn-net-resnet18"
#: the flagship and one model per backbone family: their dynamic-batch files are run at every batch
#: of VERIFY_BATCHES again by the test (the others at two sizes); in the quick suite (tiny widths and
#: inputs) they and each relation-block kind stand for the registry
FAMILIES = ["atresn-net-resnet18", "atresn-net-preact18", "atresn-net-convnext-atto", "atresn-net-efficientnet-b0",
            "atresn-net-mobilenetv3-large-100", "atresn-net-regnety-008", "lc-atresn-narrow"]

def _options(name: str) -> set[str]:
    """Every part option of a registry model's recipe as ``section.key=value`` (backbone, inflator,
    relation, head, frontend): what can change the exported graph."""
    import json

    recipe, found = asczoo.model_recipe(name), set()

    def walk(prefix, value):
        if isinstance(value, dict):
            for key, item in value.items():
                if key not in ("description", "tag", "extends"):
                    walk(f"{prefix}.{key}", item)
        else:
            found.add(f"{prefix}={json.dumps(value, sort_keys=True)}")

    for section in ("backbone", "inflator", "relation", "head", "frontend"):
        walk(section, recipe.get(section))
    return found


def _option_cover() -> list[str]:
    """Registry models that between them hold every option value of the registry (greedy set cover,
    in registry order): the full-size export of these exercises every operator any model uses."""
    options = {name: _options(name) for name in MODELS}
    needed, chosen = set().union(*options.values()), []
    while needed:
        best = max(options, key=lambda n: len(options[n] & needed))
        chosen.append(best)
        needed -= options[best]
    return chosen


def _relation_kind(name: str) -> str | None:
    relation = asczoo.model_recipe(name).get("relation")
    return relation.get("plugin") if isinstance(relation, dict) else None


def _kind_models() -> list[str]:
    """One model per relation-block kind that FAMILIES (all ATReSN) do not hold: the option cover's
    first of that kind."""
    cover, kinds = _option_cover(), {_relation_kind(n) for n in MODELS} - {None, "atresn"}
    return [next(n for n in cover + MODELS if _relation_kind(n) == kind) for kind in sorted(kinds)]


#: exported at the full input size (slow): the flagship, one model per backbone family and one per
#: relation-block kind (10 of 27 models today). What the full input changes is shapes: the kNN's row
#: blocks (the chunk count comes from the points per sample), the backbones' feature-map sizes and a
#: recipe's own frontend; an option value that changes which operators are exported is held by QUICK
#: or by these (test below)
FULL_SIZE = list(dict.fromkeys([DYNAMIC, *FAMILIES, *_kind_models()]))
#: exported at the tiny size in every run (a fixed batch, except DYNAMIC): the families, the plain 3D
#: model, each relation kind, and the option cover's models that FULL_SIZE does not hold
QUICK = list(dict.fromkeys(FAMILIES + ["resnet18-3d", "tresn-net-resnet18", "senot-net-resnet18"]
                           + [n for n in MODELS if n.startswith("nonlocal-net-")][:1]
                           + [n for n in _option_cover() if n not in FULL_SIZE]))


def test_exported_models_hold_every_option_value_of_the_registry():
    held = set().union(*(_options(n) for n in FULL_SIZE + QUICK))
    for name in MODELS:
        assert _options(name) <= held, f"{name} has an option value no export exercises"
    kinds = {_relation_kind(n) for n in MODELS} - {None}
    assert kinds == {_relation_kind(n) for n in FULL_SIZE} - {None}, "a relation kind is not exported at full size"


def run_onnx(path, x: torch.Tensor) -> torch.Tensor:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(["logits"], {"features": x.numpy()})
    return torch.from_numpy(out)


def _blocks_matter(model, x: torch.Tensor, expected: torch.Tensor) -> None:
    """The comparison must cover the relation blocks: zeroing them changes the logits."""
    if model.relations:
        with torch.no_grad():
            saved = {k: v.clone() for k, v in model.relations.state_dict().items()}
            for p in model.relations.parameters():
                p.zero_()
            assert (model(x) - expected).abs().max() > 1e-3
            model.relations.load_state_dict(saved)


def _check_metadata(path, model, name: str) -> None:
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["asczoo.name"] == name and json.loads(meta["asczoo.classes"]) == model.classes
    assert json.loads(meta["asczoo.frontend"]) == model.frontend_config


def test_quick_set_covers_every_family_and_block_kind():
    assert set(QUICK) <= set(MODELS) and len(set(QUICK)) == len(QUICK)
    kinds = {(asczoo.model_recipe(n).get("relation") or {}).get("plugin") for n in MODELS
             if isinstance(asczoo.model_recipe(n).get("relation"), dict)}
    assert kinds <= {(asczoo.model_recipe(n).get("relation") or {}).get("plugin") for n in QUICK
                     if isinstance(asczoo.model_recipe(n).get("relation"), dict)}


#: exported at a fixed batch in every run; the other QUICK models that FULL_SIZE holds are skipped when the
#: full-size test runs too (it exports them at the full input with a dynamic batch, checks the metadata
#: and onnx's full check, and runs four batch sizes), so that a CI run does not export them twice
FIXED_BATCH_ATRESN = "lc-atresn-narrow"


@pytest.mark.parametrize("name", [n if n == FIXED_BATCH_ATRESN else pytest.param(
    n, marks=pytest.mark.superseded_by("test_full_size_export_verifies_at_every_batch")) for n in QUICK])
def test_onnx_matches_pytorch(name, tmp_path):
    model = tiny_model(name)
    x = features(model, batch=2)
    with torch.no_grad():
        expected = model(x)
    _blocks_matter(model, x, expected)

    dynamic = name == DYNAMIC
    result = export_onnx(model, tmp_path / "m.onnx", dynamic_batch=dynamic, optimize=False, verify=False)
    assert result.path == tmp_path / "m.onnx" and result.max_abs_diff is None
    onnx.checker.check_model(str(result.path), full_check=True)  # onnx's own checker, strict shape inference
    torch.testing.assert_close(run_onnx(result.path, x), expected, rtol=0, atol=1e-4)
    if dynamic:
        for batch in (1, 3):
            xb = features(model, batch=batch, seed=batch)
            with torch.no_grad():
                torch.testing.assert_close(run_onnx(result.path, xb), model(xb), rtol=0, atol=1e-4)
    _check_metadata(result.path, model, name)


def test_onnx_export_of_a_block_whose_points_exclude_only_themselves(tmp_path):
    """Without segment exclusion the kNN masks the diagonal of each score block in place, which the
    exporter sees as ``aten.diagonal_scatter`` (asczoo's translation table supplies it)."""
    from asczoo.testing import tiny_overrides

    torch.manual_seed(0)
    model = asczoo.create_model("atresn-net-resnet18", overrides={
        **tiny_overrides(relation={"exclude_same_segment": False}), "classes": CLASSES})
    for p in model.relations.parameters():  # a fresh block adds zero; make it matter
        torch.nn.init.normal_(p, std=0.5)
    model.eval()
    x = features(model, batch=2)
    with torch.no_grad():
        expected = model(x)
    result = export_onnx(model, tmp_path / "m.onnx", optimize=False, verify=False)
    torch.testing.assert_close(run_onnx(result.path, x), expected, rtol=0, atol=1e-4)


#: the default input (8 segments x 3 channels x 128 mel bands x 80 frames), where the relation blocks'
#: kNN splits its scores into row blocks (a tiny input needs one block)
FULL_INPUT = (8, 3, 128, 80)
#: models whose recipe names its own frontend: their full input is that frontend's (1 s clips, 64 bands)
OWN_FULL_INPUT = {"lc-resnet-narrow": (8, 3, 64, 32), "lc-atresn-narrow": (8, 3, 64, 32)}


@pytest.mark.slow
@pytest.mark.parametrize("name", FULL_SIZE)
def test_full_size_export_verifies_at_every_batch(name, tmp_path):
    """At the full input size, narrow widths, the models of FULL_SIZE: the dynamic-batch file is verified by
    the export itself at VERIFY_BATCHES (1, 2, 3, 7), and run here again, independently of that check,
    at batch 3 (and 7 for the flagship and one model per family). (A row-block size computed from the
    traced batch was once baked into the graph: batch 3 failed.)"""
    torch.manual_seed(0)
    model = asczoo.create_model(name, overrides={"backbone": {"channels": [8, 16, 32, 64], "stem_width": 8},
                                                 "classes": CLASSES})
    randomise(model, 0)
    model.eval()
    assert model.input_shape == OWN_FULL_INPUT.get(name, FULL_INPUT)
    assert VERIFY_BATCHES == (1, 2, 3, 7)
    x = features(model, batch=2)
    with torch.no_grad():
        expected = model(x)
    _blocks_matter(model, x, expected)
    result = export_onnx(model, tmp_path / "m.onnx", optimize=False)
    assert result.max_abs_diff is not None
    _check_metadata(result.path, model, name)
    onnx.checker.check_model(str(result.path), full_check=True)
    for batch in (3, 7) if name in FAMILIES else (3,):  # beside the export's own check, independently
        xb = features(model, batch=batch, seed=10 + batch)
        with torch.no_grad():
            expected = model(xb)
        scale = max(1.0, float(expected.abs().max()))  # float32 rounding grows with the logits
        torch.testing.assert_close(run_onnx(result.path, xb), expected, rtol=0, atol=1e-4 * scale)


@pytest.mark.slow
def test_full_size_full_width_flagship_export_verifies(tmp_path):
    torch.manual_seed(0)
    model = asczoo.create_model(DYNAMIC, overrides={"classes": CLASSES})
    randomise(model, 0)
    result = export_onnx(model.eval(), tmp_path / "m.onnx")
    assert result.max_abs_diff is not None
    onnx.checker.check_model(str(result.path), full_check=True)  # the optimised graph too


def test_failed_verification_writes_nothing_and_keeps_an_older_file(tmp_path):
    model = tiny_model("resnet18-segments")
    out = tmp_path / "m.onnx"
    out.write_bytes(b"the file of an earlier export")
    with pytest.raises(ExportError, match=r"m\.onnx: verification failed at batch 1: .*nothing was written"):
        export_onnx(model, out, optimize=False, atol=-1.0)  # no difference is <= -1: verification fails
    assert out.read_bytes() == b"the file of an earlier export"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temporary file left behind


def test_cli_reports_a_failed_verification_in_one_line(tmp_path, capsys, monkeypatch):
    import asczoo.deploy.export as export

    def fails(*args, **kwargs):
        raise ExportError("out.onnx: verification failed at batch 3: (test); nothing was written")

    monkeypatch.setattr(export, "verify_onnx", fails)
    folder = tiny_model("resnet18-segments").save_pretrained(tmp_path / "model")
    out = tmp_path / "out.onnx"
    assert main(["export", str(folder), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "verification failed at batch 3" in err and "Traceback" not in err
    assert not out.exists()


def test_cli_export_of_a_saved_model(tmp_path, capsys):
    model = tiny_model("resnet18-segments")
    folder = model.save_pretrained(tmp_path / "model")
    out = tmp_path / "exported.onnx"
    assert main(["export", str(folder), "--format", "onnx", str(out)]) == 0
    assert "onnxruntime matches PyTorch within" in capsys.readouterr().out
    for batch in (1, 4):
        x = features(model, batch=batch, seed=batch)
        with torch.no_grad():
            torch.testing.assert_close(run_onnx(out, x), model(x), rtol=0, atol=1e-4)


@torch.library.custom_op("asczoo_test::host_tanh", mutates_args=())
def host_tanh(x: torch.Tensor) -> torch.Tensor:
    """A custom kernel (here NumPy on the host) with no ONNX counterpart, like a plugin's CUDA op."""
    return torch.from_numpy(np.tanh(x.detach().cpu().numpy())).to(x.device)


@host_tanh.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class HostSideBlock(nn.Module):
    """A relation block built on a custom operator that ONNX does not know."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + host_tanh(x) * self.scale.view(1, 1, -1, 1, 1)


class HostSidePlugin:
    @asczoo.hookimpl
    def asczoo_register_relation_blocks(self, register):
        def host_side(*, channels: int) -> nn.Module:
            """A block that cannot be exported."""
            return HostSideBlock(channels)

        register("host-side", host_side)


def test_export_error_names_the_part(tmp_path):
    from asczoo import plugins

    assert plugins.register_plugin(HostSidePlugin(), "host-side-test")
    asczoo.register_recipes({"models": {"host-side-net": {
        "extends": "resnet18-3d", "relation": {"plugin": "host-side", "placement": ["res3_1"]},
    }}})
    model = tiny_model("host-side-net")
    with pytest.raises(ExportError, match=r"relation block 'res3_1' \(plugin 'host-side'\) cannot be exported: "
                                          r".*asczoo_test\.host_tanh"):
        export_onnx(model, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


class BatchSizedBlock(nn.Module):
    """A block that computes a size from the batch size, as the kNN's row blocks once did."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        step = max(1, 4 // x.shape[0])
        parts = [x[:, i:i + step] for i in range(0, x.shape[1], step)]
        return torch.cat(parts, dim=1) * self.scale.view(1, 1, -1, 1, 1)


class BatchSizedPlugin:
    @asczoo.hookimpl
    def asczoo_register_relation_blocks(self, register):
        def batch_sized(*, channels: int) -> nn.Module:
            """A block whose graph depends on the batch size."""
            return BatchSizedBlock(channels)

        register("batch-sized", batch_sized)


def test_a_batch_that_cannot_stay_dynamic_fails_even_without_verification(tmp_path):
    """``--no-verify`` skips onnxruntime, not the guarantee: the capture keeps the batch symbolic with no
    fallback, so a graph valid for the traced batch only is refused (the exporter's draft fallback
    once baked such sizes in silently) and nothing is written."""
    from asczoo import plugins

    assert plugins.register_plugin(BatchSizedPlugin(), "batch-sized-test")
    asczoo.register_recipes({"models": {"batch-sized-net": {
        "extends": "resnet18-3d", "relation": {"plugin": "batch-sized", "placement": ["res3_1"]},
    }}})
    model = tiny_model("batch-sized-net")
    with pytest.raises(ExportError, match=r"with a dynamic batch axis: .*--static-batch"):
        export_onnx(model, tmp_path / "m.onnx", optimize=False, verify=False)
    assert not (tmp_path / "m.onnx").exists()
    result = export_onnx(model, tmp_path / "m.onnx", dynamic_batch=False, optimize=False)
    assert result.max_abs_diff is not None
