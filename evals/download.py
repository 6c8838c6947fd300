"""`evaluate download`: fetch DataComp's evaluation sets from the Hugging Face hub into an eval root.

Where each task comes from follows DataComp's `download_evalsets.py` and `eval_utils/`:

- classification, WILDS and fairness sets are webdataset repos `djghosh/wds_{name}_test`, where `name` is the
  task key with `/` replaced by `-`, except that the `fairness/` prefix is dropped (`fairness/geode` ->
  `djghosh/wds_geode_test`, read by DataComp from `wds_geode_test`). They are copied as they are.
- Flickr30k, MSCOCO and WinoGAViL are Hugging Face datasets `nlphuji/{key after the slash}` that DataComp reads
  with `datasets.load_dataset(..., split="test")`. We take the hub's parquet conversion of that dataset
  (revision `refs/convert/parquet`, the same columns `load_dataset` gives: `image` + `caption` list for
  retrieval; `cue`, `candidates`, `associations`, `candidate_images` for WinoGAViL) and write it as a
  webdataset folder this evaluator reads (evals.data), so the `datasets` package is not needed.

Every task folder is written whole: fetched into a hidden temporary folder beside it, checked (nshards.txt
against the tar files, and the class names / templates a classification set needs), then renamed. A task whose
folder is already complete is skipped, so an interrupted run resumes.

`--hub-root DIR` (or $EVALS_HUB_ROOT) replaces the network by a local folder holding one sub-folder per repo
id (`DIR/djghosh/wds_cifar10_test/...`, `DIR/nlphuji/winogavil/...` with the parquet revision's files): the same
copy / convert / verify / skip logic runs offline, which is how the tests exercise it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from curate.atomic import write_json
from curate.hub import HubError, mirror_files, mirror_folder
from evals.tasks import DEFAULT_TASKS, Task, TaskError, load_tasks, select

HUB_ROOT_ENV = "EVALS_HUB_ROOT"
PARQUET_REVISION = "refs/convert/parquet"
WDS_PATTERNS = ["*.txt", "test/*"]  # class names, templates, dataset_type.txt, test/nshards.txt, test/{i}.tar
SAMPLES_PER_SHARD = 5000
SOURCE_FILE = "source.json"


class DownloadError(RuntimeError):
    """A task whose files could not be fetched, converted or verified."""


@dataclass(frozen=True)
class Source:
    repo: str  # hub dataset repo id
    format: str  # "wds": copy as is; "retrieval" / "winogavil": convert the parquet conversion to webdataset
    revision: str | None = None


def source_for(task: Task) -> Source:
    """DataComp's hub repository for a task (see the module docstring)."""
    key = task.key
    if key.startswith(("retrieval/", "misc/")):
        fmt = "winogavil" if task.type == "winogavil" else "retrieval"
        return Source(f"nlphuji/{key.split('/', 1)[1]}", fmt, PARQUET_REVISION)
    if key.startswith("fairness/"):
        key = key.split("/", 1)[1]
    return Source(f"djghosh/wds_{key.replace('/', '-')}_test", "wds")


# ---------------------------------------------------------------- completeness


def missing_files(folder: Path, task: Task) -> list[str]:
    """What keeps `folder` from being a complete eval set for `task` (empty list: complete)."""
    if not folder.is_dir():
        return [str(folder)]
    problems = []
    nfile = folder / "test" / "nshards.txt"
    try:
        n = int(nfile.read_text().strip())
    except (OSError, ValueError):
        return [f"{nfile} (missing or not an integer)"]
    tars = sorted(p.name for p in (folder / "test").glob("*.tar"))
    expected = [f"{i}.tar" for i in range(n)]
    absent = [t for t in expected if not (folder / "test" / t).is_file() or (folder / "test" / t).stat().st_size == 0]
    problems += [f"{folder / 'test' / t} (nshards.txt says {n})" for t in absent]
    if n <= 0 or len(tars) != n and not absent:
        problems.append(f"{nfile} says {n} shards but test/ holds {len(tars)} tar files")
    if task.type in ("classification", "wilds", "fairness"):
        for name in ("classnames.txt", "zeroshot_classification_templates.txt"):
            if not (folder / name).is_file():
                problems.append(str(folder / name))
    return problems


# ---------------------------------------------------------------- fetching


