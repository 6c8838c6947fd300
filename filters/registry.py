"""Filters by name: every `Filter` subclass with a `name` in the modules of this package.

A new filter is a new class in a module here; nothing else to register. Building one from options
passes only the options its constructor takes, so `--fraction` reaches clip_score and not basic.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import filters
from filters.base import Filter, FilterConfigError


def _discover() -> dict[str, type[Filter]]:
    found: dict[str, type[Filter]] = {}
    for info in pkgutil.iter_modules(filters.__path__):
        if info.name in ("base", "registry", "rules", "compose"):
            continue
        mod = importlib.import_module(f"filters.{info.name}")
        for obj in vars(mod).values():
            if inspect.isclass(obj) and issubclass(obj, Filter) and obj is not Filter and obj.name and obj.__module__ == mod.__name__:
                if obj.name in found and found[obj.name] is not obj:
                    raise RuntimeError(f"two filters named {obj.name!r}: {found[obj.name]} and {obj}")
                found[obj.name] = obj
    return found


FILTERS: dict[str, type[Filter]] = _discover()


def filter_parameters(cls: type[Filter]) -> dict[str, object]:
    """Constructor parameters and their defaults (inspect.Parameter.empty when required)."""
    sig = inspect.signature(cls.__init__)
    return {n: p.default for n, p in sig.parameters.items()
            if n != "self" and not n.startswith("_") and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def unknown_filter_error(name: str) -> FilterConfigError:
    import difflib

    close = difflib.get_close_matches(name, FILTERS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return FilterConfigError(f"unknown filter {name!r}{hint}; known filters: {', '.join(sorted(FILTERS))}")


def build_filter_strict(name: str, params: dict | None = None) -> Filter:
    """One filter from a recipe: every parameter must be one its constructor takes."""
    if name not in FILTERS:
        raise unknown_filter_error(name)
    cls = FILTERS[name]
    accepted = filter_parameters(cls)
    params = dict(params or {})
    for key in params:
        if key not in accepted:
            import difflib

            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise FilterConfigError(f"filter {name!r} has no parameter {key!r}{hint}; its parameters: "
                                    f"{', '.join(accepted) or '(none)'}")
    try:
        return cls(**params)
    except TypeError as e:
        raise FilterConfigError(f"filter {name!r}: {e}") from e


def build_filter(name: str, **options) -> Filter:
    """One filter from CLI-style options; options (None = not given) its constructor does not take are ignored."""
    if name not in FILTERS:
        raise unknown_filter_error(name)
    cls = FILTERS[name]
    accepted = filter_parameters(cls)
    kwargs = {k: v for k, v in options.items() if k in accepted and v is not None}
    if name == "clip_score" and kwargs.get("fraction") is None and kwargs.get("threshold") is None:
        raise FilterConfigError("clip_score needs --fraction F (e.g. 0.3) or --threshold T (e.g. 0.25)")
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise FilterConfigError(f"filter {name!r}: {e}") from e
