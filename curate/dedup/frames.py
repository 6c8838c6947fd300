"""The block-key join of curate.dedup.hamming as Dask and Spark dataframe jobs.

Same plan (blocks, radii), same rule, so the same pairs: for block i with radius t, a pair differs in at
most t bits of the block exactly when some key z is within ceil(t/2) bits of one hash's block value and
within floor(t/2) of the other's (meet in the middle: z = one value with half the differing bits
flipped). Each hash is exploded into (z, id, hash) rows for both radii, the two tables are joined on
(z), and the join is verified (popcount of the XOR <= D) and kept only in the first block whose radius
it meets, so each pair appears once. Exploding by half radii keeps the row count at
ball(b, ceil(t/2)) + ball(b, floor(t/2)) per hash (22 + 22 for a 21-bit block at t = 2) instead of
ball(b, t) = 232.
"""

from __future__ import annotations

import numpy as np

from curate.dedup.hamming import Plan, flip_masks


def _halves(radius: int) -> tuple[int, int]:
    return (radius + 1) // 2, radius // 2


def _explode(part, shift: int, mask: int, masks: np.ndarray):
    import pandas as pd

    h = part["h"].to_numpy(dtype=np.int64)
    keys = ((h.view(np.uint64) >> np.uint64(shift)) & np.uint64(mask)).astype(np.int64)
    k = (keys[:, None] ^ masks[None, :]).ravel()
    return pd.DataFrame({"k": k, "u": np.repeat(part["u"].to_numpy(dtype=np.int64), len(masks)), "h": np.repeat(h, len(masks))})


def _verify(part, plan: Plan, upto: int):
    import pandas as pd

    ua, ub = part["u_a"].to_numpy(np.int64), part["u_b"].to_numpy(np.int64)
    x = part["h_a"].to_numpy(np.int64).view(np.uint64) ^ part["h_b"].to_numpy(np.int64).view(np.uint64)
    ok = (ua < ub) & (np.bitwise_count(x) <= plan.max_distance)
    for blk in plan.blocks[:upto]:
        ok &= np.bitwise_count((x >> np.uint64(blk.shift)) & np.uint64(blk.mask)) > blk.radius
    return pd.DataFrame({"i": ua[ok], "j": ub[ok]})


def dask_pairs(client, values: np.ndarray, plan: Plan, partitions: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) of distinct uint64 `values` within plan.max_distance, as a Dask dataframe job."""
    import dask.dataframe as dd
    import pandas as pd

    n = len(values)
    parts = partitions or max(1, min(64, n // 200_000 + 1))
    base = dd.from_pandas(pd.DataFrame({"u": np.arange(n, dtype=np.int64), "h": np.asarray(values, np.uint64).view(np.int64)}), npartitions=parts)
    meta_rows = pd.DataFrame({"k": pd.Series(dtype="int64"), "u": pd.Series(dtype="int64"), "h": pd.Series(dtype="int64")})
    meta_pairs = pd.DataFrame({"i": pd.Series(dtype="int64"), "j": pd.Series(dtype="int64")})
    found = []
    for bi, blk in enumerate(plan.blocks):
        ra, rb = _halves(blk.radius)
        left = base.map_partitions(_explode, blk.shift, blk.mask, flip_masks(blk.nbits, ra), meta=meta_rows)
        right = base.map_partitions(_explode, blk.shift, blk.mask, flip_masks(blk.nbits, rb), meta=meta_rows)
        joined = left.merge(right, on="k", suffixes=("_a", "_b"))
        found.append(joined.map_partitions(_verify, plan, bi, meta=meta_pairs).drop_duplicates())
    out = client.compute(dd.concat(found)).result() if client is not None else dd.concat(found).compute()
    return _sorted(out["i"].to_numpy(np.int64), out["j"].to_numpy(np.int64))


def spark_pairs(spark, values: np.ndarray, plan: Plan) -> tuple[np.ndarray, np.ndarray]:
    """The same job as Spark DataFrame joins (bit_count and XOR in Spark SQL; no Python UDFs)."""
    n = len(values)
    # Spark's default of 200 shuffle partitions is for big joins; a small pool would wait on empty tasks.
    previous = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", str(max(2, min(2000, n // 50_000))))
    try:
        return _spark_pairs(spark, values, plan)
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", previous)


def _spark_pairs(spark, values: np.ndarray, plan: Plan) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd
    from pyspark.sql import functions as F

    n = len(values)
    base = spark.createDataFrame(pd.DataFrame({"u": np.arange(n, dtype=np.int64), "h": np.asarray(values, np.uint64).view(np.int64)}))
    result = None
    for bi, blk in enumerate(plan.blocks):
        sides = []
        for tag, r in zip(("a", "b"), _halves(blk.radius)):
            masks = spark.createDataFrame([(int(m),) for m in flip_masks(blk.nbits, r)], "m long")
            key = F.shiftrightunsigned(F.col("h"), blk.shift).bitwiseAND(F.lit(blk.mask)).bitwiseXOR(F.col("m"))
            sides.append(base.crossJoin(F.broadcast(masks)).select(key.alias("k"), F.col("u").alias(f"u_{tag}"), F.col("h").alias(f"h_{tag}")))
        joined = sides[0].join(sides[1], "k").where(F.col("u_a") < F.col("u_b"))
        x = F.col("h_a").bitwiseXOR(F.col("h_b"))
        cond = F.bit_count(x) <= plan.max_distance
        for prev in plan.blocks[:bi]:
            cond = cond & (F.bit_count(F.shiftrightunsigned(x, prev.shift).bitwiseAND(F.lit(prev.mask))) > prev.radius)
        pairs = joined.where(cond).select(F.col("u_a").alias("i"), F.col("u_b").alias("j")).distinct()
        result = pairs if result is None else result.unionAll(pairs)
    rows = result.collect()
    return _sorted(np.array([r["i"] for r in rows], np.int64), np.array([r["j"] for r in rows], np.int64))


def _sorted(i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    o = np.lexsort((j, i))
    return i[o], j[o]


__all__ = ["dask_pairs", "spark_pairs"]
