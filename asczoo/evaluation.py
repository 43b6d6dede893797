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

    def to_dict(self) -> dict[str, Any]:
        """The report mapping (the keys the model card reads: see :mod:`asczoo.model_card`)."""
        return {
            "model": self.model, "dataset": self.dataset, "split": self.split, "num_clips": self.clips,
            "accuracy": self.accuracy, "loss": self.loss, "classes": list(self.classes),
            "per_class_accuracy": dict(zip(self.classes, self.per_class_accuracy)),
            "confusion_matrix": self.confusion,
        }

    def format(self) -> str:
        """A plain-text report: overall accuracy, per-class accuracy, the confusion matrix."""
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
    from asczoo.hub import from_pretrained

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
        model_or_dir: an :class:`~asczoo.model.AscModel`, a saved model folder, or a run directory
            (``stage`` picks a stage's model instead of the final one).
        data: dataset root (default: the one the run was trained on).
        dataset: dataset plugin (default: the one the model was trained on, else dcase2019-task1a).
        split, fold: which labelled clips (default: the fold the model was trained on, else 1).
        cache_dir: feature cache to use (default: the run's, else ``ROOT/.asczoo-cache`` if present,
            else features are computed from the audio).
    """
    from asczoo.datasets import create_dataset
    from asczoo.engine import Features, Runtime, evaluate_features

    model, defaults = resolve_model(model_or_dir, stage=stage)
    root = data if data is not None else defaults.get("root")
    if root is None:
        raise ValueError("evaluate: no data root given (pass data=ROOT / --data ROOT)")
    name = dataset or defaults.get("dataset") or DEFAULT_DATASET
    fold = fold if fold is not None else defaults.get("fold", 1)
    if cache_dir is None:
        cache_dir = defaults.get("cache") if data is None else None
        if cache_dir is None:
            from asczoo.feature_cache import default_cache_dir

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
    result = evaluate_features(model, Features(ds, runtime=runtime, in_memory=False), runtime=runtime,
                               batch_size=batch_size, num_classes=model.num_classes)
    return Evaluation(model=model.name, dataset=name, split=split, classes=list(model.classes),
                      accuracy=result["accuracy"], per_class_accuracy=result["per_class_accuracy"],
                      confusion=result["confusion"], clips=result["clips"], loss=result.get("loss"))


def from_summary(summary: Mapping[str, Any], *, model: str, dataset: str, split: str,
                 classes: Sequence[str]) -> Evaluation:
    """An :class:`Evaluation` from the engine's summary dict (``evaluate_features``)."""
    return Evaluation(model=model, dataset=dataset, split=split, classes=list(classes),
                      accuracy=summary["accuracy"], per_class_accuracy=summary["per_class_accuracy"],
                      confusion=summary["confusion"], clips=summary["clips"], loss=summary.get("loss"))


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
    lines += ["| stage | model | clips | accuracy |", "|---|---|---|---|"]
    for stage, ev in evaluations.items():
        lines.append(f"| {stage} | {ev.model} | {ev.clips} | {100 * ev.accuracy:.2f} % |")
    if evaluations:
        classes = next(iter(evaluations.values())).classes
        lines += ["", "## Per-class accuracy", "", "| class | " + " | ".join(evaluations) + " |",
                  "|---|" + "---|" * len(evaluations)]
        for i, name in enumerate(classes):
            cells = [("n/a" if ev.per_class_accuracy[i] is None else f"{100 * ev.per_class_accuracy[i]:.1f} %")
                     for ev in evaluations.values()]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", *notes] if notes else []
    return "\n".join(lines) + "\n"
