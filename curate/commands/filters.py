"""`curate filters`: what each filter does and reads."""

from __future__ import annotations

NAME = "filters"
ORDER = 50
HELP = "list the filters and what they need"
DESCRIPTION = "Lists the registered filters, what each keeps, and the columns or signals it reads."


def add_arguments(p) -> None:
    pass


def main(args) -> int:
    from filters.registry import FILTERS

    for name, cls in sorted(FILTERS.items()):
        needs = ", ".join(getattr(cls, "columns", ()) or ()) or "(per --arch)"
        print(f"{name:12s} {cls.description}\n{'':12s} reads: {needs}")
    return 0
