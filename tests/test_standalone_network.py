"""A model as torch-only source (asczoo.deploy.standalone_network) and the runtime a DCASE package carries."""

from __future__ import annotations

import ast
import sys

import pytest
import torch
from torch import nn

import asczoo
from asczoo.deploy.dcase_runtime import ALLOWED_IMPORTS, RuntimeVendorError, rewrite_module, runtime_files
from asczoo.deploy.quantize import quantize_fp16
from asczoo.deploy.standalone_network import StandaloneError, check_network, load_source, network_source
from asczoo.inference import model_frontend
from asczoo.stored_weights import held_as_stored
from asczoo.testing.tiny import tiny_overrides


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_relation_model_as_torch_only_source_matches_and_follows_the_input(precision):
    torch.manual_seed(0)
    model = asczoo.create_model("atresn-net-resnet18", overrides=tiny_overrides(), num_classes=3).eval()
    dtype = torch.float16 if precision == "fp16" else torch.float32
    if precision == "fp16":
        model = held_as_stored(quantize_fp16(model))
    example = torch.randn(2, *model.input_shape).to(dtype)
    source = network_source(model, example, docstring="test")
    check_network(source, model, example, atol=1e-2 if precision == "fp16" else 1e-5)
    assert "device(type=" not in source and "torch.float16" not in source, "device and dtype follow the input"
    imported = {n.names[0].name.split(".")[0] for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Import)}
    assert imported <= {"math", "operator", "torch"}
    network = load_source(source).Network()
    assert set(network.state_dict()) <= set(model.state_dict()), "the model's own state dict keys"
    assert sum(p.numel() for p in network.parameters()) == sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="expected model inputs"):
        network(torch.randn(2, 3, 4))


def test_a_forward_pass_with_a_data_dependent_branch_is_refused():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x) if x.sum() > 0 else -self.fc(x)

    with pytest.raises(StandaloneError, match="cannot be captured as one graph"):
        network_source(Branchy(), torch.randn(2, 4), docstring="x")


def test_runtime_files_import_only_torch_numpy_soundfile_and_each_other():
    model = asczoo.create_model("resnet18-3d", overrides=tiny_overrides(), num_classes=3)
    files = runtime_files(model_frontend(model))
    assert {"runtime.py", "frontend.py", "audio.py", "dsp.py", "_support.py", "interfaces.py"} <= set(files)
    for name, source in files.items():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                tops = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                tops = [(node.module or "").split(".")[0]]
            else:
                continue
            for top in tops:
                assert top in ALLOWED_IMPORTS or top in sys.stdlib_module_names or top == "__future__", (name, top)


def test_an_import_the_package_cannot_carry_is_refused_at_module_level_and_deferred_in_a_function():
    with pytest.raises(RuntimeVendorError, match="imports load_file from safetensors.torch"):
        rewrite_module("from safetensors.torch import load_file\n", "x.py", {})
    with pytest.raises(RuntimeVendorError, match="imports create_model from asczoo"):
        rewrite_module("from asczoo import create_model\n", "x.py", {})
    lazy = rewrite_module("def save():\n    from asczoo.atomic import atomic_write\n", "x.py", {})
    namespace: dict = {}
    exec(compile(lazy, "x.py", "exec"), namespace)
    with pytest.raises(ImportError, match="not part of this DCASE package"):
        namespace["save"]()
