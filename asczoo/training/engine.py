"""The training engine: optimisers and schedules, losses, evaluation, and one stage's loop (:func:`fit`).

It runs on a :class:`~asczoo.training.runtime.Runtime` (device, ranks, precision, seeding) over
:class:`~asczoo.training.batches.Features` (batches held on the device or streamed). Under ``torchrun``
the model is wrapped in ``DistributedDataParallel``; each rank's loss is its summed sample losses
times ``W / B_global``, so DDP's gradient average is exactly the mean over the global batch, whatever
the split.

**What a multi-process run equals.** With ``sync_batchnorm`` (statistics of the global batch, see
:class:`~asczoo.training.runtime.GlobalBatchNorm`), no dropout and no random augmentation, W processes
compute what one process computes on the same global batches, up to float rounding: the gloo test
checks it. Otherwise batch norm sees each rank's part of the batch (plain DDP behaviour, the usual
choice), and dropout and augmentations draw per rank: the same procedure in distribution, not bit for
bit.

**Resuming.** Every epoch's randomness is seeded from ``(seed, stage, epoch, rank)``, so a run resumed
from the checkpoint of epoch ``e`` redoes epoch ``e + 1`` exactly as the uninterrupted run did.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from asczoo.data.augment import create_augmentations, one_hot
from asczoo.training.batches import (  # noqa: F401 - also re-exported: the engine's names before the split
    BatchStream, EpochBatches, Features, SegmentSamples, _own_generator, estimate_bytes, fits_on_device,
    stream_stored_dtype,
)
from asczoo.training.checkpoint import Checkpointer, rng_state, set_rng_state
from asczoo.training.kd_loss import distillation_loss
from asczoo.training.runtime import (  # noqa: F401 - also re-exported
    GlobalBatchNorm, Runtime, autocast, derive_seed, node_cores, seed_everything, setup_runtime, teardown_runtime,
)

# -- runtime: device, ranks, precision ----------------------------------------------------------------------


# -- seeding ------------------------------------------------------------------------------------------------


# -- batch norm over the global batch -------------------------------------------------------------------------


# -- data: samples, batch order, features in memory or streamed ----------------------------------------------


# -- optimisers and schedules -------------------------------------------------------------------------------

def build_optimizer(model: nn.Module, spec: Mapping[str, Any]) -> torch.optim.Optimizer:
    """The recipe's optimiser over the trainable parameters (weight decay on all of them, as the paper)."""
    options = {k: v for k, v in spec.items() if k != "name"}
    params = [p for p in model.parameters() if p.requires_grad]
    name = spec["name"]
    if name == "sgd":
        return torch.optim.SGD(params, **options)
    if name == "adam":
        return torch.optim.Adam(params, **{**options, "betas": tuple(options["betas"])})
    if name == "adamw":
        return torch.optim.AdamW(params, **{**options, "betas": tuple(options["betas"])})
    raise ValueError(f"unknown optimizer {name!r}")


def build_schedule(optimizer: torch.optim.Optimizer, spec: Mapping[str, Any], epochs: int):
    """The recipe's learning-rate schedule, stepped once per epoch."""
    name = spec["name"]
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=spec["step_epochs"], gamma=spec["gamma"])
    if name == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(spec["milestones"]), gamma=spec["gamma"])
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=spec["min_lr"])
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    raise ValueError(f"unknown schedule {name!r}")


def to_channels_last(module: nn.Module) -> nn.Module:
    """Channels-last weights: 4D ones ``channels_last``, 5D ones (``Conv3d``) ``channels_last_3d``.

    (``module.to(memory_format=torch.channels_last)`` refuses modules that hold 5D weights.) Convolutions
    then run in the layout tensor cores prefer, and their outputs follow it.
    """
    for param in module.parameters():
        if param.dim() == 4:
            param.data = param.data.contiguous(memory_format=torch.channels_last)
        elif param.dim() == 5:
            param.data = param.data.contiguous(memory_format=torch.channels_last_3d)
    return module


# -- loss, evaluation ----------------------------------------------------------------------------------------

def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Per-sample cross-entropy against class probabilities ``targets`` (mixup blends them)."""
    if smoothing:
        targets = targets * (1.0 - smoothing) + smoothing / targets.shape[-1]
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(-1)


def binary_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Per-sample binary cross-entropy of multi-label logits against (multi-hot or mixed) ``targets``,
    averaged over the classes (the sigmoid/BCE loss of multi-label tasks such as FSD50K)."""
    targets = targets.float()
    if smoothing:
        targets = targets * (1.0 - smoothing) + 0.5 * smoothing
    return F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none").mean(-1)


