"""The `curate` command line: download, run (filter), reshard, filters, demo."""

from __future__ import annotations

import argparse
import json
import sys

from curate.engines import ENGINE_NAMES, EngineTaskError, make_engine


def _engine_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine (where per-shard work runs)")
    g.add_argument("--engine", choices=ENGINE_NAMES, default="local", help="local process pool (default), Dask, or Spark")
    g.add_argument("--processes", type=int, default=None, help="worker processes (default: CPU cores)")
    g.add_argument("--dask-scheduler", default=None, metavar="ADDRESS", help="tcp://host:port of a running Dask scheduler (default: start a LocalCluster)")
    g.add_argument("--spark-master", default=None, metavar="URL", help="spark://host:port of a Spark cluster (default: local[N])")


def _engine(args):
    return make_engine(args.engine, processes=args.processes, dask_scheduler=args.dask_scheduler, spark_master=args.spark_master)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="curate",
        description="Curate image-text pools the DataComp way: download, filter, write subset files and shards.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("download", help="download a URL list into POOL/shards with img2dataset",
                       description="Download a DataComp-schema URL list (uid, url, text[, face_bboxes]) as webdataset shards. "
                                   "Only http(s) URLs are fetched; re-running resumes where it stopped.")
    p.add_argument("--url-list", required=True, help=".parquet, .csv or .jsonl file (or a folder of them)")
    p.add_argument("--pool", required=True, help="pool folder to create or resume")
    p.add_argument("--threads", type=int, default=64, help="download threads per process")
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--resize-mode", default="keep_ratio_largest", choices=["no", "border", "keep_ratio", "keep_ratio_largest", "center_crop"])
    p.add_argument("--shard-size", type=int, default=10000, help="samples per shard")
    p.add_argument("--timeout", type=int, default=10, help="seconds per request")
    p.add_argument("--retries", type=int, default=0)
    p.add_argument("--max-pixels", type=int, default=89_478_485, help="refuse images with more pixels than this")
    _engine_args(p)

    p = sub.add_parser("run", help="filter a pool into a DataComp subset file (and shards)",
                       description="Apply one or more filters (their intersection) to the pool's metadata; write OUT/subset.npy, "
                                   "OUT/stats.json and, when the pool has shards, OUT/shards/.")
    p.add_argument("--pool", required=True, help="pool folder (or a folder of DataComp metadata parquet files)")
    p.add_argument("--filter", action="append", required=True, dest="filters", metavar="NAME",
                   help="filter name; repeat for an intersection (see `curate filters`)")
    p.add_argument("--fraction", type=float, default=None, help="clip_score: keep the top fraction of the whole pool")
    p.add_argument("--threshold", type=float, default=None, help="clip_score: keep scores >= this")
    p.add_argument("--arch", choices=["b32", "l14"], default="l14", help="clip_score: which CLIP score column")
    p.add_argument("--fasttext-model", default=None, metavar="LID176_BIN", help="fastText lid.176.bin for language ID (default: py3langid, offline)")
    p.add_argument("--output", required=True)
    p.add_argument("--shard-size", type=int, default=10000, help="samples per output shard")
    p.add_argument("--no-reshard", action="store_true", help="write only the subset file, even when the pool has shards")
    _engine_args(p)

    p = sub.add_parser("reshard", help="write a subset's samples as new webdataset shards",
                       description="Like DataComp's resharder: a uid listed k times is written k times as {uid}-{j}.")
    p.add_argument("--pool", required=True)
    p.add_argument("--subset", required=True, help="DataComp subset file (.npy of dtype u8,u8, sorted)")
    p.add_argument("--output", required=True)
    p.add_argument("--shard-size", type=int, default=10000)
    p.add_argument("--overwrite", action="store_true", help="replace shards already in OUTPUT")
    _engine_args(p)

    p = sub.add_parser("stage", help="compute per-sample signals in one pass over the shards",
                       description="Writes POOL/columns/<signal>/{shard}.parquet (uid, value, status) per shard; "
                                   "shards already done are skipped, so a killed stage resumes.")
    p.add_argument("--pool", required=True)
    p.add_argument("--signals", default="phash,sha256", help="comma-separated: phash, sha256")
    p.add_argument("--max-pixels", type=int, default=89_478_485, help="images with more pixels get status too_many_pixels")
    _engine_args(p)

    sub.add_parser("filters", help="list the filters and what they need")

    p = sub.add_parser("demo", help="build a small pool, serve it on loopback, download and filter it",
                       description="A CommonPool in miniature, made here: generated images and captions (some broken), served "
                                   "on 127.0.0.1, downloaded with `curate download`, filtered with `curate run --filter clip_score`.")
    p.add_argument("--workdir", default="demo_out")
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--processes", type=int, default=2)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, EngineTaskError) as e:
        print(f"curate {args.command}: error: {e}", file=sys.stderr)
        return 2


