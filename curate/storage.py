"""Where a pool lives: a local folder, or an object store named by an fsspec URL (`s3://bucket/prefix`).

One place decides. A local path stays a plain `pathlib.Path` and every caller keeps its exact code path (and
bytes); a URL becomes a `upath.UPath` over fsspec (s3fs for `s3://`), which answers the same path calls
(`/`, `name`, `stem`, `exists`, `is_dir`, `glob`, `iterdir`, `open`, `read_bytes`). pyarrow reads such a file
through `arrow_source`.

Credentials and the endpoint come from the standard environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_ENDPOINT_URL`, `AWS_DEFAULT_REGION`), which botocore reads in every process, so a Dask or Spark worker on
the same machine sees the same store; a cluster's workers need the same variables set where they run.
Listings are not cached: other processes (an engine's workers) write the objects a driver lists next.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class StorageError(ValueError):
    """An object-store URL that cannot be used (unknown scheme, missing client, a command that takes none)."""


def is_url(path) -> bool:
    """True for a path with a scheme other than file:// (an object store), given as a string or a UPath."""
    if isinstance(path, Path):
        return False
    text = str(path)
    return bool(_URL.match(text)) and not text.startswith("file://")


def path(p):
    """`p` as a path object: `pathlib.Path` for a local path, `upath.UPath` for an object-store URL."""
    if not is_url(p):
        return Path(p)
    if not isinstance(p, str):
        return p  # already a UPath
    try:
        from upath import UPath

        return UPath(p, use_listings_cache=False)
    except (ImportError, ValueError) as e:  # an unknown scheme, or its fsspec backend is not installed
        raise StorageError(f"{p}: cannot open this object-store URL ({e})") from None


def open_file(p, mode: str = "rb"):
    """Open a local file or an object for reading or writing (a plain `open` for a local path)."""
    return open(p, mode) if not is_url(p) else path(p).open(mode)


def arrow_source(p):
    """What pyarrow's parquet readers take for `p`: the path itself when local; for a URL, an open
    seekable file (read through fsspec, so the same credentials and endpoint apply)."""
    return p if not is_url(p) else path(p).open("rb")


def arrow_filesystem(p):
    """(filesystem, path) for pyarrow.dataset over `p`: (None, p) when local, else fsspec wrapped for arrow."""
    if not is_url(p):
        return None, str(p)
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    up = path(p)
    return PyFileSystem(FSSpecHandler(up.fs)), up.path


def read_parquet(p, columns: list[str] | None = None):
    """A parquet file (local or an object) as a table, read with ParquetFile (no pyarrow.dataset, so no pandas)."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(arrow_source(p)).read(columns=columns)


def write_parquet(table, p) -> None:
    """Write `table` to `p`: pyarrow's own writer for a local path; an object is uploaded whole (`upload`)."""
    import pyarrow.parquet as pq

    if not is_url(p):
        pq.write_table(table, p)
        return
    from curate.atomic import atomic_path

    with atomic_path(p) as tmp:
        pq.write_table(table, tmp)


def dataset(files: list, **kwargs):
    """pyarrow.dataset over parquet `files` (all local, or all objects of one store)."""
    import pyarrow.dataset as ds  # here, not at the top: it imports pandas

    filesystem = None
    if files and is_url(files[0]):
        filesystem, _ = arrow_filesystem(files[0])
        files = [path(f).path for f in files]
    return ds.dataset(files, format="parquet", filesystem=filesystem, **kwargs)


def replace_prefix(staging, target) -> None:
    """The object-store form of `curate.atomic.replace_folder`: copy each object of `staging` over `target`
    (each copy lands whole), delete the target's objects staging lacks, then staging. There is no rename of a
    prefix on S3, so while this runs the folder may hold old and new files, each whole; the command's stats
    file, written after, says the set is finished."""
    src, dst = path(staging), path(target)
    fs = src.fs
    names = [info["name"] for info in fs.ls(src.path, detail=True) if info.get("type") == "file"]
    new = {n.rsplit("/", 1)[-1] for n in names}
    for n in names:
        fs.copy(n, f"{dst.path}/{n.rsplit('/', 1)[-1]}")
    if fs.exists(dst.path):
        for info in fs.ls(dst.path, detail=True):
            if info.get("type") == "file" and info["name"].rsplit("/", 1)[-1] not in new:
                fs.rm_file(info["name"])
    remove_tree(staging)


def same_place(a, b) -> bool:
    """Whether two paths name the same file or folder: local ones with links resolved, URLs as written."""
    if is_url(a) or is_url(b):
        return same_or_nested(str(a), str(b)) == "is"
    return Path(a).resolve() == Path(b).resolve()


def same_or_nested(a, b) -> str | None:
    """For two object-store URLs: "is" when equal, "is inside" when `a` lies under `b`, "contains" when `b`
    lies under `a`, else None (a local path and a URL never overlap)."""
    if not (is_url(a) and is_url(b)):
        return None
    pa_, pb = PurePosixPath(str(a).rstrip("/")), PurePosixPath(str(b).rstrip("/"))
    if pa_ == pb:
        return "is"
    if pb in pa_.parents:
        return "is inside"
    if pa_ in pb.parents:
        return "contains"
    return None


def refuse_url(value, what: str, use: str = "a local or mounted folder") -> None:
    """One clear line for a command (or an option of one) that reads and writes local files only."""
    if value is not None and is_url(value):
        raise StorageError(f"{what} does not take object-store paths yet ({value}); use {use}")


def remove_tree(p) -> None:
    """Remove a folder (or an object-store prefix) and everything under it; nothing there is no error."""
    if not is_url(p):
        import shutil

        shutil.rmtree(p, ignore_errors=True)
        return
    up = path(p)
    if up.fs.exists(up.path):
        up.fs.rm(up.path, recursive=True)


def refuse_url_options(args, command: str) -> None:
    """For a command that has no object-store support yet: refuse any path option given as a URL."""
    for dest in ("pool", "output", "url_list", "subset", "eval_dir", "eval_embeddings"):
        refuse_url(getattr(args, dest, None), f"curate {command}")


def upload(local: str | os.PathLike, target) -> None:
    """Put a finished local file at object `target` whole: upload to a temporary key beside it, copy that to
    the final key, delete the temporary. S3 makes an object visible only once its upload completes, so a
    killed upload leaves no object, and the final name only ever holds a whole copy."""
    import secrets

    up = path(target)
    tmp = up.with_name(f".{up.name}.{secrets.token_hex(4)}.tmp")
    fs = up.fs
    fs.put_file(str(local), tmp.path)
    try:
        fs.copy(tmp.path, up.path)
    finally:
        fs.rm_file(tmp.path)


def remove_stale_objects(folder, older_than_s: float = 600.0) -> list[str]:
    """Delete temporaries (`.*.tmp`) directly under an object-store `folder` that are older than
    `older_than_s`: a killed run's leftovers. A younger one may belong to a writer still copying it (an
    object store has no locks), so it is left; every reader skips temporaries by name anyway."""
    import time

    from curate.atomic import is_temporary

    up = path(folder)
    if not up.is_dir():
        return []
    removed = []
    now = time.time()
    for info in up.fs.ls(up.path, detail=True):
        name = info["name"]
        if info.get("type") != "file" or not is_temporary(name):
            continue
        modified = info.get("LastModified") or info.get("mtime")
        age = now - modified.timestamp() if hasattr(modified, "timestamp") else older_than_s
        if age >= older_than_s:
            up.fs.rm_file(name)
            removed.append(f"{up.protocol}://{name}")
    return removed
