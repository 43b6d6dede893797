"""Which parts of asczoo a plugin may use, and a static check that it uses nothing else.

Plugins that reach into asczoo's internals break when those change; plugins that stay on the public
API keep working across asczoo's patch releases. :func:`check_plugin_imports` reads a package's
source (it imports nothing) and lists every use of a non-public module or name.
"""

from __future__ import annotations

import ast
from pathlib import Path

from asczoo.testing.suite import ConformanceError

#: modules a plugin may import, and the names it may take from each (None: any name without a
#: leading underscore). ``asczoo`` itself offers its ``__all__`` plus these modules.
PUBLIC_API: dict[str, frozenset[str] | None] = {
    "asczoo.interfaces": None,
    "asczoo.ops": None,
    #: torchaudio's resampling, HTK mel bank and FFT convolution in plain torch (no native library)
    "asczoo.dsp": None,
    "asczoo.testing": None,
    #: what dataset, frontend and augmentation plugins build on (see the module's docstring)
    "asczoo.data": frozenset({
        "SPLITS", "Clip", "ClipDataset", "DataError", "Problem", "check_batch", "check_dataset",
        "create_augmentation", "create_dataset", "create_frontend", "extract", "find_setup_file", "is_audio_file",
        "location_of", "location_split", "read_labelled_lines", "read_labelled_table", "read_setup_file",
        "read_table", "segment_starts",
        "write_audio", "dataset_defaults", "normalise_listed", "place_listed", "MAX_SAMPLE_RATE", "MIN_SAMPLE_RATE",
        "audio_info", "AudioError",
    }),
    #: atomic file writes (checkpoints, caches, a synthetic layout's text files)
    "asczoo.atomic": frozenset({"atomic_write", "atomic_write_text", "atomic_save_safetensors"}),
    #: the recipe schema check, for parts that build sub-parts from options of their own
    "asczoo.recipes": frozenset({"check_arguments", "RecipeError"}),
    "asczoo.plugins": frozenset({
        "register_plugin", "unregister_plugin", "get_part", "list_parts", "plugin_records",
        "PluginError", "UnknownPartError",
    }),
}


def _top_level_names() -> frozenset[str]:
    import asczoo

    return frozenset(asczoo.__all__) | {name.rpartition(".")[2] for name in PUBLIC_API}


def _allowed(module: str, name: str) -> bool:
    if module == "asczoo":
        return name in _top_level_names()
    if module not in PUBLIC_API:
        return False
    names = PUBLIC_API[module]
    return not name.startswith("_") if names is None else name in names


def _attribute_chain(node: ast.Attribute) -> list[str]:
    parts = []
    current: ast.AST = node
    while isinstance(current, ast.Attribute):
        parts.append(current.attr)
        current = current.value
    if isinstance(current, ast.Name):
        parts.append(current.id)
        return parts[::-1]
    return []


def plugin_import_problems(path: str | Path) -> list[str]:
    """Every use of a non-public asczoo module or name in the ``.py`` files under ``path``."""
    root = Path(path)
    files = [root] if root.is_file() else sorted(
        p for p in root.rglob("*.py") if not any(part in {"build", ".eggs", ".venv", "venv"} for part in p.parts)
    )
    problems = []
    for file in files:
        tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
        aliases: dict[str, str] = {}  # local name -> asczoo module it is bound to

        def bad(node: ast.AST, what: str) -> None:
            problems.append(f"{file}:{node.lineno}: {what} is not public asczoo API")

        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "asczoo" or alias.name.startswith("asczoo."):
                        if alias.name != "asczoo" and alias.name not in PUBLIC_API:
                            bad(node, f"module {alias.name!r}")
                        elif alias.asname:
                            aliases[alias.asname] = alias.name
                        else:
                            aliases["asczoo"] = "asczoo"
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and (
                node.module == "asczoo" or node.module.startswith("asczoo.")
            ):
                if node.module != "asczoo" and node.module not in PUBLIC_API:
                    bad(node, f"module {node.module!r}")
                    continue
                for alias in node.names:
                    if alias.name == "*" or not _allowed(node.module, alias.name):
                        bad(node, f"{node.module}.{alias.name}")
                    elif f"{node.module}.{alias.name}" in PUBLIC_API:
                        aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            chain = _attribute_chain(node)
            if not chain or chain[0] not in aliases or len(chain) < 2:
                continue
            module, rest = aliases[chain[0]], chain[1:]
            if module == "asczoo" and f"asczoo.{rest[0]}" in PUBLIC_API and len(rest) > 1:
                module, rest = f"asczoo.{rest[0]}", rest[1:]
            if not _allowed(module, rest[0]):
                bad(node, f"{module}.{rest[0]}")
    return sorted(set(problems))


def check_plugin_imports(path: str | Path) -> None:
    """Raise :class:`~asczoo.testing.ConformanceError` if the plugin source under ``path`` uses asczoo
    modules or names outside :data:`PUBLIC_API` (``asczoo.__all__``, ``asczoo.interfaces``, ``asczoo.ops``,
    ``asczoo.testing``, the plugin functions of ``asczoo.plugins``, the plugin-facing names of ``asczoo.data``
    and ``asczoo.recipes``)."""
    problems = plugin_import_problems(path)
    if problems:
        raise ConformanceError(
            f"{path} uses asczoo internals that may change without notice:\n"
            + "\n".join(f"  - {p}" for p in problems)
        )