def is_multi_label(model: nn.Module) -> bool:
    """Whether the model's task is ``multi-label`` (``AscModel.task``; other modules are single-label)."""
    return getattr(model, "task", "single-label") == "multi-label"


@torch.no_grad()
def evaluate_features(model: nn.Module, source: Features, *, runtime: Runtime, batch_size: int,
                      num_classes: int, predictions: bool = False) -> dict[str, Any]:
    """Clip-level loss, accuracy and confusion matrix (rows: true class, columns: predicted), reduced
    over ranks (each rank evaluates every W-th clip).

    ``predictions``: also return ``predicted``, every clip's predicted class in dataset order (for reports
    by recording device). A multi-label model (:func:`is_multi_label`) is scored by
    :func:`evaluate_multi_label` instead: ``accuracy`` then holds its mAP, the figure stages select on.
    """
    if is_multi_label(model):
        return evaluate_multi_label(model, source, runtime=runtime, batch_size=batch_size, num_classes=num_classes)
    model.eval()
    indices = list(range(runtime.rank, len(source), runtime.world_size))
    predicted_all = torch.zeros(len(source), dtype=torch.float64, device=runtime.device) if predictions else None
    offset = 0
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64, device=runtime.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=runtime.device)
    if source.in_memory:  # the indices go to the device once, then are sliced there
        on_device = torch.arange(runtime.rank, len(source), runtime.world_size, device=runtime.device)
        batches = ((source.tensor[chunk].float(), source.labels[chunk]) for chunk in torch.split(on_device, batch_size))
    else:
        subset = torch.utils.data.Subset(stream_stored_dtype(source.dataset), indices)
        loader = DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=runtime.num_workers,
                            pin_memory=runtime.device.type == "cuda", generator=_own_generator())
        batches = ((x.to(runtime.device, non_blocking=True).float(), y.to(runtime.device)) for x, y in loader)
    for features, labels in batches:
        with autocast(runtime):
            logits = model(features)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
        predicted = logits.argmax(-1)
        confusion.index_put_((labels, predicted), torch.ones_like(labels, dtype=torch.float64), accumulate=True)
        if predicted_all is not None:
            where = torch.as_tensor(indices[offset:offset + len(predicted)], device=runtime.device)
            predicted_all[where] = predicted.double()
            offset += len(predicted)
    runtime.all_reduce(confusion)
    runtime.all_reduce(loss_sum)
    result = summarize_confusion(confusion.cpu(), loss_sum=float(loss_sum))
    if predicted_all is not None:
        runtime.all_reduce(predicted_all)  # each clip was predicted by one rank, zeros elsewhere
        result["predicted"] = predicted_all.long().cpu().tolist()
    return result


@torch.no_grad()
def evaluate_multi_label(model: nn.Module, source: Features, *, runtime: Runtime, batch_size: int,
                         num_classes: int) -> dict[str, Any]:
    """Multi-label scores of a split: mean binary cross-entropy, ``mAP`` (macro average precision over
    the classes with at least one positive clip) and ``per_class_ap`` (None for a class without
    positives), computed by scikit-learn on the sigmoid outputs of every clip (gathered over ranks).
    ``accuracy`` repeats the mAP (the figure a stage keeps its best epoch by) and ``metric`` says so."""
    from sklearn.metrics import average_precision_score

    model.eval()
    indices = list(range(runtime.rank, len(source), runtime.world_size))
    scores = torch.zeros(len(source), num_classes, dtype=torch.float64, device=runtime.device)
    truth = torch.zeros(len(source), num_classes, dtype=torch.float64, device=runtime.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=runtime.device)
    for chunk in _chunks(indices, batch_size):
        where = torch.as_tensor(chunk, device=runtime.device)
        if source.in_memory:
            features, labels = source.tensor[where].float(), source.labels[where]
        else:
            items = [source.dataset[i] for i in chunk]
            features = torch.stack([x for x, _ in items]).to(runtime.device).float()
            labels = torch.stack([torch.as_tensor(y) for _, y in items]).to(runtime.device)
        with autocast(runtime):
            logits = model(features)
        logits = logits.float()
        loss_sum += binary_cross_entropy(logits, labels).sum().double()
        scores[where] = torch.sigmoid(logits).double()
        truth[where] = labels.double()
    runtime.all_reduce(scores)
    runtime.all_reduce(truth)
    runtime.all_reduce(loss_sum)
    y, p = truth.cpu().numpy() > 0.5, scores.cpu().numpy()
    per_class: list[float | None] = []
    for k in range(num_classes):
        per_class.append(float(average_precision_score(y[:, k], p[:, k])) if y[:, k].any() else None)
    present = [v for v in per_class if v is not None]
    mean_ap = sum(present) / len(present) if present else float("nan")
    clips = len(source)
    return {"accuracy": mean_ap, "mAP": mean_ap, "metric": "mAP", "per_class_ap": per_class,
            "per_class_accuracy": per_class, "confusion": [], "clips": clips,
            "loss": float(loss_sum) / clips if clips else float("nan")}


