"""Evaluating a model on a dataset split: overall and per-class accuracy, the confusion matrix, reports.

``evaluate(model_or_dir, data)`` takes a model, a saved model folder (``model.safetensors`` +
``config.json``) or a training run directory (its final model, and its recipe's dataset and data root
as defaults). Features go through the model's own frontend and, when a cache is there or asked for,
the feature cache. ``asczoo eval`` prints the same.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

DEFAULT_DATASET = "dcase2019-task1a"


@dataclasses.dataclass
class Evaluation:
    """The result of :func:`evaluate`. ``confusion[i][j]``: clips of true class i predicted as j."""

    model: str
    dataset: str
    split: str
    classes: list[str]
    accuracy: float
    per_class_accuracy: list[float | None]
    confusion: list[list[int]]
    clips: int
    loss: float | None = None
    #: ``accuracy``, or ``mAP`` for a multi-label model: then ``accuracy`` holds the mAP and
    #: ``per_class_accuracy`` each class's average precision (there is no confusion matrix)
    metric: str = "accuracy"
    #: accuracy by recording device (:func:`device_report`), for datasets that know each clip's device
    devices: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The report mapping (the keys the model card reads: see :mod:`asczoo.hub.card`)."""
        if self.metric == "mAP":
            out = {"model": self.model, "dataset": self.dataset, "split": self.split, "num_clips": self.clips,
                   "task": "multi-label", "mAP": self.accuracy, "loss": self.loss, "classes": list(self.classes),
                   "per_class_ap": dict(zip(self.classes, self.per_class_accuracy))}
        else:
            out = {
                "model": self.model, "dataset": self.dataset, "split": self.split, "num_clips": self.clips,
                "accuracy": self.accuracy, "loss": self.loss, "classes": list(self.classes),
                "per_class_accuracy": dict(zip(self.classes, self.per_class_accuracy)),
                "confusion_matrix": self.confusion,
            }
        if self.devices is not None:
            out["devices"] = self.devices
        return out

    def format(self) -> str:
        """A plain-text report: overall accuracy, per-class accuracy, the confusion matrix (multi-label:
        mAP and per-class average precision); then accuracy by device when known."""
        if self.metric == "mAP":
            return self._format_multi_label() + self._format_devices()
        return self._format_single_label() + self._format_devices()

    def _format_multi_label(self) -> str:
        width = max(len(c) for c in self.classes)
        lines = [f"{self.model} on {self.dataset} ({self.split}, {self.clips} clips): mAP {100 * self.accuracy:.2f}%"
                 + (f", loss {self.loss:.4f}" if self.loss is not None else ""), "", "per-class average precision:"]
        for name, ap in zip(self.classes, self.per_class_accuracy):
            lines.append(f"  {name:<{width}}  " + ("   n/a (no positive clip)" if ap is None else f"{100 * ap:6.2f}%"))
        return "\n".join(lines)

    def _format_devices(self) -> str:
        if not self.devices:
            return ""
        lines = ["", "", "accuracy by recording device (DCASE: seen and unseen devices, macro average):"]
        for device, row in self.devices["per_device"].items():
            kind = "unseen" if device in self.devices["unseen_devices"] else "seen"
            lines.append(f"  {device:<4} {kind:<6} {100 * row['accuracy']:6.2f}%  ({row['correct']}/{row['clips']})")
        for key in ("seen", "unseen", "macro"):
            value = self.devices.get(key)
            lines.append(f"  {key:<11} " + ("   n/a" if value is None else f"{100 * value:6.2f}%"))
        return "\n".join(lines)

    def _format_single_label(self) -> str:
        width = max(len(c) for c in self.classes)
        lines = [f"{self.model} on {self.dataset} ({self.split}, {self.clips} clips): "
                 f"accuracy {100 * self.accuracy:.2f}%" + (f", loss {self.loss:.4f}" if self.loss is not None else ""),
                 "", "per-class accuracy:"]
        for name, acc, row in zip(self.classes, self.per_class_accuracy, self.confusion):
            value = "   n/a" if acc is None else f"{100 * acc:6.2f}%"
            lines.append(f"  {name:<{width}}  {value}  ({row[self.classes.index(name)]}/{sum(row)})")
        lines += ["", "confusion matrix (rows: true class, columns: predicted class, by number):"]
        cell = max(4, len(str(max((max(r) for r in self.confusion), default=0))) + 1)
        lines.append(" " * (width + 6) + "".join(f"{j:>{cell}}" for j in range(len(self.classes))))
        for i, (name, row) in enumerate(zip(self.classes, self.confusion)):
            lines.append(f"  {i:>2} {name:<{width}}" + "".join(f"{v:>{cell}}" for v in row))
        return "\n".join(lines)


# -- loading what to evaluate ------------------------------------------------------------------------------

