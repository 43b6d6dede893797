"""Model folders and the Hugging Face Hub: find, download, read and write them; never build a model.

``save_pretrained`` and ``push_to_hub`` write and upload a model's folder; ``resolve_files``,
``read_config`` and ``read_weights`` find and read one (:mod:`asczoo.models.pretrained` builds the
model from what they return: ``asczoo.from_pretrained``).

The format follows huggingface_hub's ``PyTorchModelHubMixin`` (and timm's Hub files); a model folder
holds::

    model.safetensors      the state dict (weights, batch-norm statistics, normalisation buffers)
    config.json            everything else needed to rebuild the model (see below)
    README.md              the model card (:mod:`asczoo.hub.card`), YAML front matter included
    confusion_matrix.png   when training produced one

``config.json`` holds the asczoo version and format, the model name and tag, the resolved recipe
(without the frontend and classes, which it stores once, at its top level; older files repeat them in
the recipe and still load), the class names, the frontend configuration, the normalisation statistics, training metrics and training
details when known, and which plugin (and Python package) provided each part.

Security: only safetensors is ever read. A folder or repository that offers ``.bin``, ``.pt``,
``.pth``, ``.pkl`` or ``.ckpt`` weights instead is refused without opening them. ``config.json`` is
data: the recipe's part names are looked up in the plugin registry (never imported), the recipe is
validated strictly, and an unknown part is an error that names the plugin package to install.

Downloads go through ``huggingface_hub`` (``hf_hub_download``: its cache, ``HF_HUB_OFFLINE``, tokens
from ``HF_TOKEN`` or ``hf auth login``), uploads through ``HfApi`` in one commit. Revisions may be
branch or tag names or commit hashes; the registry pins commits.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

import torch

from asczoo.version import __version__
from asczoo.names import FOLDER, HF_PREFIX, HUB, REPO_ID_RE, parse_model_name

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
#: a config.json larger than this is refused unread (a real one is a few kilobytes)
MAX_CONFIG_BYTES = 16 * 2**20
CARD_NAME = "README.md"
CONFUSION_NAME = "confusion_matrix.png"
REPORT_NAME = "report.json"
#: version of the folder layout and of ``config.json``; a newer one is refused with an upgrade hint
FORMAT_VERSION = 1
#: weight files that would need unpickling; refused, never opened
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")

_CONFIG_KEYS = {
    "asczoo_format", "asczoo_version", "name", "tag", "recipe", "classes", "num_classes", "input_shape",
    "frontend", "metrics", "normalization", "training", "plugins",
    "task", "activation",  # multi-label models say so (the recipe's task); the activation the logits expect
    "quantization",  # int8/fp16 models (asczoo.deploy.quantize): the structure rebuilt before the weights load
}
#: recipe keys that config.json stores only at its top level
STORED_AT_TOP = ("frontend", "classes", "num_classes")
_REQUIRED_KEYS = ("asczoo_format", "name", "recipe", "classes", "frontend")


class UnsafeWeightsError(ValueError):
    """Weights are offered only in a pickle-based format (``.bin``, ``.pt``, ...): refused, not opened."""


class ModelFormatError(ValueError):
    """A saved model is incomplete or inconsistent; the message names the file, field and value."""


# -- saving ------------------------------------------------------------------------------------------


def save_pretrained(
    model,
    save_directory: str | os.PathLike,
    *,
    metrics: Mapping[str, Any] | None = None,
    report: Mapping[str, Any] | str | os.PathLike | None = None,
    confusion_matrix: str | os.PathLike | None = None,
    training: Mapping[str, Any] | None = None,
    repo_id: str | None = None,
    license: str | None = None,
) -> Path:
    """Write ``model`` as a model folder (see the module docstring); returns the folder.

    Args:
        model: an :class:`~asczoo.models.model.AscModel`.
        save_directory: created if needed; files of these names are replaced, others are left alone.
        metrics: evaluation metrics for ``config.json`` (default: ``model.metrics``); the ones
            derived from ``report`` fill in what they do not give.
        report: the evaluation report (a mapping or a ``report.json`` path), see
            :mod:`asczoo.hub.card` for the keys read; it fills the card's results section.
        confusion_matrix: a PNG image, copied as ``confusion_matrix.png`` and shown in the card.
        training: how the model was trained (training recipe, dataset, epochs, ...), for
            ``config.json`` and the card.
        repo_id: the Hub repository the folder is meant for (used in the card's usage snippet).
        license: the card's license identifier (default ``apache-2.0``, asczoo's own).

    Every file is written atomically (a reader sees the old file or the new one, never half of
    one), the weights first and the card last.
    """
    from asczoo.atomic import atomic_save_safetensors, atomic_write, atomic_write_text
    from asczoo.hub.card import render_model_card

    directory = Path(save_directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"save_pretrained: {directory} exists and is not a folder")
    directory.mkdir(parents=True, exist_ok=True)
    report = _read_report(report)
    confusion = Path(confusion_matrix) if confusion_matrix is not None else None
    if confusion is not None and not confusion.is_file():
        raise FileNotFoundError(f"save_pretrained: confusion-matrix image {confusion} does not exist")

    config = model_config(model, metrics=metrics, report=report, training=training)
    from asczoo.stored_weights import stored_state

    atomic_save_safetensors(
        stored_state(model), directory / WEIGHTS_NAME,
        metadata={"format": "pt", "asczoo_version": __version__, "asczoo_model": model.name},
    )
    if confusion is not None:
        if confusion.resolve() != (directory / CONFUSION_NAME).resolve():
            with atomic_write(directory / CONFUSION_NAME, "wb") as f, open(confusion, "rb") as src:
                shutil.copyfileobj(src, f)
    atomic_write_text(directory / CONFIG_NAME, json.dumps(config, indent=2, allow_nan=False) + "\n")
    card = render_model_card(
        config, report=report, confusion_image=CONFUSION_NAME if confusion is not None else None,
        parameters=model.parameter_counts(), repo_id=repo_id, license=license,
        complexity=_complexity_summary(model),
    )
    atomic_write_text(directory / CARD_NAME, card)
    return directory


def _complexity_summary(model) -> str | None:
    """The card's complexity lines (:mod:`asczoo.analysis.complexity`; one no-grad forward pass on one clip,
    the model's train/eval mode restored); None for a model the counter cannot run (no section)."""
    from asczoo.analysis.complexity import measure

    try:
        return measure(model).summary()
    except (RuntimeError, ValueError, TypeError, AttributeError):
        return None


