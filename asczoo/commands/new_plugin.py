"""``asczoo new-plugin NAME``: write the skeleton of a plugin package (see :mod:`asczoo.scaffold`)."""

from __future__ import annotations

COMMAND = "new-plugin"
HELP = "write a plugin package skeleton (entry point, a working part, a recipe, tests) to start from"


def add_arguments(parser) -> None:
    from asczoo.scaffold import KINDS

    parser.add_argument("name", help="plugin and part name, e.g. my-block (package asczoo-my-block)")
    parser.add_argument("--kind", choices=KINDS, default="relation",
                        help="kind of part the package provides (default: relation)")
    parser.add_argument("--directory", "-d", default=".", help="where to create the package folder (default: .)")
    parser.add_argument("--force", action="store_true", help="overwrite the generated files of an existing folder")


def run(args) -> int:
    from asczoo.scaffold import plugin_names, write_plugin

    root, files = write_plugin(args.name, kind=args.kind, directory=args.directory, force=args.force)
    names = plugin_names(args.name, args.kind)
    label = {"relation": "relation block"}.get(args.kind, args.kind)
    print(f"created {root}: the {label} {names.name!r} and the recipe {names.recipe!r}")
    for path in files:
        print(f"    {path.relative_to(root)}")
    print("next:")
    print(f"    pip install -e {root}")
    print(f"    python -m pytest -q {root}")
    print(f"    asczoo list '{names.recipe}'")
    return 0
