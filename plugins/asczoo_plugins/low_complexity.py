"""Registers the low-complexity models (``low_complexity.yaml``) for DCASE 2024/2025 Task 1.

Their training recipes live beside the other built-in recipes (``training_recipes/low_complexity.yaml``).
"""

from __future__ import annotations

from pathlib import Path

from asczoo import hookimpl

REGISTRY_FILE = Path(__file__).with_name("low_complexity.yaml")


@hookimpl
def asczoo_register_recipes(register):
    register(REGISTRY_FILE)
