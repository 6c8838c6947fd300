"""Filters by name: every `Filter` subclass with a `name` in the modules of this package.

A new filter is a new class in a module here; nothing else to register. Building one from options
passes only the options its constructor takes, so `--fraction` reaches clip_score and not basic.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types
import typing

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


#: the plain types a parameter is checked against, and how an error names each
_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "text", type(None): "null"}


def _plain_types(hint) -> tuple | None:
    """The types of a plain annotation (int, float | None, int | str, ...); None for anything richer."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return args if all(a in _KINDS for a in args) else None


def _convert(value, kinds: tuple):
    """`value` as one of `kinds`, or raise ValueError: numbers widen (3 -> 3.0), whole floats and numeric
    text narrow (200.0 -> 200, "1e-3" -> 0.001: YAML reads 1e-3 as text), a number may be a name, and a
    bool is never a number."""
    if value is None:
        if type(None) in kinds:
            return None
    elif isinstance(value, bool):
        if bool in kinds:
            return value
    elif isinstance(value, int):
        if int in kinds:
            return value
        if float in kinds:
            return float(value)
    elif isinstance(value, float):
        if float in kinds:
            return value
        if int in kinds and value.is_integer():
            return int(value)
    elif isinstance(value, str):
        if str in kinds:
            return value
        for kind in (int, float):
            if kind in kinds:
                try:
                    return kind(value)
                except ValueError:
                    pass
    if str in kinds and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # a name or tag YAML read as a number (arch: 2024)
    raise ValueError


def check_parameters(name: str, cls: type[Filter], params: dict) -> dict:
    """Parameters converted to their annotated types, or one FilterConfigError naming the parameter and the
    type it takes; a wrong type would otherwise fail deep inside a partition's task (a ufunc on a string)."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except (NameError, TypeError, AttributeError):  # an annotation that does not resolve: the constructor checks
        return params
    out = dict(params)
    for key, value in params.items():
        kinds = _plain_types(hints.get(key)) if key in hints else None
        if kinds is None:
            continue
        try:
            out[key] = _convert(value, kinds)
        except (ValueError, OverflowError):
            expected = " or ".join(_KINDS[k] for k in kinds)
            raise FilterConfigError(f"{key} must be {expected}, got {value!r}") from None
    return out


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
    params = check_parameters(name, cls, params)
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
    kwargs = check_parameters(name, cls, {k: v for k, v in options.items() if k in accepted and v is not None})
    if name == "clip_score" and kwargs.get("fraction") is None and kwargs.get("threshold") is None:
        raise FilterConfigError("clip_score needs --fraction F (e.g. 0.3) or --threshold T (e.g. 0.25)")
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise FilterConfigError(f"filter {name!r}: {e}") from e
