"""Names, in one place: the rule every registered name follows, and what a model name may be.

* :data:`NAME_RE`: parts, model recipes, weight tags, training recipes and stages are lower-case
  letters, digits, ``-`` and ``_``, starting with a letter or digit.
* A **model name** (:func:`parse_model_name`) is one of
    ``arch`` or ``arch.tag``        a registry recipe, optionally with published weights (timm's rule);
    ``hf-hub:org/name[@rev]``       a model published on the Hugging Face Hub;
    ``org/name``                    the same, when no local path of that name exists;
    ``local-dir:PATH`` or a path    a saved model folder.

This module imports nothing of asczoo, so every layer can use it.
"""

from __future__ import annotations

import dataclasses
import os
import re

#: the one rule for registered names
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*\Z")  # \Z, not "$", which also matches before a final newline
#: a Hugging Face Hub repository id ``org/name``
REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+\Z")
HF_PREFIX = "hf-hub:"
LOCAL_PREFIX = "local-dir:"

REGISTRY, HUB, FOLDER = "registry", "hub", "folder"


def is_name(value: object) -> bool:
    """Whether ``value`` follows :data:`NAME_RE`."""
    return isinstance(value, str) and bool(NAME_RE.match(value))


def split_name(name: str) -> tuple[str, str | None]:
    """``"arch.tag"`` -> ``("arch", "tag")``; ``"arch"`` -> ``("arch", None)``."""
    if not isinstance(name, str) or not name:
        raise KeyError(f"model name must be a non-empty string, got {name!r}")
    arch, _, tag = name.partition(".")
    return arch, (tag or None)


@dataclasses.dataclass(frozen=True)
class ModelName:
    """A parsed model name: ``kind`` is ``registry``, ``hub`` or ``folder``.

    ``name`` is the recipe name (registry), the repository id (hub) or the path (folder); ``tag`` is
    the weights tag of a registry name, ``revision`` the Hub revision.
    """

    kind: str
    name: str
    tag: str | None = None
    revision: str | None = None


def parse_hub_name(name: str, revision: str | None = None) -> tuple[str, str | None]:
    """``hf-hub:org/name[@rev]`` -> ``(repo id, revision)``; a pinned and a given revision must agree."""
    repo_id = name[len(HF_PREFIX):] if name.startswith(HF_PREFIX) else name
    repo_id, _, pinned = repo_id.partition("@")
    if not REPO_ID_RE.match(repo_id):
        raise ValueError(f"{name!r}: expected 'hf-hub:org/name' or 'hf-hub:org/name@revision'")
    if pinned and revision is not None and pinned != revision:
        raise ValueError(f"{name!r} pins revision {pinned!r} but revision={revision!r} was also given")
    return repo_id, (pinned or revision)


def parse_model_name(text: str | os.PathLike, revision: str | None = None) -> ModelName:
    """What a user typed as a model (the CLI's ``MODEL``, ``from_pretrained``'s source), parsed.

    A path that exists locally wins over a Hub id; text with a ``/`` that is not a path is a Hub id;
    anything else is a registry name.
    """
    text = os.fspath(text)
    if text.startswith(HF_PREFIX):
        repo_id, rev = parse_hub_name(text, revision)
        return ModelName(HUB, repo_id, revision=rev)
    if text.startswith(LOCAL_PREFIX):
        return ModelName(FOLDER, text[len(LOCAL_PREFIX):])
    if os.path.exists(text):
        return ModelName(FOLDER, text)
    if "/" in text or os.sep in text:
        if REPO_ID_RE.match(text) and not text.startswith((".", "/")):
            return ModelName(HUB, text, revision=revision)
        return ModelName(FOLDER, text)
    arch, tag = split_name(text)
    return ModelName(REGISTRY, arch, tag=tag)
