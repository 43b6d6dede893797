"""The ``asczoo`` command: a thin dispatcher over the modules in :mod:`asczoo.commands`.

Each module there defines ``COMMAND`` (its name), ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``; adding a command means adding one file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from asczoo import __version__, commands


def _command_modules():
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"{commands.__name__}.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asczoo",
        description="asczoo: a plugin-style model zoo for acoustic scene classification.",
    )
    parser.add_argument("--version", action="version", version=f"asczoo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in _command_modules():
        cmd = sub.add_parser(module.COMMAND, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``asczoo`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, KeyError, OSError, RuntimeError) as exc:
        # Expected user errors (bad names, files, recipes) print one clear line, not a traceback.
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"asczoo {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
