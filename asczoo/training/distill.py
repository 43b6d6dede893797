"""Knowledge distillation as a training-stage option: ``distill: {teachers: [...], lambda: 0.5, tau: 2.0}``.

The teachers are earlier stages of the same run (by name), saved model folders or run directories; an
ensemble's logits are averaged. Their logits are computed once per training clip on the stored,
augmentation-free features and cached beside the feature cache (``CACHE/teachers/<key>.safetensors``,
the key hashing the teachers' weight files, the frontend and the clip list), so a resumed or repeated
stage reads them back. During the stage each batch carries its clips' teacher logits, and the loss is

    (1 - lambda) * CE(student, targets) + lambda * tau^2 * KL(softmax(teacher / tau) || softmax(student / tau))

per sample (Hinton et al.; the tau^2 keeps the gradient scale of the soft term independent of tau).
For segment stages (``unit: segment``) every segment of a clip gets the clip's teacher logits. With
mixup the soft targets are those of the clip before mixing (as the hard targets' mixing does not reach
them): prefer Freq-MixStyle, which leaves the targets alone.

A teacher with other classes (or another class order) or another frontend than the student is
refused, naming both: its logits would not describe the student's inputs or outputs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from asczoo.recipes.settings import check_distill as check_spec  # noqa: F401 - the option's check, kept here by name
from asczoo.training.kd_loss import distillation_loss  # noqa: F401  (re-exported: the loss belongs to this option)


def load_teachers(names: Sequence[str], *, run_dir: Path | None, stages: Sequence[str]) -> list[tuple[str, Any, Path]]:
    """``(label, model, weights file)`` per teacher: an earlier stage's saved model, or a folder/run dir."""
    from asczoo.training.evaluation import resolve_model

    out = []
    for name in names:
        path = run_dir / name / "model" if run_dir is not None and name in stages else Path(name).expanduser()
        model, _ = resolve_model(path)
        weights = path / "model" / "model.safetensors" if (path / "recipe.yaml").is_file() else path / "model.safetensors"
        out.append((str(path), model.cpu().eval(), weights))
    return out


def check_compatible(student: Any, teachers: Sequence[tuple[str, Any, Path]]) -> None:
    """Refuse a teacher whose classes or frontend differ from the student's, naming both."""
    for label, teacher, _ in teachers:
        if list(teacher.classes) != list(student.classes):
            raise ValueError(f"distillation: teacher {label} ({teacher.name}) has classes {list(teacher.classes)}; "
                             f"the student {student.name} has {list(student.classes)}")
        if dict(teacher.frontend_config) != dict(student.frontend_config):
            differ = sorted(k for k in set(teacher.frontend_config) | set(student.frontend_config)
                            if teacher.frontend_config.get(k) != student.frontend_config.get(k))
            detail = ", ".join(f"{k}: {teacher.frontend_config.get(k)!r} vs {student.frontend_config.get(k)!r}" for k in differ)
            raise ValueError(f"distillation: teacher {label} ({teacher.name}) has another frontend than the student "
                             f"{student.name} (teacher vs student: {detail}); train the teacher on the student's frontend")


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def teacher_logits(teachers: Sequence[tuple[str, Any, Path]], dataset: Any, *, cache_dir: Path | None,
                   frontend: Mapping[str, Any], batch_size: int = 64, device: torch.device | str = "cpu",
                   say: Callable[[str], None] = print) -> torch.Tensor:
    """The ensemble's mean logits ``(clips, K)`` on ``dataset``'s stored features, cached by key."""
    from asczoo.atomic import atomic_save_safetensors

    files = [getattr(c, "file", str(i)) for i, c in enumerate(getattr(dataset, "clips", range(len(dataset))))]
    key = hashlib.sha256(json.dumps({
        "teachers": [_file_digest(w) for _, _, w in teachers], "frontend": dict(frontend), "files": files,
    }, sort_keys=True, default=str).encode()).hexdigest()[:24]
    path = Path(cache_dir) / "teachers" / f"{key}.safetensors" if cache_dir is not None else None
    if path is not None and path.is_file():
        from safetensors.torch import load_file

        logits = load_file(str(path))["logits"]
        if logits.shape[0] == len(dataset):
            say(f"distillation: teacher logits of {len(dataset)} clips read from {path}")
            return logits
    total = None
    with torch.no_grad():
        for _, teacher, _ in teachers:
            teacher = teacher.to(device)
            rows = []
            for start in range(0, len(dataset), batch_size):
                x = torch.stack([torch.as_tensor(dataset[i][0]) for i in range(start, min(len(dataset), start + batch_size))])
                rows.append(teacher(x.to(device).float()).float().cpu())
            logits = torch.cat(rows)
            total = logits if total is None else total + logits
            teacher.cpu()
    mean = total / len(teachers)
    if path is not None:
        atomic_save_safetensors({"logits": mean.contiguous()}, path, metadata={"teachers": json.dumps([t for t, _, _ in teachers])})
        say(f"distillation: teacher logits of {len(dataset)} clips ({len(teachers)} teacher(s)) cached in {path}")
    return mean


class WithTeacher(torch.utils.data.Dataset):
    """A training dataset whose labels are rows ``[label, *teacher logits]`` (split again in the engine)."""

    def __init__(self, dataset: Any, logits: torch.Tensor) -> None:
        self.dataset, self.logits = dataset, logits
        self.labels = [[float(label), *row] for label, row in zip(_labels(dataset), logits.tolist())]
        self.classes = getattr(dataset, "classes", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        features, _ = self.dataset[index]
        return features, torch.tensor(self.labels[index])

    def __getattr__(self, name: str):  # normalization(), files, device_of ...: the wrapped dataset's
        if name in ("dataset", "logits", "labels", "classes"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def _labels(dataset: Any) -> list[int]:
    labels = getattr(dataset, "labels", None)
    return list(labels) if labels is not None else [int(dataset[i][1]) for i in range(len(dataset))]


def attach(spec: Mapping[str, Any], student: Any, train_ds: Any, features: Any, *, runtime: Any, run_dir: Path,
           stages: Sequence[str], cache_dir: Path | None, say: Callable[[str], None]) -> Any:
    """Training features whose labels carry the teachers' cached logits (see :class:`WithTeacher`)."""
    from asczoo.training.batches import Features

    teachers = load_teachers(spec["teachers"], run_dir=run_dir, stages=stages)
    check_compatible(student, teachers)
    def compute() -> torch.Tensor:
        return teacher_logits(teachers, train_ds, cache_dir=cache_dir, frontend=student.frontend_config,
                              batch_size=spec.get("batch_size", 64), device=runtime.device, say=say)

    # under DDP rank 0 computes and caches the logits; the other ranks then read its file
    logits = compute() if runtime.is_main else None
    runtime.barrier()
    if logits is None:
        logits = compute()
    wrapped = Features(WithTeacher(train_ds, logits), runtime=runtime, in_memory=False)
    if features.in_memory:  # the same features, already loaded: only the labels change
        wrapped.tensor = features.tensor
        wrapped.labels = wrapped.labels.to(features.tensor.device)
    return wrapped
