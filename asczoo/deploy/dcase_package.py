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
import sys
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from asczoo.stored_weights import held_as_stored, scheme_of
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
        # the template's evaluate_submission.py saves ``load_model().model.state_dict()``
        self.model = self.models
        for device, model in self.models.items():
            if list(model.classes) != list(general.classes) or dict(model.frontend_config) != dict(general.frontend_config):
                raise ValueError(f"device model {device!r} has other classes or another frontend than the general model")
        self.classes = list(general.classes)

    def for_device(self, device_id: str) -> nn.Module:
        return self.models[device_id] if device_id in self.models else self.models[GENERAL]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.models[GENERAL](x)


def _model_dtype(model: nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def load_models(directory: str | os.PathLike) -> DeviceModels:
    """:class:`DeviceModels` from a packaged ``resources`` folder (``general/`` and ``<device>/``), or a
    single saved model folder (then the general model for every device)."""
    from asczoo.models.pretrained import from_pretrained

    root = Path(directory)
    if (root / "config.json").is_file():
        return DeviceModels({GENERAL: held_as_stored(from_pretrained(root, device="cpu"))}).eval()
    folders = {p.name: p for p in sorted(root.iterdir()) if (p / "config.json").is_file()} if root.is_dir() else {}
    if GENERAL not in folders:
        raise FileNotFoundError(f"{root}: expected a saved model folder or a resources folder with {GENERAL}/config.json")
    return DeviceModels({name: held_as_stored(from_pretrained(path, device="cpu")) for name, path in folders.items()}).eval()


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
def predict(file_paths: Sequence[str], device_ids: Sequence[str], model: DeviceModels, *,
            use_cuda: bool = False) -> tuple[list[torch.Tensor], list[str]]:
    """Logits per file (``log`` of the mean window probabilities) and the class order; on the GPU when
    ``use_cuda`` and one is present (the template's ``evaluate_submission.py`` passes it)."""
    device = torch.device("cuda" if use_cuda and torch.cuda.is_available() else "cpu")
    model = model.to(device)
    logits = []
    for windows, device_id in zip(load_inputs(file_paths, device_ids, model), device_ids):
        sub = model.for_device(device_id).eval()
        out = sub(windows.to(device=device, dtype=_model_dtype(sub)))
        probabilities = torch.softmax(out.float(), dim=-1).mean(0)
        logits.append(torch.log(probabilities.clamp_min(1e-12)).cpu())
    return logits, list(model.classes)


# -- writing a package ------------------------------------------------------------------------------------

_MODULE = '''"""DCASE 2025 Task 1 submission module {name}, generated by asczoo {version} (`asczoo package`).

The four functions of the DCASE 2025 Task 1 inference API. The package needs torch, numpy and
soundfile only: the networks, the frontend and the loader are in ``_runtime/`` (written from asczoo's
own code), the weights and their complexity in ``resources/`` (see ``resources/complexity.json``).
"""

from __future__ import annotations

from importlib import resources as _resources
from typing import List, Optional, Tuple

import torch

from ._runtime import runtime as _runtime


def _resources_dir() -> str:
    return str(_resources.files(__package__) / "resources")


def load_model(model_file_path: Optional[str] = None) -> torch.nn.Module:
    """The packaged models (one per device and a general one), or those in ``model_file_path``."""
    return _runtime.load_models(model_file_path or _resources_dir())


def load_inputs(file_paths: List[str], device_ids: List[str], model: torch.nn.Module) -> List[torch.Tensor]:
    return _runtime.load_inputs(file_paths, device_ids, model)


def get_model_for_device(model: torch.nn.Module, device_id: str) -> torch.nn.Module:
    return model.for_device(device_id)


def predict(file_paths: List[str], device_ids: List[str], model_file_path: Optional[str] = None,
            use_cuda: bool = True) -> Tuple[List[torch.Tensor], List[str]]:
    return _runtime.predict(file_paths, device_ids, load_model(model_file_path), use_cuda=use_cuda)
'''

_PYPROJECT = '''[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "{package}"
version = "1.0.0"
description = "DCASE 2025 Task 1 inference package {name} (generated by asczoo {version})"
requires-python = ">=3.10"
# only what the DCASE 2025 inference template's requirements already hold: the model code travels in
# {package}/_runtime (torch.nn layers, the frontend copied from asczoo), the weights as safetensors
dependencies = ["torch", "numpy", "soundfile"]

[tool.setuptools]
packages = ["{package}", "{package}.resources", "{package}._runtime"]

[tool.setuptools.package-data]
{package} = ["resources/*.json", "resources/*.wav", "resources/*.csv", "resources/*/*.json",
             "resources/*/*.safetensors", "resources/*/*.md"]
'''


MANIFEST = "asczoo-package.json"


class PackageRefused(ValueError):
    """A package ``asczoo package`` will not write; the message names the reason and the rule."""


def _refuse_int8(models: Mapping[str, nn.Module]) -> None:
    for device, model in models.items():
        if scheme_of(model) == "int8":
            raise PackageRefused(
                f"device model {device!r} is int8 (asczoo quantize): the official DCASE 2025 complexity check "
                "(torchinfo in the inference template's complexity.py) cannot see torch's quantized modules and "
                "counts 0 MACs and almost no parameter bytes for it, and the rules require the complexity the "
                "organisers' tool reports to be the model's; package the fp32 or fp16 model instead, and state "
                "the int8 figure of `asczoo complexity --precision int8` in the technical report")


def _check_out(target: Path, sources: Sequence[str | os.PathLike], overwrite: bool) -> None:
    """Refuse an ``--out`` that is, contains or lies inside a folder the package is read from, and a
    non-empty one that an earlier ``asczoo package`` did not write (its manifest lists every file)."""
    resolved = target.resolve()
    for source in sources:
        folder = Path(source).resolve()
        if resolved == folder or folder.is_relative_to(resolved) or resolved.is_relative_to(folder):
            raise PackageRefused(
                f"--out {target}: it is, contains or lies inside {source}, which the package is read from; "
                "writing there (with --overwrite or not) could replace the run itself; choose a folder outside it")
    if not target.exists():
        return
    if not target.is_dir():
        raise FileExistsError(f"--out {target} exists and is not a directory")
    present = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file() or p.is_symlink())
    if not present:
        return
    if not overwrite:
        raise FileExistsError(f"{target} exists and is not empty; choose another --out or pass --overwrite")
    try:
        listed = set(json.loads((target / MANIFEST).read_text(encoding="utf-8"))["files"])
    except (OSError, ValueError, KeyError, TypeError):
        raise FileExistsError(f"--overwrite: {target} has no {MANIFEST}, so asczoo package did not write it; "
                              "--overwrite only replaces an earlier package; choose another --out") from None
    foreign = [f for f in present if f != MANIFEST and f not in listed]
    if foreign:
        raise FileExistsError(f"--overwrite: {target} holds {foreign[0]!r}, which asczoo package did not write "
                              f"(not in its {MANIFEST}); remove it or choose another --out")


