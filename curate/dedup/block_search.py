"""pHash pairs within D as "partition by an exact block, search each partition locally": the edge step of the
Dask and Spark jobs (curate.dedup.frames step 3), with a cost that grows about linearly in the hashes.

Pigeonhole with radius 0: cut the 64 bits into m = D + 1 contiguous blocks. Two hashes within D bits of each
other differ in at most D blocks, so they agree exactly on at least one. Every distinct hash is emitted once
per block i as a row (g = (i, block_i(h)), node, h): m * n rows and ONE shuffle on g. Inside a group every
member shares block i, so the group is searched on the other 64 - w_i bits alone (dropping bits all members
share leaves every distance unchanged) by the local engine's search (curate.dedup.hamming) or, for small
groups, by comparing all pairs of all small groups of a partition at once (vectorised, not one call per group).

Each pair comes out exactly once over all groups: a pair found in block i's group is kept only when i is the
FIRST block on which the two hashes agree (every block j < i differs); it is oriented node_a < node_b.

Cost: the shuffle moves m * n rows; a group holds ~n / 2^w hashes (w ~ 64 / (D + 1)), and the local search's
cost per hash grows slowly with the group (hamming's block plan). A group above MAX_GROUP hashes (many real
pHashes share blocks: skew) is searched in pieces, by the same rule one level down: the D + 1 exact sub-blocks
of the bits its members do not all share, each pair kept in its first agreeing sub-block, so a worker's
search memory follows the sub-groups, not the group (whose rows, 24 bytes each, still arrive in one partition).

D = 0 needs no search: the nodes are distinct hashes, so no two are within 0 bits.
"""

from __future__ import annotations

import numpy as np

from curate.dedup.hamming import BITS, Block, _split, distinct_pairs, make_plan

SHUFFLE_GROUP_ROWS = 16_000_000  # above this many rows in an average block group, every group is split at the shuffle
SMALL_GROUP = 512  # groups up to this size are compared all-pairs, batched over the partition (measured: hamming's
#                   per-call set-up costs ~1 ms, ~10 us a hash at 100 hashes, 2.7 us at 1,000)
MAX_GROUP = 4_000_000  # larger groups are searched in sub-blocks (bounds hamming's memory on a skewed pool;
#                       benchmarks/group_search_bench.py: a 3.9M group ~150 MiB above its hashes at D = 4)
GROUP_KEY_SHIFT = 32  # g = block index << 32 | block value (blocks of D >= 1 are at most 32 bits wide)
# split groups (D >= 2: blocks of at most 21 bits, sub-blocks of at most 21): g = flag | block index << 56 |
# sub-block index << 50 | block value << 22 | sub-block value
SPLIT_FLAG, SPLIT_BLOCK_SHIFT, SPLIT_SUB_SHIFT, SPLIT_VALUE_SHIFT = 1 << 62, 56, 50, 22
# a partition's summary rides along with its edges as rows of negative u (nodes are rows, never negative)
SUMMARY = {-1: "largest_block_group", -2: "block_groups", -3: "block_group_rows", -4: "oversize_block_groups",
           -5: "compared_pairs"}


def exact_blocks(max_distance: int, bits: int = BITS) -> tuple[Block, ...]:
    """min(D + 1, bits) contiguous blocks (radius 0) covering bits 0 .. bits-1, widest first, highest bits first."""
    m = min(max_distance + 1, bits)
    out, shift = [], bits
    for w in _split(m, bits):
        shift -= w
        out.append(Block(shift, w, 0))
    return tuple(out)


def block_count(max_distance: int) -> int:
    """Rows emitted per distinct hash (0 for D = 0: nothing to search)."""
    return len(exact_blocks(max_distance)) if max_distance else 0


def split_needed(rows: int, max_distance: int) -> bool:
    """Whether a pool of about `rows` distinct hashes needs the two-level key: its average block group (rows / 2^w
    for the narrowest block) would hold more than SHUFFLE_GROUP_ROWS rows, more than one task should take
    (`xlarge` at D = 8: ~100M). Then every hash goes out once per (block, exact sub-block of the other bits):
    (D + 1)^2 rows a hash instead of D + 1, groups 2^(64 / (D + 1)) times smaller again."""
    if max_distance < 2:
        return False  # blocks of 32 bits or more: groups never reach it on any real pool
    w = min(b.nbits for b in exact_blocks(max_distance))
    return rows / 2.0 ** w > SHUFFLE_GROUP_ROWS