def model_config(
    model,
    *,
    metrics: Mapping[str, Any] | None = None,
    report: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``config.json`` mapping of ``model``: ``model.config`` plus format, statistics, provenance."""
    from asczoo.hub.card import metrics_from_report

    config = {"asczoo_format": FORMAT_VERSION, **model.config}
    config["metrics"] = dict(metrics) if metrics is not None else dict(config.get("metrics") or {})
    if report is not None:  # explicit metrics win over the ones read from the report
        config["metrics"] = {**metrics_from_report(report, config["classes"]), **config["metrics"]}
    config["normalization"] = {
        "mean": model.norm_mean.detach().cpu().tolist(),
        "std": model.norm_std.detach().cpu().tolist(),
    }
    if training is not None:
        config["training"] = dict(training)
    recipe = dict(config["recipe"])
    config["plugins"] = _plugin_provenance({**recipe, "frontend": config["frontend"]})
    # The classes and the frontend are stored once, at the top level; files written before this
    # repeated them inside the recipe, and reading takes the top-level ones either way.
    config["recipe"] = {k: v for k, v in recipe.items() if k not in STORED_AT_TOP}
    if getattr(model, "quantization", None):  # asczoo.stored_weights: the structure to rebuild before loading
        config["quantization"] = dict(model.quantization)
    return _jsonable(config)


def _read_report(report: Mapping[str, Any] | str | os.PathLike | None) -> dict[str, Any] | None:
    if report is None or isinstance(report, Mapping):
        return None if report is None else dict(report)
    path = Path(report)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"report {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"report {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"report {path}: expected a JSON object, got {type(data).__name__}")
    return data


def _plugin_provenance(recipe: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """For each section: the part, the plugin that registered it and that plugin's Python package.

    Informational only (nothing here is ever imported); on loading, it lets the error for a missing
    part say which package to install.
    """
    from asczoo import plugins
    from asczoo.recipes import model_recipes as recipes

    dists = {}
    for ep in metadata.entry_points(group=plugins.ENTRY_POINT_GROUP):
        if ep.dist is not None:
            dists.setdefault(ep.name, ep.dist)
    out: dict[str, dict[str, str]] = {}
    for section, kind in recipes.SECTION_KIND.items():
        spec = recipe.get(section)
        if not isinstance(spec, Mapping) or not isinstance(spec.get("plugin"), str):
            continue
        try:
            part = plugins.get_part(kind, spec["plugin"])
        except plugins.UnknownPartError:
            continue
        entry = {"part": part.name, "plugin": part.owner}
        dist = dists.get(part.owner)
        if dist is not None:
            entry.update(package=dist.name, version=dist.version)
        out[section] = entry
    return out


def _jsonable(value: Any) -> Any:
    """Plain JSON values: tuples to lists, tensors and NumPy values to Python, NaN/inf to None."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):  # tensors, NumPy arrays and scalars
        return _jsonable(value.tolist())
    return str(value)


# -- loading -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelFiles:
    """Where a model's files are: ``config.json``, ``model.safetensors``, and a label for messages."""

    config: Path
    weights: Path
    label: str


def resolve_files(source: str | os.PathLike, *, revision: str | None = None, **download) -> ModelFiles:
    """Find (downloading if needed) ``config.json`` and ``model.safetensors`` for ``source``: a folder
    (``local-dir:PATH`` or a path), ``hf-hub:org/name[@revision]`` or ``org/name``
    (:func:`asczoo.names.parse_model_name`)."""
    text = os.fspath(source)
    parsed = parse_model_name(text, revision)
    if parsed.kind == HUB:
        return _hub_files(parsed.name, parsed.revision, **download)
    path = Path(parsed.name)
    if parsed.kind == FOLDER and path.exists():
        if revision is not None:
            raise ValueError(f"revision={revision!r} applies to Hub repositories, not to the local path {path}")
        return _local_files(path)
    raise FileNotFoundError(
        f"{text}: no such file or folder, and not a Hub repository id ('org/name' or 'hf-hub:org/name')"
    )


def _local_files(path: Path) -> ModelFiles:
    if path.is_file():
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise UnsafeWeightsError(_pickle_refusal(str(path), [path.name]))
        if path.name != WEIGHTS_NAME and path.name != CONFIG_NAME:
            raise ModelFormatError(
                f"{path}: expected a model folder (with {CONFIG_NAME} and {WEIGHTS_NAME}) or one of those files"
            )
        path = path.parent
    config, weights = path / CONFIG_NAME, path / WEIGHTS_NAME
    if not weights.is_file():
        pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            raise UnsafeWeightsError(_pickle_refusal(str(path), pickles))
        raise FileNotFoundError(f"{path}: no {WEIGHTS_NAME} (is this a folder written by save_pretrained?)")
    if not config.is_file():
        raise FileNotFoundError(f"{path}: no {CONFIG_NAME} next to {WEIGHTS_NAME}")
    return ModelFiles(config, weights, str(path))


def _hub_files(
    repo_id: str,
    revision: str | None,
    *,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
) -> ModelFiles:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    label = f"{HF_PREFIX}{repo_id}" + (f"@{revision}" if revision else "")
    kwargs = dict(
        repo_id=repo_id, revision=revision, cache_dir=cache_dir, token=token, force_download=force_download,
        local_files_only=local_files_only, library_name="asczoo", library_version=__version__,
    )
    config = _download(hf_hub_download, CONFIG_NAME, label, kwargs)
    try:
        weights = hf_hub_download(filename=WEIGHTS_NAME, **kwargs)
    except EntryNotFoundError as exc:
        listed = _repo_listing(repo_id, revision, token, Path(config).parent)
        pickles = sorted(f for f in listed if f.lower().endswith(PICKLE_SUFFIXES))
        if pickles:
            raise UnsafeWeightsError(_pickle_refusal(label, pickles)) from None
        if isinstance(exc, LocalEntryNotFoundError):
            raise FileNotFoundError(
                f"{label}: {WEIGHTS_NAME} is not in the local Hugging Face cache and downloads are off "
                f"(HF_HUB_OFFLINE or local_files_only): {exc}"
            ) from None
        raise FileNotFoundError(f"{label}: the repository has no {WEIGHTS_NAME}") from None
    return ModelFiles(Path(config), Path(weights), label)


def _download(hf_hub_download, filename: str, label: str, kwargs: dict[str, Any]) -> str:
    from huggingface_hub.errors import (
        EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
    )

    try:
        return hf_hub_download(filename=filename, **kwargs)
    except RepositoryNotFoundError:
        raise FileNotFoundError(f"{label}: no such Hub repository (or it is private: log in with `hf auth login`)") from None
    except RevisionNotFoundError:
        raise FileNotFoundError(f"{label}: the repository has no revision {kwargs['revision']!r}") from None
    except LocalEntryNotFoundError as exc:
        raise FileNotFoundError(
            f"{label}: {filename} is not in the local Hugging Face cache and downloads are off "
            f"(HF_HUB_OFFLINE or local_files_only): {exc}"
        ) from None
    except EntryNotFoundError:
        raise FileNotFoundError(f"{label}: the repository has no {filename}; is it an asczoo model?") from None


def _repo_listing(repo_id: str, revision: str | None, token, snapshot: Path) -> list[str]:
    """Files of the repository: from the Hub when online, else what the cached snapshot holds."""
    from huggingface_hub import HfApi, constants

    names = {p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()}
    if not constants.is_offline_mode():
        try:
            names.update(HfApi().list_repo_files(repo_id, revision=revision, token=token))
        except Exception:  # noqa: BLE001 - the listing only improves the message
            pass
    return sorted(names)


def _pickle_refusal(where: str, files: list[str]) -> str:
    return (
        f"{where}: refusing to load {', '.join(files)}: pickle-based weight files can run arbitrary code "
        f"when opened, and asczoo only reads {WEIGHTS_NAME} (safetensors). Convert the weights with a "
        "trusted tool, or ask the publisher for a safetensors version."
    )


def read_config(path: str | os.PathLike, *, label: str | None = None) -> dict[str, Any]:
    """Read and check ``config.json``: format version, known keys, and the type of every field."""
    path = Path(path)
    where = f"{label or path.parent}: {CONFIG_NAME}"
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ModelFormatError(f"{where} is {size} bytes; a model's config is at most {MAX_CONFIG_BYTES}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{where} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ModelFormatError(f"{where} is nested too deeply to be a model's config") from None
    if not isinstance(config, dict):
        raise ModelFormatError(f"{where}: expected a JSON object, got {type(config).__name__}")
    missing = [k for k in _REQUIRED_KEYS if k not in config]
    if missing:
        raise ModelFormatError(f"{where}: missing key(s) {', '.join(missing)}; is this an asczoo model?")
    fmt = config["asczoo_format"]
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt < 1:
        raise ModelFormatError(f"{where}: key 'asczoo_format' must be a positive integer, got {fmt!r}")
    if fmt > FORMAT_VERSION:
        raise ModelFormatError(
            f"{where}: written in format {fmt} by asczoo {config.get('asczoo_version', '?')}; this asczoo "
            f"{__version__} reads format {FORMAT_VERSION} (pip install -U asczoo)"
        )
    unknown = sorted(set(config) - _CONFIG_KEYS)
    if unknown:
        raise ModelFormatError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}")

    def expect(key: str, ok: bool, what: str) -> None:
        if not ok:
            raise ModelFormatError(f"{where}: key {key!r} must be {what}, got {config[key]!r}")

    expect("name", isinstance(config["name"], str) and bool(config["name"]), "a non-empty string")
    if config.get("tag") is not None:
        expect("tag", isinstance(config["tag"], str), "a string or null")
    expect("recipe", isinstance(config["recipe"], dict), "a mapping (the resolved recipe)")
    classes = config["classes"]
    expect("classes", isinstance(classes, list) and bool(classes) and all(isinstance(c, str) for c in classes)
           and len(set(classes)) == len(classes), "a non-empty list of distinct strings")
    if "num_classes" in config:
        expect("num_classes", config["num_classes"] == len(classes), f"{len(classes)} (the length of 'classes')")
    expect("frontend", isinstance(config["frontend"], dict) and isinstance(config["frontend"].get("plugin"), str),
           "a mapping with a 'plugin' key")
    if "input_shape" in config:
        shape = config["input_shape"]
        expect("input_shape", isinstance(shape, list) and len(shape) == 4
               and all(isinstance(s, int) and s > 0 for s in shape), "four positive integers (N, C, F, T)")
    for key in ("metrics", "training", "plugins", "normalization"):
        if config.get(key) is not None:
            expect(key, isinstance(config[key], dict), "a mapping")
    return config


def read_weights(path: str | os.PathLike, *, label: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (nothing else is ever read as weights)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise UnsafeWeightsError(_pickle_refusal(label, [path.name]))
    try:
        state = load_file(str(path), device="cpu")
    except SafetensorError as exc:
        raise ModelFormatError(f"{label}: {path.name} is not a valid safetensors file ({exc})") from None
    refuse_non_finite(state, f"{label}: {path.name}")
    return state


def refuse_non_finite(state: Mapping[str, torch.Tensor], where: str) -> None:
    """Raise :class:`ModelFormatError` naming the tensors of ``state`` that hold NaN or Inf.

    A model with a NaN or Inf weight predicts NaN for everything (rc 0, first class), and training
    from one gives NaN weights; ``where`` (file, key) starts the message.
    """
    bad = sorted(k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if bad:
        more = f", ... ({len(bad) - 8} more)" if len(bad) > 8 else ""
        raise ModelFormatError(f"{where}: {len(bad)} tensor(s) hold NaN or Inf values: {', '.join(bad[:8])}{more}")


# -- publishing --------------------------------------------------------------------------------------


def push_to_hub(
    model,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | bool | None = None,
    create_pr: bool = False,
    **save_kwargs: Any,
):
    """Save ``model`` (:func:`save_pretrained`, ``save_kwargs`` passed on) and upload it in one commit.

    Creates the repository if needed (``private`` applies then) and the branch ``revision`` if given
    and missing. The token comes from the usual places (``HF_TOKEN``, ``hf auth login``) unless
    given. Returns huggingface_hub's ``CommitInfo``.
    """
    with tempfile.TemporaryDirectory(prefix="asczoo-push-") as tmp:
        save_pretrained(model, tmp, repo_id=repo_id, **save_kwargs)
        return upload_folder(
            tmp, repo_id, private=private, revision=revision, token=token, create_pr=create_pr,
            commit_message=commit_message or f"Upload {model.name} with asczoo {__version__}",
        )


def upload_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str,
    token: str | bool | None = None,
    create_pr: bool = False,
):
    """Upload the files of a model folder to ``repo_id`` in one commit (huggingface_hub's ``HfApi``)."""
    from huggingface_hub import CommitOperationAdd, HfApi

    if not REPO_ID_RE.match(repo_id):
        raise ValueError(f"repository id {repo_id!r}: expected 'org/name'")
    folder = Path(folder)
    files = publishable_files(folder)
    api = HfApi(token=token)
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in files]
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision is not None and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        return api.create_commit(
            repo_id, operations, commit_message=commit_message, revision=revision, repo_type="model",
            create_pr=create_pr,
        )
    except OSError as exc:  # huggingface_hub's HTTP errors, no token, offline mode, no connection
        raise RuntimeError(
            f"uploading to {repo_id} failed: {exc} (a write token comes from HF_TOKEN or `hf auth login`)"
        ) from exc


def publishable_files(folder: str | os.PathLike) -> list[str]:
    """The files of a model folder that are uploaded: weights, config, card and the confusion image."""
    folder = Path(folder)
    names = [n for n in (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME, CONFUSION_NAME) if os.path.lexists(folder / n)]
    for name in names:
        _check_own_file(folder / name, folder)
    for required in (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME):
        if required not in names:
            raise FileNotFoundError(f"{folder}: no {required} to upload")
    return names


def check_own_file(path: Path, top: Path) -> None:
    """Refuse a run or model folder's file that is a symbolic link (at any level below ``top``), resolves
    outside ``top`` or is not a regular file: a link to ``/etc/shadow`` named ``confusion_matrix.png``
    must never be read into a card or uploaded."""
    import stat

    base = top.resolve()
    for part in [path, *(p for p in path.parents if p != top and top in p.parents)]:
        if part.is_symlink():
            raise UnsafeWeightsError(f"{part} is a symbolic link (to {os.readlink(part)}); asczoo publishes only "
                                     f"regular files inside {top}, never what a link points to")
    real = path.resolve()
    if real != base and base not in real.parents:
        raise UnsafeWeightsError(f"{path} resolves to {real}, outside {top}; asczoo publishes only files inside it")
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise UnsafeWeightsError(f"{path} is not a regular file; asczoo publishes only regular files")


_check_own_file = check_own_file
