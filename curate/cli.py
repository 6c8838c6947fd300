"""The `curate` command line. Each subcommand is a module in `curate.commands`."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import curate.commands
from curate.commands.common import absolute_paths
from curate.engines import EngineTaskError


def command_modules() -> list:
    mods = []
    for info in pkgutil.iter_modules(curate.commands.__path__):
        mod = importlib.import_module(f"curate.commands.{info.name}")
        if hasattr(mod, "NAME") and hasattr(mod, "main"):
            mods.append(mod)
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.NAME))


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(
        prog="curate",
        description="Curate image-text pools the DataComp way: download, compute signals, filter, write subset files and shards.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    handlers = {}
    for mod in command_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP))
        mod.add_arguments(p)
        handlers[mod.NAME] = mod.main
    return parser, handlers


def main(argv: list[str] | None = None) -> int:
    parser, handlers = build_parser()
    args = absolute_paths(parser.parse_args(argv))  # workers of a cluster run in other folders
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, EngineTaskError) as e:
        print(f"curate {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
