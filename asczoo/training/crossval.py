"""``asczoo cv RECIPE --data ROOT``: a training recipe on every official fold of its dataset.

Each fold is an ordinary training run in ``OUT/fold<K>`` (``data.fold`` set to K), so a fold that was
interrupted continues from its last checkpoint and a finished fold is not trained again: running the
same command again resumes the cross-validation. When every fold is done, ``OUT/cv.json`` and
``OUT/cv.md`` give each fold's figure (accuracy, or mAP for a multi-label dataset) and their mean and
standard deviation (the sample standard deviation, ddof 1, as ESC-50 and UrbanSound8K results are
usually reported). The folds are the dataset plugin's official ones (its factory's ``folds``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence


@dataclasses.dataclass
class CrossValidation:
    """Every fold's figure (fold -> value), their mean and standard deviation, and where the runs are."""

    recipe: str
    dataset: str
    metric: str
    folds: dict[int, float]
    mean: float
    std: float
    out: Path
    runs: dict[int, Path]

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "dataset": self.dataset, "metric": self.metric,
                "folds": {str(k): v for k, v in self.folds.items()}, "mean": self.mean, "std": self.std,
                "runs": {str(k): str(v) for k, v in self.runs.items()}}

    def format(self) -> str:
        lines = [f"{self.recipe} on {self.dataset}: {self.metric} over {len(self.folds)} fold(s)"]
        lines += [f"  fold {k:>2}  {100 * v:6.2f}%   ({self.runs[k]})" for k, v in self.folds.items()]
        lines.append(f"  mean     {100 * self.mean:6.2f}% +- {100 * self.std:.2f} (std over folds)")
        return "\n".join(lines)


def _fold_overrides(overrides: Mapping[str, Any] | Sequence[str] | None, fold: int) -> dict[str, Any]:
    from asczoo.recipes.training_recipes import merge, parse_set

    base = parse_set(list(overrides)) if isinstance(overrides, (list, tuple)) else dict(overrides or {})
    return merge(base, {"data": {"fold": fold}})


def cross_validate(
    recipe: str | os.PathLike | Mapping[str, Any],
    *,
    data: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    folds: Sequence[int] | None = None,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> CrossValidation:
    """Train ``recipe`` on each fold (default: all official folds of its dataset), resuming finished or
    interrupted folds in ``out`` (default ``runs/NAME-cv``); returns and writes the per-fold figures."""
    from asczoo.recipes import training_recipes
    from asczoo.atomic import atomic_write_text, exclusive_output
    from asczoo.data.datasets import dataset_defaults
    from asczoo.training.runs import train

    name, rec = training_recipes.load(recipe, _fold_overrides(overrides, 1))
    dataset = rec["data"]["dataset"]
    official = list(dataset_defaults(dataset)["folds"])
    if len(official) < 2:
        raise ValueError(f"dataset {dataset!r} has {'one official fold' if official else 'no official folds'}; "
                         "cross-validation needs several (train it with `asczoo train` instead)")
    chosen = list(folds) if folds else official
    unknown = [k for k in chosen if k not in official]
    if unknown:
        raise ValueError(f"fold(s) {unknown} are not official folds of {dataset!r}; expected some of {official}")
    base = Path(out) if out is not None else Path("runs") / f"{name}-cv"
    figures: dict[int, float] = {}
    runs: dict[int, Path] = {}
    metric = "accuracy"
    for k in chosen:
        if log:
            log(f"cv: fold {k} of {dataset} ({len(figures) + 1}/{len(chosen)}) in {base / f'fold{k}'}")
        result = train(recipe, data=data, out=base / f"fold{k}", resume=True, overrides=_fold_overrides(overrides, k),
                       log=log)
        final = list(result.stages.values())[-1]
        figures[k], runs[k], metric = final.accuracy, result.run_dir, final.metric
    values = list(figures.values())
    summary = CrossValidation(recipe=name, dataset=dataset, metric=metric, folds=figures,
                              mean=statistics.fmean(values), std=statistics.stdev(values) if len(values) > 1 else 0.0,
                              out=base, runs=runs)
    # one writer of the summary at a time; a killed earlier writer's temporary files are removed first
    with exclusive_output(base / "cv.json"), exclusive_output(base / "cv.md"):
        atomic_write_text(base / "cv.json", json.dumps(summary.to_dict(), indent=2))
        table = ["| fold | " + metric + " |", "|---|---|"] + [f"| {k} | {100 * v:.2f} % |" for k, v in figures.items()]
        table.append(f"| mean +- std | {100 * summary.mean:.2f} +- {100 * summary.std:.2f} % |")
        atomic_write_text(base / "cv.md", f"# {name}: {len(figures)}-fold cross-validation on {dataset}\n\n"
                          + "\n".join(table) + "\n")
    return summary