def describe(max_distance: int, split: bool = False) -> str:
    widths = sorted({b.nbits for b in exact_blocks(max_distance)}, reverse=True)
    text = f"D={max_distance}: {block_count(max_distance)} exact blocks of {'/'.join(map(str, widths))} bits"
    return text + (f", each group split in {max_distance + 1} exact sub-blocks" if split else "")


def key_table(max_distance: int, split: bool = False) -> list[dict]:
    """What each emitted row of a hash h holds as its group key g, one entry per row kind: g = g0 | (block value
    << k1) | sub-block value, where block value = (h >>> shift) & mask and, with the block's bits dropped
    (v = ((h >>> above) & hikeep) << shift | (h & low)), sub-block value = (v >>> sshift) & smask (0 unsplit).
    The Dask job evaluates it in numpy (`explode`), the Spark job as SQL over this table: one definition."""
    if split and max_distance < 2:
        raise ValueError("split block groups need D >= 2 (blocks of at most 22 bits)")
    rows = []
    for i, blk in enumerate(exact_blocks(max_distance)[:block_count(max_distance)]):
        above = blk.shift + blk.nbits
        base = {"shift": blk.shift, "mask": blk.mask, "low": (1 << blk.shift) - 1, "above": above % BITS,
                "hikeep": 0 if above >= BITS else -1}
        if not split:
            rows.append({**base, "g0": i << GROUP_KEY_SHIFT, "k1": 0, "sshift": 0, "smask": 0})
            continue
        for j, sub in enumerate(exact_blocks(max_distance, BITS - blk.nbits)):
            rows.append({**base, "g0": SPLIT_FLAG | i << SPLIT_BLOCK_SHIFT | j << SPLIT_SUB_SHIFT, "k1": SPLIT_VALUE_SHIFT,
                         "sshift": sub.shift, "smask": sub.mask})
    return rows


def group_keys(hu: np.ndarray, row: dict) -> np.ndarray:
    """key_table's formula for one row kind, on uint64 hashes -> int64 keys."""
    u = np.uint64
    v = (((hu >> u(row["above"])) & u(row["hikeep"] & (2**64 - 1))) << u(row["shift"])) | (hu & u(row["low"]))
    g = ((hu >> u(row["shift"])) & u(row["mask"])) << u(row["k1"])
    g |= (v >> u(row["sshift"])) & u(row["smask"])
    return (g | u(row["g0"])).astype(np.int64)


def block_values(values: np.ndarray, blk: Block) -> np.ndarray:
    return ((values >> np.uint64(blk.shift)) & np.uint64(blk.mask)).astype(np.int64)


def drop_block(values: np.ndarray, blk: Block) -> np.ndarray:
    """The values without the block's bits (higher bits moved down): nbits fewer bits, same distances within
    a set of values that all share the block."""
    low = values & np.uint64((1 << blk.shift) - 1)
    return ((values >> np.uint64(blk.shift + blk.nbits)) << np.uint64(blk.shift)) | low


def first_equal_block(x: np.ndarray, blocks: tuple[Block, ...]) -> np.ndarray:
    """Index of the first block on which x (a XOR of two hashes) is zero; len(blocks) where none is."""
    first = np.full(len(x), len(blocks), np.int64)
    for i in range(len(blocks) - 1, -1, -1):
        first[block_values(x, blocks[i]) == 0] = i
    return first


# --- step 3a: rows per (block, block value) ---------------------------------------------------------------


def explode(nodes, max_distance: int, split: bool = False):
    """Nodes (node, h) -> one row (g, node, h) per row kind of key_table: per block, or per (block, sub-block)
    when `split`. D = 0: no rows (distinct hashes are never within 0 bits)."""
    import pandas as pd

    node = nodes["node"].to_numpy(np.int64)
    h = nodes["h"].to_numpy(np.int64)
    if max_distance == 0 or not len(h):
        return explode_meta()
    hu = h.view(np.uint64)
    kinds = key_table(max_distance, split)
    g = np.concatenate([group_keys(hu, k) for k in kinds])
    return pd.DataFrame({"g": g, "node": np.tile(node, len(kinds)), "h": np.tile(h, len(kinds))})


def explode_meta():
    import pandas as pd

    return pd.DataFrame({"g": pd.Series(dtype="int64"), "node": pd.Series(dtype="int64"), "h": pd.Series(dtype="int64")})


# --- step 3b: pairs inside groups --------------------------------------------------------------------------


