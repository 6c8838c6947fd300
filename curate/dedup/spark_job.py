"""`curate dedup --engine spark`: the dataframe jobs of curate.dedup.frames (phash, sha256) and
curate.dedup.semantic on Spark.

Executors read the phash files (mapInPandas over the file list), search the exact-block groups after one
repartition by group (mapInPandas over whole partitions: curate.dedup.block_search) and write the output
files (applyInPandas per file); the block keys, the star rounds of the connected components and the keep
rule are Spark SQL (shifts and masks on longs). For
semantic, executors read the partitions' embeddings, assign clusters (centroids in a broadcast
variable) and pair rows per cluster (groupBy cluster, applyInPandas). The driver collects only counts,
the per-file row counts it wrote and, for semantic, the k-means training sample.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from curate.dedup import block_search as bs
from curate.dedup import frames as fr
from curate.dedup import semantic as sem

SUMMARY_SCHEMA = "file long, rows long, present long, valid long, status string, examples string"


def _files_of(pdf):
    for path, index, offset, rows, signal in zip(pdf.path, pdf["index"], pdf.offset, pdf.rows, pdf.signal):
        yield fr.ColumnFile(int(index), str(path), int(offset), int(rows)), str(signal)


def _summary_batches(batches):
    for pdf in batches:
        for f, signal in _files_of(pdf):
            yield fr.file_summary(f, signal)


def _keys_batches(uid: bool):
    def run(batches):
        for pdf in batches:
            for f, signal in _files_of(pdf):
                yield fr.read_keys(f, signal, uid)
    return run


def _keys_schema(key: str, uid: bool) -> str:
    return f"row long, file int, {key} {'long' if key == 'h' else 'string'}" + (", uid string" if uid else "")


GROUP_ROWS_PER_PARTITION = 2_000_000  # phash: the block groups get about one partition per this many (block, hash) rows


def _large_star(edges):
    from pyspark.sql import functions as F

    sym = edges.unionByName(edges.select(F.col("v").alias("u"), F.col("u").alias("v")))
    low = sym.groupBy("u").agg(F.min("v").alias("m"))
    j = sym.join(low, "u").where(F.col("v") > F.col("u"))
    return j.select(F.col("v").alias("u"), F.least("m", "u").alias("v")).distinct()


def _small_star(edges):
    from pyspark.sql import functions as F

    o = edges.select(F.greatest("u", "v").alias("u"), F.least("u", "v").alias("v"))
    low = o.groupBy("u").agg(F.min("v").alias("m"))
    moved = o.join(low, "u").where(F.col("v") != F.col("m")).select(F.col("v").alias("u"), F.col("m").alias("v"))
    return moved.unionByName(low.select("u", F.col("m").alias("v"))).distinct()


def components(edges, stats: dict, max_rounds: int = 200):
    """Star edges (u -> smallest node of u's component) by large-star / small-star rounds."""
    edges = edges.localCheckpoint()
    for rnd in range(1, max_rounds + 1):
        new = _small_star(_large_star(edges)).localCheckpoint()
        changed = new.exceptAll(edges).unionByName(edges.exceptAll(new)).limit(1).count()
        edges = new
        if changed == 0:
            stats["component_rounds"] = rnd
            return edges
    raise RuntimeError(f"connected components did not converge in {max_rounds} rounds")


def _search_batches(max_distance: int):
    """mapInPandas function: all batches of one partition (whole block groups) -> its edges, with their ends'
    hashes, and summary rows."""
    group_limits = bs.limits()  # the driver's, for the workers

    def run(batches):
        import pandas as pd

        part = [b for b in batches if len(b)]
        yield bs.search_partition(pd.concat(part, ignore_index=True) if part else bs.explode_meta(), max_distance, group_limits,
                                  hashes=True)
    return run


def _pairs(spark, nodes, nnodes: int, max_distance: int, stats: dict):
    """Edges (u, v, hu, hv) of the distinct hashes within max_distance, with their ends' hashes: one row per
    (exact block, node) as Spark SQL, one repartition by block group, each partition searched whole
    (curate.dedup.block_search); checkpointed."""
    import pandas as pd
    from pyspark.sql import functions as F

    split = bs.split_needed(nnodes, max_distance)
    kinds = bs.key_table(max_distance, split) if max_distance else []
    gparts = max(int(spark.conf.get("spark.sql.shuffle.partitions")), nnodes * len(kinds) // GROUP_ROWS_PER_PARTITION + 1)
    stats["plan"] = bs.describe(max_distance, split)
    cols = ["g0", "shift", "mask", "low", "above", "hikeep", "k1", "sshift", "smask"]
    schema = ", ".join(f"{c} long" for c in cols)
    table = pd.DataFrame({c: [k[c] for k in kinds] for c in cols}, dtype="int64")
    kt = spark.createDataFrame(table, schema) if len(table) else spark.createDataFrame([], schema)
    # block_search.key_table's formula (group_keys in numpy), on longs: >>> is shiftrightunsigned
    key = F.expr("g0 | shiftleft(shiftrightunsigned(h, cast(shift as int)) & mask, cast(k1 as int))"
                 " | (shiftrightunsigned(shiftleft(shiftrightunsigned(h, cast(above as int)) & hikeep, cast(shift as int))"
                 " | (h & low), cast(sshift as int)) & smask)")
    exploded = nodes.crossJoin(F.broadcast(kt)).select(key.alias("g"), "node", "h")
    found = exploded.repartition(gparts, "g").mapInPandas(_search_batches(max_distance), "u long, v long, hu long, hv long")
    found = found.localCheckpoint()
    stats["block_search"] = {"group_partitions": gparts, **bs.summarize(found.where(F.col("u") < 0).toPandas())}
    return found.where(F.col("u") >= 0)


def _labels(stars, edges):
    """Star edges (u -> v, v the smallest node of u's component) and the hashed edges (u, v, hu, hv) -> (h, label)
    for the hash of every node with an edge, the centres labelled with themselves; checkpointed (their size
    follows the pairs, not the pool). Keyed by hash, they join the keyed rows where those rows already are: the
    keyed rows are partitioned by h (their window), so only the labels move."""
    from pyspark.sql import functions as F

    centres = stars.select(F.col("v").alias("node")).distinct().select("node", F.col("node").alias("label"))
    both = stars.select(F.col("u").alias("node"), F.col("v").alias("label")).unionByName(centres)
    ends = edges.select(F.col("u").alias("node"), F.col("hu").alias("h")).unionByName(
        edges.select(F.col("v").alias("node"), F.col("hv").alias("h"))).dropDuplicates(["node"])
    return both.join(ends, "node").select("h", "label").localCheckpoint()


@contextmanager
def _shuffle_partitions(spark, rows: int):
    """Spark's default of 200 shuffle partitions is for big joins; a small pool would wait on empty tasks."""
    previous = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", str(max(2, min(2000, rows // 50_000))))
    try:
        yield
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", previous)


def spark_dedup(spark, pool_root: Path, method: str, files: list, max_distance: int, keep: str, score_column: str | None,
                staging: Path, stats: dict) -> None:
    """Run the whole job for `method` (phash: near duplicates; sha256: identical digests); output files go
    to `staging`, one per input file."""
    with _shuffle_partitions(spark, sum(f.rows for f in files)):
        _job(spark, pool_root, method, files, max_distance, keep, score_column, staging, stats)


def _keep_and_write(spark, pool_root: Path, rows, grouped, nvalid: int, keep: str, score_column: str | None, files: list,
                    staging: Path, stats: dict, gcol: str, kcol: str) -> None:
    """Grouped rows (row, uid, group) -> the keep rule, the group statistics, and one output file per input
    file with rows (row, file, uid) in `rows` (steps 5 and 6 of curate.dedup.frames). The semantic job's: its
    rows carry their embeddings, so unlike the hash jobs' it keeps them cached."""
    from pyspark.sql import functions as F

    nonempty = [f for f in files if f.rows]
    if keep == "first":
        grouped = grouped.withColumn("keep", F.col("row") == F.col("group"))
    else:
        grouped = grouped.join(_highest_score_keepers(spark, pool_root, grouped, score_column, stats), "row")
    grouped = grouped.cache()
    sizes = grouped.groupBy("group").agg(F.count("*").alias("count"), F.sum(F.col("keep").cast("long")).alias("kept"))
    sz = sizes.agg(F.count("*").alias("g"), F.sum((F.col("count") > 1).cast("long")).alias("dup"),
                   F.max("count").alias("largest"), F.sum("kept").alias("kept")).collect()[0]
    kept = int(sz["kept"] or 0)
    stats.update({"groups": int(sz["g"]), "groups_with_duplicates": int(sz["dup"] or 0), "largest_group": int(sz["largest"] or 0),
                  "kept": int(kept), "rows_grouped": nvalid, "removed_as_duplicates": nvalid - int(kept)})
    out = rows.select("row", "file", "uid").join(grouped.select("row", "group", "keep"), "row", "left")
    names = {f.index: f.path for f in files}
    where = str(staging)

    def write(pdf):
        return fr.write_files(pdf, names, where, gcol, kcol)

    done = out.groupBy("file").applyInPandas(write, "file long, rows long").collect()
    missing = {f.index for f in nonempty} - {int(r["file"]) for r in done}
    if missing:
        raise RuntimeError(f"dedup output missing for files {sorted(missing)}")
    grouped.unpersist()


def _job(spark, pool_root: Path, method: str, files: list, max_distance: int, keep: str, score_column: str | None,
         staging: Path, stats: dict) -> None:
    """Nothing the size of the pool is cached in memory: the keyed rows (each valid row with its value's node
    and row count) are persisted to the executors' local disks, read by the search, the output and its
    statistics, so the JVM heap and the Python workers follow the partitions, not the pool."""
    import pandas as pd
    from pyspark.sql import functions as F

    started = fr.start_job(method, files, staging, stats)
    if started is None:
        return
    gcol, kcol, key, nonempty = started
    listing = pd.DataFrame({"path": [f.path for f in nonempty], "index": [f.index for f in nonempty],
                            "offset": [f.offset for f in nonempty], "rows": [f.rows for f in nonempty],
                            "signal": [method] * len(nonempty)})
    file_rdd = spark.sparkContext.parallelize(listing.to_dict("records"), numSlices=len(nonempty))
    file_df = spark.createDataFrame(file_rdd, "path string, index int, offset long, rows long, signal string")
    valid_per_file = fr.apply_summary(file_df.mapInPandas(_summary_batches, SUMMARY_SCHEMA).toPandas(), method, stats)
    nvalid = sum(valid_per_file.values())
    with_uid = keep != "first"
    keys = file_df.mapInPandas(_keys_batches(with_uid), _keys_schema(key, with_uid))
    keyed = _keyed(keys, key)
    labels = None
    try:
        if method == "phash":
            edges = _pairs(spark, keyed.where(F.col("row") == F.col("node")).select("node", "h"), nvalid, max_distance, stats)
            npairs = edges.count()
            stats["pairs_of_distinct_hashes"] = npairs
            if npairs:
                labels = _labels(components(edges.select("u", "v"), stats), edges)
        _keep_and_write_keyed(spark, pool_root, keyed, labels, valid_per_file, keep, score_column, nonempty, staging, stats,
                              gcol, kcol)
    finally:
        keyed.unpersist()


def _keep_and_write_keyed(spark, pool_root: Path, keyed, labels, valid_per_file: dict, keep: str, score_column: str | None,
                          files: list, staging: Path, stats: dict, gcol: str, kcol: str) -> None:
    """Keyed rows (row, file, h, node, cnt[, uid]) and the labels (h, label) of the hashes with edges -> group
    (label, else node), the keep rule, one output file per input file and the group statistics (steps 5 and 6
    of curate.dedup.frames). Only rows of groups with two or more members take part in highest_clip_score.

    The labels join on h, the key the keyed rows are already partitioned and sorted by (their window), so the
    join moves and sorts only the labels, whatever their size (checked with explain(): no exchange on the keyed
    side). Joined on node, the keyed side took a shuffle of the pool, or, while the labels were few enough, a
    broadcast of them, which Spark refuses past 8 GB or 512M rows (an xlarge pool's labels can pass both)."""
    from pyspark.sql import functions as F

    if labels is not None:
        stats["label_join"] = "by hash, only the labels move"
    rows = _grouped(keyed, labels)
    if keep == "first":
        rows = rows.withColumn("keep", F.col("row") == F.col("group"))
    else:
        keepers = _highest_score_keepers(spark, pool_root, rows.where("multi").select("row", "uid", "group"), score_column, stats)
        rows = rows.join(keepers, "row", "left").withColumn("keep", F.coalesce("keep", F.lit(True)))  # a group of one keeps its row
    rows = rows.select("row", "file", "node", "group", "keep", "multi")
    largest = rows.where("multi").groupBy("group").count().agg(F.max("count").alias("m")).collect()[0]["m"]
    info = {f.index: f for f in files}
    where = str(staging)

    def write(pdf):
        return fr.write_groups(pdf, info, where, gcol, kcol)

    done = rows.groupBy("file").applyInPandas(write, "file long, rows long, groups long, dups long, kept long, distinct long").toPandas()
    fr.finish_groups(done, valid_per_file, files, int(largest or 0), where, gcol, kcol, stats)


def _keyed(keys, key: str):
    """Keys (row, file, key[, uid]) -> with each value's node (its smallest row) and row count; persisted to the
    executors' disks. The window leaves the rows partitioned and sorted by the key."""
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    w = Window.partitionBy(key)
    keyed = keys.select("*", F.min("row").over(w).alias("node"), F.count("*").over(w).alias("cnt"))
    return keyed.persist(StorageLevel.DISK_ONLY)


def _grouped(keyed, labels):
    """Keyed rows and the labels (h, label) or None -> the rows with their group (label, else node) and whether
    it has two or more members (multi)."""
    from pyspark.sql import functions as F

    if labels is None:
        return keyed.select("*", F.col("node").alias("group"), (F.col("cnt") > 1).alias("multi"))
    rows = keyed.join(labels, "h", "left")
    return rows.select("*", F.coalesce("label", "node").alias("group"), ((F.col("cnt") > 1) | F.col("label").isNotNull()).alias("multi"))


def _highest_score_keepers(spark, pool_root: Path, grouped, score_column: str | None, stats: dict):
    """Rows (row, uid, group) of groups with duplicates -> (row, keep): per group the highest CLIP score, NaN and
    missing last, ties to the smallest row."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    col = fr.score_column(pool_root, score_column)
    stats["score_column"] = col
    from curate.pool import Pool

    parts = [{"pool": str(pool_root), "path": p.path, "col": col} for p in Pool(pool_root).partitions()]
    part_df = spark.createDataFrame(spark.sparkContext.parallelize(parts, numSlices=len(parts)), "pool string, path string, col string")

    def read_scores(batches):
        for pdf in batches:
            for pool, path, c in zip(pdf["pool"], pdf["path"], pdf["col"]):
                yield fr.read_scores((pool, path, c))

    # one score per uid (a pool's uids are unique; were one repeated, its highest score counts)
    raw = part_df.mapInPandas(read_scores, "uid string, score double")
    # NaN as null first: Spark orders NaN above every number, pandas and numpy skip or sink it
    raw = raw.select("uid", F.when(F.isnan("score"), F.lit(None)).otherwise(F.col("score")).alias("score"))
    scores = raw.groupBy("uid").agg(F.max("score").alias("score"))
    g = grouped.join(scores, "uid", "left")
    # NaN and null rank last, like keep_representatives; ties go to the smallest row
    s = F.when(F.col("score").isNull() | F.isnan("score"), F.lit(float("-inf"))).otherwise(F.col("score"))
    w = Window.partitionBy("group").orderBy(s.desc(), F.col("row").asc())
    return g.withColumn("rank", F.row_number().over(w)).select("row", (F.col("rank") == 1).alias("keep"))


def _read_embedding_batches(batches):
    import numpy as np

    for pdf in batches:
        for path, index, offset, rows, sample, pool, col in zip(pdf.path, pdf["index"], pdf.offset, pdf.rows, pdf["sample"],
                                                                pdf["pool"], pdf["col"]):
            f = fr.ColumnFile(int(index), str(path), int(offset), int(rows))
            yield sem.embedding_rows(f, np.asarray(sample, np.int64), str(pool), str(col))


def spark_semantic(spark, pool_root: Path, files: list, col: str, eps: float, clusters: int | None, seed: int, keep: str,
                   score_column: str | None, staging: Path, stats: dict) -> None:
    """`--method semantic` (curate.dedup.semantic): executors read their partitions' embeddings, the driver
    trains k-means on the collected sample, executors assign clusters (centroids in a broadcast variable),
    pairs are found per cluster (groupBy cluster, applyInPandas), then star rounds, keep rule and output."""
    with _shuffle_partitions(spark, sum(f.rows for f in files)):
        _semantic_job(spark, pool_root, files, col, eps, clusters, seed, keep, score_column, staging, stats)


def _semantic_job(spark, pool_root: Path, files: list, col: str, eps: float, clusters: int | None, seed: int, keep: str,
                  score_column: str | None, staging: Path, stats: dict) -> None:
    from pyspark.sql import functions as F

    started = sem.start_job(files, col, clusters, seed, staging, stats)
    if started is None:
        return
    gcol, kcol, k, reads = started
    total = stats["rows"]
    listing = [{"path": f.path, "index": f.index, "offset": f.offset, "rows": f.rows, "sample": sample.tolist(),
                "pool": str(pool_root), "col": col} for f, sample in reads]
    file_df = spark.createDataFrame(spark.sparkContext.parallelize(listing, numSlices=len(reads)),
                                    "path string, index int, offset long, rows long, sample array<long>, pool string, col string")
    rows = file_df.mapInPandas(_read_embedding_batches, sem.ROW_SCHEMA).cache()
    agg = rows.agg(F.sum(F.col("present").cast("long")).alias("present"), F.sum(F.col("valid").cast("long")).alias("valid")).collect()[0]
    present, nvalid = int(agg["present"] or 0), int(agg["valid"] or 0)
    train_set = sem.training_set(rows.where(F.col("sampled") & F.col("valid")).select("row", "emb").toPandas())
    stats.update({"malformed": present - nvalid, "without_value": total - present, "kmeans_sample": len(train_set)})
    if stats["malformed"]:
        ex = rows.where(F.col("present") & ~F.col("valid")).orderBy("row").limit(5).select("uid", "bad").collect()
        stats["malformed_examples"] = [{"uid": r["uid"], "semantic": r["bad"]} for r in ex]
    valid = rows.where("valid")
    grouped = valid.select("row", "uid", F.col("row").alias("group"))
    shared = None
    if nvalid:
        centroids = sem.train(train_set, k, seed)
        stats["clusters"] = len(centroids)
        shared = spark.sparkContext.broadcast(centroids)
        min_cosine = 1.0 - eps

        def assign(batches):
            c = shared.value
            for pdf in batches:
                yield sem.assign_frame(pdf, c)

        def pairs(pdf):
            return sem.cluster_pairs(pdf, min_cosine)

        assigned = valid.select("row", "emb").mapInPandas(assign, "row long, cluster long, emb binary")
        edges = assigned.groupBy("cluster").applyInPandas(pairs, "u long, v long").localCheckpoint()
        npairs = edges.count()
        stats["pairs"] = int(npairs)
        if npairs:
            labels = components(edges, stats).select(F.col("u").alias("row"), F.col("v").alias("label"))
            grouped = valid.select("row", "uid").join(labels, "row", "left").select(
                "row", "uid", F.coalesce("label", "row").alias("group"))
    _keep_and_write(spark, pool_root, rows, grouped, nvalid, keep, score_column, files, staging, stats, gcol, kcol)
    rows.unpersist()
    if shared is not None:
        shared.destroy()


__all__ = ["components", "spark_dedup", "spark_semantic"]
