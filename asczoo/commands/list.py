"""``asczoo list [PATTERN]``: the models that can be built here."""

from __future__ import annotations

COMMAND = "list"
HELP = "list registry models (shell-style PATTERN, e.g. 'atresn*')"


def add_arguments(parser) -> None:
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style wildcard (default: all)")
    parser.add_argument("--pretrained", action="store_true", help="list arch.tag names with published weights")
    parser.add_argument("--all", action="store_true", help="also show recipes whose plugins are not loaded")
    parser.add_argument("--params", action="store_true",
                        help="build each model (default size, no weights loaded) and show its parameter count")


def run(args) -> int:
    from asczoo.models import factory
    from asczoo.recipes import model_recipes as recipes

    if args.pretrained:
        for name in factory.list_pretrained(args.pattern):
            print(name)
        return 0
    reg = recipes.registry()
    names = reg.names(args.pattern, include_unavailable=args.all)
    width = max((len(n) for n in names), default=0)
    for name in names:
        entry = reg.entries[name]
        if entry.unavailable:
            print(f"{name:<{width}}  [unavailable] {entry.unavailable}")
        else:
            params = ""
            if args.params:
                total = factory.create_model(name).parameter_counts()["total"]
                params = f"{total / 1e6:.2f} M  "
            print(f"{name:<{width}}  {params}{(entry.resolved or {}).get('description', '')}")
    if not names:
        print(f"no model matches {args.pattern!r}")
    return 0
