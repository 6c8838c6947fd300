"""Files of a Hugging Face hub dataset repo, with what the hub states about them, from the hub or a local mirror.

A repo is read at one commit: its file list (path, size, and the sha256 of LFS files or the git blob id of
the others) and each file's bytes from any offset, so a download killed half-way resumes where it stopped.

A **mirror** (`--hub-root DIR`, as `evaluate download` has it) holds one folder per repo id,
`DIR/<owner>/<name>/...`, with the repo's files as they are. Whatever it states about them is in
`DIR/<owner>/<name>/.hub_tree.json`: `{"revision": COMMIT, "files": [...]}`, the entries being what the hub's
tree API (`/api/datasets/<repo>/tree/<rev>?recursive=true`) returns (`path`, `size`, `oid`, and `lfs` with
`oid` = sha256 for LFS files). `write_mirror_manifest` makes one from a folder of trusted files
(`python -m curate.hub write-manifest DIR/<owner>/<name>`). Files starting with `.` are never repo files.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

MIRROR_MANIFEST = ".hub_tree.json"
CHUNK = 1 << 20


class HubError(ValueError):
    """A repo, revision or file that cannot be listed or read; the message names it."""


@dataclass(frozen=True)
class RemoteFile:
    path: str  # in the repo, posix
    size: int
    sha256: str | None = None  # LFS files: the hub's sha256 of the content
    git_oid: str | None = None  # other files: the git blob id (sha1 of "blob <size>\0" + content)


# ---------------------------------------------------------------- local mirror folders (shared with evals)


def mirror_folder(hub_root: str | Path, repo: str) -> Path:
    """The folder holding `repo` under a hub mirror, or HubError naming the folder expected."""
    folder = Path(hub_root) / repo
    if not folder.is_dir():
        raise HubError(f"{repo}: not found under hub root {hub_root} (expected folder {folder})")
    return folder


def mirror_files(folder: Path, patterns: list[str] | None = None) -> list[str]:
    """Relative posix paths of the repo files in a mirror folder (dot-files excluded) matching `patterns`."""
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and not rel.startswith(".") and matches(rel, patterns):
            out.append(rel)
    return out


def matches(path: str, patterns: list[str] | None) -> bool:
    """huggingface_hub's allow_patterns rule: fnmatch, where `*` also crosses `/`."""
    return patterns is None or any(fnmatch.fnmatch(path, p) for p in patterns)


# ---------------------------------------------------------------- verification


def digests(path: Path, git_oid: bool = True) -> tuple[str, str | None]:
    """(sha256, git blob sha1 or None when not asked for) of a file's content, in one read."""
    sha256 = hashlib.sha256()
    git = hashlib.sha1(f"blob {path.stat().st_size}\0".encode()) if git_oid else None
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            sha256.update(block)
            if git is not None:
                git.update(block)
    return sha256.hexdigest(), git and git.hexdigest()


def check_file(path: Path, remote: RemoteFile, stated_by: str) -> tuple[str | None, str]:
    """(problem or None, sha256) of a local copy of `remote`: size, then the digest the source states."""
    size = path.stat().st_size
    if size != remote.size:
        return f"{size} bytes where {stated_by} states {remote.size}", ""
    sha256, git_oid = digests(path, git_oid=not remote.sha256)
    if remote.sha256 and sha256 != remote.sha256.lower():
        return f"sha256 {sha256} where {stated_by} states {remote.sha256}", sha256
    if not remote.sha256 and remote.git_oid and git_oid != remote.git_oid.lower():
        return f"git blob id {git_oid} where {stated_by} states {remote.git_oid}", sha256
    return None, sha256


