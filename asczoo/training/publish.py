"""Publishing a training run: find its kept model and report, reload the model strictly, upload it.

The run folder's layout is :mod:`asczoo.training.runs`'s; the upload itself is :mod:`asczoo.hub`'s.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from asczoo.hub.files import (
    CARD_NAME, CONFIG_NAME, CONFUSION_NAME, PICKLE_SUFFIXES, REPORT_NAME, WEIGHTS_NAME, check_own_file,
    publishable_files, push_to_hub, save_pretrained,
)
from asczoo.names import REPO_ID_RE
from asczoo.models.pretrained import load_pretrained


@dataclasses.dataclass(frozen=True)
class RunFiles:
    """What :func:`find_run_files` found in a training run: the model folder, report and image."""

    model_dir: Path
    report: Path | None
    confusion_matrix: Path | None


def find_run_files(run_dir: str | os.PathLike) -> RunFiles:
    """Locate the saved model folder, ``report.json`` and ``confusion_matrix.png`` of a run.

    ``run_dir`` is a model folder itself, or a run directory: its ``model/`` folder (the final model
    of ``asczoo.train``) or else the one model folder found two levels deep.
    The report and image are looked for in the model folder, then in its parents up to ``run_dir``
    (up to the model folder's parent when ``run_dir`` is the model folder).
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: no such run directory or model folder")

    def is_model(p: Path) -> bool:
        return (p / CONFIG_NAME).is_file() and (p / WEIGHTS_NAME).is_file()

    if is_model(run):
        model_dir = run
    elif is_model(run / "model"):  # asczoo.train's final model, next to the per-stage ones
        model_dir = run / "model"
    else:
        found = sorted({p.parent for pattern in (f"*/{WEIGHTS_NAME}", f"*/*/{WEIGHTS_NAME}")
                        for p in run.glob(pattern) if is_model(p.parent)})
        if not found:
            pickles = sorted(p.name for p in run.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
            extra = f" (only {', '.join(pickles[:3])}, which asczoo never loads)" if pickles else ""
            raise FileNotFoundError(f"{run}: no saved model ({CONFIG_NAME} + {WEIGHTS_NAME}) found{extra}")
        if len(found) > 1:
            names = ", ".join(str(p.relative_to(run)) for p in found)
            raise ValueError(f"{run}: several saved models ({names}); give the one to publish")
        model_dir = found[0]

    # the report sits next to the model or in a folder between it and the run directory; given a
    # model folder directly, its parent is the run directory it was saved in
    top = run if model_dir != run else run.parent
    folders = [model_dir, *(p for p in model_dir.parents if p == top or top in p.parents)]

    def nearest(name: str) -> Path | None:
        return next((folder / name for folder in folders if os.path.lexists(folder / name)), None)

    found = RunFiles(model_dir, nearest(REPORT_NAME), nearest(CONFUSION_NAME))
    for path in (model_dir / CONFIG_NAME, model_dir / WEIGHTS_NAME, model_dir / CARD_NAME, found.report,
                 found.confusion_matrix):
        if path is not None and os.path.lexists(path):
            check_own_file(path, top)
    return found


def publish_run(
    run_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | bool | None = None,
    license: str | None = None,
    dry_run_dir: str | os.PathLike | None = None,
    space_id: str | None = None,
):
    """Publish a training run's model: reload it strictly, write the card from the run's report, and
    upload weights, config, card and confusion matrix in one commit.

    With ``space_id`` (``org/name``), also the Gradio Space that serves the model's demo page
    (:mod:`asczoo.hub.space`), pinned to the commit just made. With ``dry_run_dir``, the folder that
    would be uploaded is written there (the Space's files in its ``space/`` folder) and nothing is
    uploaded; returns that folder's file names. Otherwise returns the model's ``CommitInfo``.
    """
    from asczoo.hub import space

    run = find_run_files(run_dir)
    model, config = load_pretrained(run.model_dir)
    save_kwargs = dict(
        report=run.report, confusion_matrix=run.confusion_matrix, training=config.get("training"), license=license,
    )
    if space_id is not None and not REPO_ID_RE.match(space_id):  # before anything is uploaded
        raise ValueError(f"--space {space_id!r}: expected a Space id 'org/name'")
    requirements = space.plugin_requirements(config) if space_id is not None else []

    def space_files(pinned: str | None) -> dict[str, str]:
        return space.space_files(repo_id, revision=pinned, title=model.name, requirements=requirements,
                                 license=license)

    if dry_run_dir is not None:
        save_pretrained(model, dry_run_dir, repo_id=repo_id, **save_kwargs)
        names = publishable_files(dry_run_dir)
        if space_id is not None:
            names += [f"space/{n}" for n in space.write_space(Path(dry_run_dir) / "space", space_files(revision))]
        return names
    commit = push_to_hub(
        model, repo_id, private=private, revision=revision, commit_message=commit_message, token=token,
        **save_kwargs,
    )
    if space_id is not None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="asczoo-space-") as tmp:
            space.write_space(tmp, space_files(getattr(commit, "oid", None) or revision))
            commit.space_commit = space.upload_space(space_id, tmp, private=private, token=token)
    return commit
