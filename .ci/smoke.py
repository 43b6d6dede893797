"""CI's smoke stage: asczoo beside the newest torch the index serves (a fresh, unlocked install).

Builds a model, runs the frontend on a real-length clip, takes one training step and exports to ONNX;
any failure exits non-zero, so the next torch release is caught by CI rather than by a user.
"""

import sys
import tempfile

import torch

import asczoo
from asczoo import plugins
from asczoo.deploy.export import export_onnx
from asczoo.testing import tiny_overrides

failed = [r for r in plugins.plugin_records() if r.status == "failed"]
assert not failed, f"plugins failed beside torch {torch.__version__}: {[(r.name, r.error) for r in failed]}"
frontend = asczoo.create_frontend("dcase-logmel")
features = frontend.batch(torch.randn(2, 2, 441000) * 0.1, 44100)  # two 10 s 44.1 kHz stereo clips
assert features.shape == (2, 8, 3, 128, 80), features.shape
model = asczoo.create_model("atresn-net-resnet18", num_classes=4, overrides=tiny_overrides())
model.train()
optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
x = torch.randn(3, *model.input_shape)
loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2]))
loss.backward()
optimiser.step()
assert torch.isfinite(loss), loss
model.eval()
with tempfile.TemporaryDirectory() as tmp:
    result = export_onnx(model, f"{tmp}/model.onnx")
print(f"smoke: torch {torch.__version__}: frontend, model, one training step and ONNX export passed ({result})")
sys.exit(0)
