"""``asczoo plugins``: every plugin, what it registered, and why a failed one failed."""

from __future__ import annotations

COMMAND = "plugins"
HELP = "list plugins, their parts, and load failures"


def add_arguments(parser) -> None:
    parser.add_argument("--parts", action="store_true", help="also list every registered part by kind")


def run(args) -> int:
    from asczoo import plugins

    records = plugins.plugin_records()
    for rec in records:
        version = f" {rec.version}" if rec.version else ""
        print(f"{rec.name}{version}  [{rec.status}]  {rec.source}")
        if rec.status == "loaded" and rec.parts:
            print(f"    parts: {', '.join(rec.parts)}")
        if rec.error:
            print(f"    error: {rec.error}")
    if args.parts:
        host = plugins.host()
        for kind, parts in host.parts.items():
            print(f"{kind}:")
            for name in sorted(parts):
                part = parts[name]
                print(f"    {name}  ({part.owner})  {part.description}")
    failed = [r for r in records if r.status == "failed"]
    if failed:
        print(f"{len(failed)} plugin(s) failed to load; the others work (ASCZOO_STRICT_PLUGINS=1 makes this an error)")
    return 0
