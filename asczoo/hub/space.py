"""The Hugging Face Space of a published model: the ``app.py``, ``requirements.txt`` and Space card
(``README.md``) that run the model's demo page on the Hub (``asczoo publish ... --space``).

The Space is a Gradio Space whose ``app.py`` is three lines: it loads the published model by its Hub
id (pinned to the commit just uploaded when there is one) and serves :func:`asczoo.deploy.demo.build_demo`,
the page ``asczoo demo`` serves on one's own machine. ``requirements.txt`` names asczoo with its
``demo`` extra (as installed here: the PyPI release, or the VCS URL and commit pip recorded for an
install from git) and every other distribution that registered a part of the model (a third-party
relation block, say), at the versions installed here. The card's front matter is the Space
configuration the Hub reads (``sdk: gradio``, ``sdk_version``, ``app_file``, ``models``).
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

from asczoo.names import REPO_ID_RE
from asczoo.parts import KINDS, SECTIONS
from asczoo.version import __version__

#: the files of a Space folder, in the order they are written (the card last)
SPACE_FILES = ("app.py", "requirements.txt", "README.md")
#: the Gradio release a Space is configured with when Gradio is not installed here
DEFAULT_GRADIO = "6.31.0"


def default_space_id(repo_id: str) -> str:
    """``org/name`` -> ``org/name-demo``: the Space beside the model repository."""
    return f"{repo_id}-demo"


def asczoo_requirement() -> str:
    """asczoo with the ``demo`` extra as pip can install it elsewhere: ``asczoo[demo] @ git+URL@commit``
    when this copy was installed from a VCS URL, else the release ``asczoo[demo]==VERSION``. For a copy
    installed from a local folder (``pip install -e .``), which a Space cannot reach, it warns that the
    Space will install that release from the index."""
    import warnings

    # every copy pip knows (a source folder's own asczoo.egg-info can shadow the installed record)
    direct = next((d.read_text("direct_url.json") for d in metadata.distributions(name="asczoo")
                   if d.read_text("direct_url.json")), None)
    info = json.loads(direct) if direct else {}
    if not info and not any(part in ("site-packages", "dist-packages") for part in Path(__file__).parts):
        info = {"url": Path(__file__).resolve().parents[2].as_uri()}  # imported from a source folder
    vcs = info.get("vcs_info") or {}
    if vcs.get("vcs") == "git" and info.get("url"):
        commit = vcs.get("commit_id") or vcs.get("requested_revision")
        return f"asczoo[demo] @ git+{info['url']}" + (f"@{commit}" if commit else "")
    requirement = f"asczoo[demo]=={__version__}"
    if str(info.get("url", "")).startswith("file:"):
        warnings.warn(f"this asczoo is installed from {info['url']}, which a Space cannot reach: its "
                      f"requirements.txt names {requirement} from the package index; to run this copy, install "
                      "asczoo from its git URL (pip install git+URL) before publishing, or edit requirements.txt",
                      stacklevel=2)
    return requirement


def plugin_requirements(config: Mapping[str, Any]) -> list[str]:
    """``dist==version`` of every distribution other than asczoo that registered a part the saved
    model ``config`` names (its recipe sections, the parts named inside them, its frontend)."""
    from asczoo import plugins

    recipe = config.get("recipe") or {}
    wanted: list[tuple[str, str]] = []
    for section, kind in SECTIONS.items():
        spec = recipe.get(section)
        if isinstance(spec, Mapping) and isinstance(spec.get("plugin"), str):
            wanted.append((kind.name, spec["plugin"]))
            for key, value in spec.items():  # an aggregator or position encoding named inside a block's options
                if key in KINDS and isinstance(value, str):
                    wanted.append((key, value))
    frontend = config.get("frontend") or {}
    if isinstance(frontend.get("plugin"), str):
        wanted.append(("frontend", frontend["plugin"]))
    found: dict[str, str] = {}
    for kind, name in wanted:
        try:
            dist = plugins.part_distribution(kind, name)
        except KeyError:
            continue
        if dist is not None and dist[0].lower() != "asczoo":
            found[dist[0]] = dist[1]
    return [f"{name}=={version}" for name, version in sorted(found.items())]


def space_files(repo_id: str, *, revision: str | None = None, title: str | None = None,
                requirements: Sequence[str] = (), license: str | None = None) -> dict[str, str]:
    """The text of each file of :data:`SPACE_FILES` for the Space of model ``repo_id`` at ``revision``."""
    from huggingface_hub import SpaceCardData

    if not REPO_ID_RE.match(repo_id):
        raise ValueError(f"repository id {repo_id!r}: expected 'org/name'")
    spec = f"hf-hub:{repo_id}"
    app = (
        f'"""The demo page of {spec}: upload or record a clip, see its classes, its timeline and what the\n'
        'relation blocks attend to. Written by `asczoo publish --space`; the same page runs locally with\n'
        f'`python app.py` or `asczoo demo {spec}`."""\n\n'
        "from asczoo.deploy.demo import build_demo\n\n"
        f"demo = build_demo({spec!r}, revision={revision!r})\n\n"
        'if __name__ == "__main__":\n'
        "    demo.launch()\n"
    )
    lines = [f"# the demo page of {spec} (written by asczoo publish --space); pip installs these",
             asczoo_requirement(), *requirements]
    try:
        gradio_version = metadata.version("gradio")
    except metadata.PackageNotFoundError:
        gradio_version = DEFAULT_GRADIO
    data = SpaceCardData(
        title=(title or repo_id.split("/")[1])[:30], sdk="gradio", sdk_version=gradio_version, app_file="app.py",
        python_version=f"{sys.version_info.major}.{sys.version_info.minor}", models=[repo_id],
        license=license or "apache-2.0", emoji="🔊", colorFrom="indigo", colorTo="blue", pinned=False,
    )
    pinned = f" at revision `{revision}`" if revision else ""
    card = (
        f"---\n{data.to_yaml()}\n---\n\n# {title or repo_id}\n\n"
        f"The demo page of the asczoo model [{repo_id}](https://huggingface.co/{repo_id}){pinned}: drop a clip "
        "or record one, and see the predicted scene, the most probable classes, a timeline for a recording "
        "longer than the model's clip and, for a model with relation blocks, the neighbourhoods they chose.\n\n"
        f"The same page on your own machine: `pip install 'asczoo[demo]'`, then `asczoo demo {spec}`.\n"
    )
    return {"app.py": app, "requirements.txt": "\n".join(lines) + "\n", "README.md": card}


