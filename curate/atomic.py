"""Write files whole or not at all: a temporary name in the same folder, then an atomic rename.

Every output of the project goes through here, so a killed process never leaves a file that looks whole.
A temporary is created with the mode the user's umask gives (as `open` would; mkstemp's is 0600) and is
locked (flock) while its writer lives, so a later command can tell the leftover of a killed write, which
it removes, from a write in progress.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator

from curate import storage


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new empty file beside `path`, locked by this process; returns its descriptor and name."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink:
            return fd, tmp
        os.close(fd)  # a cleaner removed it between the open and the lock: take another name


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, parents: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block finishes.

    parents=False: a missing folder is an error (FileNotFoundError), not made anew, so a late writer into a
    folder its owner has removed does not bring it back. For an object-store URL the temporary is a local
    file, uploaded whole when the block finishes (`curate.storage.upload`: a temporary key, then a copy to
    the final one)."""
    if storage.is_url(path):
        with _uploaded(path) as tmp:
            yield tmp
        return
    path = Path(path)
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_path = _create_temporary(path)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        try:
            if tmp_path.exists():
                tmp_path.unlink()
        finally:
            os.close(fd)  # releases the lock


@contextlib.contextmanager
def _uploaded(target) -> Iterator[Path]:
    fd, name = tempfile.mkstemp(prefix=".curate-upload-", suffix=f"-{storage.path(target).name}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        storage.upload(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", parents: bool = True) -> Iterator[IO]:
    """Open a temporary file for writing that becomes `path` when the block ends without error."""
    with atomic_path(path, parents) as tmp:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def write_json(path: str | os.PathLike, obj) -> None:
    """Write `obj` as indented JSON, whole or not at all."""
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def replace_folder(staging: str | os.PathLike, target: str | os.PathLike, old: str | os.PathLike) -> None:
    """Put a fully written `staging` folder at `target`: the previous target moves aside to `old` first and is
    removed after, so `target` is at every moment either the whole old folder or the whole new one."""
    if storage.is_url(target):
        storage.replace_prefix(staging, target)
        return
    staging, target, old = Path(staging), Path(target), Path(old)
    if old.exists():
        shutil.rmtree(old)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    if old.exists():
        shutil.rmtree(old)


def is_temporary(path: str | os.PathLike) -> bool:
    """True for the leftovers of an interrupted atomic write (never to be read as output)."""
    name = str(path).rstrip("/").rsplit("/", 1)[-1]
    return name.startswith(".") and name.endswith(".tmp")


def remove_stale_temporaries(*folders: str | os.PathLike) -> list[Path]:
    """Delete the temporaries of killed writes directly in `folders` (those no live writer holds locked).

    Each command calls it on the folders it writes, so a finished rerun leaves no `.*.tmp` behind, while a
    write in progress by another process is left alone.
    """
    removed = []
    for folder in folders:
        if storage.is_url(folder):
            removed.extend(storage.remove_stale_objects(folder))
            continue
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if not is_temporary(p) or not p.is_file():
                continue
            try:
                fd = os.open(p, os.O_RDWR | os.O_CLOEXEC)
            except (FileNotFoundError, PermissionError):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # its writer is alive
            try:
                p.unlink()
                removed.append(p)
            except FileNotFoundError:
                pass
            finally:
                os.close(fd)
    return removed
