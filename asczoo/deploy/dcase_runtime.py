"""The code a DCASE inference package carries so that it runs without asczoo (``_runtime/`` in the package).

The organisers install a submission into an environment with the template's requirements only (torch,
torchaudio, numpy, soundfile, pandas, scikit-learn, torchinfo, ...). So the package holds, in
``<package>/_runtime/``:

* ``network_<device>.py``: each device model as ``torch.nn`` layers and its traced forward pass
  (:mod:`asczoo.deploy.standalone_network`), its weights in ``resources/<device>/network.safetensors``;
* the model's frontend and what it needs, copied from asczoo's own source: ``dsp.py``, ``audio.py``
  (reading WAV/FLAC with soundfile), ``interfaces.py``, the frontend plugin's module as ``frontend.py``
  and ``_support.py`` (the few functions they import from elsewhere in asczoo, copied one by one);
  every ``from asczoo... import`` in them is rewritten to the copy, and one that has no copy is
  refused (:class:`RuntimeVendorError`), so the package never imports asczoo;
* ``runtime.py`` (:data:`RUNTIME_SOURCE`): a reader of safetensors files (the format is a length, a
  JSON header and raw little-endian tensors; the ``safetensors`` package is not among the template's
  requirements, and nothing is unpickled), the device-model container and the template's functions.
"""

from __future__ import annotations

import ast
import inspect
import sys
from typing import Callable, Mapping

from asczoo import dsp, interfaces
from asczoo.data import audio, frontend as frontend_module
from asczoo import inference

#: asczoo modules copied whole into ``_runtime/`` (module name -> file name there)
_WHOLE = {dsp: "dsp", audio: "audio", interfaces: "interfaces"}
WHOLE_MODULES = {module.__name__: short for module, short in _WHOLE.items()}
#: single functions copied into ``_runtime/_support.py`` (module -> functions); with the constants below
SUPPORT_FUNCTIONS: Mapping[str, tuple[Callable, ...]] = {
    frontend_module.__name__: (frontend_module.segment_starts,),
    inference.__name__: (inference.clip_windows,),
}
#: names ``_support.py`` re-exports from the whole-module copies
SUPPORT_REEXPORTS = {"MIN_SAMPLE_RATE": "audio", "MAX_SAMPLE_RATE": "audio", "Frontend": "interfaces"}
#: modules a copied file may import besides the standard library and its own copies
ALLOWED_IMPORTS = ("torch", "numpy", "soundfile")


class RuntimeVendorError(ValueError):
    """A module cannot be copied into a package: it imports something the package cannot carry."""


def _support_source() -> str:
    parts = ['"""What the copied modules import from elsewhere in asczoo, copied here one by one."""', "",
             "from __future__ import annotations", "", "import torch", ""]
    parts += [f"from .{module} import {name}  # noqa: F401" for name, module in sorted(SUPPORT_REEXPORTS.items())]
    parts += ["", "", "def hookimpl(function=None, **options):",
              '    """asczoo\'s plugin marker (pluggy) is not needed to run a frontend: a no-op here."""',
              "    return function if function is not None else (lambda f: f)", ""]
    for functions in SUPPORT_FUNCTIONS.values():
        for function in functions:
            parts += ["", inspect.getsource(function)]
    return "\n".join(parts)


def _names() -> dict[str, str]:
    """Every name a copied module may import from asczoo -> the copy that has it."""
    names = {name: "_support" for name in SUPPORT_REEXPORTS}
    names["hookimpl"] = "_support"
    for functions in SUPPORT_FUNCTIONS.values():
        names.update({f.__name__: "_support" for f in functions})
    return names


def _is_stdlib(name: str) -> bool:
    return name.split(".")[0] in sys.stdlib_module_names or name == "__future__"


