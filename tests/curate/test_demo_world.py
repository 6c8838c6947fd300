"""The demo's generated world: pHash dedup at the demo's distance must find the floods and nothing else."""

import io

import numpy as np
import pyarrow as pa
from PIL import Image

from curate.dedup.groups import group_ids
from curate.dedup.hamming import near_pairs, parse_hex64
from curate.demo.world import FLOOD_SOURCES, build_world
from curate.signals.phash import phash


def test_floods_are_the_only_near_duplicates(tmp_path):
    table = build_world(tmp_path / "web", 600, seed=3, url_for=lambda name: f"http://127.0.0.1:1/img/{name}")
    rows = table.select(["uid", "demo_kind", "text"]).to_pylist()
    hashes, kinds, captions = [], [], []
    for row in rows:
        path = tmp_path / "web" / f"{row['uid']}.jpg"
        if row["demo_kind"] not in ("ok", "mismatched", "flood", "foreign", "short") or not path.exists():
            continue
        img = Image.open(io.BytesIO(path.read_bytes()))
        img.thumbnail((128, 128))  # as `curate download --image-size 128` stores it
        hashes.append(phash(img))
        kinds.append(row["demo_kind"])
        captions.append(row["text"])
    kinds = np.array(kinds)
    values, ok = parse_hex64(hashes)
    assert ok.all()
    i, j = near_pairs(values, 2)[:2]
    assert len(i) > 0
    # every near-duplicate pair is two copies of a flood image; no two distinct drawings collide
    assert set(kinds[i]) == {"flood"} and set(kinds[j]) == {"flood"}
    groups = group_ids(len(values), i, j)
    flood_groups = set(groups[kinds == "flood"])
    assert 1 <= len(flood_groups) <= FLOOD_SOURCES
    # the floods carry other listings' captions: mostly not their own picture
    assert len(set(np.array(captions)[kinds == "flood"])) > 5
