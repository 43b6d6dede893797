"""DCASE 2025 Task 1 inference packages: ``asczoo package RUN --name Lastname_INST_task1_1 --out DIR``.

The challenge asks for an installable Python package whose submission module implements four
functions (the CP-JKU ``dcase2025_task1_inference`` template's API):

* ``load_model(model_file_path=None) -> nn.Module``: the packaged models, or those in ``model_file_path``;
* ``load_inputs(file_paths, device_ids, model) -> list[Tensor]``: model inputs per file;
* ``get_model_for_device(model, device_id) -> nn.Module``: the model for one recording device, the
  general model for a device it has none for (``"unknown"`` included);
* ``predict(file_paths, device_ids, model_file_path=None) -> (list[Tensor], list[str])``: one logit
  vector per file, in input order, and the class order.

The generated package (``DIR/pyproject.toml``, ``DIR/<Lastname_INST_task1>/<name>.py`` and
``resources/``) holds each model as ``config.json`` + ``model.safetensors`` (``resources/general/``,
``resources/<device>/``) and ``complexity.json`` (:mod:`asczoo.analysis.complexity`, per device model); its
module is a thin layer over :class:`DeviceModels` and the functions below, so inputs are computed
exactly as ``asczoo predict`` computes them (the model's own frontend, the same windows). A file
longer than the model's clip gives several windows; its logits are ``log`` of the mean window
probabilities, so ``softmax(logits)`` is what ``asczoo predict`` reports.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from asczoo.version import __version__

NAME_RE = re.compile(r"^([A-Z][A-Za-z-]*_[A-Za-z0-9-]+_task1)_([1-4])\Z")  # \Z: "$" also matches before a final newline
GENERAL = "general"
DEVICES = ("a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6")


class DeviceModels(nn.Module):
    """One model per recording device plus the ``general`` model for every other device."""

    def __init__(self, models: Mapping[str, nn.Module]) -> None:
        super().__init__()
        if GENERAL not in models:
            raise ValueError(f"DeviceModels needs a {GENERAL!r} model for unknown devices; got {sorted(models)}")
        self.models = nn.ModuleDict(dict(models))
        general = self.models[GENERAL]
        for device, model in self.models.items():
            if list(model.classes) != list(general.classes) or dict(model.frontend_config) != dict(general.frontend_config):
                raise ValueError(f"device model {device!r} has other classes or another frontend than the general model")
        self.classes = list(general.classes)

    def for_device(self, device_id: str) -> nn.Module:
        return self.models[device_id] if device_id in self.models else self.models[GENERAL]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.models[GENERAL](x)


def load_models(directory: str | os.PathLike) -> DeviceModels:
    """:class:`DeviceModels` from a packaged ``resources`` folder (``general/`` and ``<device>/``), or a
    single saved model folder (then the general model for every device)."""
    from asczoo.models.pretrained import from_pretrained

    root = Path(directory)
    if (root / "config.json").is_file():
        return DeviceModels({GENERAL: from_pretrained(root, device="cpu")}).eval()
    folders = {p.name: p for p in sorted(root.iterdir()) if (p / "config.json").is_file()} if root.is_dir() else {}
    if GENERAL not in folders:
        raise FileNotFoundError(f"{root}: expected a saved model folder or a resources folder with {GENERAL}/config.json")
    return DeviceModels({name: from_pretrained(path, device="cpu") for name, path in folders.items()}).eval()


def load_inputs(file_paths: Sequence[str], device_ids: Sequence[str], model: DeviceModels) -> list[torch.Tensor]:
    """Model inputs ``(W, N, C, F, T)`` per file, with the model's frontend (as ``asczoo predict``)."""
    from asczoo.data.audio import read_audio
    from asczoo.inference import clip_windows, model_frontend

    if len(file_paths) != len(device_ids):
        raise ValueError(f"{len(file_paths)} files but {len(device_ids)} device ids; expected one device id per file")
    frontend = model_frontend(model.for_device(GENERAL))
    inputs = []
    for path in file_paths:
        waveform, rate = read_audio(path)
        inputs.append(clip_windows(frontend, waveform, rate))
    return inputs


@torch.no_grad()
def predict(file_paths: Sequence[str], device_ids: Sequence[str], model: DeviceModels,
            ) -> tuple[list[torch.Tensor], list[str]]:
    """Logits per file (``log`` of the mean window probabilities) and the class order."""
    logits = []
    for windows, device in zip(load_inputs(file_paths, device_ids, model), device_ids):
        sub = model.for_device(device).eval()
        probabilities = torch.softmax(sub(windows).float(), dim=-1).mean(0)
        logits.append(torch.log(probabilities.clamp_min(1e-12)))
    return logits, list(model.classes)


