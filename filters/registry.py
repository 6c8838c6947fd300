"""Filters by name, and building them from command-line options."""

from __future__ import annotations

from filters.base import Filter, FilterConfigError
from filters.datacomp import Basic, ClipScore, Laion2B, NoFilter

FILTERS: dict[str, type[Filter]] = {cls.name: cls for cls in (NoFilter, Basic, ClipScore, Laion2B)}


def build_filter(name: str, *, arch: str = "l14", fraction: float | None = None, threshold: float | None = None) -> Filter:
    """One filter from CLI-style options.

    --fraction/--threshold/--arch parametrise clip_score; laion2b's B/32 >= 0.28 is part of its definition.
    """
    if name not in FILTERS:
        raise FilterConfigError(f"unknown filter {name!r}; known filters: {', '.join(sorted(FILTERS))}")
    if name == "clip_score":
        if fraction is None and threshold is None:
            raise FilterConfigError("clip_score needs --fraction F (e.g. 0.3) or --threshold T (e.g. 0.25)")
        return ClipScore(arch=arch, fraction=fraction, threshold=threshold)
    return FILTERS[name]()
