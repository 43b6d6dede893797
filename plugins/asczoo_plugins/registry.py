"""Registers ``registry.yaml`` and the training recipes (shipped inside this package) as a plugin would."""

from __future__ import annotations

from pathlib import Path

from asczoo import hookimpl

REGISTRY_FILE = Path(__file__).with_name("registry.yaml")
TRAINING_RECIPES = Path(__file__).with_name("training_recipes")


@hookimpl
def asczoo_register_recipes(register):
    register(REGISTRY_FILE)


@hookimpl
def asczoo_register_training_recipes(register):
    for path in sorted(TRAINING_RECIPES.glob("*.yaml")):
        register(path)
