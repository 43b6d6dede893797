"""``asczoo.train(recipe, ...)``: run a training recipe, stage after stage, into a run directory.

A run directory holds::

    RUN/recipe.yaml               the resolved recipe (overrides applied), data root and cache
    RUN/metrics.jsonl             one line per epoch of every stage
    RUN/STAGE/                    per stage: checkpoint.json + checkpoints/ (resume), metrics.jsonl,
                                  tensorboard/ (when tensorboard is installed), model/ (the kept
                                  model), evaluation.json, confusion_matrix.png, done.json
    RUN/model/                    the final model (last stage), in the publishable Hub format
    RUN/report.md, report.json    overall and per-class accuracy of every stage on held-out clips
    RUN/confusion_matrix.png      the final model's confusion matrix

``resume=True`` continues a run: finished stages (``done.json``) are skipped, the running stage
restarts from its last complete checkpoint, and the result equals an uninterrupted run's (exactly, on
CPU; see :mod:`asczoo.training.engine` for why). Under ``torchrun`` every process calls :func:`train`; rank 0
alone writes.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from asczoo.recipes import training_recipes
from asczoo.recipes.schema import RecipeError

#: recipe keys that may differ when a run is resumed (how to run, not what to learn)
RESUMABLE_CHANGES = ("engine", "data.root", "data.cache", "description", "notes", "paper")


@dataclasses.dataclass
class StageResult:
    """One stage's outcome: the kept model's accuracy on the held-out clips, and where things are."""

    name: str
    model: str
    accuracy: float
    per_class_accuracy: dict[str, float | None]
    confusion: list[list[int]]
    clips: int
    best_epoch: int | None
    kept: str
    model_dir: str
    history: list[dict[str, Any]]
    #: what ``accuracy`` measures: ``accuracy``, or ``mAP`` for a multi-label model
    metric: str = "accuracy"
    #: accuracy by recording device (datasets that know devices: TAU Mobile), see evaluation.device_report
    devices: dict[str, Any] | None = None


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns: the run directory, the final model folder, and every stage's result."""

    run_dir: Path
    model_dir: Path
    stages: dict[str, StageResult]

    @property
    def accuracy(self) -> float:
        """Held-out accuracy of the final model."""
        return list(self.stages.values())[-1].accuracy


def train(
    recipe: str | os.PathLike | Mapping[str, Any],
    *,
    data: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    callbacks: Sequence[Any] = (),
    log: Callable[[str], None] | None = None,
    allow_data_change: bool = False,
) -> TrainResult:
    """Run a training recipe and return every stage's held-out accuracy.

    Args:
        recipe: a registered training recipe (``asczoo train --list``), a YAML file
            (``FILE:NAME`` picks one of several), or a mapping of recipe sections.
        data: dataset root (default: the recipe's ``data.root``; with ``data.synth`` and no root, a
            synthetic dataset is written to ``RUN/data``).
        out: run directory (default ``runs/NAME-TIMESTAMP``).
        resume: continue the run in ``out`` (starts it if there is nothing to continue).
        overrides: nested mapping or ``--set`` strings (``["stages.1.epochs=3"]``) merged into the recipe.
        callbacks: objects with any of ``on_stage_start(stage, model, directory)`` (after the model is
            built and initialised, before its first step), ``on_fit_start(stage, model, start_epoch)``,
            ``on_epoch_end(stage, epoch, metrics)``, ``on_stage_end(stage, result)``.
        log: where progress lines go (default: print on rank 0).
        allow_data_change: resume a run on another dataset root than it was started with (refused
            otherwise: the features, statistics and checkpoints belong to the first one).

    The run directory is locked while the run goes on (``RUN/.lock``, an ``fcntl`` lock the system
    releases when the process ends, however it ends): a second ``train`` on the same ``out`` is refused.
    """
    from asczoo.training.engine import setup_runtime, teardown_runtime

    name, rec = training_recipes.load(recipe, overrides)
    runtime = setup_runtime(rec["engine"])
    say = _logger(runtime, log)
    try:
        return _run(name, rec, runtime, data=data, out=out, resume=resume, callbacks=callbacks, say=say,
                    allow_data_change=allow_data_change)
    except KeyboardInterrupt:
        say("interrupted: the last finished epoch is checkpointed; continue with --resume")
        raise
    finally:
        teardown_runtime(runtime)