def _dispatch(args) -> int:
    if args.command == "filters":
        from filters.registry import FILTERS

        for name, cls in sorted(FILTERS.items()):
            needs = ", ".join(getattr(cls, "columns", ()) or ()) or "(per --arch)"
            print(f"{name:12s} {cls.description}\n{'':12s} reads: {needs}")
        return 0
    if args.command == "download":
        from curate.download import DownloadOptions, download

        opts = DownloadOptions(processes=args.processes, threads=args.threads, image_size=args.image_size,
                               resize_mode=args.resize_mode, shard_size=args.shard_size, timeout=args.timeout,
                               retries=args.retries, max_pixels=args.max_pixels)
        with _engine(args) as engine:
            summary = download(args.url_list, args.pool, engine, opts)
        print_download_summary(summary)
        return 0 if summary["reconciled"] else 1
    if args.command == "run":
        return _run(args)
    if args.command == "reshard":
        from curate.pool import Pool
        from curate.reshard import reshard

        with _engine(args) as engine:
            stats = reshard(Pool(args.pool), args.subset, args.output, engine, shard_size=args.shard_size, overwrite=args.overwrite)
        print_reshard_summary(stats)
        return 0 if stats["reconciled"] else 1
    if args.command == "stage":
        from curate.pool import Pool
        from curate.signals.decode import DecodeLimits
        from curate.stage import run_stage

        with _engine(args) as engine:
            stats = run_stage(Pool(args.pool), [s.strip() for s in args.signals.split(",") if s.strip()], engine,
                              DecodeLimits(max_pixels=args.max_pixels))
        print(f"stage: {stats['samples']} samples in {stats['shards_computed']} shards "
              f"({stats['shards_skipped']} already done), {stats['images_per_second']} images/s")
        for sig, c in stats["per_signal"].items():
            print(f"  {sig:8s} ok {c['ok']}  failed {json.dumps(c['failed'])}")
        return 0
    if args.command == "demo":
        from curate.demo.run import run_demo

        return run_demo(workdir=args.workdir, samples=args.samples, seed=args.seed, processes=args.processes)
    raise AssertionError(args.command)


def _run(args) -> int:
    from curate.pool import Pool
    from curate.reshard import reshard
    from curate.run import run_filters
    from filters.registry import build_filter

    filters = [build_filter(n, arch=args.arch, fraction=args.fraction, threshold=args.threshold) for n in args.filters]
    pool = Pool(args.pool)
    with _engine(args) as engine:
        stats = run_filters(pool, filters, args.output, engine, fasttext_model=args.fasttext_model)
        print_run_summary(stats)
        if pool.has_shards() and not args.no_reshard:
            rs = reshard(pool, stats["subset_file"], f"{args.output}/shards", engine, shard_size=args.shard_size, overwrite=True)
            print_reshard_summary(rs)
    return 0


def print_download_summary(s: dict) -> None:
    print(f"download: {s['input_rows']} rows -> {s['success']} images in {s['shards']} shards")
    print(f"  refused (not fetched): {s['refused_total']} {json.dumps(s['refused'])}")
    print(f"  failed to download: {s['failed_to_download']}, failed to resize: {s['failed_to_resize']}, not attempted: {s['not_attempted']}")
    if s["failure_reasons"]:
        print(f"  failure reasons: {json.dumps(s['failure_reasons'])}")
    print(f"  counts reconcile: {s['reconciled']}")


def print_run_summary(s: dict) -> None:
    print(f"run: {s['rows_in']} rows in {s['partitions']} partitions -> kept {s['kept']} ({s['seconds']} s on {s['engine']})")
    for t in s["thresholds"]:
        print(f"  threshold {t['column']} top {t['fraction']:.0%}: {t['threshold']:.6g} (rank {t['rank']} of {t['pool_rows']})")
    for step in s["steps"]:
        print(f"  {step['filter']:12s} in {step['rows_in']:>9d}  kept {step['kept']:>9d}  rejected {step['rejected']:>9d}  {json.dumps(step['rejected_by_first_rule'])}")
    print(f"  subset: {s['subset_file']} (sha256 {s['subset_sha256'][:16]}...)")


def print_reshard_summary(s: dict) -> None:
    print(f"reshard: {s['subset_rows']} subset rows -> wrote {s['written']} samples in {s['output_shards']} shards; "
          f"not downloaded {s['not_downloaded']}, lost to corrupt shards {s['lost_to_corrupt_shards']}; reconcile: {s['reconciled']}")
    for c in s["corrupt_shards"]:
        print(f"  corrupt shard {c['shard']}: {c['error']} (read {c['samples_read']}, lost {c.get('samples_lost')})")


if __name__ == "__main__":
    sys.exit(main())