def _dummy_wav(path: Path, model: nn.Module) -> None:
    """One clip of quiet noise at the model's sample rate and clip length: the template's
    ``test_complexity.py`` runs ``load_inputs`` on ``resources/dummy.wav`` for every device."""
    import io

    import numpy as np
    import soundfile

    from asczoo.atomic import atomic_write

    config = dict(model.frontend_config)
    rate = int(config.get("sample_rate", 32000))
    samples = int(round(float(config.get("clip_seconds") or 1.0) * rate))
    noise = 0.01 * np.random.default_rng(0).standard_normal(samples).astype(np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, noise, rate, format="WAV", subtype="PCM_16")
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getvalue())


def _write_network(model: nn.Module, device: str, name: str, base: Path) -> None:
    """``_runtime/network_<device>.py`` (torch.nn layers and the traced forward pass, checked against
    the model at batch sizes 1 to 3) and its weights ``resources/<device>/network.safetensors``."""
    from asczoo.atomic import atomic_save_safetensors, atomic_write_text
    from asczoo.deploy.standalone_network import check_network, load_source, network_source

    import copy

    model = held_as_stored(copy.deepcopy(model)).eval()  # an fp16 model runs (and is counted) in fp16, as saved
    dtype = _model_dtype(model)
    example = torch.randn((2, *model.input_shape)).to(dtype)
    source = network_source(model, example, docstring=f"Network of device model {device!r} of {name} "
                                                      f"({getattr(model, 'name', '')}), generated by asczoo {__version__}.")
    check_network(source, model, example, atol=1e-2 if dtype == torch.float16 else 1e-4)
    keys = load_source(source).Network().state_dict().keys()
    state = model.state_dict()
    atomic_save_safetensors({k: state[k].detach().contiguous() for k in keys},
                            base / "resources" / device / "network.safetensors")
    atomic_write_text(base / "_runtime" / f"network_{device}.py", source)