def _small_pairs(v: np.ndarray, rank: np.ndarray, size: np.ndarray, max_distance: int, small: int, counts: dict):
    """All pairs (p, p + r) inside runs of equal group (positions sorted by group; rank = place in the group,
    size = the group's size, both per position) whose distance is within D, for groups of size <= `small`."""
    ps, qs = [], []
    q = np.flatnonzero((rank >= 1) & (size <= small))
    r = 1
    while len(q):
        p = q - r
        counts["compared_pairs"] += len(q)
        near = np.bitwise_count(v[p] ^ v[q]) <= max_distance
        ps.append(p[near])
        qs.append(q[near])
        r += 1
        q = q[rank[q] >= r]
    return ps, qs


def group_pairs(gid: np.ndarray, values: np.ndarray, group_block, max_distance: int, bits: int, limits: tuple[int, int],
                counts: dict, top: bool = True, split: bool = True):
    """Pairs (p, q) of positions, p != q, of `bits`-bit `values` within D that share their group `gid`, each
    once. Every member of a group shares the block `group_block(gid)` (a Block over the `bits` bits), which
    the search of a larger group drops. limits: (SMALL_GROUP, MAX_GROUP) as the driver had them. `top`:
    count these groups in the summary (sub-groups are not)."""
    n = len(values)
    if n < 2:
        e = np.zeros(0, np.int64)
        return e, e.copy()
    order = np.argsort(gid, kind="stable")
    g = gid[order]
    head = np.ones(n, bool)
    head[1:] = g[1:] != g[:-1]
    starts = np.flatnonzero(head)
    sizes = np.diff(np.append(starts, n))
    which = np.cumsum(head) - 1
    rank = np.arange(n) - starts[which]
    v = values[order]
    if top:
        counts["largest_block_group"] = max(counts["largest_block_group"], int(sizes.max()))
        counts["block_groups"] += len(starts)
        counts["block_group_rows"] += n
    ps, qs = _small_pairs(v, rank, sizes[which], max_distance, limits[0], counts)
    for s in np.flatnonzero(sizes > limits[0]):
        a = int(starts[s])
        blk = group_block(int(g[a]))
        sub = drop_block(v[a:a + sizes[s]], blk)
        i, j = search(sub, max_distance, bits - blk.nbits, limits, counts, split)
        ps.append(i + a)
        qs.append(j + a)
    if not ps:  # every group a single hash
        e = np.zeros(0, np.int64)
        return e, e.copy()
    p, q = np.concatenate(ps), np.concatenate(qs)
    return order[p], order[q]


def squeeze(values: np.ndarray) -> tuple[np.ndarray, int]:
    """The bits that vary among `values`, packed into the low bits (distances unchanged): (packed, their count)."""
    varying = int(np.bitwise_or.reduce(values ^ values[0])) if len(values) else 0
    out = np.zeros(len(values), np.uint64)
    k = 0
    for bit in range(BITS):
        if varying >> bit & 1:
            out |= ((values >> np.uint64(bit)) & np.uint64(1)) << np.uint64(k)
            k += 1
    return out, k


def search(values: np.ndarray, max_distance: int, bits: int, limits: tuple[int, int], counts: dict, split: bool = True):
    """Pairs (i, j) of DISTINCT `bits`-bit values within D, each once: hamming's search, or for more than
    MAX_GROUP values (and `split`) one more level: the bits all of them share are dropped, the rest cut into
    D + 1 exact sub-blocks, each sub-group searched by hamming and each pair kept in its first agreeing
    sub-block. One level only: a sub-group still above MAX_GROUP (extreme skew) is searched whole, so the
    work stays within D + 1 searches of the group."""
    if len(values) > limits[1] and split:
        packed, k = squeeze(values)
        if max_distance + 1 <= k // 2:  # sub-blocks of at least 2 bits: each sub-group a quarter or less
            counts["oversize_block_groups"] += 1
            blocks = exact_blocks(max_distance, k)
            out_i, out_j = [], []
            for b, blk in enumerate(blocks):
                p, q = group_pairs(block_values(packed, blk), packed, lambda _g, c=blk: c, max_distance, k, limits, counts,
                                   top=False, split=False)
                keep = first_equal_block(packed[p] ^ packed[q], blocks) == b
                out_i.append(p[keep])
                out_j.append(q[keep])
            return np.concatenate(out_i), np.concatenate(out_j)
    st: dict = {}
    i, j, _ = distinct_pairs(values, max_distance, plan=make_plan(len(values), max_distance, bits=bits), stats=st)
    counts["compared_pairs"] += st["candidates"]
    return i, j


def limits() -> tuple[int, int]:
    """(SMALL_GROUP, MAX_GROUP) as they are in this process: the jobs pass the driver's to the workers."""
    return SMALL_GROUP, MAX_GROUP


