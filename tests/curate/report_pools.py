"""A shard pool with byte-identical copies of some images, deduplicated through the `curate` CLI, for the
report's duplicate examples (tests/curate/test_report_dedup.py, tests/evals/test_pages_in_chromium.py)."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

from tests.curate.helpers import add_member, tar_samples, write_shard_pool

#: in shard 0: sample -> the sample whose image it carries (so 0, 1, 2, 3 are one group, 5 and 9 another)
COPIES = {1: 0, 2: 0, 3: 0, 9: 5}


def curate(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curate.cli", *map(str, args)], check=False, capture_output=True, text=True,
                          timeout=timeout)


def write_duplicate_pool(root: Path) -> list[str]:
    """A two-shard pool whose shard 0 repeats images as COPIES says; returns the uids of shard 0's samples."""
    meta = write_shard_pool(root, [20, 20], seed=7)
    tar = root / "shards" / "00000000.tar"
    samples = tar_samples(tar)
    with tarfile.open(tar, "w") as out:
        for j, (key, files) in enumerate(samples):
            for ext, data in files.items():
                add_member(out, f"{key}.{ext}", samples[COPIES[j]][1]["jpg"] if ext == "jpg" and j in COPIES else data)
    return meta.column("uid").to_pylist()[:20]


def dedup_report(root: Path) -> tuple[Path, list[str]]:
    """stage sha256, dedup sha256, then `curate run --filter dedup`: (OUT, shard 0's uids)."""
    uids = write_duplicate_pool(root / "pool")
    for args in (("stage", "--pool", root / "pool", "--signals", "sha256", "--processes", "1", "--no-progress"),
                 ("dedup", "--pool", root / "pool", "--method", "sha256"),
                 ("run", "--pool", root / "pool", "--filter", "dedup", "--set", "dedup.method=sha256",
                  "--output", root / "out", "--processes", "1", "--no-reshard")):
        res = curate(*args)
        assert res.returncode == 0, (args, res.stdout[-2000:], res.stderr[-2000:])
    return root / "out", uids