def _logger(runtime: Any, log: Callable[[str], None] | None) -> Callable[[str], None]:
    def say(message: str) -> None:
        if not runtime.is_main:
            return
        if log is not None:
            log(message)
            return
        from tqdm.auto import tqdm

        tqdm.write(message, file=sys.stdout)
        sys.stdout.flush()

    return say


# -- the run --------------------------------------------------------------------------------------------------

def _run(name: str, rec: dict[str, Any], runtime: Any, *, data: Any, out: Any, resume: bool,
         callbacks: Sequence[Any], say: Callable[[str], None], allow_data_change: bool = False) -> TrainResult:
    stamp = runtime.broadcast(datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    run_dir = Path(out) if out is not None else Path("runs") / f"{name}-{stamp}"
    lock = RunLock(run_dir) if runtime.is_main else None
    try:
        if lock is not None:
            lock.acquire()
        runtime.barrier()
        return _run_locked(name, rec, runtime, run_dir, data=data, resume=resume, callbacks=callbacks, say=say,
                           allow_data_change=allow_data_change)
    finally:
        if lock is not None:
            lock.release()


class RunLock:
    """An exclusive lock on a run directory: ``RUN/.lock`` held with ``fcntl.flock``.

    The kernel drops the lock when the process ends, however it ends (``kill -9`` included), so a lock
    file left behind is never stale: the next run takes it over. The file holds the holder's PID and
    host for the message a second run gets. Where ``fcntl`` does not exist (Windows) runs are not locked.
    """

    NAME = ".lock"

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / self.NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return
        import socket

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise RunLockedError(f"{self.path.parent} is in use by another asczoo run ({holder}); wait for it to "
                                 "finish, or choose another --out") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (removing it would race a waiter)
            self._fd = None


def _remove_temporary(run_dir: Path) -> None:
    """Remove the ``.NAME.*.tmp`` files a process killed mid-write left anywhere in the run (the run is
    locked, so no other process is writing them); they were never trusted, only untidy, but a stage's
    model folder is copied whole into ``RUN/model`` and must not carry one along."""
    from asczoo.atomic import TEMP_SUFFIX

    for path in run_dir.rglob(f".*{TEMP_SUFFIX}"):
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)


class RunLockedError(RuntimeError):
    """Another process is training into the same run directory."""


def _run_locked(name: str, rec: dict[str, Any], runtime: Any, run_dir: Path, *, data: Any, resume: bool,
                callbacks: Sequence[Any], say: Callable[[str], None], allow_data_change: bool) -> TrainResult:
    import yaml

    from asczoo.atomic import atomic_write_text

    saved_path = run_dir / "recipe.yaml"
    if saved_path.is_file() and not resume:
        raise FileExistsError(f"{run_dir} holds a run already; continue it with --resume, or choose another --out")
    if runtime.is_main and saved_path.is_file():
        _remove_temporary(run_dir)
    saved: dict[str, Any] = {}
    if saved_path.is_file():
        try:
            saved = yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise RecipeError(f"{saved_path}: not the YAML asczoo writes ({str(exc).splitlines()[0]}); move the "
                              "run directory away, or start a new run with another --out") from None
        if not isinstance(saved, dict):
            raise RecipeError(f"{saved_path}: expected a mapping, found {type(saved).__name__}; start a new run "
                              "with another --out")
        _check_same_recipe(saved.get("recipe") or {}, rec, run_dir)
    elif resume:
        say(f"{run_dir}: nothing to resume yet; starting the run")

    root = data if data is not None else rec["data"]["root"]
    if root is None and rec["data"]["synth"] is not None:
        root = run_dir / "data"
    if root is None:
        raise ValueError(f"training recipe {name!r} needs a dataset root: pass --data ROOT (data=...)")
    given_root = root is not None and not (data is None and rec["data"]["root"] is None)
    root = Path(root).expanduser().resolve()
    if saved.get("data_root") and given_root and str(root) != str(saved["data_root"]) and not allow_data_change:
        raise RecipeError(f"{run_dir}: the run was trained on the data at {saved['data_root']}, not {root}; resume "
                          "it with that --data, or pass --allow-data-change (allow_data_change=True) if the same "
                          "dataset has moved")
    if rec["data"]["synth"] is not None and data is not None:  # (RUN/data is the recipe's own)
        _refuse_foreign_synth_target(root)
    cache_dir = Path(rec["data"]["cache"]).expanduser() if rec["data"]["cache"] else None
    if cache_dir is None:
        from asczoo.data.feature_cache import default_cache_dir

        cache_dir = default_cache_dir(root)
    if runtime.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(saved_path, yaml.safe_dump({
            "name": name, "data_root": str(root), "cache_dir": str(cache_dir.resolve()),
            "asczoo_version": _version(), "recipe": rec,
        }, sort_keys=False))
    say(f"run {run_dir}: training recipe {name!r} ({len(rec['stages'])} stage(s)) on {runtime.describe()}")

    if rec["data"]["synth"] is not None:
        _synthesize(root, rec["data"]["synth"], runtime, say)
    runtime.wait_for_main()  # synthesis, like extraction, may outlast the process group's timeout

    data_cache: dict[str, Any] = {}
    results: dict[str, StageResult] = {}
    for index, stage in enumerate(rec["stages"]):
        results[stage["name"]] = _run_stage(
            name, rec, index, stage, runtime=runtime, run_dir=run_dir, root=root, cache_dir=cache_dir,
            data_cache=data_cache, results=results, callbacks=callbacks, say=say)
        for callback in callbacks:
            if hasattr(callback, "on_stage_end"):
                callback.on_stage_end(stage=stage, result=results[stage["name"]])

    final_dir = run_dir / "model"
    if runtime.is_main:
        _finish(name, rec, run_dir, results, say)
    runtime.barrier()
    return TrainResult(run_dir=run_dir, model_dir=final_dir, stages=results)