def _split_pairs(g: np.ndarray, h: np.ndarray, max_distance: int, group_limits: tuple[int, int], counts: dict):
    """Pairs (p, q) of the rows of split groups (g = (block i, sub-block j, their values)): each searched on the
    bits outside both, kept where i is the pair's first agreeing block and j its first agreeing sub-block of the
    other bits, so each pair comes out once over all groups and sub-groups."""
    blocks = exact_blocks(max_distance)
    block_of = (g >> SPLIT_BLOCK_SHIFT) & 63
    ps, qs = [], []
    for i in np.unique(block_of).tolist():
        at = np.flatnonzero(block_of == i)
        rest = drop_block(h[at], blocks[i])
        bits = BITS - blocks[i].nbits
        subs = exact_blocks(max_distance, bits)
        gi = g[at]
        p, q = group_pairs(gi, rest, lambda gid, s=subs: s[(gid >> SPLIT_SUB_SHIFT) & 63], max_distance, bits, group_limits, counts)
        keep = (first_equal_block(h[at[p]] ^ h[at[q]], blocks) == i) & (
            first_equal_block(rest[p] ^ rest[q], subs) == ((gi[p] >> SPLIT_SUB_SHIFT) & 63))
        ps.append(at[p[keep]])
        qs.append(at[q[keep]])
    e = np.zeros(0, np.int64)
    return (np.concatenate(ps), np.concatenate(qs)) if ps else (e, e.copy())


def search_partition(part, max_distance: int, group_limits: tuple[int, int] | None = None, hashes: bool = False):
    """Rows (g, node, h) holding whole groups -> edges (u, v), u < v: every pair within D whose first agreeing
    block is its group's block (and, in a split group, whose first agreeing sub-block of the other bits is its
    sub-block); then the partition's summary as rows (u < 0, v) named by SUMMARY. With `hashes`, each edge also
    carries its ends' hashes (hu, hv; 0 on summary rows): the Dask job sends each node's label to the partition
    that holds the node's hash."""
    import pandas as pd

    counts = {name: 0 for name in SUMMARY.values()}
    group_limits = group_limits or limits()
    g = part["g"].to_numpy(np.int64)
    node = part["node"].to_numpy(np.int64)
    h = part["h"].to_numpy(np.int64).view(np.uint64)
    blocks = exact_blocks(max_distance)
    split = (g & SPLIT_FLAG) != 0
    whole = np.flatnonzero(~split)
    p, q = group_pairs(g[whole], h[whole], lambda gid: blocks[gid >> GROUP_KEY_SHIFT], max_distance, BITS, group_limits, counts)
    keep = first_equal_block(h[whole[p]] ^ h[whole[q]], blocks) == (g[whole[p]] >> GROUP_KEY_SHIFT)
    p, q = whole[p[keep]], whole[q[keep]]
    if split.any():
        at = np.flatnonzero(split)
        sp, sq = _split_pairs(g[at], h[at], max_distance, group_limits, counts)
        p, q = np.concatenate([p, at[sp]]), np.concatenate([q, at[sq]])
    a, b = node[p], node[q]
    keys = np.array(list(SUMMARY), np.int64)
    vals = np.array([counts[name] for name in SUMMARY.values()], np.int64)
    out = {"u": np.concatenate([np.minimum(a, b), keys]), "v": np.concatenate([np.maximum(a, b), vals])}
    if hashes:
        first = a < b
        hp, hq = h[p].view(np.int64), h[q].view(np.int64)
        pad = np.zeros(len(keys), np.int64)
        out["hu"] = np.concatenate([np.where(first, hp, hq), pad])
        out["hv"] = np.concatenate([np.where(first, hq, hp), pad])
    return pd.DataFrame(out)


def hashed_edges_meta():
    import pandas as pd

    return pd.DataFrame({c: pd.Series(dtype="int64") for c in ("u", "v", "hu", "hv")})


def summarize(rows) -> dict:
    """The summary rows (u < 0) of every partition -> one dict: the largest group's maximum, sums otherwise."""
    out = {name: 0 for name in SUMMARY.values()}
    for u, v in zip(rows["u"].tolist(), rows["v"].tolist()):
        name = SUMMARY[int(u)]
        out[name] = max(out[name], int(v)) if name == "largest_block_group" else out[name] + int(v)
    return out


__all__ = ["exact_blocks", "explode", "hashed_edges_meta", "key_table", "search", "search_partition", "split_needed",
           "summarize"]
