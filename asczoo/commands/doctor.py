"""``asczoo doctor``: one screen to paste into a bug report, and exit status 1 when something is broken.

Versions of torch, timm and the optional extras and whether each imports, every plugin and whether it
loaded, CUDA/MPS, and the OpenMP settings; then each broken package named with the command that fixes it.
"""

from __future__ import annotations

COMMAND = "doctor"
HELP = "report versions, plugins, devices and OpenMP settings; name what is broken and how to fix it"


def add_arguments(parser) -> None:
    del parser  # no options


def run(args) -> int:
    del args
    from asczoo import environment, plugins

    records = plugins.plugin_records()
    for line in environment.report(records):
        print(line)
    found = environment.problems(records)
    for problem in found:
        print(f"problem: {problem}")
    print("no problems found" if not found else f"{len(found)} problem(s): the fix is named on each line")
    return 1 if found else 0
