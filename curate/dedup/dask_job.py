"""`curate dedup --engine dask`: the dataframe jobs of curate.dedup.frames (phash, sha256) and
curate.dedup.semantic on a Dask cluster.

Workers read the column files (or the partitions' embeddings), emit each hash once per exact block and
search each block group after one shuffle (curate.dedup.block_search; or assign clusters with scattered
centroids and pair rows per cluster), run the star rounds of the connected components and write the output
files; the driver builds the task graph and pulls back only counts (per-round change counts, statistics)
and, for semantic, the k-means training sample.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from curate import storage
from curate.dedup import block_search as bs
from curate.dedup import frames as fr
from curate.dedup import semantic as sem

ROWS_PER_PARTITION = 200_000  # shuffles use about one partition per this many rows (tests lower it)
GROUP_ROWS_PER_PARTITION = 2_000_000  # phash: the block groups get about one partition per this many (block, hash) rows
EMBEDDING_BYTES_PER_PARTITION = 256 << 20  # semantic: about one shuffle partition per this many bytes of embeddings


def _persist(client, df):
    # the collection's own persist (not client.persist) returns a frame backed by the computed
    # partitions, so each star round starts from a short graph
    return df.persist(scheduler=client) if client is not None else df.persist()


def _compute(client, *xs):
    import dask

    return dask.compute(*xs, scheduler=client) if client is not None else dask.compute(*xs)


class InMemory:
    """Frames held between steps in the workers' memory (Dask's persist): the semantic job's. OnDisk has the
    same three methods."""

    def __init__(self, client):
        self.client = client

    def __call__(self, df, name: str):
        return _persist(self.client, df)

    def drop(self, name: str) -> None:
        pass

    def close(self) -> None:
        pass


class OnDisk:
    """Frames held between steps as one parquet file a partition under `folder` (beside the pool, so every
    worker sees it), read back as the same partitions: the hash jobs' pair-sized frames (edges, star rounds,
    labels, dropped rows). Persisted in memory they grew a worker's memory with the pool's duplicates on a fixed
    number of workers (4M pairs at 100M hashes: ~175 MB a worker of two); on disk a worker holds only the
    partitions it works on. The folder is removed when the job ends, and at the start of the next."""

    def __init__(self, client, folder):
        self.client, self.folder = client, storage.path(folder)
        storage.remove_tree(self.folder)

    def __call__(self, df, name: str):
        import dask
        import dask.dataframe as dd

        where = [str(self.folder / name / f"{i:06d}.parquet") for i in range(df.npartitions)]
        pieces = [dask.delayed(fr.write_piece, pure=False)(p, w) for p, w in zip(df.to_delayed(), where)]
        _compute(self.client, pieces)
        return dd.from_map(fr.read_piece, where, dtypes=df.dtypes.to_dict(), meta=df._meta, enforce_metadata=False)

    def drop(self, name: str) -> None:
        storage.remove_tree(self.folder / name)

    def close(self) -> None:
        storage.remove_tree(self.folder)


def _by(df, on, parts: int):
    """Shuffle so that equal `on` values share a partition (one partition: nothing to move)."""
    return df.shuffle(on=on, npartitions=parts) if parts > 1 or df.npartitions > 1 else df


def _distinct(edges, parts: int):
    return _by(edges, ["u", "v"], parts).map_partitions(fr.distinct_edges, meta=fr.edges_meta())


def _star_round(edges, parts: int):
    """One large-star step, then one small-star step."""
    sym = edges.map_partitions(fr.both_ends, meta=fr.edges_meta())
    edges = _distinct(_by(sym, "u", parts).map_partitions(fr.large_star, meta=fr.edges_meta()), parts)
    oriented = edges.map_partitions(fr.orient, meta=fr.edges_meta())
    return _distinct(_by(oriented, "u", parts).map_partitions(fr.small_star, meta=fr.edges_meta()), parts)


def components(client, edges, stats: dict, parts: int = 1, max_rounds: int = 200, hold=None):
    """Star edges (u -> smallest node of u's component, u > it) by large-star / small-star rounds, each round's
    edges held by `hold` (default: in the workers' memory)."""
    import dask.dataframe as dd

    hold = hold or InMemory(client)
    edges = hold(edges, "stars-0")
    for rnd in range(1, max_rounds + 1):
        new = hold(_star_round(edges, parts), f"stars-{rnd}")
        both = dd.concat([new.assign(side=np.int8(0)), edges.assign(side=np.int8(1))])
        unmatched = _by(both, ["u", "v"], parts).map_partitions(fr.count_unmatched, meta=(None, "int64")).sum()
        (changed,) = _compute(client, unmatched)
        hold.drop(f"stars-{rnd - 1}")
        edges = new
        if int(changed) == 0:
            stats["component_rounds"] = rnd
            return edges
    raise RuntimeError(f"connected components did not converge in {max_rounds} rounds")


def _keep_and_write(client, pool_root: Path, rows, grouped, nvalid: int, keep: str, score_column: str | None, files: list,
                    staging: Path, stats: dict, gcol: str, kcol: str, parts: int) -> None:
    """Grouped rows (row, uid, group) -> the keep rule, the group statistics, and one output file per input
    file with rows (row, file, uid) in `rows` (steps 5 and 6 of curate.dedup.frames)."""
    import dask.dataframe as dd

    nonempty = [f for f in files if f.rows]
    if keep != "first":
        col = fr.score_column(pool_root, score_column)
        stats["score_column"] = col
        from curate.pool import Pool

        parts_list = [(str(pool_root), p.path, col) for p in Pool(pool_root).partitions()]
        scores = dd.from_map(fr.read_scores, parts_list, meta=fr.scores_meta(), enforce_metadata=False)
        # one score per uid (a pool's uids are unique; were one repeated, its highest score counts)
        scores = _by(scores, "uid", parts).map_partitions(fr.max_score_per_uid, meta=fr.scores_meta())
        grouped = grouped.merge(scores, on="uid", how="left", npartitions=parts)
    grouped = _persist(client, _by(grouped, "group", parts).map_partitions(fr.pick_keepers, keep, meta=fr.kept_meta()))
    (counts,) = _compute(client, grouped.map_partitions(fr.group_sizes, meta={"groups": "int64", "dups": "int64",
                                                                                "largest": "int64", "kept": "int64"}))
    kept = int(counts.kept.sum())
    stats.update({"groups": int(counts.groups.sum()), "groups_with_duplicates": int(counts.dups.sum()),
                  "largest_group": int(counts.largest.max()) if len(counts) else 0, "kept": kept,
                  "rows_grouped": nvalid, "removed_as_duplicates": nvalid - kept})
    out = rows[["row", "file", "uid"]].merge(grouped[["row", "group", "keep"]], on="row", how="left", npartitions=parts)
    out = _by(out, "file", max(1, min(len(nonempty), out.npartitions)))
    names = {f.index: f.path for f in files}
    written = out.map_partitions(fr.write_files, names, str(staging), gcol, kcol, meta=fr.written_meta())
    (done,) = _compute(client, written)
    missing = {f.index for f in nonempty} - set(done.file.tolist())
    if missing:
        raise RuntimeError(f"dedup output missing for files {sorted(missing)}")


def dask_dedup(client, pool_root: Path, method: str, files: list, max_distance: int, keep: str,
               score_column: str | None, staging: Path, stats: dict) -> None:
    """Run the whole job for `method` (phash: near duplicates; sha256: identical digests); output files go
    to `staging`, one per input file. Nothing the size of the pool is persisted: the keys are read and
    shuffled once for the search, once more for the output and its statistics (with the labels riding in that
    shuffle) and, for a score keep rule, once more before that for the ranking; what is held between steps
    (edges, star rounds, labels, dropped rows: the size of the duplicates) is held on disk beside the pool
    (OnDisk), so a worker's memory follows its partitions, not the pool."""
    started = fr.start_job(method, files, staging, stats)
    if started is None:
        return
    hold = OnDisk(client, storage.path(pool_root) / f".dedup_{method}.scratch")
    try:
        _hash_job(client, pool_root, method, files, max_distance, keep, score_column, staging, stats, started, hold)
    finally:
        hold.close()


def _hash_job(client, pool_root: Path, method: str, files: list, max_distance: int, keep: str, score_column: str | None,
              staging: Path, stats: dict, started: tuple, hold: OnDisk) -> None:
    import dask.dataframe as dd

    gcol, kcol, key, nonempty = started
    (summary,) = _compute(client, dd.from_map(fr.file_summary, nonempty, signal=method, meta=fr.summary_meta(),
                                              enforce_metadata=False))
    valid_per_file = fr.apply_summary(summary, method, stats)
    nvalid = sum(valid_per_file.values())
    # shuffles go to about one partition per ROWS_PER_PARTITION rows (one for small pools: no shuffle at all)
    parts = max(1, min(len(nonempty), nvalid // ROWS_PER_PARTITION + 1))
    stats["partitions"] = parts

    def keys(uid: bool = False):
        return dd.from_map(fr.read_keys, nonempty, signal=method, uid=uid, meta=fr.keys_meta(key, uid), enforce_metadata=False)

    labels = None
    if method == "phash":
        keyed = _by(keys(), key, parts).map_partitions(fr.assign_nodes, key, meta=fr.nodes_meta(key))
        edges = _pairs(client, keyed[keyed.row == keyed.node][["node", "h"]], nvalid, max_distance, parts, stats, hold)
        (npairs,) = _compute(client, edges.u.count())
        stats["pairs_of_distinct_hashes"] = int(npairs)
        if npairs:  # the star rounds shuffle edges, not rows: partitions for the pairs (at 100M hashes 28, not 501)
            pparts = max(1, min(parts, int(npairs) // ROWS_PER_PARTITION + 1))
            labels = _labels(components(client, edges[["u", "v"]], stats, pparts, hold=hold), edges, pparts, hold)
            stats["label_join"] = "in the key shuffle"

    # the labels (and the rows the score rule drops) ride in the key shuffle, shaped as keys (frames.as_key_rows)
    def shuffled(riders: list, uid: bool = False):
        riding = [r.map_partitions(fr.as_key_rows, row, key, tag, uid, meta=fr.keys_meta(key, uid)) for r, row, tag in riders]
        return _by(dd.concat([keys(uid), *riding]) if riding else keys(uid), key, parts)

    riders = [] if labels is None else [(labels, "label", fr.LABEL_FILE)]
    if keep != "first":
        riders.append((_drops(pool_root, shuffled(riders, uid=True), key, keep, score_column, parts, stats, hold),
                       "row", fr.DROP_FILE))
    rule = "first" if keep == "first" else "drops"
    rows = shuffled(riders).map_partitions(fr.group_rows_of_keys, key, rule, meta=fr.grouped_meta(key, rule))
    _write(client, rows, valid_per_file, nonempty, staging, stats, gcol, kcol, parts)


def _labels(stars, edges, pparts: int, hold: OnDisk):
    """Star edges (u -> v, v the smallest node of u's component) and the hashed edges (u, v, hu, hv) -> (h,
    label) for the hash of every node with an edge, the centres labelled with themselves; held on disk (their
    size follows the pairs, not the pool)."""
    import dask.dataframe as dd

    centres = stars[["v"]].rename(columns={"v": "node"}).drop_duplicates(split_out=pparts)
    both = dd.concat([stars.rename(columns={"u": "node", "v": "label"}), centres.assign(label=centres.node)])
    ends = dd.concat([edges[["u", "hu"]].rename(columns={"u": "node", "hu": "h"}),
                      edges[["v", "hv"]].rename(columns={"v": "node", "hv": "h"})])
    ends = ends.drop_duplicates(subset="node", split_out=pparts)
    return hold(both.merge(ends, on="node", npartitions=pparts)[["h", "label"]], "labels")


def _drops(pool_root: Path, shuffled, key: str, keep: str, score_column: str | None, parts: int, stats: dict, hold: OnDisk):
    """Keys with uids, and the labels, shuffled by key -> (row, key) of each row the score rule does not keep:
    only rows of groups with two or more members are ranked, by the score joined by uid; held on disk (their
    size follows the duplicates, not the pool)."""
    import dask.dataframe as dd

    col = fr.score_column(pool_root, score_column)
    stats["score_column"] = col
    from curate.pool import Pool

    parts_list = [(str(pool_root), p.path, col) for p in Pool(pool_root).partitions()]
    scores = dd.from_map(fr.read_scores, parts_list, meta=fr.scores_meta(), enforce_metadata=False)
    # one score per uid (a pool's uids are unique; were one repeated, its highest score counts)
    scores = _by(scores, "uid", parts).map_partitions(fr.max_score_per_uid, meta=fr.scores_meta())
    ranked = shuffled.map_partitions(fr.group_rows_of_keys, key, None, meta=fr.grouped_meta(key, None))
    ranked = ranked.map_partitions(fr.in_groups, key, meta=fr.kept_meta(key).drop(columns=["keep"]))
    ranked = ranked.merge(scores, on="uid", how="left", npartitions=parts)
    keepers = _by(ranked, "group", parts).map_partitions(fr.pick_keepers, keep, meta=fr.kept_meta(key))
    return hold(keepers[~keepers.keep][["row", key]], "drops")


def _write(client, rows, valid_per_file: dict, files: list, staging: Path, stats: dict, gcol: str, kcol: str,
           parts: int) -> None:
    """Grouped rows with their keep flags -> one output file per input file and the group statistics (step 6 of
    curate.dedup.frames). The shuffle by file is the only consumer of `rows`, and each of its tasks needs
    nothing but its own partition: the writers also count the rows of each group with duplicates, summed by
    group below. (A second consumer, as the largest group's count from `rows` was, or a task that waits on
    another frame's partition, as a join does, made Dask finish row partitions long before they were taken:
    at 100M hashes up to the whole pool in memory, 1.4 GB a worker on two workers.)"""
    import dask
    import dask.dataframe as dd

    out = _by(rows, "file", max(1, min(len(files), parts)))
    info = {f.index: f for f in files}
    pieces = [dask.delayed(fr.write_groups_sized, pure=False)(p, info, str(staging), gcol, kcol) for p in out.to_delayed()]
    written = dd.from_delayed([p[0] for p in pieces], meta=fr.groups_written_meta(), verify_meta=False)
    sizes = dd.from_delayed([p[1] for p in pieces], meta=fr.group_rows_meta(), verify_meta=False)
    done, most = _compute(client, written, sizes.groupby("group").rows.sum(split_out=parts).max())
    most = 0 if most != most or most is None else int(most)  # NaN: no group of two
    fr.finish_groups(done, valid_per_file, files, most, str(staging), gcol, kcol, stats)


def _pairs(client, nodes, nnodes: int, max_distance: int, parts: int, stats: dict, hold: OnDisk):
    """Edges (u, v, hu, hv) of the distinct hashes within max_distance, with their ends' hashes: one row per
    (exact block, node), one shuffle on the block group, each partition's groups searched
    (curate.dedup.block_search); held on disk. `nnodes` (an upper bound is enough) sizes the shuffle."""
    split = bs.split_needed(nnodes, max_distance)
    rows = nnodes * len(bs.key_table(max_distance, split)) if max_distance else 0
    gparts = max(parts, rows // GROUP_ROWS_PER_PARTITION + 1)
    stats["plan"] = bs.describe(max_distance, split)
    exploded = nodes.map_partitions(bs.explode, max_distance, split, meta=bs.explode_meta())
    found = hold(_by(exploded, "g", gparts).map_partitions(bs.search_partition, max_distance, bs.limits(), hashes=True,
                                                          meta=bs.hashed_edges_meta()), "edges")
    (summary,) = _compute(client, found[found.u < 0])
    stats["block_search"] = {"group_partitions": gparts, **bs.summarize(summary)}
    return found[found.u >= 0]


def dask_semantic(client, pool_root: Path, files: list, col: str, eps: float, clusters: int | None, seed: int, keep: str,
                  score_column: str | None, staging: Path, stats: dict) -> None:
    """`--method semantic` (curate.dedup.semantic): workers read their partitions' embeddings, the driver trains
    k-means on the collected sample, workers assign clusters (centroids broadcast), pairs are found per
    cluster after a shuffle by cluster, then star rounds, keep rule and output as for pHash."""
    import dask.dataframe as dd

    started = sem.start_job(files, col, clusters, seed, staging, stats)
    if started is None:
        return
    gcol, kcol, k, reads = started
    total = stats["rows"]
    rows = _persist(client, dd.from_map(_read_embeddings, reads, pool_root=str(pool_root), col=col, meta=sem.rows_meta(),
                                        enforce_metadata=False))
    present, nvalid, train_rows = _compute(client, rows.present.sum(), rows.valid.sum(), rows[rows.sampled & rows.valid][["row", "emb"]])
    present, nvalid = int(present), int(nvalid)
    train_set = sem.training_set(train_rows)
    stats.update({"malformed": present - nvalid, "without_value": total - present, "kmeans_sample": len(train_set)})
    if stats["malformed"]:
        (ex,) = _compute(client, rows[rows.present & ~rows.valid][["row", "uid", "bad"]].nsmallest(5, "row"))
        stats["malformed_examples"] = [{"uid": u, "semantic": b} for u, b in zip(ex.uid, ex.bad)]
    valid = rows[rows.valid]
    # shuffles go to about one partition per EMBEDDING_BYTES_PER_PARTITION of embeddings
    parts = max(1, min(len(reads), nvalid * 4 * train_set.shape[1] // EMBEDDING_BYTES_PER_PARTITION + 1))
    stats["partitions"] = parts
    grouped = valid[["row", "uid"]].assign(group=valid.row)  # singletons, unless pairs join them below
    if nvalid:
        centroids = sem.train(train_set, k, seed)
        stats["clusters"] = len(centroids)
        shared = client.scatter(centroids, broadcast=True) if client is not None else centroids
        assigned = valid[["row", "emb"]].map_partitions(sem.assign_frame, shared, meta=sem.assigned_meta())
        edges = _persist(client, _by(assigned, "cluster", parts).map_partitions(sem.cluster_pairs, 1.0 - eps, meta=fr.edges_meta()))
        (npairs,) = _compute(client, edges.u.count())
        stats["pairs"] = int(npairs)
        if npairs:
            labels = components(client, edges, stats, parts).rename(columns={"u": "row", "v": "label"})
            grouped = valid[["row", "uid"]].merge(labels, on="row", how="left", npartitions=parts)
            grouped = grouped.assign(group=grouped.label.fillna(grouped.row).astype("int64"))[["row", "uid", "group"]]
    _keep_and_write(client, pool_root, rows, grouped, nvalid, keep, score_column, files, staging, stats, gcol, kcol, parts)


def _read_embeddings(read, pool_root: str, col: str):
    f, sample = read
    return sem.embedding_rows(f, sample, pool_root, col)


__all__ = ["components", "dask_dedup", "dask_semantic"]