def _version() -> str:
    from asczoo.version import __version__

    return __version__


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(_flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        out = {}
        for i, sub in enumerate(value):
            out.update(_flatten(sub, f"{prefix}.{i}"))
        return out
    return {prefix: value}


def _check_same_recipe(saved: Mapping[str, Any], current: Mapping[str, Any], run_dir: Path) -> None:
    """Refuse to resume a run with a recipe that learns something else (engine settings may change)."""
    a, b = _flatten(saved), _flatten(current)
    allowed = lambda key: any(key == p or key.startswith(p + ".") for p in RESUMABLE_CHANGES)  # noqa: E731
    changed = sorted(k for k in set(a) | set(b) if not allowed(k) and a.get(k) != b.get(k))
    if changed:
        details = "; ".join(f"{k}: {a.get(k)!r} in the run, {b.get(k)!r} now" for k in changed[:8])
        raise RecipeError(f"{run_dir}: the run was started with another recipe ({details}); resume it with the "
                          "same recipe and overrides (engine.* may change), or start a new run with another --out")


def _refuse_foreign_synth_target(root: Path) -> None:
    """A recipe that synthesises its data, pointed at a folder of the user's own recordings: say what
    trains on them, before the run directory is started (synthesis would refuse the folder anyway)."""
    if (root / "synth.json").is_file() or (root / "meta.csv").is_file() or (root / "evaluation_setup").is_dir():
        return
    if root.is_dir() and any(not p.name.startswith(".") for p in root.iterdir()):
        raise RecipeError(
            f"{root} holds files of its own, and this training recipe synthesises its data (data.synth); to train "
            f"on the recordings there: `asczoo train folder-atresn-net --data {root}` (class sub-folders or a "
            f"labels table), or `asczoo finetune MODEL --data {root}`; this recipe's stages on them: --set "
            "data.synth=null --set data.dataset=folder")


def _synthesize(root: Path, options: Mapping[str, Any], runtime: Any, say: Callable[[str], None]) -> None:
    """Write the recipe's synthetic dataset into ``root`` unless the same one is there already."""
    from asczoo.data import synth

    if not runtime.is_main:
        return
    marker = root / "synth.json"
    if marker.is_file():
        try:
            have = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            have = {}
        have = have if isinstance(have, dict) else {}
        if have.get("complete", True) and all(have.get(k) == v for k, v in options.items()
                                               if k not in ("workers", "progress")):
            say(f"data: synthetic dataset in {root} (already there)")
            return
    elif (root / "meta.csv").is_file() or (root / "evaluation_setup").is_dir():
        say(f"data: {root} holds a dataset already; data.synth is not used")
        return
    opts = dict(options)
    opts.setdefault("workers", runtime.num_workers)
    say(f"data: synthesising {opts.get('clips', 400)} clips ({opts.get('task', 'scenes')}) into {root}")
    # never overwrite: synthesize() rewrites an earlier synthetic dataset of its own (its manifest lists
    # every file there) and refuses a folder that holds anything else, such as the user's recordings
    synth.synthesize(root, overwrite=False, progress=runtime.progress, **opts)


# -- one stage --------------------------------------------------------------------------------------------------

def _stage_frontend(stage: Mapping[str, Any], dataset: str, root: Path | None = None, options: Mapping[str, Any] | None = None) -> Any:
    """The stage's frontend, from its model recipe with the dataset's defaults under the stage's own
    overrides (as :func:`_build_model` builds it), without building a model for it."""
    from asczoo.data.frontend import create_frontend
    from asczoo.recipes.model_recipes import model_recipe

    overrides = _stage_overrides(stage, dataset, root, options)
    return create_frontend(**model_recipe(stage["model"], overrides=overrides or None)["frontend"])


def _stage_data(rec: Mapping[str, Any], frontend: Any, *, runtime: Any, root: Path, cache_dir: Path,
                data_cache: dict[str, Any], say: Callable[[str], None]) -> tuple[Any, Any, Any, Any]:
    """``(train dataset, evaluate dataset, train features, evaluate features)`` for one frontend
    instance; extracted into the cache once (rank 0), held in memory when they fit."""
    from asczoo.data import feature_cache
    from asczoo.data.datasets import create_dataset
    from asczoo.training.batches import Features, estimate_bytes, fits_on_device
    from asczoo.training.runtime import node_cores

    key = json.dumps(frontend.config, sort_keys=True)
    if key in data_cache:
        return data_cache[key]
    spec = rec["data"]
    options = dict(spec["options"])
    skip_bad = bool(options.pop("skip_bad", False))
    if runtime.is_main:
        try:
            feature_cache.load_normalization(cache_dir, frontend, dataset=spec["dataset"], root=root)
        except (FileNotFoundError, ValueError):
            # the other ranks of the node wait (without a core each), so extraction takes the node's
            # cores, not this rank's share of them (runtime.num_workers is that share, for training)
            workers = max(runtime.num_workers, node_cores() - 1) if runtime.distributed else runtime.num_workers
            say(f"data: extracting features of {spec['dataset']} at {root} into {cache_dir} ({workers} workers"
                + ("; run `asczoo extract` before torchrun to do this once, outside the job" if runtime.distributed
                   else "") + ")")
            feature_cache.extract(spec["dataset"], root, fold=spec["fold"], frontend=frontend,
                                  cache_dir=cache_dir, workers=workers, dtype=spec["cache_dtype"],
                                  skip_bad=skip_bad, progress=runtime.progress, **options)
    runtime.wait_for_main()  # no timeout it can hit: extraction may take longer than the group's
    made = {split: create_dataset(spec["dataset"], root, split=split, fold=spec["fold"],
                                  frontend=frontend, cache_dir=cache_dir,
                                  **({"skip_bad": True} if skip_bad else {}), **options)
            for split in ("train", "evaluate")}
    for split, ds in made.items():
        if getattr(ds, "skipped", None):
            say(f"data: {len(ds.skipped)} bad file(s) left out of the {split} split (skip_bad)")
    wanted = rec["engine"]["data_on_device"]
    if wanted == "auto":
        total = estimate_bytes(made["train"]) + estimate_bytes(made["evaluate"])
        wanted = fits_on_device(total, runtime.device)
    where = f"held on {runtime.device}" if wanted else f"streamed by {runtime.num_workers} DataLoader workers"
    say(f"data: {len(made['train'])} training and {len(made['evaluate'])} evaluation clips, "
        f"{len(made['train'].classes)} classes, features {where}")
    entry = (made["train"], made["evaluate"],
             Features(made["train"], runtime=runtime, in_memory=bool(wanted), desc="load train"),
             Features(made["evaluate"], runtime=runtime, in_memory=bool(wanted), desc="load evaluate"))
    data_cache[key] = entry
    return entry


def dataset_model_overrides(dataset: str, model: str, root: Path | None = None,
                            options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What the dataset brings to a model before a stage's own overrides: its default frontend settings
    (when the model uses that frontend plugin; sample rate, clip length and segment layout that suit the
    dataset's clips, so the saved config carries them; for the ``folder`` plugin, computed from the
    recordings at ``root``) and, for a multi-label dataset, ``task``."""
    from asczoo.data.datasets import dataset_defaults
    from asczoo.recipes.model_recipes import model_recipe

    defaults = dataset_defaults(dataset, root, **dict(options or {}))
    out: dict[str, Any] = {}
    frontend = dict(defaults["frontend"])
    if frontend and frontend.get("plugin") == model_recipe(model)["frontend"].get("plugin"):
        out["frontend"] = frontend
    if defaults["task"] != "single-label":
        out["task"] = defaults["task"]
    return out


def _stage_overrides(stage: Mapping[str, Any], dataset: str | None, root: Path | None = None,
                     options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The stage's model overrides over what the dataset brings; the model's task must be the dataset's."""
    from asczoo.data.datasets import dataset_defaults
    from asczoo.recipes.merge import deep_merge

    overrides = dict(stage["overrides"])
    if dataset is not None:
        overrides = deep_merge(dataset_model_overrides(dataset, stage["model"], root, options), overrides)
        task = dataset_defaults(dataset)["task"]
        if overrides.get("task", "single-label") != task:
            raise RecipeError(f"stage {stage['name']!r}: the model's task is {overrides.get('task', 'single-label')!r} "
                              f"but dataset {dataset!r} is {task!r}; set overrides.task: {task} (or leave it out)")
    return overrides


def _build_model(stage: Mapping[str, Any], classes: Sequence[str] | None, dataset: str | None = None,
                 root: Path | None = None, options: Mapping[str, Any] | None = None) -> Any:
    from asczoo.models.factory import create_model
    from asczoo.recipes.merge import deep_merge

    overrides = _stage_overrides(stage, dataset, root, options)
    if classes is not None:
        overrides = deep_merge(overrides, {"classes": list(classes), "num_classes": len(classes)})
    return create_model(stage["model"], overrides=overrides or None)


def init_source(source: str) -> Path:
    """The folder or file a stage's ``init_from`` names when it is not an earlier stage: an existing
    path, or a Hub model (``hf-hub:org/name[@revision]``, ``org/name``), fetched into the Hugging Face
    cache (offline: from it) by :func:`asczoo.hub.files.resolve_files`."""
    if Path(source).expanduser().exists():
        return Path(source).expanduser()
    from asczoo.hub.files import resolve_files

    return resolve_files(source).weights.parent


def _run_stage(name: str, rec: dict[str, Any], index: int, stage: dict[str, Any], *, runtime: Any, run_dir: Path,
               root: Path, cache_dir: Path, data_cache: dict[str, Any], results: dict[str, StageResult],
               callbacks: Sequence[Any], say: Callable[[str], None]) -> StageResult:
    from asczoo.training.engine import StageSpec, fit

    directory = run_dir / stage["name"]
    done = directory / "done.json"
    if done.is_file():
        try:
            result = StageResult(**json.loads(done.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as exc:  # not JSON, or not the keys a finished stage records
            raise RecipeError(f"{done}: not the record of a finished stage asczoo writes "
                              f"({str(exc).splitlines()[0]}); move the run directory away, or start a new run "
                              "with another --out") from None
        say(f"{stage['name']}: finished earlier ({100 * result.accuracy:.2f}% on held-out clips); skipped")
        return result
    if runtime.is_main:
        directory.mkdir(parents=True, exist_ok=True)

    # The frontend comes from the model's recipe, the classes from the data; then the model is built once.
    train_ds, eval_ds, train_features, eval_features = _stage_data(
        rec, _stage_frontend(stage, rec["data"]["dataset"], root, rec["data"]["options"]), runtime=runtime, root=root,
        cache_dir=cache_dir, data_cache=data_cache, say=say)
    from asczoo.training.engine import derive_seed, seed_everything

    seed_everything(derive_seed(rec["seed"], index, "init"))  # the initial weights depend on the seed alone
    model = _build_model(stage, train_ds.classes, rec["data"]["dataset"], root, rec["data"]["options"])
    mean, std = train_ds.normalization()
    model.set_normalization(mean, std)
    source = stage["init_from"]
    if source is not None:
        from asczoo.models.factory import initialise_from

        path = run_dir / source / "model" if source in results else init_source(source)
        initialise_from(model, path)
        say(f"{stage['name']}: {stage['model']} initialised from {source if source in results else path}")
    if stage.get("distill"):  # knowledge distillation: teacher logits cached beside the feature cache
        from asczoo.training import distill

        train_features = distill.attach(stage["distill"], model, train_ds, train_features, runtime=runtime,
                                        run_dir=run_dir, stages=list(results), cache_dir=cache_dir, say=say)
    counts = model.parameter_counts()
    say(f"{stage['name']}: {stage['model']} ({counts['total'] / 1e6:.2f} M parameters), {stage['epochs']} epochs "
        f"on {stage['unit']}s, batch {stage['batch_size']}, {stage['optimizer']['name']} lr {stage['optimizer']['lr']}")
    for callback in callbacks:
        if hasattr(callback, "on_stage_start"):
            callback.on_stage_start(stage=stage, model=model, directory=directory)

    segments = model.input_shape[0]
    eval_batch = rec["engine"]["eval_batch_size"] or (
        stage["batch_size"] if stage["unit"] == "clip" else max(1, stage["batch_size"] // segments))
    spec = StageSpec.of(stage, index=index, seed=rec["seed"], eval_batch_size=eval_batch)
    previous = [row for r in results.values() for row in r.history]
    summary = fit(model, spec, train=train_features, evaluate=eval_features, runtime=runtime, directory=directory,
                  tensorboard=rec["engine"]["tensorboard"], callbacks=callbacks, log=say,
                  run_metrics=run_dir / "metrics.jsonl", previous_history=previous)
    result = None
    if runtime.is_main:
        result = _finish_stage(name, rec, stage, model, summary, directory=directory, eval_features=eval_features,
                               runtime=runtime, say=say)
    result = runtime.broadcast(dataclasses.asdict(result) if result is not None else None)
    return StageResult(**result)


def _finish_stage(name: str, rec: Mapping[str, Any], stage: Mapping[str, Any], model: Any, summary: Mapping[str, Any],
                  *, directory: Path, eval_features: Any, runtime: Any, say: Callable[[str], None]) -> StageResult:
    """Evaluate the kept weights, write the stage's report and confusion matrix, then save the model once
    in the Hub format with its metrics and model card."""
    from asczoo.atomic import atomic_write_text
    from asczoo.hub.files import save_pretrained
    from asczoo.training.engine import evaluate_features
    from asczoo.training.evaluation import confusion_png, from_summary

    model.load_state_dict(summary["kept_state"])
    model.eval()
    best = summary["best"]
    kept_epoch = best["epoch"] if stage["keep"] == "best" and best else summary["last_epoch"]
    data = rec["data"]
    training = {"recipe": name, "stage": stage["name"], "dataset": data["dataset"], "fold": data["fold"],
                "options": data["options"], "epochs": stage["epochs"], "kept_epoch": kept_epoch,
                "kept": stage["keep"], "init_from": stage["init_from"], "training_recipe": rec}
    model_dir = directory / "model"
    local = dataclasses.replace(runtime, world_size=1, rank=0)
    eval_ds = eval_features.dataset
    outcome = evaluate_features(model, eval_features, runtime=local, batch_size=32, num_classes=model.num_classes,
                                predictions=hasattr(eval_ds, "device_of"))
    evaluation = from_summary(outcome, model=stage["model"], dataset=data["dataset"], split=f"fold {data['fold']} evaluate",
                              classes=model.classes, dataset_obj=eval_ds)
    report = evaluation.to_dict()
    atomic_write_text(directory / "evaluation.json", json.dumps(report, indent=2))
    png = directory / "confusion_matrix.png"
    has_png = confusion_png(evaluation, png, title=f"{stage['name']} {stage['model']}: "
                                                  f"{100 * evaluation.accuracy:.1f}% ({evaluation.clips} clips)")
    metric = evaluation.metric
    model.metrics = {metric: outcome["accuracy"], "dataset": data["dataset"], "fold": data["fold"],
                     "split": "evaluate", "num_clips": outcome["clips"], "loss": outcome["loss"], "epoch": kept_epoch}
    if evaluation.devices:
        model.metrics.update({f"{k}_device_accuracy": evaluation.devices[k] for k in ("seen", "unseen", "macro")
                              if evaluation.devices[k] is not None})
    save_pretrained(model, model_dir, training=training, metrics=model.metrics, report=report,
                    confusion_matrix=png if has_png else None)
    result = StageResult(
        name=stage["name"], model=stage["model"], accuracy=evaluation.accuracy,
        per_class_accuracy=dict(zip(evaluation.classes, evaluation.per_class_accuracy)),
        confusion=evaluation.confusion, clips=evaluation.clips, best_epoch=best["epoch"] if best else None,
        kept=stage["keep"], model_dir=str(model_dir), history=list(summary["history"]),
        metric=metric, devices=evaluation.devices,
    )
    atomic_write_text(directory / "done.json", json.dumps(dataclasses.asdict(result), indent=2))
    what = "mAP " if metric == "mAP" else ""
    say(f"{stage['name']}: {stage['model']} (epoch {kept_epoch}, {stage['keep']}) {what}"
        f"{100 * evaluation.accuracy:.2f}% on {evaluation.clips} held-out clips; saved to {model_dir}")
    if evaluation.devices:
        d = evaluation.devices
        per = ", ".join(f"{k} {100 * v['accuracy']:.1f}%" for k, v in d["per_device"].items())
        means = ", ".join(f"{k} {100 * d[k]:.2f}%" for k in ("seen", "unseen", "macro") if d[k] is not None)
        say(f"{stage['name']}: by device: {per}; {means}")
    return result


def _finish(name: str, rec: Mapping[str, Any], run_dir: Path, results: Mapping[str, StageResult],
            say: Callable[[str], None]) -> None:
    """The run's final model folder, combined metrics, report and confusion matrix."""
    import shutil

    from asczoo.atomic import atomic_write_text
    from asczoo.training.evaluation import Evaluation, confusion_png, markdown_report

    last = list(results.values())[-1]
    final = run_dir / "model"
    tmp = run_dir / ".model.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(run_dir / last.name / "model", tmp)  # (the run directory may have moved since)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    evaluations = {}
    for stage_name, result in results.items():
        classes = list(result.per_class_accuracy)
        evaluations[stage_name] = Evaluation(
            model=result.model, dataset=rec["data"]["dataset"], split=f"fold {rec['data']['fold']} evaluate",
            classes=classes, accuracy=result.accuracy, per_class_accuracy=list(result.per_class_accuracy.values()),
            confusion=result.confusion, clips=result.clips, metric=result.metric, devices=result.devices)
    history = [row for result in results.values() for row in result.history]
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in history))
    report = {  # the final model's evaluation at the top level (the model card reads it), then every stage
        "recipe": name, "final_model": str(final), **list(evaluations.values())[-1].to_dict(),
        "stages": {s: {**ev.to_dict(), "best_epoch": results[s].best_epoch, "kept": results[s].kept,
                       "model_dir": results[s].model_dir} for s, ev in evaluations.items()},
    }
    atomic_write_text(run_dir / "report.json", json.dumps(report, indent=2))
    png = confusion_png(list(evaluations.values())[-1], run_dir / "confusion_matrix.png")
    notes = [f"Final model: `{final}` (model.safetensors + config.json).",
             "Confusion matrices: `confusion_matrix.png` (final model) and `STAGE/confusion_matrix.png`."
             if png else "Confusion-matrix images need matplotlib (pip install matplotlib)."]
    atomic_write_text(run_dir / "report.md", markdown_report(f"{name}: held-out accuracy", evaluations, notes=notes))
    say("")
    say(f"done: {run_dir}")
    for stage_name, ev in evaluations.items():
        what = " mAP" if ev.metric == "mAP" else ""
        say(f"  {stage_name:<8} {ev.model:<24} {100 * ev.accuracy:6.2f}%{what} on {ev.clips} held-out clips")
    say(f"  final model: {final}   report: {run_dir / 'report.md'}")
    if not png:
        say("  (no confusion-matrix PNG: pip install matplotlib)")
