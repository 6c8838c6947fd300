"""The rows that ride in the Dask job's key shuffle (curate.dedup.frames.as_key_rows): labels of the nodes with
edges, and the rows a score keep rule drops, reach their keys' partition with the keys and set each row's group
and keep flag there, with no join; a rider whose key no row holds is an error, never a lost group or flag."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from curate.dedup import block_search as bs
from curate.dedup import frames as fr


def _keys(h: list[int], uid: bool = False) -> pd.DataFrame:
    rows = pd.DataFrame({"row": np.arange(len(h), dtype=np.int64), "file": np.array([i % 2 for i in range(len(h))], np.int32),
                         "h": np.array(h, np.int64)})
    if uid:
        rows["uid"] = pd.Series([f"u{i}" for i in range(len(h))], dtype=fr.STR)
    return rows


def test_labels_set_groups_and_first_keeps_the_group_id():
    # rows 0 and 3 hold hash 10 (node 0), row 1 hash 20 (node 1), row 2 hash 30 (node 2), row 4 hash 40 (node 4);
    # the search joined nodes 1 and 2 to node 0's component: labels for the hashes 20 and 30 (and 10, the centre)
    keys = _keys([10, 20, 30, 10, 40])
    labels = pd.DataFrame({"h": np.array([10, 20, 30], np.int64), "label": np.array([0, 0, 0], np.int64)})
    part = pd.concat([keys, fr.as_key_rows(labels, "label", "h", fr.LABEL_FILE)], ignore_index=True).iloc[::-1]
    out = fr.group_rows_of_keys(part, "h", "first").sort_values("row")
    assert out.columns.tolist() == fr.grouped_meta("h", "first").columns.tolist()
    assert out.group.tolist() == [0, 0, 0, 0, 4]
    assert out.node.tolist() == [0, 1, 2, 0, 4]
    assert out.multi.tolist() == [True, True, True, True, False]
    assert out.keep.tolist() == [True, False, False, False, True]
    assert out.file.tolist() == [0, 1, 0, 1, 0]  # the riders' own file tag never reaches the output


def test_dropped_rows_set_keep_and_every_other_row_keeps():
    keys = _keys([10, 20, 10, 10])
    drops = pd.DataFrame({"row": np.array([0, 3], np.int64), "h": np.array([10, 10], np.int64)})
    part = pd.concat([keys, fr.as_key_rows(drops, "row", "h", fr.DROP_FILE)], ignore_index=True)
    out = fr.group_rows_of_keys(part, "h", "drops").sort_values("row")
    assert out.keep.tolist() == [False, True, True, False]
    assert out.group.tolist() == [0, 1, 0, 0]


def test_without_a_rule_the_ranked_columns_come_out():
    keys = _keys([10, 20, 10], uid=True)
    out = fr.group_rows_of_keys(keys, "h", None)
    assert out.columns.tolist() == fr.grouped_meta("h", None).columns.tolist()
    ranked = fr.in_groups(out, "h")
    assert ranked.row.tolist() == [0, 2] and ranked.uid.tolist() == ["u0", "u2"] and ranked.h.tolist() == [10, 10]


@pytest.mark.parametrize("tag,row_col,rule", [(fr.LABEL_FILE, "label", "first"), (fr.DROP_FILE, "row", "drops")])
def test_a_rider_whose_key_no_row_holds_is_an_error(tag, row_col, rule):
    keys = _keys([10, 20])
    rider = pd.DataFrame({row_col: np.array([0], np.int64), "h": np.array([99], np.int64)})
    part = pd.concat([keys, fr.as_key_rows(rider, row_col, "h", tag)], ignore_index=True)
    with pytest.raises(RuntimeError, match="no row holds"):
        fr.group_rows_of_keys(part, "h", rule)


@pytest.mark.parametrize("row,h", [(5, 10), (1, 10)], ids=["row-absent", "row-of-another-key"])
def test_a_dropped_row_not_held_with_its_key_is_an_error(row, h):
    keys = _keys([10, 20])  # row 0 holds 10, row 1 holds 20
    drops = pd.DataFrame({"row": np.array([row], np.int64), "h": np.array([h], np.int64)})
    part = pd.concat([keys, fr.as_key_rows(drops, "row", "h", fr.DROP_FILE)], ignore_index=True)
    with pytest.raises(RuntimeError, match="1 dropped rows"):
        fr.group_rows_of_keys(part, "h", "drops")


def test_riders_carry_the_keys_own_dtype_so_equal_keys_hash_alike():
    """sha256 keys are Arrow strings: a rider's key must be one too, or the shuffle could hash it elsewhere."""
    from dask.dataframe.shuffle import partitioning_index

    digests = pd.Series(["ab" * 32, "cd" * 32], dtype=fr.STR)
    drops = pd.DataFrame({"row": np.array([1, 2], np.int64), "k": digests.astype(object)})
    riders = fr.as_key_rows(drops, "row", "k", fr.DROP_FILE, uid=True)
    assert riders.dtypes.to_dict() == fr.keys_meta("k", uid=True).dtypes.to_dict()
    keys = pd.DataFrame({"k": digests})
    assert partitioning_index(riders[["k"]], 7).tolist() == partitioning_index(keys, 7).tolist()


def test_the_search_can_give_each_pair_its_ends_hashes():
    h = np.array([0b0, 0b1, 0b11, 0xFFFF_FFFF_0000_0000], np.uint64)
    nodes = pd.DataFrame({"node": np.array([7, 3, 5, 9], np.int64), "h": h.view(np.int64)})
    ex = bs.explode(nodes, 2, False)
    plain = bs.search_partition(ex, 2)
    hashed = bs.search_partition(ex, 2, hashes=True)
    assert hashed.columns.tolist() == bs.hashed_edges_meta().columns.tolist()
    assert hashed[["u", "v"]].equals(plain)
    of = dict(zip(nodes.node, nodes.h))
    pairs = hashed[hashed.u >= 0]
    assert sorted(zip(pairs.u, pairs.v)) == [(3, 5), (3, 7), (5, 7)]  # within 2 bits; 9 is 32 bits away
    assert pairs.hu.tolist() == [of[u] for u in pairs.u] and pairs.hv.tolist() == [of[v] for v in pairs.v]
    assert (hashed[hashed.u < 0][["hu", "hv"]] == 0).all().all()