def _remote(entry: dict, where: str) -> RemoteFile:
    """A hub tree entry as a RemoteFile."""
    try:
        lfs = entry.get("lfs") or None
        return RemoteFile(path=str(entry["path"]), size=int(entry["size"]), sha256=lfs and str(lfs["oid"]),
                          git_oid=entry.get("oid"))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise HubError(f"{where}: malformed file entry {entry!r:.200} ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------- sources


class MirrorRepo:
    """A repo in a local mirror, verified against its `.hub_tree.json`."""

    def __init__(self, hub_root: str | Path, repo: str, revision: str | None = None):
        self.repo, self.folder = repo, mirror_folder(hub_root, repo)
        self.location = f"mirror {self.folder}"
        manifest = self.folder / MIRROR_MANIFEST
        try:
            data = json.loads(manifest.read_text())
        except FileNotFoundError:
            raise HubError(f"{manifest}: the mirror states nothing to verify its files against; write it with "
                           f"`python -m curate.hub write-manifest {self.folder}` from files you trust") from None
        except (OSError, ValueError) as e:
            raise HubError(f"{manifest}: unreadable ({e})") from None
        if not isinstance(data, dict) or not isinstance(data.get("files"), list):
            raise HubError(f"{manifest}: expected {{\"revision\": ..., \"files\": [hub tree entries]}}")
        self.commit = str(data.get("revision") or "mirror")
        if revision is not None and revision != self.commit:
            raise HubError(f"{repo}: the mirror {self.folder} holds revision {self.commit}, not {revision}")
        self.files = [_remote(e, str(manifest)) for e in data["files"] if e.get("type", "file") == "file"]

    def list_files(self) -> list[RemoteFile]:
        return list(self.files)

    def read(self, remote: RemoteFile, offset: int = 0) -> Iterator[bytes]:
        path = self.folder / remote.path
        try:
            f = open(path, "rb")
        except OSError as e:
            raise HubError(f"{remote.path}: the mirror lists it but cannot read {path} ({e.strerror})") from None
        with f:
            f.seek(offset)
            while block := f.read(CHUNK):
                yield block


class HubRepo:
    """A dataset repo on the hub (huggingface_hub's endpoint, token and HTTP client), pinned to one commit."""

    def __init__(self, repo: str, revision: str | None = None):
        from huggingface_hub import HfApi

        self.repo, self.api = repo, HfApi()
        self.location = f"{self.api.endpoint}/datasets/{repo}"
        rev = revision or "main"
        try:
            self.commit = self.api.dataset_info(repo, revision=rev).sha or rev
        except Exception as e:  # network, auth, missing repo or revision
            raise HubError(f"cannot reach {repo}@{rev}: {type(e).__name__}: {_first_line(e)}") from None

    def list_files(self) -> list[RemoteFile]:
        from huggingface_hub.hf_api import RepoFile

        try:
            tree = list(self.api.list_repo_tree(self.repo, recursive=True, revision=self.commit, repo_type="dataset"))
        except Exception as e:
            raise HubError(f"cannot list {self.repo}@{self.commit}: {type(e).__name__}: {_first_line(e)}") from None
        return [RemoteFile(f.path, f.size, f.lfs.sha256 if f.lfs else None, f.blob_id)
                for f in tree if isinstance(f, RepoFile)]

    def read(self, remote: RemoteFile, offset: int = 0) -> Iterator[bytes]:
        from huggingface_hub import get_session, hf_hub_url
        from huggingface_hub.utils import build_hf_headers, hf_raise_for_status

        url = hf_hub_url(self.repo, remote.path, repo_type="dataset", revision=self.commit)
        headers = build_hf_headers()
        if offset:
            headers["Range"] = f"bytes={offset}-"
        with get_session().stream("GET", url, headers=headers, follow_redirects=True, timeout=60) as r:
            hf_raise_for_status(r)
            skip = offset if offset and r.status_code != 206 else 0  # a server that ignored the range
            for block in r.iter_bytes(CHUNK):
                if skip:
                    block, skip = block[skip:], max(0, skip - len(block))
                if block:
                    yield block


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [""])[0]


def open_repo(repo: str, revision: str | None = None, hub_root: str | Path | None = None):
    """The repo from the mirror under `hub_root`, else from the hub."""
    return MirrorRepo(hub_root, repo, revision) if hub_root is not None else HubRepo(repo, revision)


# ---------------------------------------------------------------- making a mirror


def write_mirror_manifest(folder: str | Path, revision: str | None = None) -> Path:
    """State the files now in a mirror folder (sizes and digests) in its `.hub_tree.json`, hub-style."""
    from curate.atomic import write_json

    folder = Path(folder)
    entries = []
    for rel in mirror_files(folder):
        path = folder / rel
        sha256, git_oid = digests(path)
        size = path.stat().st_size
        entries.append({"type": "file", "path": rel, "size": size, "oid": git_oid,
                        "lfs": {"oid": sha256, "size": size, "pointerSize": 0}})
    write_json(folder / MIRROR_MANIFEST, {"revision": revision, "files": entries})
    return folder / MIRROR_MANIFEST


if __name__ == "__main__":  # python -m curate.hub write-manifest FOLDER [REVISION]
    if len(sys.argv) not in (3, 4) or sys.argv[1] != "write-manifest":
        sys.exit("usage: python -m curate.hub write-manifest DIR/<owner>/<name> [REVISION]")
    print(write_mirror_manifest(sys.argv[2], sys.argv[3] if len(sys.argv) == 4 else None))