# -- writing a package ------------------------------------------------------------------------------------

_MODULE = '''"""DCASE 2025 Task 1 submission module {name}, generated by asczoo {version} (`asczoo package`).

The four functions of the DCASE 2025 Task 1 inference API; the models and their complexity are in
``resources/`` (see ``resources/complexity.json``).
"""

from __future__ import annotations

from importlib import resources as _resources
from typing import List, Optional, Tuple

import torch

from asczoo.deploy import dcase_package as _package


def _resources_dir() -> str:
    return str(_resources.files(__package__) / "resources")


def load_model(model_file_path: Optional[str] = None) -> torch.nn.Module:
    """The packaged models (one per device and a general one), or those in ``model_file_path``."""
    return _package.load_models(model_file_path or _resources_dir())


def load_inputs(file_paths: List[str], device_ids: List[str], model: torch.nn.Module) -> List[torch.Tensor]:
    return _package.load_inputs(file_paths, device_ids, model)


def get_model_for_device(model: torch.nn.Module, device_id: str) -> torch.nn.Module:
    return model.for_device(device_id)


def predict(file_paths: List[str], device_ids: List[str],
            model_file_path: Optional[str] = None) -> Tuple[List[torch.Tensor], List[str]]:
    return _package.predict(file_paths, device_ids, load_model(model_file_path))
'''

_PYPROJECT = '''[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "{package}"
version = "1.0.0"
description = "DCASE 2025 Task 1 inference package {name} (generated by asczoo {version})"
requires-python = ">=3.10"
# the models are asczoo models: the frontend, the layers and the loader come from it
dependencies = ["asczoo=={version}", "torch"]

[tool.setuptools]
packages = ["{package}"]

[tool.setuptools.package-data]
{package} = ["resources/*.json", "resources/*/*.json", "resources/*/*.safetensors", "resources/*/*.md"]
'''


def write_package(name: str, models: Mapping[str, nn.Module], out: str | os.PathLike, *,
                  overwrite: bool = False) -> Path:
    """Write the package for submission ``name`` (``Lastname_INST_task1_1``) with ``models``
    (``general`` and optional per-device models) into ``out``; built in a temporary folder beside it
    and moved into place at the end, so a failure leaves nothing half-written."""
    from asczoo.atomic import atomic_write_text
    from asczoo.analysis.complexity import measure

    match = NAME_RE.match(name)
    if not match:
        raise ValueError(f"--name {name!r}: expected a DCASE submission label with index, Lastname_INST_task1_N "
                         "(N = 1 to 4), e.g. Schmid_CPJKU_task1_1")
    package = match.group(1)
    unknown = sorted(set(models) - {GENERAL, *DEVICES})
    if unknown:
        raise ValueError(f"device models {unknown}: expected devices among {', '.join(DEVICES)} (and {GENERAL!r})")
    container = DeviceModels(models)  # checks classes and frontends agree
    target = Path(out)
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise FileExistsError(f"{target} exists and is not empty; choose another --out or pass --overwrite")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        base = staging / package
        complexity = {}
        for device, model in container.models.items():
            model.save_pretrained(base / "resources" / device)
            result = measure(model, precision="int8" if getattr(model, "quantization", None) else "fp32")
            complexity[device] = {"MACs": result.macs_per_clip, "Params": result.parameters,
                                  "param_bytes": result.parameter_bytes, **result.to_dict()}
        text = json.dumps({"submission": name, "models": complexity}, indent=2) + "\n"
        atomic_write_text(base / "resources" / "complexity.json", text)
        atomic_write_text(staging / "complexity.json", text)
        atomic_write_text(base / "__init__.py", f'"""DCASE 2025 Task 1 inference package {package} (asczoo {__version__})."""\n')
        atomic_write_text(base / f"{name}.py", _MODULE.format(name=name, version=__version__))
        atomic_write_text(staging / "pyproject.toml", _PYPROJECT.format(package=package, name=name, version=__version__))
        atomic_write_text(staging / "README.md",
                          f"# {package}\n\nDCASE 2025 Task 1 inference package, submission module `{package}.{name}`, "
                          f"generated by asczoo {__version__}.\n\n    pip install .\n\n```python\n"
                          f"from {package} import {name} as submission\nlogits, classes = "
                          "submission.predict(file_paths, device_ids)\n```\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
