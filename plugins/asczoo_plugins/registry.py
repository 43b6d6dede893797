"""Registers the recipes of ``registry.yaml`` (shipped inside this package) as a plugin would."""

from __future__ import annotations

from pathlib import Path

from asczoo import hookimpl

REGISTRY_FILE = Path(__file__).with_name("registry.yaml")


@hookimpl
def asczoo_register_recipes(register):
    register(REGISTRY_FILE)
