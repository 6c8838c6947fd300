"""Pools as users have them: uids the metadata repeats, and sizes only the downloader knows."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from curate.cli import main as curate_main
from curate.engines import LocalEngine
from curate.pool import Pool
from curate.run import run_filters
from curate.subset import read_subset
from filters.registry import build_filter


def pairs(uids) -> np.ndarray:
    return np.sort(np.array([divmod(int(u, 16), 2**64) for u in uids], dtype=np.dtype("u8,u8")))


def fasttext_en(texts):
    import fasttext

    from curate.signals.language import packaged_fasttext_model

    model = fasttext.load_model(packaged_fasttext_model())
    return [model.predict(t.replace("\n", " "))[0][0] == "__label__en" for t in texts]


def datacomp_basic(texts, widths, heights):
    """DataComp's load_uids_with_basic_filter_helper, row by row."""
    keep = []
    for t, w, h, en in zip(texts, widths, heights, fasttext_en(texts)):
        if w is None or h is None:
            keep.append(False)
            continue
        keep.append(en and len(t.split()) > 2 and len(t) > 5 and min(w, h) >= 200 and max(w, h) / min(w, h) <= 3.0)
    return np.array(keep)


# --------------------------------------------------------------------------------------------------------
# Item 5: a repeated uid enters the subset once
# --------------------------------------------------------------------------------------------------------

A, B, C, D = (f"{i:032x}" for i in (0xA, 0xB, 0xC, 0xD))


def _repeat_pool(root):
    (root / "metadata").mkdir(parents=True)
    good, short = "a dog running on the beach", "dog"
    first = {"uid": [A, A, B, C], "text": [good, good, short, good]}  # A twice in one file
    second = {"uid": [A, B, D, C], "text": [good, good, good, short]}  # A again, B once kept, C once kept
    for i, part in enumerate((first, second)):
        n = len(part["uid"])
        pq.write_table(pa.table({**part, "original_width": [300] * n, "original_height": [300] * n}),
                       root / "metadata" / f"{i:08d}.parquet")


def test_a_repeated_uid_enters_the_subset_once(tmp_path):
    _repeat_pool(tmp_path / "pool")
    with LocalEngine(2) as engine:
        everything = run_filters(Pool(tmp_path / "pool"), [build_filter("no_filter")], tmp_path / "all", engine, report=False)
        basic = run_filters(Pool(tmp_path / "pool"), [build_filter("basic")], tmp_path / "basic", engine, report=False)
    assert np.array_equal(read_subset(tmp_path / "all" / "subset.npy"), pairs([A, B, C, D]))
    assert everything["kept"] == 4 and everything["rows_in"] == 8 == everything["kept"] + everything["rejected"]
    assert everything["uid_repeats"] == {"rows_repeating_in_their_file": 1, "kept_rows_collapsed": 4}
    assert everything["steps"][-1] == {"filter": "unique_uid", "rows_in": 8, "kept": 4, "rejected": 4,
                                       "rejected_by_first_rule": {"repeated_uid": 4}, "failed_rule": {"repeated_uid": 4}}
    # B and C are kept by one of their rows each; A by three
    assert np.array_equal(read_subset(tmp_path / "basic" / "subset.npy"), pairs([A, B, C, D]))
    assert basic["uid_repeats"]["kept_rows_collapsed"] == 2 and basic["steps"][1]["kept"] == 6


def test_no_repeats_no_extra_step(tmp_path):
    (tmp_path / "pool").mkdir()
    pq.write_table(pa.table({"uid": [A, B]}), tmp_path / "pool" / "m.parquet")
    with LocalEngine(1) as engine:
        stats = run_filters(Pool(tmp_path / "pool"), [build_filter("no_filter")], tmp_path / "o", engine, report=False)
    assert [s["filter"] for s in stats["steps"]] == ["valid_uid", "no_filter"]
    assert stats["uid_repeats"] == {"rows_repeating_in_their_file": 0, "kept_rows_collapsed": 0}


# --------------------------------------------------------------------------------------------------------
# Item 4: sizes from the downloader's shard parquet files
# --------------------------------------------------------------------------------------------------------

