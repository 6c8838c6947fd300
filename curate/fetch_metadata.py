"""`curate fetch-metadata`: DataComp's metadata (parquet, and .npz embeddings) from the hub into POOL/metadata.

What DataComp's `download_upstream.py` fetches: the dataset repo `mlfoundations/datacomp_{scale}` (or
`mlfoundations/datacomp_1b`), files `*.parquet` (with `--npz` also `*.npz`); for xlarge the files sit in
`part_*/` folders and are flattened into the metadata folder, so every scale ends as `POOL/metadata/<name>`,
each .npz beside its parquet. The result is a pool `curate download --pool POOL` downloads as it is.

Each file is fetched into `POOL/_fetch/partial/<name>` (appended to from where a killed run stopped), checked
against the size and sha256 (or git blob id) the hub or mirror states, and only then renamed to its final
name: a final name only ever holds a whole, verified file. `POOL/fetch_metadata.json` records the repo, the
commit, and each file's size, sha256 and mtime, so a rerun skips files already verified without reading them.

A pool in an object store (`--pool s3://bucket/prefix`) cannot be appended to: the partial files and the lock
live on this machine, in `$TMPDIR/curate-fetch/<hash of the pool URL>/`, so a killed fetch resumes when rerun
on the same machine (elsewhere it starts its partial files from zero), and a verified file is uploaded whole
(a temporary key, then a copy to its final name). The record vouches for an object by its size and
LastModified; an object it does not vouch for is fetched again rather than read back. The lock keeps out a
second fetch on this machine only: an object store has no locks.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from curate import storage
from curate.atomic import remove_stale_temporaries, write_json
from curate.hub import HubError, RemoteFile, check_file, matches, open_repo
from curate.paths import refuse_overlap

SCALES = ("small", "medium", "large", "xlarge", "datacomp_1b")
RECORD = "fetch_metadata.json"
WORK = "_fetch"
SAVE_EVERY_S = 30.0  # how often the record is saved while files arrive (a kill then re-reads at most these)


class FetchError(ValueError):
    """A whole run that cannot start (pool in use, names that collide, files of another source)."""


def repo_for(scale: str) -> str:
    if scale not in SCALES:
        raise FetchError(f"unknown scale {scale!r} (choose from {', '.join(SCALES)})")
    return "mlfoundations/datacomp_1b" if scale == "datacomp_1b" else f"mlfoundations/datacomp_{scale}"


def patterns_for(scale: str, npz: bool) -> list[str]:
    """DataComp's allow_patterns: `*.parquet` (`*/*.parquet` at xlarge), and the same for .npz with --npz."""
    base = "*/*.parquet" if scale == "xlarge" else "*.parquet"
    return [base] + ([base.replace(".parquet", ".npz")] if npz else [])


def plan_names(files: list[RemoteFile], repo: str) -> dict[str, RemoteFile]:
    """{name in POOL/metadata: file}: flattened to the file name, as DataComp does for xlarge."""
    out: dict[str, RemoteFile] = {}
    for f in files:
        name = f.path.rsplit("/", 1)[-1]
        if name in out:
            raise FetchError(f"{repo}: {out[name].path} and {f.path} would both be metadata/{name}")
        out[name] = f
    return out