def fetch_repo(source: Source, dest: Path, hub_root: Path | None, patterns: list[str] | None) -> None:
    """Put the files of `source` (those matching `patterns`) under `dest`."""
    if hub_root is not None:
        try:
            src = mirror_folder(hub_root, source.repo)
        except HubError as e:
            raise DownloadError(str(e)) from None
        for rel in mirror_files(src, patterns):
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, out)
        return
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - open_clip depends on huggingface_hub
        raise DownloadError(f"huggingface_hub is needed to download eval sets: {e}") from None
    try:
        snapshot_download(repo_id=source.repo, repo_type="dataset", revision=source.revision, local_dir=str(dest),
                          allow_patterns=patterns)
    except Exception as e:  # network, auth, missing repo or revision: all end the task with its repo named
        rev = f"@{source.revision}" if source.revision else ""
        raise DownloadError(f"cannot download {source.repo}{rev}: {type(e).__name__}: {e}") from None
    shutil.rmtree(dest / ".cache", ignore_errors=True)  # huggingface_hub's local_dir metadata


# ---------------------------------------------------------------- parquet -> webdataset


def _parquet_files(root: Path) -> list[Path]:
    """The test split's parquet files of a parquet-conversion snapshot (all of them if none is named test)."""
    files = sorted(root.rglob("*.parquet"))
    partial = [f for f in files if any(part.startswith("partial-") for part in f.relative_to(root).parts)]
    if partial:
        # the hub converts only the first ~5 GB of large datasets, into a `partial-{split}` folder
        raise DownloadError(f"the hub's parquet conversion is partial ({partial[0].relative_to(root)}): it would "
                            f"silently drop test samples, so the set is not written")
    test = [f for f in files if "test" in f.relative_to(root).parts[:-1] or f.stem.startswith("test")
            or "-test" in f.stem]
    return test or files


def _image_bytes(value, where: str) -> tuple[bytes, str]:
    """(bytes, extension) of a `datasets` Image cell ({"bytes", "path"}); re-encoded as PNG if not jpg/png/webp."""
    from PIL import Image

    data = value.get("bytes") if isinstance(value, dict) else value
    if not data:
        raise DownloadError(f"{where}: image cell holds no bytes")
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = (im.format or "").upper()
            ext = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}.get(fmt)
            if ext is None:
                buf = io.BytesIO()
                im.convert("RGB").save(buf, format="PNG")
                data, ext = buf.getvalue(), "png"
    except OSError as e:
        raise DownloadError(f"{where}: unreadable image ({e})") from None
    return data, ext


class _ShardWriter:
    def __init__(self, root: Path, per_shard: int = SAMPLES_PER_SHARD):
        self.dir = root / "test"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.per_shard, self.count, self.shards, self.tar = per_shard, 0, 0, None

    def write(self, key: str, members: dict[str, bytes]) -> None:
        if self.tar is None or self.count % self.per_shard == 0:
            self.close()
            self.tar = tarfile.open(self.dir / f"{self.shards}.tar", "w")
            self.shards += 1
        for ext, data in members.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            info.mtime = 0
            self.tar.addfile(info, io.BytesIO(data))
        self.count += 1

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()
            self.tar = None

    def finish(self) -> int:
        self.close()
        (self.dir / "nshards.txt").write_text(f"{self.shards}\n")
        return self.count


def _rows(files: list[Path], columns: list[str]):
    import pyarrow.parquet as pq

    for f in files:
        pf = pq.ParquetFile(f)
        absent = [c for c in columns if c not in pf.schema_arrow.names]
        if absent:
            raise DownloadError(f"{f}: no column(s) {', '.join(absent)} (has {', '.join(pf.schema_arrow.names)})")
        for batch in pf.iter_batches(columns=columns, batch_size=64):
            for row in batch.to_pylist():
                yield f, row


def convert_retrieval(raw: Path, dest: Path) -> int:
    """nlphuji retrieval parquet (`image`, `caption` list) -> webdataset with `{key}.txt`, one caption per line."""
    files = _parquet_files(raw)
    if not files:
        raise DownloadError(f"no parquet files in {raw}")
    w = _ShardWriter(dest)
    for i, (f, row) in enumerate(_rows(files, ["image", "caption"])):
        caps = row["caption"]
        caps = [caps] if isinstance(caps, str) else list(caps or [])
        if not caps:
            raise DownloadError(f"{f}: row {i} has no caption")
        img, ext = _image_bytes(row["image"], f"{f} row {i}")
        text = "\n".join(" ".join(str(c).split()) for c in caps)
        w.write(f"s{i:08d}", {ext: img, "txt": text.encode("utf-8")})
    n = w.finish()
    (dest / "dataset_type.txt").write_text("retrieval\n")
    return n