def resolve_model(model_or_dir: Any, *, stage: str | None = None) -> tuple[Any, dict[str, Any]]:
    """``(model, defaults)`` from a model, a saved model folder or a run directory; ``defaults`` holds
    the dataset, fold, data root and cache the model was trained with, when known."""
    from asczoo.models.pretrained import from_pretrained

    if isinstance(model_or_dir, torch.nn.Module):
        return model_or_dir, {}
    path = Path(model_or_dir)
    defaults: dict[str, Any] = {}
    if (path / "recipe.yaml").is_file():  # a run directory
        from asczoo import safe_yaml

        run = safe_yaml.safe_load((path / "recipe.yaml").read_text(encoding="utf-8")) or {}
        data = (run.get("recipe") or {}).get("data") or {}
        defaults = {"dataset": data.get("dataset"), "fold": data.get("fold"), "root": run.get("data_root"),
                    "cache": run.get("cache_dir"), "options": data.get("options") or {}}
        folder = path / stage / "model" if stage else path / "model"
        if not (folder / "config.json").is_file():
            done = "" if stage else " (the run has not finished: name a finished stage with --stage)"
            raise FileNotFoundError(f"{folder}: no saved model in the run directory{done}")
        path = folder
    elif stage:
        raise ValueError(f"--stage {stage!r} needs a run directory; {path} is not one (no recipe.yaml)")
    model = from_pretrained(path)
    training = {}
    config_path = path / "config.json"
    if config_path.is_file():
        training = json.loads(config_path.read_text(encoding="utf-8")).get("training") or {}
    for key in ("dataset", "fold", "cache", "options"):
        if defaults.get(key) is None and training.get(key) is not None:
            defaults[key] = training[key]
    return model, defaults


def evaluate(
    model_or_dir: Any,
    data: str | os.PathLike | None = None,
    *,
    dataset: str | None = None,
    split: str = "evaluate",
    fold: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    stage: str | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    skip_bad: bool = False,
    workers: int = 0,
) -> Evaluation:
    """Accuracy, per-class accuracy and confusion matrix of a model on a labelled split.

    Args:
        model_or_dir: an :class:`~asczoo.models.model.AscModel`, a saved model folder, or a run directory
            (``stage`` picks a stage's model instead of the final one).
        data: dataset root (default: the one the run was trained on).
        dataset: dataset plugin (default: the one the model was trained on, else dcase2019-task1a).
        split, fold: which labelled clips (default: the fold the model was trained on, else 1).
        cache_dir: feature cache to use (default: the run's, else ``ROOT/.asczoo-cache`` if present,
            else features are computed from the audio).
    """
    from asczoo.data.datasets import create_dataset
    from asczoo.training.engine import Features, Runtime, evaluate_features

    model, defaults = resolve_model(model_or_dir, stage=stage)
    root = data if data is not None else defaults.get("root")
    if root is None:
        raise ValueError("evaluate: no data root given (pass data=ROOT / --data ROOT)")
    if not Path(root).expanduser().is_dir():  # one line naming the root, not a reader's setup-file error
        origin = "--data ROOT" if data is not None else f"the root {model_or_dir} was trained on"
        raise ValueError(f"evaluate: data root {root} ({origin}) is not a directory; expected the dataset's "
                         "folder (pass --data ROOT)")
    name = dataset or defaults.get("dataset") or DEFAULT_DATASET
    fold = fold if fold is not None else defaults.get("fold", 1)
    if cache_dir is None:
        cache_dir = defaults.get("cache") if data is None else None
        if cache_dir is None:
            from asczoo.data.feature_cache import default_cache_dir

            candidate = default_cache_dir(root)
            cache_dir = candidate if candidate.is_dir() else None
    options = dict(defaults.get("options") or {})
    if skip_bad:
        options["skip_bad"] = True
    ds = create_dataset(name, root, split=split, fold=fold, frontend=model.frontend_config,
                        cache_dir=cache_dir, **options)
    if list(ds.classes) != list(model.classes):
        raise ValueError(f"the dataset's classes {list(ds.classes)} differ from the model's {list(model.classes)}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    runtime = Runtime(device=torch.device(device), num_workers=workers, progress=False,
                      precision="bf16" if torch.device(device).type == "cuda" else "fp32")
    model = model.to(runtime.device)
    features = Features(ds, runtime=runtime, in_memory=False)
    result = evaluate_features(model, features, runtime=runtime, batch_size=batch_size,
                               num_classes=model.num_classes, predictions=hasattr(ds, "device_of"))
    return from_summary(result, model=model.name, dataset=name, split=split, classes=model.classes, dataset_obj=ds)