class _PoolLock:
    """One fetch at a time per pool: two would append to the same partial files."""

    def __init__(self, work: Path):
        work.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(work / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise FetchError(f"another fetch-metadata is writing {work.parent}; wait for it to end") from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


def _read_record(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else {}
    except (OSError, ValueError):
        return {}  # no record, or an unreadable one: every present file is checked by reading it


def _stat(final) -> tuple[int, int] | None:
    """(size, mtime in ns) of a file, or of an object (its LastModified); None when there is none."""
    if not storage.is_url(final):
        try:
            st = final.stat()
        except FileNotFoundError:
            return None
        return st.st_size, st.st_mtime_ns
    fs, key = final.fs, final.path
    if not fs.isfile(key):
        return None
    info = fs.info(key)
    modified = info.get("LastModified")
    return int(info["size"]), int(modified.timestamp() * 1e9) if hasattr(modified, "timestamp") else -1


def _verified(final: Path, remote: RemoteFile, known: dict | None, stated_by: str) -> tuple[bool, str]:
    """Whether the file at its final name is `remote`: by the record when size and mtime are unchanged, else read
    (an object the record does not vouch for counts as not there: it is fetched again)."""
    st = _stat(final)
    if st is None or st[0] != remote.size:
        return False, ""
    if known and known.get("size") == st[0] and known.get("mtime_ns") == st[1] and (
            remote.sha256 is None or known.get("sha256") == remote.sha256.lower()):
        return True, known["sha256"]
    if storage.is_url(final):
        return False, ""
    problem, sha256 = check_file(final, remote, stated_by)
    return problem is None, sha256


def _fetch_one(source, remote: RemoteFile, final: Path, partial: Path, progress, stop: threading.Event) -> str:
    """Append the rest of `remote` to `partial`, verify it whole, rename it to `final`; returns its sha256."""
    offset = partial.stat().st_size if partial.exists() else 0
    if offset > remote.size:
        partial.unlink()
        offset = 0
    progress(offset)
    if offset < remote.size:
        with open(partial, "ab") as out:
            for block in source.read(remote, offset):
                if stop.is_set():
                    raise InterruptedError("stopped")  # the partial stays, to resume from
                out.write(block)
                progress(len(block))
                offset += len(block)
                if offset > remote.size:
                    break  # more bytes than stated: refused below
            out.flush()
            os.fsync(out.fileno())
    problem, sha256 = check_file(partial, remote, f"{source.location}")
    if problem:
        partial.unlink()  # a resumed run must not keep bytes that are known wrong
        raise HubError(f"{remote.path}: {problem}; refused, nothing written under metadata/{final.name}")
    if storage.is_url(final):
        storage.upload(partial, final)
        partial.unlink()
    else:
        os.replace(partial, final)
    return sha256


def _wanted(source, scale: str, npz: bool, repo: str, meta: Path) -> dict[str, RemoteFile]:
    """{name in POOL/metadata: file} of this run; refuses a metadata folder holding files of another source."""
    listing = source.list_files()
    names = plan_names([f for f in listing if matches(f.path, patterns_for(scale, npz))], repo)
    if not names:
        raise FetchError(f"{repo}@{source.commit} ({source.location}) has no files matching "
                         f"{', '.join(patterns_for(scale, npz))}")
    ours = set(plan_names([f for f in listing if matches(f.path, patterns_for(scale, True))], repo))
    foreign = sorted(p.name for p in meta.glob("*") if p.suffix in (".parquet", ".npz") and p.name not in ours) \
        if meta.is_dir() else []
    if foreign:
        raise FetchError(f"{meta} holds files that are not {repo}@{source.commit}'s ({', '.join(foreign[:3])}"
                         f"{', ...' if len(foreign) > 3 else ''}); fetch into a new pool")
    return names


def _fetch_all(source, todo: list[tuple[str, RemoteFile]], meta: Path, partial_dir: Path, workers: int,
               done, failed: dict[str, str]) -> None:
    """Fetch `todo` on `workers` threads; done(name, remote, sha256) for each verified file, failures into
    `failed`. An interrupt stops every thread at its next block, leaving its partial to resume from."""
    from tqdm import tqdm

    bar = tqdm(total=sum(r.size for _, r in todo), unit="B", unit_scale=True, unit_divisor=1024,
               desc="fetch-metadata", disable=None, leave=False, dynamic_ncols=True)
    lock, stop = threading.Lock(), threading.Event()

    def progress(n: int) -> None:
        with lock:  # updates come from every worker thread
            bar.update(n)

    ex = ThreadPoolExecutor(max_workers=min(workers, max(1, len(todo))))
    try:
        futures = {ex.submit(_fetch_one, source, remote, meta / name, partial_dir / name, progress, stop):
                   (name, remote) for name, remote in todo}
        for fut in as_completed(futures):
            name, remote = futures[fut]
            try:
                done(name, remote, fut.result())
            except HubError as e:  # refused: the bytes are not what the source states
                failed[name] = str(e)
            except Exception as e:  # network (huggingface_hub's, httpx's) or disk: the partial is kept
                first = (str(e).strip().splitlines() or [""])[0]
                failed[name] = f"{remote.path}: {type(e).__name__}: {first}; rerun to try again (a partial file resumes)"
    finally:
        stop.set()  # only threads still fetching see it: after a normal end there are none
        ex.shutdown(wait=True, cancel_futures=True)
        bar.close()


def fetch_metadata(scale: str, pool: str | os.PathLike, npz: bool = False, hub_root: str | os.PathLike | None = None,
                   revision: str | None = None, workers: int = 8) -> dict:
    """Fetch the scale's metadata into POOL/metadata; returns the summary (also POOL/fetch_metadata.json)."""
    if workers < 1:
        raise FetchError(f"--workers must be at least 1 (got {workers})")
    repo = repo_for(scale)
    pool = storage.path(pool)  # a Path, or a UPath for a pool in an object store
    if hub_root is not None:
        refuse_overlap({"--hub-root": hub_root}, pool, "--pool")
    meta, work = pool / "metadata", _work_folder(pool)
    partial_dir = work / "partial"
    with _PoolLock(work):
        remove_stale_temporaries(pool)  # the record's killed writes
        source = open_repo(repo, revision, hub_root)
        names = _wanted(source, scale, npz, repo, meta)
        meta.mkdir(parents=True, exist_ok=True)
        partial_dir.mkdir(parents=True, exist_ok=True)

        record_path = pool / RECORD
        old = _read_record(record_path)
        known = old.get("files", {}) if old.get("repo") == repo else {}
        files: dict[str, dict] = {}
        todo: list[tuple[str, RemoteFile]] = []
        for name, remote in sorted(names.items()):
            ok, sha256 = _verified(meta / name, remote, known.get(name), source.location)
            if ok:
                files[name] = _entry(meta / name, remote, sha256)
            else:
                todo.append((name, remote))
        present = len(files)
        failed: dict[str, str] = {}
        record = {"repo": repo, "revision": revision or "main", "commit": source.commit,
                  "source": source.location, "scale": scale, "npz": npz, "patterns": patterns_for(scale, npz),
                  "files": files}

        def save() -> None:
            write_json(record_path, {**record, "fetched": len(files) - present, "present": present,
                                     "failed": failed, "complete": not failed and len(files) == len(names)})

        last_save = time.monotonic()

        def done(name: str, remote: RemoteFile, sha256: str) -> None:
            nonlocal last_save
            files[name] = _entry(meta / name, remote, sha256)
            if time.monotonic() - last_save > SAVE_EVERY_S:
                save()
                last_save = time.monotonic()

        try:
            _fetch_all(source, todo, meta, partial_dir, workers, done, failed)
        finally:
            save()
        if not failed:
            for p in partial_dir.iterdir():
                p.unlink()  # partials of files no longer wanted
            partial_dir.rmdir()
    return {"repo": repo, "commit": source.commit, "source": source.location, "files": len(names),
            "fetched": len(files) - present, "present": present,
            "bytes_fetched": sum(r.size for name, r in todo if name in files), "failed": failed}


def _work_folder(pool) -> Path:
    """Where the lock and the partial files live: POOL/_fetch, or for an object store a folder on this machine."""
    if not storage.is_url(pool):
        return pool / WORK
    return Path(tempfile.gettempdir()) / "curate-fetch" / hashlib.sha256(str(pool).encode()).hexdigest()[:16]


def _entry(final: Path, remote: RemoteFile, sha256: str) -> dict:
    size, mtime_ns = _stat(final)
    return {"path": remote.path, "size": size, "sha256": sha256, "mtime_ns": mtime_ns}
