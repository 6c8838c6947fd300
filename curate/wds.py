"""Reading and writing webdataset tars safely and deterministically.

Reading streams a tar once and groups members into samples the way webdataset does (key = path up to the
first dot of the file name). Member names come from strangers: they are never used as file-system paths,
only their extension is kept, and only when it is a plain one. Writing uses fixed tar headers (mtime 0,
uid 0, mode 0644), so the same samples give the same bytes on every engine.
"""

from __future__ import annotations

import io
import re
import tarfile
from dataclasses import dataclass, field
from typing import Iterator

from curate import storage

_MEMBER = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")
SAFE_EXT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$")


@dataclass
class Sample:
    key: str
    files: dict[str, bytes] = field(default_factory=dict)  # extension -> bytes


@dataclass
class ReadReport:
    """What a streaming read saw: samples yielded, members skipped, and the error that stopped it, if any."""

    samples: int = 0
    skipped_members: int = 0
    error: str | None = None


def member_key(name: str) -> tuple[str, str] | None:
    """(sample key, lower-case extension) of a tar member by webdataset's rule, or None for a name that is
    no sample file (no dot, a hidden file, an extension that is not plain)."""
    m = _MEMBER.match(name)
    if not m or not SAFE_EXT.match(m.group(2)):
        return None
    return m.group(1), m.group(2).lower()


def iter_samples(path: str, report: ReadReport) -> Iterator[Sample]:
    """Yield whole samples from a tar; a read error ends the stream and is recorded in `report`.

    The sample being assembled when the error hits is dropped: it may be missing a member.
    """
    current: Sample | None = None
    try:
        with storage.open_file(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    if not member.isdir():
                        report.skipped_members += 1
                    continue
                named = member_key(member.name)
                if named is None:
                    report.skipped_members += 1
                    continue
                key, ext = named
                f = tar.extractfile(member)
                data = f.read() if f is not None else b""
                if current is not None and current.key != key:
                    report.samples += 1
                    yield current
                    current = None
                if current is None:
                    current = Sample(key)
                current.files[ext] = data
            _check_end_marker(path, tar.offset)
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        report.error = f"{type(e).__name__}: {e}"
        return
    if current is not None:
        report.samples += 1
        yield current


def _check_end_marker(path: str, offset: int) -> None:
    """A whole tar ends with two zero blocks; tarfile reads a cut at a block boundary as a clean end."""
    with storage.open_file(path, "rb") as f:
        f.seek(offset)
        marker = f.read(2 * tarfile.BLOCKSIZE)
    if len(marker) < 2 * tarfile.BLOCKSIZE or marker.count(0) != len(marker):
        raise tarfile.ReadError(f"truncated: no end-of-archive marker after byte {offset}")


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class TarSampleWriter:
    """Append samples to an open tar with fixed headers; members in sorted extension order."""

    def __init__(self, fileobj):
        self.tar = tarfile.open(fileobj=fileobj, mode="w", format=tarfile.USTAR_FORMAT)
        self.count = 0

    def write(self, key: str, files: dict[str, bytes]) -> None:
        for ext in sorted(files):
            data = files[ext]
            self.tar.addfile(_tarinfo(f"{key}.{ext}", len(data)), io.BytesIO(data))
        self.count += 1

    def close(self) -> None:
        self.tar.close()