def summarize_confusion(confusion: torch.Tensor, *, loss_sum: float | None = None) -> dict[str, Any]:
    """Accuracy, per-class accuracy (recall) and the confusion matrix as integers."""
    confusion = confusion.to(torch.float64)
    total = float(confusion.sum())
    correct = float(confusion.diagonal().sum())
    per_class_total = confusion.sum(1)
    per_class = torch.where(per_class_total > 0, confusion.diagonal() / per_class_total.clamp_min(1), torch.nan)
    result = {
        "accuracy": correct / total if total else float("nan"),
        "per_class_accuracy": [None if math.isnan(v) else v for v in per_class.tolist()],
        "confusion": confusion.round().long().tolist(),
        "clips": int(total),
    }
    if loss_sum is not None:
        result["loss"] = loss_sum / total if total else float("nan")
    return result


def _chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


# -- the stage loop -----------------------------------------------------------------------------------------

@dataclasses.dataclass
class StageSpec:
    """What :func:`fit` needs to know about one stage: the stage's validated settings
    (:class:`asczoo.recipes.settings.StageSettings`, defaults filled in) plus its place in the run."""

    name: str
    index: int
    unit: str
    epochs: int
    batch_size: int
    optimizer: dict[str, Any]
    schedule: dict[str, Any]
    augment: list[dict[str, Any]]
    label_smoothing: float
    drop_last: bool
    keep: str
    eval_every: int
    eval_at_start: bool
    eval_batch_size: int
    seed: int
    #: knowledge distillation (asczoo.training.distill): the training labels are rows [label, *teacher logits]
    distill: dict[str, Any] | None = None

    @classmethod
    def of(cls, stage: Mapping[str, Any], *, index: int, seed: int, eval_batch_size: int) -> StageSpec:
        """From a validated stage mapping of a training recipe."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in stage.items() if k in names}, index=index, seed=seed,
                   eval_batch_size=eval_batch_size)


class MetricsLog:
    """``metrics.jsonl`` (one line per epoch) rewritten atomically from the history, and TensorBoard."""

    def __init__(self, directory: Path, *, runtime: Runtime, tensorboard: bool | str, purge_step: int | None,
                 prefix: str, run_metrics: Path | None = None, previous: Sequence[Mapping[str, Any]] = ()) -> None:
        self.directory = directory
        self.run_metrics, self.previous = run_metrics, list(previous)
        self.runtime = runtime
        self.prefix = prefix
        self.writer = None
        self.tensorboard_note = ""
        if runtime.is_main and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                if tensorboard is True:
                    raise RuntimeError("engine.tensorboard is true but tensorboard is not installed "
                                       "(pip install tensorboard)") from None
                self.tensorboard_note = "TensorBoard logs skipped: pip install tensorboard to get them"
            else:
                self.writer = SummaryWriter(log_dir=str(directory / "tensorboard"), purge_step=purge_step)

    def write(self, history: Sequence[Mapping[str, Any]]) -> None:
        if not self.runtime.is_main:
            return
        from asczoo.atomic import atomic_write_text

        def lines(rows: Sequence[Mapping[str, Any]]) -> str:
            return "".join(json.dumps(dict(row), default=_json_default) + "\n" for row in rows)

        atomic_write_text(self.directory / "metrics.jsonl", lines(history))
        if self.run_metrics is not None:  # the run's file: earlier stages, then this one
            atomic_write_text(self.run_metrics, lines([*self.previous, *history]))

    def scalars(self, row: Mapping[str, Any]) -> None:
        if self.writer is None:
            return
        epoch = int(row["epoch"])
        for key, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("epoch", "stage_index"):
                self.writer.add_scalar(f"{self.prefix}/{key}", value, epoch)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _format_eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def fit(
    model: nn.Module,
    stage: StageSpec,
    *,
    train: Features,
    evaluate: Features,
    runtime: Runtime,
    directory: Path,
    tensorboard: bool | str = "auto",
    callbacks: Sequence[Any] = (),
    log: Callable[[str], None] = print,
    run_metrics: Path | None = None,
    previous_history: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Train one stage, resuming from its checkpoint if there is one; returns the stage's summary.

    Writes (rank 0) ``checkpoint.json`` + ``checkpoints/`` every epoch, ``metrics.jsonl`` and
    TensorBoard logs. The returned dict has ``history``, ``best`` (epoch, accuracy, evaluation) and
    ``kept_state`` (the weights the stage hands on: best or last, per ``stage.keep``). The steps are
    :class:`StageLoop`'s: resume, evaluate the start, then per epoch train, validate, checkpoint and
    report, and finally hand on the kept weights.
    """
    loop = StageLoop(model, stage, train=train, evaluate=evaluate, runtime=runtime, directory=directory,
                     tensorboard=tensorboard, callbacks=callbacks, log=log, run_metrics=run_metrics,
                     previous_history=previous_history)
    loop.resume()
    loop.evaluate_start()
    for epoch in range(loop.start_epoch, stage.epochs + 1):
        row = loop.train_epoch(epoch)
        improved = loop.validate(epoch, row)
        loop.checkpoint(epoch, row, improved)
        loop.report(epoch, row)
    return loop.finish()


