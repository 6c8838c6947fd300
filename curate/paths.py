"""Where a command may write: never at, inside or around what it reads.

`curate run --pool P --output P` once cleared the pool's own shards before reading them. Every command
that writes to a folder the user names checks it here first, before anything is written or removed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

from curate import storage


class OverlapError(ValueError):
    """An output folder that is, is inside, or contains one of the command's inputs."""


def _real(path: str | os.PathLike) -> Path:
    """The path with `~` expanded and every symlink of its existing part resolved."""
    return Path(path).expanduser().resolve()


def refuse_overlap(inputs: Mapping[str, str | os.PathLike] | Iterable[str | os.PathLike], output: str | os.PathLike,
                   output_name: str = "--output") -> None:
    """Raise OverlapError when `output` is one of `inputs`, lies inside one, or contains one.

    `inputs` maps a label (e.g. "--pool") to a file or folder, or is a plain list of paths. Paths are compared
    after resolving symlinks, so a link to the pool counts as the pool.
    """
    labelled = inputs.items() if isinstance(inputs, Mapping) else (("input", p) for p in inputs)
    out = None if storage.is_url(output) else _real(output)
    for label, given in labelled:
        if given is None:
            continue
        if out is None or storage.is_url(given):  # an object-store URL: compared as written (no links there)
            how = storage.same_or_nested(output, given)
            if how:
                raise OverlapError(f"{output_name} {output} {how} {label} {given}: writing there could overwrite "
                                   "or delete what it reads; choose a folder outside it")
            continue
        src = _real(given)
        if out == src:
            how = "is"
        elif src in out.parents:
            how = "is inside"
        elif out in src.parents:
            how = "contains"
        else:
            continue
        raise OverlapError(f"{output_name} {output} {how} {label} {given}"
                           f"{f' (both resolve to {src})' if how == 'is' and Path(output) != Path(given) else ''}: "
                           f"writing there could overwrite or delete what it reads; choose a folder outside it")
