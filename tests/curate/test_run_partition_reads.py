"""What each partition task of `curate run` reads and computes: no caption column unless a step needs it (the few
example captions the report shows are read afterwards), no pandas import, and exact counts of repeated uids."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.demo.metadata import random_uids
from curate.run import distinct_pairs, repeated_rows
from curate.uids import UID_DTYPE
from filters.rules import float_column, score_values


def _captioned_pool(root, parts=3, rows=500, seed=0):
    """Metadata whose every caption names its own uid, so a caption shown next to the wrong uid is caught."""
    rng = np.random.default_rng(seed)
    (root / "metadata").mkdir(parents=True)
    for i in range(parts):
        uids = random_uids(rng, rows)
        text = [None if j % 37 == 0 else f"caption of {u}" for j, u in enumerate(uids)]
        score = rng.normal(0.25, 0.05, rows).astype(np.float32)
        pq.write_table(pa.table({"uid": uids, "text": text, "clip_l14_similarity_score": pa.array(score, mask=rng.random(rows) < 0.02)}),
                       root / "metadata" / f"{i:08d}.parquet")


def test_report_examples_show_their_own_captions(tmp_path):
    """clip_score reads no caption; the report's examples still show each uid's own caption (read afterwards)."""
    _captioned_pool(tmp_path / "pool")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "curate.cli", "run", "--pool", str(tmp_path / "pool"), "--filter", "clip_score",
                           "--fraction", "0.4", "--arch", "l14", "--output", str(out), "--processes", "2"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    page = (out / "report.html").read_text()
    cards = re.findall(r"<div class='card (kept|rejected)' data-uid='([0-9a-f]{32})'>.*?<div class=cap>(.*?)</div>", page, re.DOTALL)
    assert {k for k, _, _ in cards} == {"kept", "rejected"} and len(cards) == 12
    for _, uid, cap in cards:
        assert cap in (html.escape(f"caption of {uid}", quote=True), "<span class=noimg>(no caption)</span>"), (uid, cap)
    assert sum("caption of" in cap for _, _, cap in cards) >= 10
    assert json.loads((out / "stats.json").read_text())["kept"] == int(1500 * 0.4) + 1  # >= the score at rank int(N*f)


def test_partition_tasks_read_no_caption_and_import_no_pandas(tmp_path):
    """pyarrow's to_numpy and pa.array import pandas (0.4 s, ~30 MB in each worker): the rank and filter tasks
    avoid both, and a filter that needs no caption leaves it unread (an example carries its file and row)."""
    _captioned_pool(tmp_path / "pool", parts=1)
    code = f"""
import sys
from curate.pool import Pool
from curate.rank import HistogramTask, partition_histogram
from curate.run import PartitionJob, filter_partition
from filters.datacomp import ClipScore
part = Pool({str(tmp_path / 'pool')!r}).partitions()[0]
partition_histogram(HistogramTask(part.path, "clip_l14_similarity_score", 0, 0))
f = ClipScore("l14", threshold=0.25)
r = filter_partition(PartitionJob(part, (f,), None, None, "", (f.column,), 6, 100))
items = [e for st in r["examples"] for kind in ("kept", "rejected") for e in st[kind]]
assert items and all(e["text"] is None and e["text_at"][0] == part.path for e in items), items
print("pandas" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_repeated_rows_are_counted_exactly():
    """Rows whose top 32 bits collide without being the same uid are not repeats; same uids are, however many."""
    rng = np.random.default_rng(4)
    for trial in range(40):
        n = int(rng.integers(0, 400))
        pairs = np.empty(n, dtype=UID_DTYPE)
        hi = rng.integers(0, [2**64 - 1, 2**33, 30, 1][trial % 4], n, dtype=np.uint64, endpoint=True)
        pairs["f0"] = hi
        pairs["f1"] = rng.integers(0, [2**64 - 1, 3][trial % 2], n, dtype=np.uint64, endpoint=True)
        if n > 4:
            pairs[n // 2] = pairs[1]
            pairs[n - 1] = pairs[1]
        assert repeated_rows(pairs) == n - len(distinct_pairs(pairs)) == n - len(np.unique(pairs)), trial


@pytest.mark.parametrize("column", [
    pa.chunked_array([pa.array([1.5, None, 3.0], pa.float32()).slice(1), pa.array([None, 2.0], pa.float32())]),
    pa.array([1, None, 3, 4, None, 6, 7, 8, 9, 10], pa.int64()).slice(3),
    pa.chunked_array([], pa.float64()),
    pa.array([0.25, -0.0, float("nan"), None]),
    pa.array([1, 2, 255], pa.uint8()),
    pa.array(["1.5", None]),
])
def test_numbers_from_arrow_buffers_match_pyarrow(column):
    """float_column and score_values read float and integer columns from arrow's buffers (nulls as NaN):
    the same values as pyarrow's own conversion, for slices, chunks and nulls."""
    want = np.asarray(pa.compute.cast(column, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    got = float_column(column)
    assert got.dtype == np.float64 and np.array_equal(got, want, equal_nan=True)
    scores = score_values(column)
    assert np.array_equal(scores.astype(np.float64), want, equal_nan=True)
    assert scores.dtype == (np.float32 if column.type == pa.float32() else np.float64)