class StageLoop:
    """The state of one stage's training and its steps (see :func:`fit`)."""

    def __init__(self, model: nn.Module, stage: StageSpec, *, train: Features, evaluate: Features,
                 runtime: Runtime, directory: Path, tensorboard: bool | str, callbacks: Sequence[Any],
                 log: Callable[[str], None], run_metrics: Path | None,
                 previous_history: Sequence[Mapping[str, Any]]) -> None:
        self.stage, self.evaluate_source, self.runtime, self.callbacks, self.log = stage, evaluate, runtime, callbacks, log
        self.directory, self.tensorboard, self.run_metrics = directory, tensorboard, run_metrics
        self.previous_history = previous_history
        module = self.module = model.to(runtime.device)
        if runtime.channels_last:
            to_channels_last(module)
        self.num_classes = module.num_classes
        self.multi_label = is_multi_label(module)
        self.optimizer = build_optimizer(module, stage.optimizer)
        self.schedule = build_schedule(self.optimizer, stage.schedule, stage.epochs)
        self.augment = create_augmentations(stage.augment)
        self.scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.precision == "fp16")
        self.checkpointer = Checkpointer(directory, writer=runtime.is_main)
        self.checkpointer.clean_temporary()
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.start_epoch = 1
        self.resumed = False
        self.segments = module.input_shape[0]
        self.stream = BatchStream(train, unit=stage.unit, segments=self.segments, batch_size=stage.batch_size,
                                  runtime=runtime, seed=derive_seed(stage.seed, stage.index),
                                  drop_last=stage.drop_last, shuffle=True)
        self.global_sizes = self.stream.sampler.global_sizes()
        self.unit_name = "segments" if stage.unit == "segment" else "clips"

    # -- state and resume ----------------------------------------------------------------------------

    def resume(self) -> None:
        """Load the stage's latest checkpoint if there is one; wrap the model for DDP and compile;
        open the metrics log."""
        stage, runtime, module = self.stage, self.runtime, self.module
        info = self.checkpointer.latest()
        if info is not None:
            weights, state = self.checkpointer.load(info)
            module.load_state_dict(weights, strict=True)
            self.optimizer.load_state_dict(state["optimizer"])
            self.schedule.load_state_dict(state["scheduler"])
            if "scaler" in state and state["scaler"]:
                self.scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])
            self.history = json.loads(state["history"])
            self.best = json.loads(state["best"]) if state.get("best") else None
            self.start_epoch = int(state["epoch"]) + 1
            self.resumed = True
            self.log(f"{stage.name}: resuming after epoch {state['epoch']} of {stage.epochs}")

        runner: nn.Module = module
        if runtime.compile:
            # the model is compiled, then wrapped by DDP: compiling the DDP wrapper traces DDP's own Python
            # (its logger, record_function, _inside_ddp_forward), which dynamo breaks at; the model graph
            # itself, GlobalBatchNorm's all-reduces included, compiles whole
            mode = None if runtime.compile is True else runtime.compile
            runner = torch.compile(runner, mode=mode)
        if runtime.distributed:
            device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
            runner = nn.parallel.DistributedDataParallel(runner, device_ids=device_ids,
                                                         broadcast_buffers=not runtime.sync_batchnorm)
        self.runner = runner
        self.sync_bn = GlobalBatchNorm() if runtime.distributed and runtime.sync_batchnorm else contextlib.nullcontext()
        self.logger = MetricsLog(self.directory, runtime=runtime, tensorboard=self.tensorboard,
                                 purge_step=self.start_epoch if self.resumed else None, prefix=stage.name,
                                 run_metrics=self.run_metrics, previous=self.previous_history)
        if self.logger.tensorboard_note and self.start_epoch == 1:
            self.log(self.logger.tensorboard_note)
        self.epoch_times = [row["seconds"] for row in self.history if "seconds" in row]

    def evaluate_start(self) -> None:
        """Evaluate the initialised model (epoch 0) when the stage asks for it; tell the callbacks."""
        stage = self.stage
        if self.start_epoch == 1 and stage.eval_at_start:
            result = self.evaluate_now()
            row = {"stage": stage.name, "epoch": 0, "lr": self.optimizer.param_groups[0]["lr"],
                   "eval_loss": result["loss"], "eval_accuracy": result["accuracy"]}
            self.history.append(row)
            self.log(f"{stage.name} epoch 0 (initialised): eval accuracy {100 * result['accuracy']:.2f}%")
        for callback in self.callbacks:
            if hasattr(callback, "on_fit_start"):
                callback.on_fit_start(stage=stage, model=self.module, start_epoch=self.start_epoch)

    # -- one epoch -------------------------------------------------------------------------------------

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One pass over the training batches; returns the epoch's metrics row."""
        from tqdm.auto import tqdm

        stage, runtime, runner, optimizer, scaler = self.stage, self.runtime, self.runner, self.optimizer, self.scaler
        global_sizes, segments, num_classes = self.global_sizes, self.segments, self.num_classes
        seed_everything(derive_seed(stage.seed, stage.index, epoch, runtime.rank))
        runner.train()
        began = time.perf_counter()
        totals = torch.zeros(3, dtype=torch.float64, device=runtime.device)  # loss sum, correct, count
        lr = optimizer.param_groups[0]["lr"]
        bar = tqdm(total=len(global_sizes), desc=f"{stage.name} {epoch}/{stage.epochs}", unit="batch",
                   disable=not runtime.progress, leave=False, dynamic_ncols=True)
        seen, shown = 0, -1.0
        for step, (features, labels) in enumerate(self.stream.epoch(epoch)):
            teacher = None
            if stage.distill is not None:  # rows [label, *teacher logits] (asczoo.training.distill.WithTeacher)
                labels, teacher = labels[:, 0].long(), labels[:, 1:]
            targets = labels.float() if self.multi_label else one_hot(labels, num_classes)
            features, targets = self.augment(features, targets)
            with self.sync_bn, autocast(runtime):
                logits = runner(features)
            losses = (binary_cross_entropy if self.multi_label else soft_cross_entropy)(logits, targets,
                                                                                         stage.label_smoothing)
            if teacher is not None:
                losses = distillation_loss(logits, teacher, losses, weight=stage.distill["lambda"],
                                           tau=stage.distill["tau"])
            loss = losses.sum() * (runtime.world_size / global_sizes[step])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            with torch.no_grad():
                if self.multi_label:  # the top-scoring class is one of the clip's labels
                    correct = (targets.gather(-1, logits.argmax(-1, keepdim=True)) > 0.5).sum()
                else:
                    correct = (logits.argmax(-1) == targets.argmax(-1)).sum()
                # device-side sums, the count as a plain number: no host tensor, no wait for the device
                totals[:2] += torch.stack([losses.detach().sum().double(), correct.double()])
                totals[2] += len(labels)
            seen += global_sizes[step]
            if runtime.progress:
                bar.update(1)
                elapsed = time.perf_counter() - began
                if elapsed - shown < 0.5 and step + 1 < len(global_sizes):
                    continue  # reading the totals synchronises with the GPU: twice a second is enough
                shown = elapsed
                clips = seen / (segments if stage.unit == "segment" else 1)
                bar.set_postfix_str(f"loss {float(totals[0] / totals[2]):.3f} acc {100 * float(totals[1] / totals[2]):.1f}% "
                                    f"{clips / max(elapsed, 1e-9):.0f} clips/s")
        bar.close()
        self.schedule.step()
        runtime.all_reduce(totals)
        seconds = time.perf_counter() - began
        return {
            "stage": stage.name, "epoch": epoch, "lr": lr,
            "train_loss": float(totals[0] / totals[2]), "train_accuracy": float(totals[1] / totals[2]),
            f"{self.unit_name}_per_s": float(totals[2]) / seconds,
            "clips_per_s": float(totals[2]) / seconds / (segments if stage.unit == "segment" else 1),
            "seconds": seconds,
        }

    # -- validation and keeping the best -------------------------------------------------------------

    def evaluate_now(self) -> dict[str, Any]:
        return evaluate_features(self.module, self.evaluate_source, runtime=self.runtime,
                                 batch_size=self.stage.eval_batch_size, num_classes=self.num_classes)

    def validate(self, epoch: int, row: dict[str, Any]) -> bool:
        """Evaluate when due; record the best epoch (and its weights); returns whether it improved."""
        stage, best = self.stage, self.best
        improved = False
        if epoch % stage.eval_every == 0 or epoch == stage.epochs:
            result = self.evaluate_now()
            row.update({"eval_loss": result["loss"], "eval_accuracy": result["accuracy"]})
            if best is None or result["accuracy"] > best["accuracy"]:
                self.best = best = {"epoch": epoch, "accuracy": result["accuracy"], "evaluation": result}
                improved = True
        row["best_accuracy"] = best["accuracy"] if best else None
        row["best_epoch"] = best["epoch"] if best else None
        self.history.append(row)
        self.epoch_times.append(row["seconds"])
        if improved:
            self.best_state = {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}
        return improved

    def checkpoint(self, epoch: int, row: Mapping[str, Any], improved: bool) -> None:
        """Write the epoch's checkpoint (and the best weights when they improved) and the metrics."""
        best = self.best
        state = {
            "epoch": epoch, "optimizer": self.optimizer.state_dict(), "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {}, "rng": rng_state(),
            "history": json.dumps(self.history, default=_json_default),
            "best": json.dumps(best, default=_json_default) if best else "",
        }
        self.checkpointer.save(
            epoch=epoch, model_state=self.module.state_dict(), state=state,
            best_state=self.best_state if improved else None,
            best={"epoch": best["epoch"], "accuracy": best["accuracy"]} if improved else None,
            metadata={"stage": self.stage.name},
        )
        self.logger.write(self.history)
        self.logger.scalars(row)
        self.runtime.barrier()

    def report(self, epoch: int, row: Mapping[str, Any]) -> None:
        """One log line for the epoch, and the callbacks' ``on_epoch_end``."""
        stage, best = self.stage, self.best
        eta = (sum(self.epoch_times) / len(self.epoch_times)) * (stage.epochs - epoch)
        evaluation = (f"  eval {100 * row['eval_accuracy']:.2f}% (best {100 * best['accuracy']:.2f}% @ {best['epoch']})"
                      if "eval_accuracy" in row else "")
        self.log(f"{stage.name} epoch {epoch}/{stage.epochs}  loss {row['train_loss']:.4f}  "
                 f"acc {100 * row['train_accuracy']:.2f}%{evaluation}  lr {row['lr']:.3g}  "
                 f"{row['clips_per_s']:.1f} clips/s  {row['seconds']:.1f}s  ETA {_format_eta(eta)}")
        for callback in self.callbacks:
            if hasattr(callback, "on_epoch_end"):
                callback.on_epoch_end(stage=stage, epoch=epoch, metrics=row)

    def finish(self) -> dict[str, Any]:
        """Close the log; the summary with the weights the stage hands on (best or last)."""
        self.logger.close()
        checkpointer, best = self.checkpointer, self.best
        final = checkpointer.latest() if self.runtime.is_main else None
        last_state = {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}
        best_state = self.best_state
        if self.stage.keep == "best" and best is not None:
            if best_state is None:  # the best epoch was before a resume: read it back
                info = final if final is not None else checkpointer.latest()
                best_state = checkpointer.load_best(info) if info else None
            kept = best_state if best_state is not None else last_state
        else:
            kept = last_state
        return {"history": self.history, "best": best, "kept_state": kept, "last_epoch": self.stage.epochs}