def rewrite_module(source: str, origin: str, whole: Mapping[str, str]) -> str:
    """``source`` of module ``origin`` with its asczoo imports pointed at the copies in ``_runtime/``.

    ``whole`` maps the modules copied whole to their file names there. An import of anything else
    than the standard library, :data:`ALLOWED_IMPORTS` and those copies is refused."""
    tree = ast.parse(source)
    names = _names()
    nested = {id(node) for function in ast.walk(tree) if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
              for node in ast.walk(function) if isinstance(node, (ast.Import, ast.ImportFrom))}

    def uncarried(node, what: str):
        """An import the package cannot carry: refused at module level; inside a function (a path the
        runtime does not take, such as writing audio) it becomes an ImportError raised if called."""
        if id(node) not in nested:
            raise RuntimeVendorError(f"{origin} imports {what}, which a DCASE package cannot carry "
                                     "(only torch, numpy, soundfile and asczoo's frontend code)")
        message = ast.Constant(f"{what} is not part of this DCASE package (copied from {origin})")
        return ast.Raise(exc=ast.Call(func=ast.Name("ImportError", ast.Load()), args=[message], keywords=[]))

    class Rewrite(ast.NodeTransformer):
        def visit_Import(self, node: ast.Import):
            for alias in node.names:
                if not (_is_stdlib(alias.name) or alias.name.split(".")[0] in ALLOWED_IMPORTS):
                    return uncarried(node, alias.name)
            return node

        def visit_ImportFrom(self, node: ast.ImportFrom):
            module = node.module or ""
            if node.level or _is_stdlib(module) or module.split(".")[0] in ALLOWED_IMPORTS:
                return node
            out = []
            for alias in node.names:
                dotted = f"{module}.{alias.name}"
                if dotted in whole:
                    out.append(ast.ImportFrom(module=None, names=[ast.alias(whole[dotted], alias.asname or alias.name)
                                                                  if whole[dotted] != alias.name else
                                                                  ast.alias(alias.name, alias.asname)], level=1))
                elif module in whole:
                    out.append(ast.ImportFrom(module=whole[module], names=[alias], level=1))
                elif alias.name in names:
                    out.append(ast.ImportFrom(module=names[alias.name], names=[alias], level=1))
                else:
                    return uncarried(node, f"{alias.name} from {module}")
            return out

    tree = ast.fix_missing_locations(Rewrite().visit(tree))
    header = (f'# Copied by asczoo package from {origin} (asczoo, Apache-2.0), imports pointed at this folder.\n')
    return header + ast.unparse(tree) + "\n"


def runtime_files(frontend: object) -> dict[str, str]:
    """File name -> source of ``_runtime/`` for a model with ``frontend`` (networks not included)."""
    origin = inspect.getmodule(type(frontend))
    if origin is None or origin.__name__ in WHOLE_MODULES:
        raise RuntimeVendorError(f"frontend {type(frontend).__name__}: its module cannot be copied")
    files = {}
    for module, short in _WHOLE.items():
        files[f"{short}.py"] = rewrite_module(inspect.getsource(module), module.__name__, WHOLE_MODULES)
    files["_support.py"] = rewrite_module(_support_source(), "asczoo (functions)", WHOLE_MODULES)
    files["frontend.py"] = rewrite_module(inspect.getsource(origin), origin.__name__, WHOLE_MODULES)
    files["runtime.py"] = RUNTIME_SOURCE.replace("__FRONTEND_CLASS__", type(frontend).__name__)
    files["__init__.py"] = '"""Inference runtime of this package, written by asczoo package (torch only)."""\n'
    return files