SIZES = [(150, 150), (250, 300), (300, 1000), (640, 480), (201, 603), (200, 600), (199, 400), (1000, 200), (900, 300)]
CAPTIONS = ["a photo of a red car on the street", "two dogs playing in the park", "a bowl of fresh fruit on the table",
            "the old church in the village square", "boats in the harbour at night", "a cat\nsleeping on a sofa",
            "mountains under a blue sky", "deux chiens jouent dans le parc", "ok"]


def test_sizes_come_from_the_shard_parquets(tmp_path):
    """A url-list pool (no sizes in its metadata) with the img2dataset parquet files beside the shards."""
    root = tmp_path / "pool"
    (root / "metadata").mkdir(parents=True)
    (root / "shards").mkdir()
    uids = [f"{i + 1:032x}" for i in range(len(SIZES))]
    pq.write_table(pa.table({"uid": uids, "url": [f"http://x/{u}" for u in uids], "text": CAPTIONS}),
                   root / "metadata" / "00000000.parquet")
    # two shards; the second row failed to download (no size); shard 1 holds only failures (all-null sizes)
    status = ["success"] * len(uids)
    status[1] = "failed_to_download"
    w = [s[0] if st == "success" else None for s, st in zip(SIZES, status)]
    h = [s[1] if st == "success" else None for s, st in zip(SIZES, status)]
    pq.write_table(pa.table({"uid": uids, "status": status, "original_width": pa.array(w, pa.int32()),
                             "original_height": pa.array(h, pa.int32())}), root / "shards" / "00000000.parquet")
    pq.write_table(pa.table({"uid": ["f" * 32], "status": ["failed_to_download"], "original_width": pa.array([None]),
                             "original_height": pa.array([None])}), root / "shards" / "00000001.parquet")
    with LocalEngine(1) as engine:
        stats = run_filters(Pool(root), [build_filter("basic")], tmp_path / "out", engine, report=False)
        sized = run_filters(Pool(root), [build_filter("image_size")], tmp_path / "size", engine, report=False)
    want = datacomp_basic(CAPTIONS, w, h)
    assert np.array_equal(read_subset(tmp_path / "out" / "subset.npy"), pairs(np.array(uids)[want]))
    assert want.sum() >= 3 and stats["steps"][1]["rejected_by_first_rule"]["missing_size"] == 1
    assert sized["kept"] == sum(1 for a, b in zip(w, h) if a and min(a, b) >= 200 and max(a, b) / min(a, b) <= 3)


def _png(size) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(size[0]).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_a_downloaded_url_list_filters_with_basic(tmp_path):
    """`curate download` from uid,url,text only, then `curate run --filter basic`: DataComp's rule, no extra step."""
    from curate.demo.server import LoopbackImageServer

    web = tmp_path / "web"
    web.mkdir()
    uids = [f"{i + 1:032x}" for i in range(len(SIZES))]
    for uid, size in zip(uids, SIZES):
        (web / f"{uid}.png").write_bytes(_png(size))
    with LoopbackImageServer(web) as server:
        pq.write_table(pa.table({"uid": uids, "url": [server.url(f"{u}.png") for u in uids], "text": CAPTIONS}),
                       tmp_path / "urls.parquet")
        assert curate_main(["download", "--url-list", str(tmp_path / "urls.parquet"), "--pool", str(tmp_path / "pool"),
                            "--allow-private", "--image-size", "64", "--shard-size", "5", "--threads", "2",
                            "--processes", "1"]) == 0
    assert "original_width" not in pq.read_schema(tmp_path / "pool" / "metadata" / "00000000.parquet").names
    assert curate_main(["run", "--pool", str(tmp_path / "pool"), "--filter", "basic", "--output", str(tmp_path / "out"),
                        "--processes", "1", "--no-report", "--no-reshard"]) == 0
    want = datacomp_basic(CAPTIONS, [s[0] for s in SIZES], [s[1] for s in SIZES])
    assert np.array_equal(read_subset(tmp_path / "out" / "subset.npy"), pairs(np.array(uids)[want]))
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["kept"] == int(want.sum()) >= 3 and "missing_size" not in stats["steps"][1]["rejected_by_first_rule"]
