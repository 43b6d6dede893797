"""Subcommands of the ``asczoo`` CLI, one module each (see :mod:`asczoo.cli`).

Each module defines ``COMMAND`` (its name), ``HELP``, ``add_arguments(parser)`` and ``run(args)``, and
imports what it runs only inside ``run``, so building the parser stays cheap. A new command is a new
module here, listed in :data:`MODULES` (``tests/test_cli.py`` checks that none is left out).
"""

from asczoo.commands import (
    check_data, complexity, cv, demo, doctor, eval, explain, export, extract, finetune, info, list, new_plugin, package,
    plugins, predict, publish, quantize, quickstart, synth, train,
)

#: the command modules, in the order ``asczoo --help`` lists them
MODULES = (
    check_data, complexity, cv, demo, doctor, eval, explain, export, extract, finetune, info, list, new_plugin, package,
    plugins, predict, publish, quantize, quickstart, synth, train,
)