def _check_package(staging: Path, package: str, name: str, container: DeviceModels) -> None:
    """Import the written package (from the staging folder, not installed) and compare what its
    ``load_inputs`` and ``predict`` give on ``resources/dummy.wav`` with asczoo's own; refuse the
    package (:class:`PackageRefused`) on any difference."""
    import importlib.util
    import uuid

    from asczoo.data.audio import read_audio
    from asczoo.inference import clip_windows, model_frontend

    alias = f"_asczoo_package_check_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(alias, staging / package / "__init__.py",
                                                  submodule_search_locations=[str(staging / package)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[alias] = module
    try:
        spec.loader.exec_module(module)
        api = importlib.import_module(f"{alias}.{name}")
        dummy = str(staging / package / "resources" / "dummy.wav")
        packaged = api.load_model()
        devices = sorted(container.models)
        theirs = api.load_inputs([dummy] * len(devices), devices, packaged)
        ours = clip_windows(model_frontend(container.models[GENERAL]), *read_audio(dummy))
        if any(t.shape != ours.shape or not torch.equal(t, ours) for t in theirs):
            raise PackageRefused("the package's copied frontend computes other inputs than asczoo's on dummy.wav")
        logits, classes = api.predict([dummy] * len(devices), devices, use_cuda=False)
        want, _ = predict([dummy] * len(devices), devices, container)
        tolerance = 2e-2 if any(scheme_of(m) == "fp16" for m in container.models.values()) else 1e-4
        if classes != container.classes or not all(torch.allclose(a, b, atol=tolerance) for a, b in zip(logits, want)):
            raise PackageRefused("the package's predictions on dummy.wav differ from asczoo's")
    finally:
        for key in [k for k in sys.modules if k == alias or k.startswith(alias + ".")]:
            del sys.modules[key]



def write_package(name: str, models: Mapping[str, nn.Module], out: str | os.PathLike, *,
                  overwrite: bool = False, sources: Sequence[str | os.PathLike] = (),
                  test_csv: str | os.PathLike | None = None) -> Path:
    """Write the package for submission ``name`` (``Lastname_INST_task1_1``) with ``models``
    (``general`` and optional per-device models) into ``out``; built in a temporary folder beside it
    and moved into place at the end, so a failure leaves nothing half-written. ``sources``: the run and
    model folders read (``out`` may not be, contain or lie inside one); ``test_csv``: the test split
    (tab-separated, ``filename`` column) copied to ``resources/test.csv``, which the template's
    ``evaluate_submission.py`` reads instead of downloading the official one."""
    from asczoo.atomic import atomic_directory, atomic_write, atomic_write_text
    from asczoo.analysis.complexity import measure

    match = NAME_RE.match(name)
    if not match:
        raise ValueError(f"--name {name!r}: expected a DCASE submission label with index, Lastname_INST_task1_N "
                         "(N = 1 to 4), e.g. Schmid_CPJKU_task1_1")
    package = match.group(1)
    unknown = sorted(set(models) - {GENERAL, *DEVICES})
    if unknown:
        raise ValueError(f"device models {unknown}: expected devices among {', '.join(DEVICES)} (and {GENERAL!r})")
    _refuse_int8(models)
    container = DeviceModels(models)  # checks classes and frontends agree
    test_bytes = None
    if test_csv is not None:
        test_bytes = Path(test_csv).read_bytes()
        if "filename" not in test_bytes.decode("utf-8", "replace").splitlines()[0].split("\t"):
            raise ValueError(f"--test-csv {test_csv}: expected a tab-separated table with a 'filename' column")
    target = Path(out)
    _check_out(target, sources, overwrite)
    with atomic_directory(target) as staging:
        base = staging / package
        complexity = {}
        for device, model in container.models.items():
            model.save_pretrained(base / "resources" / device)
            _write_network(model, device, name, base)
            precision = scheme_of(model) or "fp32"
            result = measure(model, precision=precision)
            complexity[device] = {"MACs": result.macs_per_clip, "Params": result.parameters,
                                  "param_bytes": result.parameter_bytes, **result.to_dict()}
        text = json.dumps({"submission": name, "models": complexity}, indent=2) + "\n"
        atomic_write_text(base / "resources" / "complexity.json", text)
        atomic_write_text(base / "resources" / "__init__.py", '"""Models, dummy.wav and test split of the package."""\n')
        _dummy_wav(base / "resources" / "dummy.wav", container.models[GENERAL])
        if test_bytes is not None:
            with atomic_write(base / "resources" / "test.csv", "wb") as handle:
                handle.write(test_bytes)
        atomic_write_text(staging / "complexity.json", text)
        from asczoo.deploy.dcase_runtime import runtime_files
        from asczoo.inference import model_frontend

        for file, source in runtime_files(model_frontend(container.models[GENERAL])).items():
            atomic_write_text(base / "_runtime" / file, source)
        atomic_write_text(base / "__init__.py", f'"""DCASE 2025 Task 1 inference package {package} (asczoo {__version__})."""\n')
        atomic_write_text(base / f"{name}.py", _MODULE.format(name=name, version=__version__))
        atomic_write_text(staging / "pyproject.toml", _PYPROJECT.format(package=package, name=name, version=__version__))
        atomic_write_text(staging / "README.md",
                          f"# {package}\n\nDCASE 2025 Task 1 inference package, submission module `{package}.{name}`, "
                          f"generated by asczoo {__version__}.\n\n    pip install .\n\n```python\n"
                          f"from {package} import {name} as submission\nlogits, classes = "
                          "submission.predict(file_paths, device_ids)\n```\n")
        _check_package(staging, package, name, container)
        written = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*")
                         if p.is_file() and "__pycache__" not in p.parts)
        atomic_write_text(staging / MANIFEST, json.dumps({"written_by": f"asczoo {__version__} package",
                                                          "submission": name, "files": written}, indent=2) + "\n")
    return target
