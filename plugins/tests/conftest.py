"""Fixtures of the built-in plugins' tests, written against asczoo's public API only (as a third
party's plugin tests would be): no network, one torch thread, and in-process plugins a test registers
are unregistered after it."""

from __future__ import annotations

import os

import pytest
import torch

from asczoo.plugins import plugin_records, unregister_plugin

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _forget_in_process_plugins():
    before = {r.name for r in plugin_records() if r.source == "in-process"}
    yield
    for record in plugin_records():
        if record.source == "in-process" and record.name not in before:
            unregister_plugin(record.name)


@pytest.fixture
def one_thread():
    """One torch thread for a test: the tiny tensors here gain nothing from more."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