def write_space(folder: str | Path, files: Mapping[str, str]) -> list[str]:
    """Write the Space files into ``folder`` (created), each atomically; returns their names."""
    from asczoo.atomic import atomic_write_text

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    for name in SPACE_FILES:
        atomic_write_text(folder / name, files[name])
    return list(SPACE_FILES)


def upload_space(space_id: str, folder: str | Path, *, private: bool | None = None,
                 token: str | bool | None = None, commit_message: str | None = None):
    """Create the Gradio Space ``space_id`` if needed and commit the Space files of ``folder``
    (:func:`write_space`) in one commit."""
    from huggingface_hub import CommitOperationAdd, HfApi

    if not REPO_ID_RE.match(space_id):
        raise ValueError(f"Space id {space_id!r}: expected 'org/name'")
    api = HfApi(token=token)
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(Path(folder) / name)) for name in SPACE_FILES]
    try:
        api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        return api.create_commit(space_id, operations, repo_type="space",
                                 commit_message=commit_message or f"Demo page with asczoo {__version__}")
    except OSError as exc:  # huggingface_hub's HTTP errors, no token, offline mode, no connection
        raise RuntimeError(
            f"uploading the Space {space_id} failed: {exc} (a write token comes from HF_TOKEN or `hf auth login`)"
        ) from exc
