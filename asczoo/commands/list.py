"""``asczoo list [PATTERN]``: the models that can be built here."""

from __future__ import annotations

COMMAND = "list"
HELP = "list registry models (shell-style PATTERN, e.g. 'atresn*')"


#: what ``--pretrained`` says when no recipe pins weights: where and how weights are registered
NO_WEIGHTS = """no pretrained weights are registered: no recipe has a `weights` section.
To add some, pin the published weights (a Hub repository and commit) as a tag of a recipe, in a file named
by ASCZOO_REGISTRY (or asczoo.register_recipes(path), or a plugin's recipes file):
  version: 1
  models:
    my-atresn:
      extends: atresn-net-resnet18
      weights:
        v1: {repo_id: org/my-atresn, revision: <40-hex commit>}
then `asczoo list --pretrained` shows my-atresn.v1 and create_model("my-atresn.v1", pretrained=True) loads it.
A model folder or a Hub repository needs no recipe: asczoo predict hf-hub:org/name FILE."""


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
        names = factory.list_pretrained(args.pattern)
        for name in names:
            print(name)
        if not names and factory.list_pretrained():
            print(f"no pretrained weights match {args.pattern!r}; `asczoo list --pretrained` lists them all")
        elif not names:
            print(NO_WEIGHTS)
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
