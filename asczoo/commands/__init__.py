"""Subcommands of the ``asczoo`` CLI, one module each (see :mod:`asczoo.cli`)."""
