"""Shared fixtures: every test starts from freshly loaded plugins and no user recipes."""

from __future__ import annotations

import os

import pytest
import torch

# Tests must not reach for the network, even where it exists.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tiny test tensors: thread start-up costs more than it saves, and one thread keeps results exact.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_registries(monkeypatch):
    """Isolate plugin/recipe state changed by a test (env vars, in-process plugins, user recipes)."""
    from asczoo import plugins
    from asczoo.recipes import model_recipes as recipes

    for var in ("ASCZOO_STRICT_PLUGINS", "ASCZOO_DISABLE_PLUGINS", "ASCZOO_REGISTRY"):
        monkeypatch.delenv(var, raising=False)
    yield
    changed = recipes._USER_SOURCES or plugins._IN_PROCESS or os.environ.get("ASCZOO_REGISTRY") \
        or os.environ.get("ASCZOO_DISABLE_PLUGINS") or os.environ.get("ASCZOO_STRICT_PLUGINS")
    monkeypatch.undo()
    if changed:
        plugins._IN_PROCESS.clear()
        recipes.forget_user_recipes()
        plugins.reset()


@pytest.fixture
def tiny():
    """A copy of asczoo.testing.TINY_OVERRIDES."""
    from asczoo.testing import tiny_overrides

    return tiny_overrides()


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache used by huggingface_hub for this test (offline)."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # read at import; the env var is for subprocesses
    assert constants.is_offline_mode(), "tests must run with HF_HUB_OFFLINE=1"
    return cache


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected theirs
def pytest_collection_modifyitems(config, items):
    """The ``slow`` tests first: pytest-xdist hands each worker a share of the collection and idle workers
    take from the others' queues, so the few tests of half a minute or more, started first, no longer
    leave one core running the last of them while the other waits (CI on 2 cores).

    A test marked ``superseded_by(NAME)`` is skipped when the test NAME of its module with the same
    parameters runs in this session too, as a stricter check of the same thing: a quick test stands for
    a slow one while one works with ``-m 'not slow'``, and is not run twice when CI runs both."""
    selected = {(item.module.__name__, item.originalname, item.callspec.id if hasattr(item, "callspec") else "")
                for item in items if isinstance(item, pytest.Function)}
    for item in items:
        marker = item.get_closest_marker("superseded_by")
        if marker is None or not isinstance(item, pytest.Function):
            continue
        key = (item.module.__name__, marker.args[0], item.callspec.id if hasattr(item, "callspec") else "")
        if key in selected:
            item.add_marker(pytest.mark.skip(reason=f"{marker.args[0]}[{key[2]}] runs in this session"))
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
