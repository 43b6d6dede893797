"""What asczoo runs on, and why a dependency failed: the ``asczoo doctor`` report and load-failure hints.

A failed import is named at its cause: which distribution failed, the installed versions of it and of
torch, and the ``pip install`` that fixes it. The plugin host attaches :func:`diagnose` to every
plugin load failure, so ``no frontend named 'dcase-logmel'`` is never the first thing a user reads.
"""

from __future__ import annotations

import os
import sys
import traceback
from importlib import metadata

#: the torch releases CI tests asczoo on (the lock's, and the newest the index served that loads here);
#: pyproject.toml's range admits later ones, which CI's smoke stage tries as they appear
TESTED_TORCH = ("2.11.0", "2.14.1")
#: module name -> distribution name, for the packages asczoo imports (where they differ)
_DISTRIBUTIONS = {"yaml": "pyyaml", "sklearn": "scikit-learn", "huggingface_hub": "huggingface-hub",
                  "hear_validator": "hearvalidator", "tensorflow": "tensorflow-cpu"}
#: listed by version only: importing TensorFlow takes seconds and floods stderr
_NOT_IMPORTED = ("tensorflow-cpu", "hearvalidator")
#: what `asczoo doctor` lists: the core, then the optional extras
CORE = ("torch", "timm", "numpy", "pluggy", "pyyaml", "safetensors", "huggingface-hub", "soundfile",
        "tqdm", "scikit-learn")
OPTIONAL = ("torchaudio", "onnx", "onnxruntime", "onnxscript", "matplotlib", "librosa", "tensorboard",
            "tensorflow-cpu", "hearvalidator")


def _module_of(distribution: str) -> str:
    """The import name of a distribution asczoo reports on."""
    return next((m for m, d in _DISTRIBUTIONS.items() if d == distribution), distribution).replace("-", "_")


def version(distribution: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _failed_module(exc: BaseException) -> str | None:
    """The top-level package whose import failed: ImportError.name, else the innermost site-packages frame."""
    name = getattr(exc, "name", None)
    if isinstance(exc, ImportError) and name:
        return name.split(".")[0]
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    for frame in reversed(frames):
        parts = frame.filename.replace("\\", "/").split("/")
        if "site-packages" in parts:
            rest = parts[parts.index("site-packages") + 1:]
            if rest:
                return rest[0].removesuffix(".py")
    text = str(exc)
    for module in ("torchaudio", "torch", "onnxruntime", "soundfile", "timm", "numpy"):
        if f"lib{module}" in text or f"/{module}/" in text:
            return module
    return None


def fix_for(module: str) -> str:
    """The exact command that repairs a package that fails to import beside this torch."""
    distribution = _DISTRIBUTIONS.get(module, module)
    torch_version = version("torch")
    if module == "torchaudio":
        return ("pip uninstall -y torchaudio  (asczoo does not need it; for the tests' reference, torch 2.11.0 "
                "loads torchaudio==2.11.0 and a CUDA torch 2.14.1 loads torchaudio==2.11.1)")
    if module == "torch":
        return f'pip install --force-reinstall "torch=={torch_version or TESTED_TORCH[-1]}"'
    installed = version(distribution)
    if installed is None:
        return f"pip install {distribution}"
    return f'pip install --force-reinstall --no-deps "{distribution}=={installed}"'


def diagnose(exc: BaseException) -> str:
    """One sentence: the package that failed, installed versions and the fix; '' when it is not a dependency."""
    module = _failed_module(exc)
    if module is None or module in ("asczoo", "asczoo_plugins"):
        return ""
    distribution = _DISTRIBUTIONS.get(module, module)
    installed = version(distribution)
    torch_version = version("torch") or "not installed"
    what = f"{distribution} {installed}" if installed else f"{distribution} (not installed)"
    return (f"the package {distribution!r} failed to load ({what}, torch {torch_version}, Python "
            f"{sys.version.split()[0]}); fix: {fix_for(module)}")


def _import_state(module: str) -> str:
    try:
        __import__(module)
    except Exception as exc:  # noqa: BLE001 - the report shows every failure, whatever it is
        return f"FAILS: {''.join(traceback.format_exception_only(type(exc), exc)).strip()[:200]}"
    return "ok"


def report(records) -> list[str]:
    """The lines of ``asczoo doctor``: versions, import state, ``records`` (the plugin host's), devices, OpenMP."""
    lines = [f"asczoo {version('asczoo')}  Python {sys.version.split()[0]}  {sys.platform}",
             f"torch tested: {', '.join(TESTED_TORCH)} (pyproject admits torch>=2.11,<3)", "packages:"]
    for group, names in (("core", CORE), ("optional", OPTIONAL)):
        for distribution in names:
            installed = version(distribution)
            if installed is None:
                state = "-"
            elif distribution in _NOT_IMPORTED:
                state = "installed (not imported: slow to start)"
            else:
                state = _import_state(_module_of(distribution))
            lines.append(f"  {distribution:16s} {installed or 'not installed':14s} {group:9s} {state}")
    lines.append("plugins:")
    for rec in records:
        lines.append(f"  {rec.name:22s} {rec.status}" + (f": {rec.error}" if rec.error else ""))
    try:
        import torch

        cuda = torch.cuda.is_available()
        lines.append(f"devices: cuda {'yes (' + torch.cuda.get_device_name(0) + ')' if cuda else 'no'}"
                     f" (torch built for CUDA {torch.version.cuda or 'none'}), "
                     f"mps {'yes' if torch.backends.mps.is_available() else 'no'}, "
                     f"cpu threads {torch.get_num_threads()}")
    except Exception as exc:  # noqa: BLE001
        lines.append(f"devices: torch does not load: {exc}")
    lines.append("openmp: " + ", ".join(f"{var}={os.environ.get(var, '(unset)')}" for var in
                                        ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")))
    return lines


def problems(records) -> list[str]:
    """Each failed core package or built-in plugin of ``records``, as a sentence naming the cause and the fix."""
    found = []
    for distribution in CORE:
        try:
            __import__(_module_of(distribution))
        except Exception as exc:  # noqa: BLE001
            found.append(diagnose(exc) or f"{distribution}: {exc}")
    for rec in records:
        if rec.status == "failed" and "(asczoo)" in rec.source:
            found.append(f"built-in plugin {rec.name!r} failed: {rec.error}")
    return found