RUNTIME_SOURCE = '''"""Inference runtime of this DCASE 2025 Task 1 package, written by asczoo package.

It needs torch, numpy and soundfile only: the networks are torch.nn layers (network_<device>.py), the
frontend is a copy of asczoo's (frontend.py and what it imports), weights are safetensors files read
below (no pickle).
"""

from __future__ import annotations

import json
import math
import struct
from importlib import import_module
from pathlib import Path

import torch

from . import frontend as _frontend
from ._support import clip_windows
from .audio import read_audio

GENERAL = "general"
FRONTEND_CLASS = "__FRONTEND_CLASS__"
_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


def read_safetensors(path) -> dict:
    """The tensors of a safetensors file: 8 bytes of header length, a JSON header, the raw data."""
    data = Path(path).read_bytes()
    if len(data) < 8:
        raise ValueError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
    (length,) = struct.unpack("<Q", data[:8])
    if length > len(data) - 8:
        raise ValueError(f"{path}: the header claims {length} bytes, the file has {len(data) - 8} after the length")
    header = json.loads(data[8:8 + length].decode("utf-8"))
    body = memoryview(data)[8 + length:]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(entry.get("dtype"))
        shape = [int(s) for s in entry.get("shape", [])]
        start, end = (int(v) for v in entry.get("data_offsets", (0, -1)))
        size = torch.empty((), dtype=dtype).element_size() if dtype is not None else 0
        if dtype is None or not 0 <= start <= end <= len(body) or end - start != math.prod(shape) * size:
            raise ValueError(f"{path}: tensor {name!r} has a bad entry {entry}")
        raw = bytearray(body[start:end])
        tensors[name] = (torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)).reshape(shape)
    return tensors


class DeviceModels(torch.nn.Module):
    """One network per recording device plus the general one for every other device."""

    def __init__(self, models: dict, classes: list, frontend_config: dict) -> None:
        super().__init__()
        self.models = torch.nn.ModuleDict(models)
        self.model = self.models  # the template saves load_model().model.state_dict()
        self.classes = list(classes)
        self.frontend_config = dict(frontend_config)

    def for_device(self, device_id: str) -> torch.nn.Module:
        return self.models[device_id] if device_id in self.models else self.models[GENERAL]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.models[GENERAL](x)


def load_models(directory) -> DeviceModels:
    """The networks of a resources folder: general/ and one folder per device, each with config.json
    and network.safetensors; the network code is this package's network_<device>.py."""
    root = Path(directory)
    folders = {p.name: p for p in sorted(root.iterdir()) if (p / "network.safetensors").is_file()} if root.is_dir() else {}
    if GENERAL not in folders:
        raise FileNotFoundError(f"{root}: expected {GENERAL}/network.safetensors (a resources folder of this package)")
    models, classes, frontend_config = {}, None, None
    for device, folder in folders.items():
        try:
            code = import_module(f"{__package__}.network_{device}")
        except ModuleNotFoundError:
            raise FileNotFoundError(f"{folder}: this package has no network for device {device!r}") from None
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if classes is None:
            classes, frontend_config = config["classes"], config["frontend"]
        elif config["classes"] != classes or config["frontend"] != frontend_config:
            raise ValueError(f"{folder}: other classes or another frontend than {GENERAL}")
        network = code.Network()
        state = read_safetensors(folder / "network.safetensors")
        network.load_state_dict(state, strict=True, assign=True)
        models[device] = network.eval()
    return DeviceModels(models, classes, frontend_config).eval()


def model_frontend(model: DeviceModels):
    options = {k: v for k, v in model.frontend_config.items() if k != "plugin"}
    return getattr(_frontend, FRONTEND_CLASS)(**options)


def load_inputs(file_paths, device_ids, model: DeviceModels) -> list:
    """Model inputs (W, N, C, F, T) per file, with the model's frontend (as asczoo predict computes them)."""
    if len(file_paths) != len(device_ids):
        raise ValueError(f"{len(file_paths)} files but {len(device_ids)} device ids; expected one device id per file")
    frontend = model_frontend(model)
    inputs = []
    for path in file_paths:
        waveform, rate = read_audio(path)
        inputs.append(clip_windows(frontend, waveform, rate))
    return inputs


def _dtype(network: torch.nn.Module) -> torch.dtype:
    return next((p.dtype for p in network.parameters() if p.is_floating_point()), torch.float32)


@torch.no_grad()
def predict(file_paths, device_ids, model: DeviceModels, *, use_cuda: bool = False):
    """Logits per file (log of the mean window probabilities) and the class order."""
    device = torch.device("cuda" if use_cuda and torch.cuda.is_available() else "cpu")
    model = model.to(device)
    logits = []
    for windows, device_id in zip(load_inputs(file_paths, device_ids, model), device_ids):
        network = model.for_device(device_id).eval()
        out = network(windows.to(device=device, dtype=_dtype(network)))
        probabilities = torch.softmax(out.float(), dim=-1).mean(0)
        logits.append(torch.log(probabilities.clamp_min(1e-12)).cpu())
    return logits, list(model.classes)
'''
