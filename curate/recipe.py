"""Filter recipes: YAML files that combine filters with and / or / not and per-filter parameters.

    name: image_based_clip_score            # optional
    description: DataComp's image-based ∩ CLIP score (L/14 30%)   # optional
    steps:                                  # required: applied in order, a funnel row each (an intersection)
      - clip_score: {arch: l14, fraction: 0.3}
      - image_based:
          targets: imagenet_l14_image_features.npy   # a path relative to this file
      - or:                                 # any of
          - text_based                      # a bare name: the filter with its defaults
          - not: {caption_quality: {min_words: 3}}
      - and: [basic, {aesthetic: {threshold: 5}}]

A step is a filter name, a one-key mapping `NAME: {param: value, ...}` (or `NAME:` with no parameters),
or a one-key mapping `and: [steps]`, `or: [steps]`, `not: step`. Parameters that name files are resolved
against the recipe's folder. `--set NAME.PARAM=VALUE` on the command line overrides a parameter of every
NAME in the recipe (VALUE is read as YAML: 0.3, true, null, a path). Every mistake (an unknown key, filter or
parameter, a bad value) is reported as `FILE:LINE: what is wrong`, with the filters or parameters allowed.

YAML is read with yaml.compose (PyYAML's SafeLoader): nodes keep their line numbers, and values are built
with the safe constructor only.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from filters.base import Filter, FilterConfigError
from filters.compose import AllOf, AnyOf, Not
from filters.registry import FILTERS, build_filter_strict, filter_parameters, unknown_filter_error

TOP_KEYS = ("name", "description", "steps")
OPERATORS = {"and": AllOf, "or": AnyOf, "not": Not}


class RecipeError(FilterConfigError):
    """A recipe that cannot be built; the message starts with FILE:LINE."""


@dataclass
class Recipe:
    path: str
    name: str
    description: str
    steps: list[Filter]
    sha256: str
    overrides: dict = field(default_factory=dict)

    def info(self) -> dict:
        return {"path": self.path, "name": self.name, "description": self.description, "sha256": self.sha256,
                "overrides": {f"{k[0]}.{k[1]}": v for k, v in self.overrides.items()}}


def parse_overrides(items: list[str] | None) -> dict[tuple[str, str], object]:
    """`NAME.PARAM=VALUE` strings to {(NAME, PARAM): value}; VALUE is parsed as YAML."""
    out: dict[tuple[str, str], object] = {}
    for item in items or []:
        m = re.fullmatch(r"\s*([A-Za-z_][\w]*)\.([A-Za-z_][\w]*)\s*=(.*)", item, re.S)
        if not m:
            raise FilterConfigError(f"--set {item!r}: expected FILTER.PARAM=VALUE (e.g. image_based.targets=feats.npy)")
        try:
            value = yaml.safe_load(m.group(3)) if m.group(3).strip() else None
        except yaml.YAMLError as e:
            raise FilterConfigError(f"--set {item!r}: VALUE is not valid YAML ({e})") from None
        out[(m.group(1), m.group(2))] = value
    return out


class _Builder:
    def __init__(self, path: Path, overrides: dict):
        self.path = path
        self.overrides = overrides
        self.used: set[tuple[str, str]] = set()
        self.names_seen: set[str] = set()
        self._constructor = yaml.constructor.SafeConstructor()

    def err(self, node, msg: str) -> RecipeError:
        line = node.start_mark.line + 1 if node is not None else 1
        col = node.start_mark.column + 1 if node is not None else 1
        return RecipeError(f"{self.path}:{line}:{col}: {msg}")

    def value(self, node):
        try:
            return self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError as e:
            raise self.err(node, f"bad value: {e}") from None

    def step(self, node) -> Filter:
        if isinstance(node, yaml.ScalarNode):
            name = self.value(node)
            if not isinstance(name, str):
                raise self.err(node, f"a step is a filter name or a one-key mapping, not {name!r}")
            return self.filter(name, node, None)
        if isinstance(node, yaml.MappingNode):
            if len(node.value) != 1:
                keys = ", ".join(str(k.value) for k, _ in node.value)
                raise self.err(node, f"a step mapping has exactly one key (a filter name, and, or, not); got {keys or 'none'}"
                               " (indent a filter's parameters under its name)")
            key_node, val_node = node.value[0]
            key = self.value(key_node)
            if key in ("and", "or"):
                if not isinstance(val_node, yaml.SequenceNode) or not val_node.value:
                    raise self.err(val_node, f"{key}: expects a non-empty list of steps")
                return OPERATORS[key]([self.step(n) for n in val_node.value])
            if key == "not":
                if isinstance(val_node, yaml.SequenceNode):
                    if len(val_node.value) != 1:
                        raise self.err(val_node, "not: takes one step")
                    val_node = val_node.value[0]
                return Not([self.step(val_node)])
            if not isinstance(key, str):
                raise self.err(key_node, f"expected a filter name or and/or/not, got {key!r}")
            return self.filter(key, key_node, val_node)
        raise self.err(node, "a step is a filter name, a one-key mapping NAME: {params}, or and/or/not")

    def filter(self, name: str, name_node, params_node) -> Filter:
        if name not in FILTERS:
            raise self.err(name_node, str(unknown_filter_error(name)))
        self.names_seen.add(name)
        accepted = filter_parameters(FILTERS[name])
        params: dict = {}
        lines: dict[str, object] = {}
        if params_node is not None and not (isinstance(params_node, yaml.ScalarNode) and self.value(params_node) is None):
            if not isinstance(params_node, yaml.MappingNode):
                raise self.err(params_node, f"parameters of {name!r} must be a mapping (param: value); its parameters: "
                               f"{', '.join(accepted) or '(none)'}")
            for k_node, v_node in params_node.value:
                k = self.value(k_node)
                if k not in accepted:
                    import difflib

                    close = difflib.get_close_matches(str(k), accepted, n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise self.err(k_node, f"filter {name!r} has no parameter {k!r}{hint}; its parameters: "
                                   f"{', '.join(accepted) or '(none)'}")
                if k in params:
                    raise self.err(k_node, f"parameter {k!r} given twice")
                params[k] = self.value(v_node)
                lines[k] = v_node
        for (fname, pname), v in self.overrides.items():
            if fname == name:
                if pname not in accepted:
                    raise FilterConfigError(f"--set {fname}.{pname}: filter {name!r} has no parameter {pname!r}; "
                                            f"its parameters: {', '.join(accepted) or '(none)'}")
                params[pname] = _abs_path(v, Path.cwd()) if pname in FILTERS[name].path_params else v
                self.used.add((fname, pname))
        for p in FILTERS[name].path_params:
            if p in params and (name, p) not in self.used:
                params[p] = _abs_path(params[p], self.path.parent)
        try:
            return build_filter_strict(name, params)
        except FilterConfigError as e:
            where = next((lines[k] for k in lines if re.search(rf"\b{re.escape(k)}\b", str(e))), name_node)
            raise self.err(where, f"{name}: {e}") from None


def _abs_path(v, base: Path):
    if isinstance(v, str) and v and not Path(v).is_absolute():
        return str((base / v).resolve())
    return v


def load_recipe(path: str | Path, overrides: list[str] | dict | None = None) -> Recipe:
    """Read and build a recipe; raise RecipeError (FILE:LINE: ...) on any mistake."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise RecipeError(f"{path}: cannot read recipe ({e.strerror or e})") from None
    ov = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    b = _Builder(path, ov)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f"{mark.line + 1}:{mark.column + 1}" if mark else "1"
        raise RecipeError(f"{path}:{line}: not valid YAML: {e.problem or e}") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from None
    if root is None:
        raise RecipeError(f"{path}:1: empty recipe; expected keys: {', '.join(TOP_KEYS)}")
    if not isinstance(root, yaml.MappingNode):
        raise b.err(root, f"a recipe is a mapping with keys {', '.join(TOP_KEYS)}")
    top: dict = {}
    for k_node, v_node in root.value:
        k = b.value(k_node)
        if k not in TOP_KEYS:
            import difflib

            close = difflib.get_close_matches(str(k), TOP_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise b.err(k_node, f"unknown key {k!r}{hint}; a recipe has: {', '.join(TOP_KEYS)}")
        if k in top:
            raise b.err(k_node, f"key {k!r} given twice")
        top[k] = (k_node, v_node)
    if "steps" not in top:
        raise b.err(root, "a recipe needs `steps:` (a list of filters)")
    steps_node = top["steps"][1]
    if not isinstance(steps_node, yaml.SequenceNode) or not steps_node.value:
        raise b.err(steps_node, "steps: expects a non-empty list of filters")
    steps = [b.step(n) for n in steps_node.value]
    unused = [f"{a}.{p}" for (a, p) in ov if (a, p) not in b.used]
    if unused:
        raise FilterConfigError(f"--set {', '.join(unused)}: no such filter in {path} (its filters: {', '.join(sorted(b.names_seen))})")
    meta = {k: b.value(v) for k, (_, v) in top.items() if k != "steps"}
    for k in ("name", "description"):
        if k in meta and meta[k] is not None and not isinstance(meta[k], str):
            raise b.err(top[k][1], f"{k} must be text")
    return Recipe(str(path), meta.get("name") or path.stem, meta.get("description") or "", steps,
                  hashlib.sha256(text.encode()).hexdigest(), ov)
