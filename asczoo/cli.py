"""The ``asczoo`` command: a thin dispatcher over the modules in :mod:`asczoo.commands`.

Each module there defines ``COMMAND`` (its name), ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``; adding a command means adding one file.

Every failure a user can cause ends in one line on stderr (``asczoo CMD: error: ...``) and exit status
2, not a traceback, and each warning is one line (``asczoo: warning: ...``); ``ASCZOO_DEBUG=1`` lets
the exception through with its traceback and shows warnings as Python does.

OpenMP: unless the user set ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``, this module sets
``GOMP_SPINCOUNT`` to :data:`SPIN_COUNT` before torch is imported (libgomp, which torch's CPU kernels
use, reads it once, when the library is loaded). With libgomp's default each idle OpenMP thread spins
300,000 times after every parallel region; on a machine whose cores other programs use, spinning
threads steal the time the working threads need. ``PASSIVE`` (no spinning at all) fixes that but costs
an idle machine 1.44x on the quick start, since every parallel region then wakes sleeping threads. A
short spin keeps most of both; the figures are in ``benchmarks/RESULTS.md`` (section *busy machine*).
"""

from __future__ import annotations

import os

#: spins of an idle OpenMP thread before it sleeps (libgomp's default is 300,000; PASSIVE is 0)
SPIN_COUNT = 5000

if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:  # before torch is imported
    os.environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)

import argparse  # noqa: E402 - after the OpenMP setting on purpose
import sys  # noqa: E402
import warnings  # noqa: E402

from asczoo import commands  # noqa: E402
from asczoo.version import __version__  # noqa: E402

#: environment variable that shows the traceback of an error instead of the one-line message
DEBUG_VAR = "ASCZOO_DEBUG"
#: exceptions that are the user's input or environment (bad names, files, recipes, missing packages)
_USER_ERRORS = (ValueError, KeyError, OSError, RuntimeError, ImportError, MemoryError)


def _command_modules():
    return commands.MODULES


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
    debug = os.environ.get(DEBUG_VAR, "").strip().lower() in {"1", "true", "yes", "on"}
    try:
        with warnings.catch_warnings():  # restores the warning display when main returns (tests call it)
            if not debug:
                warnings.showwarning = _one_line_warning
            if args.command != "doctor":
                _warn_broken_environment(args.command == "quickstart")
            return int(args._run(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns any failure into one line
        if debug:
            raise
        print(f"asczoo {args.command}: error: {error_line(exc)}", file=sys.stderr)
        return 2


def _warn_broken_environment(fatal: bool) -> None:
    """A built-in plugin or core package that does not load is named at its cause, before any work starts."""
    from asczoo import environment, plugins

    found = environment.problems(plugins.plugin_records())
    if found and fatal:
        raise RuntimeError(f"{found[0]} (`asczoo doctor` shows the whole environment)")
    for problem in found:
        print(f"asczoo: warning: {problem} (`asczoo doctor` shows the whole environment)", file=sys.stderr)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (a broken plugin, a skipped recipe) as one line, without the source line under it."""
    print(f"asczoo: warning: {message}", file=file or sys.stderr)


def error_line(exc: BaseException) -> str:
    """The message of ``exc`` for the one-line error: as is for the user's errors, with the exception
    type and a pointer to ``ASCZOO_DEBUG=1`` for anything else (a bug worth reporting)."""
    import yaml

    if isinstance(exc, KeyError) and exc.args:
        message = str(exc.args[0])
    elif isinstance(exc, MemoryError):
        message = f"out of memory{': ' + str(exc) if str(exc) else ''}"
    else:
        message = str(exc) or type(exc).__name__
    if isinstance(exc, (*_USER_ERRORS, yaml.YAMLError)):
        return message
    return f"{type(exc).__name__}: {message} (an unexpected error; {DEBUG_VAR}=1 shows the traceback)"


if __name__ == "__main__":
    sys.exit(main())
