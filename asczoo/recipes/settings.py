"""The settings of a training recipe's sections, with their defaults, in one place.

Each class is the schema of one section: its fields are the keys a recipe may set (checked with
:func:`asczoo.recipes.check_arguments`, like a part's factory), its defaults are the only defaults.
Validation (:mod:`asczoo.recipes.training_recipes`) fills them in; the runtime
(:func:`asczoo.training.engine.setup_runtime`) and the stage loop read them from here too.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from asczoo.recipes.schema import RecipeError


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataSettings:
    """``data``: the dataset plugin, its root (``--data`` wins), fold, feature-cache folder (default
    ``ROOT/.asczoo-cache``), options for the plugin, and ``synth`` (options of
    :func:`asczoo.data.synth.synthesize`: a dataset written into the root when it has none yet)."""

    dataset: str = "dcase2019-task1a"
    root: str | None = None
    fold: int | None = 1
    cache: str | None = None
    cache_dtype: Literal["float16", "float32"] = "float16"
    options: dict | None = None
    synth: dict | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class EngineSettings:
    """``engine``: how to run, not what to learn (so it may change on ``--resume``).

    ``device`` auto picks ``cuda:LOCAL_RANK``, else CPU. ``precision`` auto is bf16 autocast on CUDA,
    fp32 elsewhere; ``channels_last`` auto is on for CUDA. ``compile`` wraps the model in
    ``torch.compile`` (a mode name picks the mode). ``data_on_device`` auto holds all features on the
    device when they fit (half of free GPU memory, a quarter of RAM on CPU), else streams them from
    the cache through a DataLoader with ``num_workers`` workers and pinned memory. ``sync_batchnorm``
    makes batch norm use the statistics of the global batch under DDP (then a multi-process run
    computes what one process computes on the same global batch).
    """

    device: str = "auto"
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    channels_last: bool | Literal["auto"] = "auto"
    compile: bool | Literal["default", "reduce-overhead", "max-autotune"] = False
    num_workers: int | Literal["auto"] = "auto"
    data_on_device: bool | Literal["auto"] = "auto"
    sync_batchnorm: bool = False
    eval_batch_size: int | None = None
    deterministic: bool = False
    threads: int | None = None
    progress: bool | Literal["auto"] = "auto"
    tensorboard: bool | Literal["auto"] = "auto"

    @classmethod
    def of(cls, engine: EngineSettings | Mapping[str, Any] | None) -> EngineSettings:
        """Settings from a recipe's ``engine`` mapping (missing keys take the defaults above)."""
        if isinstance(engine, cls):
            return engine
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in dict(engine or {}).items() if k in known})


@dataclasses.dataclass(frozen=True, kw_only=True)
class StageSettings:
    """One stage: train ``model`` (with ``overrides``) for ``epochs``.

    ``unit: segment`` trains on single segments (each clip's N segments become N samples of shape
    (1, 3, F, T), the paper's stage 1); ``clip`` on whole segment sequences. Evaluation is always on
    clips. ``init_from`` names an earlier stage (its kept model) or a saved model folder /
    ``model.safetensors``. ``keep`` chooses which weights the stage hands on: the epoch with the best
    evaluation accuracy, or the last. ``eval_at_start`` (default: when ``init_from`` is set) evaluates
    the initialised model before the first step (epoch 0 in the metrics). ``distill`` trains against
    teachers too: ``{teachers: [earlier stage or model folder, ...], lambda: 0.5, tau: 2.0}`` (see
    :mod:`asczoo.training.distill`; :func:`check_distill` validates it).
    """

    name: str
    model: str
    description: str = ""
    overrides: dict | None = None
    init_from: str | None = None
    unit: Literal["segment", "clip"] = "clip"
    epochs: int
    batch_size: int
    optimizer: dict
    schedule: dict | None = None
    augment: list | None = None
    label_smoothing: float = 0.0
    drop_last: bool = True
    keep: Literal["best", "last"] = "best"
    eval_every: int = 1
    eval_at_start: bool | None = None
    distill: dict | None = None


def check_distill(spec: Any, *, where: str, earlier: Sequence[str]) -> dict[str, Any] | None:
    """Validate a stage's ``distill`` mapping; returns it normalised (``lambda`` 0.5, ``tau`` 2.0)."""
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise RecipeError(f"{where}: key 'distill' must be a mapping {{teachers: [...], lambda: L, tau: T}}, got {spec!r}")
    unknown = set(spec) - {"teachers", "lambda", "tau", "batch_size"}
    if unknown:
        raise RecipeError(f"{where}: key 'distill' has unknown key(s) {', '.join(sorted(map(repr, unknown)))}; "
                          "expected teachers, lambda, tau, batch_size")
    teachers = spec.get("teachers")
    if isinstance(teachers, str):
        teachers = [teachers]
    if not isinstance(teachers, list) or not teachers or not all(isinstance(t, str) and t for t in teachers):
        raise RecipeError(f"{where}: key 'distill.teachers' must list earlier stages or model folders, got {teachers!r}")
    for teacher in teachers:
        if teacher not in earlier and not Path(teacher).expanduser().exists() and "/" not in teacher:
            raise RecipeError(f"{where}: key 'distill.teachers': {teacher!r} is neither an earlier stage "
                              f"({', '.join(earlier) or 'none'}) nor an existing path")
    weight, tau = spec.get("lambda", 0.5), spec.get("tau", 2.0)
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not 0.0 <= weight <= 1.0:
        raise RecipeError(f"{where}: key 'distill.lambda' must be a number in [0, 1], got {weight!r}")
    if not isinstance(tau, (int, float)) or isinstance(tau, bool) or tau <= 0:
        raise RecipeError(f"{where}: key 'distill.tau' must be a positive number, got {tau!r}")
    batch = spec.get("batch_size", 64)
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise RecipeError(f"{where}: key 'distill.batch_size' must be a positive integer, got {batch!r}")
    return {"teachers": list(teachers), "lambda": float(weight), "tau": float(tau), "batch_size": batch}