def convert_winogavil(raw: Path, dest: Path) -> int:
    """nlphuji/winogavil parquet -> webdataset: `{key}.json` (cue, candidates, associations) and one image per
    candidate, `{key}.{j:02d}.{ext}`, in candidate order."""
    files = _parquet_files(raw)
    if not files:
        raise DownloadError(f"no parquet files in {raw}")
    w = _ShardWriter(dest)
    for i, (f, row) in enumerate(_rows(files, ["cue", "candidates", "associations", "candidate_images"])):
        cands, images = list(row["candidates"]), list(row["candidate_images"])
        if len(cands) != len(images):
            raise DownloadError(f"{f}: row {i} has {len(cands)} candidates but {len(images)} images")
        meta = {"cue": row["cue"], "candidates": cands, "associations": list(row["associations"])}
        members = {"json": json.dumps(meta).encode("utf-8")}
        for j, cell in enumerate(images):
            data, ext = _image_bytes(cell, f"{f} row {i} image {j}")
            members[f"{j:02d}.{ext}"] = data
        w.write(f"s{i:08d}", members)
    n = w.finish()
    (dest / "dataset_type.txt").write_text("winogavil\n")
    return n


# ---------------------------------------------------------------- one task, all tasks


def download_task(task: Task, eval_dir: Path, hub_root: Path | None = None, log=print) -> str:
    """Fetch one task into `eval_dir/task.folder` unless it is already complete; returns what happened."""
    dest = task.path(eval_dir)
    if not missing_files(dest, task):
        log(f"{task.key}: present in {dest}, skipped")
        return "present"
    source = source_for(task)
    tmp = eval_dir / f".{task.folder}.partial-{os.getpid()}"
    raw = eval_dir / f".{task.folder}.raw-{os.getpid()}"
    for p in (tmp, raw):
        shutil.rmtree(p, ignore_errors=True)
    t0 = time.perf_counter()
    try:
        if source.format == "wds":
            fetch_repo(source, tmp, hub_root, WDS_PATTERNS)
        else:
            fetch_repo(source, raw, hub_root, ["*.parquet"])
            convert = convert_winogavil if source.format == "winogavil" else convert_retrieval
            convert(raw, tmp)
        problems = missing_files(tmp, task)
        if problems:
            raise DownloadError(f"{task.key}: {source.repo} is incomplete: missing " + "; ".join(
                p.replace(str(tmp), str(dest)) for p in problems))
        write_json(tmp / SOURCE_FILE, {"key": task.key, "repo": source.repo, "revision": source.revision,
                                       "format": source.format, "hub_root": str(hub_root) if hub_root else None})
        if dest.exists():  # an incomplete earlier attempt: replace it whole
            old = eval_dir / f".{task.folder}.old-{os.getpid()}"
            os.replace(dest, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, dest)
    finally:
        for p in (tmp, raw):
            shutil.rmtree(p, ignore_errors=True)
    log(f"{task.key}: {source.repo} -> {dest} ({time.perf_counter() - t0:.1f}s)")
    return "downloaded"


def download(tasks: list[Task], eval_dir: str | Path, hub_root: str | Path | None = None, log=print) -> dict:
    """Download every task; a failing task is reported and the others still run. Returns {key: status}."""
    eval_dir = Path(eval_dir)
    eval_dir.mkdir(parents=True, exist_ok=True)
    hub_root = Path(hub_root) if hub_root else None
    status = {}
    for task in tasks:
        try:
            status[task.key] = download_task(task, eval_dir, hub_root, log)
        except DownloadError as e:
            log(f"{task.key}: FAILED: {e}")
            status[task.key] = f"failed: {e}"
    return status


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="evaluate download",
        description="Download DataComp's evaluation sets (djghosh/wds_*_test webdatasets; nlphuji/* retrieval and "
                    "WinoGAViL, converted to webdataset) into EVAL_DIR/wds_<task>_test. Complete folders are skipped.")
    p.add_argument("--eval-dir", required=True, type=Path, help="eval root to fill")
    p.add_argument("--tasks", default=DEFAULT_TASKS, help="task list YAML (default: DataComp's 38 tasks + 2)")
    p.add_argument("--only", nargs="+", metavar="KEY", help="download only these task keys")
    p.add_argument("--hub-root", type=Path, default=os.environ.get(HUB_ROOT_ENV) or None,
                   help=f"read repos from this local folder (one sub-folder per repo id) instead of the hub "
                        f"(default: ${HUB_ROOT_ENV} if set)")
    args = p.parse_args(argv)
    try:
        tasks = select(load_tasks(args.tasks), args.only)
    except TaskError as e:
        print(f"evaluate download: error: {e}", file=sys.stderr)
        return 2
    status = download(tasks, args.eval_dir, args.hub_root)
    failed = [k for k, s in status.items() if s.startswith("failed")]
    done = sum(s == "downloaded" for s in status.values())
    print(f"{done} downloaded, {sum(s == 'present' for s in status.values())} already present, {len(failed)} failed")
    if failed:
        print(f"evaluate download: error: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