def from_summary(summary: Mapping[str, Any], *, model: str, dataset: str, split: str,
                 classes: Sequence[str], dataset_obj: Any = None) -> Evaluation:
    """An :class:`Evaluation` from the engine's summary dict (``evaluate_features``). With the evaluated
    dataset (``dataset_obj``) that knows each clip's device (``device_of``, ``unseen_devices``) and the
    summary's per-clip ``predicted``, the evaluation carries the per-device report."""
    devices = None
    if dataset_obj is not None and "predicted" in summary and hasattr(dataset_obj, "device_of"):
        devices = device_report(dataset_obj.labels, summary["predicted"],
                                [dataset_obj.device_of.get(f, "?") for f in dataset_obj.files],
                                unseen=getattr(dataset_obj, "unseen_devices", ()))
    return Evaluation(model=model, dataset=dataset, split=split, classes=list(classes),
                      accuracy=summary["accuracy"], per_class_accuracy=summary["per_class_accuracy"],
                      confusion=summary["confusion"], clips=summary["clips"], loss=summary.get("loss"),
                      metric=summary.get("metric", "accuracy"), devices=devices)


def device_report(labels: Sequence[int], predicted: Sequence[int], devices: Sequence[str], *,
                  unseen: Sequence[str] = ()) -> dict[str, Any]:
    """Accuracy by recording device, as DCASE reports the TAU Mobile sets: each device's accuracy, the
    mean over the seen devices (those in the training data), over the ``unseen`` ones, and over all
    devices (``macro``: every device counts once, however many clips it has)."""
    if not len(labels) == len(predicted) == len(devices):
        raise ValueError(f"device_report: {len(labels)} labels, {len(predicted)} predictions and {len(devices)} "
                         "devices; expected one of each per clip")
    per: dict[str, list[int]] = {}
    for label, guess, device in zip(labels, predicted, devices):
        row = per.setdefault(device, [0, 0])
        row[0] += int(label == guess)
        row[1] += 1
    per_device = {d: {"accuracy": c / n, "correct": c, "clips": n} for d, (c, n) in sorted(per.items())}

    def mean(names: Sequence[str]) -> float | None:
        values = [per_device[d]["accuracy"] for d in names]
        return sum(values) / len(values) if values else None

    unseen_here = [d for d in per_device if d in set(unseen)]
    seen_here = [d for d in per_device if d not in set(unseen)]
    return {"per_device": per_device, "unseen_devices": list(unseen), "seen": mean(seen_here),
            "unseen": mean(unseen_here), "macro": mean(list(per_device))}


# -- report files ----------------------------------------------------------------------------------------

def confusion_png(evaluation: Evaluation, path: str | os.PathLike, *, title: str | None = None) -> bool:
    """Plot the confusion matrix (row-normalised colours, counts written in) to a PNG.

    Returns False, writing nothing, when matplotlib is not installed (``pip install asczoo[train]``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    from asczoo.atomic import atomic_write

    if not evaluation.confusion:  # multi-label: no confusion matrix
        return False
    counts = torch.tensor(evaluation.confusion, dtype=torch.float64)
    rates = counts / counts.sum(1, keepdim=True).clamp_min(1)
    k = len(evaluation.classes)
    size = max(4.0, 0.6 * k + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), evaluation.classes, rotation=45, ha="right")
    ax.set_yticks(range(k), evaluation.classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if rates[i, j] > 0.5 else "black")
    ax.set_title(title or f"{evaluation.model}: {100 * evaluation.accuracy:.1f}% ({evaluation.clips} clips)")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return True


def markdown_report(title: str, evaluations: Mapping[str, Evaluation], *, notes: Sequence[str] = ()) -> str:
    """A Markdown report: one accuracy table over the stages, then per-class accuracies."""
    lines = [f"# {title}", ""]
    metric = next(iter(evaluations.values())).metric if evaluations else "accuracy"
    lines += [f"| stage | model | clips | {metric} |", "|---|---|---|---|"]
    for stage, ev in evaluations.items():
        lines.append(f"| {stage} | {ev.model} | {ev.clips} | {100 * ev.accuracy:.2f} % |")
    for stage, ev in evaluations.items():
        if ev.devices:
            lines += ["", f"## Accuracy by device ({stage})", "", "| device | seen/unseen | clips | accuracy |",
                      "|---|---|---|---|"]
            for device, row in ev.devices["per_device"].items():
                kind = "unseen" if device in ev.devices["unseen_devices"] else "seen"
                lines.append(f"| {device} | {kind} | {row['clips']} | {100 * row['accuracy']:.2f} % |")
            for key in ("seen", "unseen", "macro"):
                if ev.devices.get(key) is not None:
                    lines.append(f"| {key} (mean over devices) | | | {100 * ev.devices[key]:.2f} % |")
    if evaluations:
        classes = next(iter(evaluations.values())).classes
        heading = "Per-class average precision" if metric == "mAP" else "Per-class accuracy"
        lines += ["", f"## {heading}", "", "| class | " + " | ".join(evaluations) + " |",
                  "|---|" + "---|" * len(evaluations)]
        for i, name in enumerate(classes):
            cells = [("n/a" if ev.per_class_accuracy[i] is None else f"{100 * ev.per_class_accuracy[i]:.1f} %")
                     for ev in evaluations.values()]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", *notes] if notes else []
    return "\n".join(lines) + "\n"
