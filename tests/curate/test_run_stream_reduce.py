"""`curate run` folds each partition's result into running totals as it arrives (curate.run_merge), so the driver
holds a bounded number of results however many files the pool has: the same report and subset bytes on every
engine, whatever order the results come back in."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import tracemalloc
import weakref
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate import progress
from curate.demo.metadata import generate_metadata
from curate.engines import EngineTaskError, LocalEngine, make_engine
from curate.pool import Pool
from curate.progress import Meter
from curate.recipe import load_recipe
from curate.run import run_filters
from curate.run_merge import RunTotals
from tests.curate.helpers import java_available

#: steps with several rules (their first-rule counts' order is the order rules first appear in partition order),
#: an `or` with parts, a fraction threshold (a pool request), and examples with and without a caption column read
RECIPE = """name: stream_reduce
steps:
  - image_size: {min_side: 150, max_aspect: 2.5}
  - caption_quality: {min_words: 3}
  - or:
      - clip_score: {arch: b32, threshold: 0.3}
      - clip_score: {arch: l14, fraction: 0.3}
"""

FILES = 200


def write_many_files_pool(root: Path, files: int = FILES) -> list[int]:
    """`files` small metadata files of 1 to 40 rows; every 7th file repeats some uids of the file before it with
    other scores and captions (ties in the uid hash across partitions: examples and the score sample choose among
    them by partition order), and every 11th repeats a uid within itself. Returns the rows per file."""
    meta = root / "metadata"
    meta.mkdir(parents=True, exist_ok=True)
    sizes, previous = [], None
    for i in range(files):
        n = 1 + (i * 37) % 40
        t = generate_metadata(n, seed=9000 + i)
        uids = t.column("uid").to_pylist()
        if previous is not None and i % 7 == 0:
            for j in range(min(n, len(previous), 5)):
                uids[j] = previous[j]
        if i % 11 == 0 and n > 2:
            uids[-1] = uids[0]
        t = t.set_column(t.column_names.index("uid"), "uid", pa.array(uids, pa.string()))
        pq.write_table(t, meta / f"{i:08d}.parquet")
        sizes.append(n)
        previous = uids
    return sizes


# ---- the fold (curate.run_merge) on synthetic results --------------------------------------------------------

RULES = ["too_small", "aspect", "missing", "few_words", "url"]


def synthetic_result(i: int, text_bytes: int = 64, sample_rows: int = 8) -> dict:
    """A `filter_partition`-shaped result for partition i, made from i alone: rules in an order of its own, uid
    hashes from a small range (so partitions tie), scores whose extremes tie across partitions (0.0 and -0.0)."""
    rng = np.random.default_rng(i)
    rules = [RULES[k] for k in rng.permutation(len(RULES))[: int(rng.integers(0, len(RULES) + 1))]]
    rows = int(rng.integers(1, 50))
    steps = [{"filter": "valid_uid", "rows_in": rows, "kept": rows, "rejected": 0, "rejected_by_first_rule": {}, "failed_rule": {}}]
    first = {r: int(rng.integers(1, 5)) for r in rules}
    steps.append({"filter": "rules", "label": "rules", "rows_in": rows, "kept": rows - 1, "rejected": 1,
                  "rejected_by_first_rule": first, "failed_rule": dict(reversed(first.items())),
                  "parts": [{"filter": "a", "rows_in": rows, "kept": rows - 1}, {"filter": "b", "rows_in": rows, "kept": 1}]})
    hashes = rng.integers(0, 400, sample_rows).astype(np.uint64)
    extreme = [0.0, -0.0, None][i % 3]
    scores = {"score": {"rows": rows, "missing": int(rng.integers(0, 3)), "min": extreme, "max": extreme,
                        "sample_hash": hashes, "sample": rng.random(sample_rows) + i}}
    examples = [{kind: [{"hash": int(h), "uid": f"{i:04d}{k:02d}", "text": "x" * text_bytes, "values": {"p": i}, "reason": None}
                        for k, h in enumerate(sorted(rng.integers(0, 200, 4)))] for kind in ("kept", "rejected")}
                for _ in range(2)]
    return {"partition": f"{i:08d}", "rows": rows, "steps": steps, "run": {"path": f"/runs/{i}.npy", "rows": rows - 1},
            "scores": scores, "examples": examples, "repeated_uid_rows": i % 2}


def folded(order, n: int, sample: int = 20, examples: int = 3, **kw) -> RunTotals:
    totals = RunTotals(n, sample, examples)
    for i in order:
        totals.add(int(i), synthetic_result(int(i), **kw))
    return totals


def merged(totals: RunTotals) -> str:
    """Everything the fold gives, as text that keeps dict order (the report shows rules in it) and float signs."""
    scores = {c: {**s, "sample": s["sample"].tolist()} for c, s in totals.scores().items()}
    return repr((totals.steps(), scores, totals.chosen_examples(), totals.runs, totals.rows, totals.repeated_uid_rows))


def in_partition_order(results: list[dict], sample: int, examples: int) -> str:
    """What merging every result at once in partition order gives: sums, min()/max() over partition order, rules in
    order of first appearance, examples and sample by a stable sort on the hash of the concatenation."""
    steps = []
    for i in range(len(results[0]["steps"])):
        parts = [r["steps"][i] for r in results]
        step = {"filter": parts[0]["filter"], **{k: sum(p[k] for p in parts) for k in ("rows_in", "kept", "rejected")}}
        for key in ("rejected_by_first_rule", "failed_rule"):
            step[key] = {}
            for p in parts:
                for rule, count in p[key].items():
                    step[key][rule] = step[key].get(rule, 0) + count
        step = {k: step[k] for k in ("filter", "rows_in", "kept", "rejected", "rejected_by_first_rule", "failed_rule")}
        if "label" in parts[0]:
            step["label"] = parts[0]["label"]
        if "parts" in parts[0]:
            step["parts"] = [{**q, "rows_in": sum(p["parts"][j]["rows_in"] for p in parts), "kept": sum(p["parts"][j]["kept"] for p in parts)}
                             for j, q in enumerate(parts[0]["parts"])]
        steps.append(step)
    s = [r["scores"]["score"] for r in results]
    mins, maxs = [p["min"] for p in s if p["min"] is not None], [p["max"] for p in s if p["max"] is not None]
    h, v = np.concatenate([p["sample_hash"] for p in s]), np.concatenate([p["sample"] for p in s])
    scores = {"score": {"rows": sum(p["rows"] for p in s), "missing": sum(p["missing"] for p in s), "min": min(mins), "max": max(maxs),
                        "sample": v[np.argsort(h, kind="stable")[:sample]].tolist()}}
    chosen = [{kind: sorted([e for r in results for e in r["examples"][j][kind]], key=lambda e: e["hash"])[:examples]
               for kind in ("kept", "rejected")} for j in range(len(results[0]["examples"]))]
    return repr((steps, scores, chosen, [r["run"] for r in results], sum(r["rows"] for r in results),
                 sum(r["repeated_uid_rows"] for r in results)))


def test_fold_in_any_order_gives_the_partition_order_merge():
    """Rules met in other orders, uid hashes that tie across partitions (examples and sample), min/max that tie as
    0.0 and -0.0: folded in partition order and in shuffled orders, the same as merging all results at once in
    partition order (what `curate run` did before it folded)."""
    n = 300
    want = in_partition_order([synthetic_result(i) for i in range(n)], 20, 3)
    assert merged(folded(range(n), n)) == want
    rng = np.random.default_rng(5)
    for _ in range(4):
        assert merged(folded(rng.permutation(n), n)) == want
    assert merged(folded(range(n)[::-1], n)) == want


def test_fold_memory_does_not_grow_with_the_results():
    """2,000 results of ~40 KiB each (80 MB if held) folded as they are made: the fold's traced peak stays a few
    MiB, and a fold of 200 of them peaks about as high as one of 2,000."""
    def peak(n: int) -> int:
        tracemalloc.start()
        try:
            totals = RunTotals(n, 20000, 6)
            for i in np.random.default_rng(n).permutation(n):
                totals.add(int(i), synthetic_result(int(i), text_bytes=2500, sample_rows=300))
            merged(totals)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    one = len(pickle.dumps(synthetic_result(0, text_bytes=2500, sample_rows=300)))
    assert one > 35_000
    small, large = peak(200), peak(2000)
    assert large < 8 << 20, large  # (2,000 results held: > 70 MB)
    assert large < small + 2 * (2 << 20), (small, large)


# ---- Engine.imap_unordered -----------------------------------------------------------------------------------


def square(x: int) -> int:
    if x < 0:
        raise RuntimeError(f"bad item {x}")
    return x * x


def engine_named(name: str):
    if name == "spark" and not java_available():
        pytest.skip("Spark needs Java 17+")
    if name == "local-inline":
        return LocalEngine(1)
    engine = make_engine(name, processes=2)
    if name == "spark":
        engine.batch_tasks = 7  # several batch jobs, two at a time
    return engine


@pytest.mark.parametrize("name", ["local-inline", "local", "dask", "spark"])
def test_imap_unordered_hands_back_each_item_once_with_progress(name, capsys):
    """Every (index, result) once, as `map` would give it; the progress line counts every task and what the
    results add once each; a failing task is one EngineTaskError naming it, and a caller that stops early
    leaves the engine usable."""
    items = list(range(40))
    meter = Meter("squares", unit="items", count=lambda r: {"sum": r})
    progress.configure(True)
    with engine_named(name) as engine:
        got = list(engine.imap_unordered(square, items, desc=meter))
        assert sorted(i for i, _ in got) == items and all(r == square(items[i]) for i, r in got)
        assert engine.map(square, items) == [square(x) for x in items]
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("squares: 40/40 items")]
        assert lines and f"{sum(x * x for x in items):,} sum" in lines[-1], lines
        with pytest.raises(EngineTaskError, match="bad item -3"):
            list(engine.imap_unordered(square, [*items[:20], -3, *items[20:]]))
        stream = engine.imap_unordered(square, items)
        next(stream)
        stream.close()  # stops early: what was left is cancelled
        assert sorted(r for _, r in engine.imap_unordered(square, [5, 6])) == [25, 36]


# ---- curate run on a pool of many small files --------------------------------------------------------------


@pytest.fixture(scope="module")
def many_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("many")
    write_many_files_pool(root / "pool")
    (root / "recipe.yaml").write_text(RECIPE)
    return root


def recipe_filters(root: Path):
    return load_recipe(root / "recipe.yaml").steps


class Tracked(dict):
    """A partition result the test can hold a weak reference to."""


class CountingEngine(LocalEngine):
    """The local engine, counting how many `filter_partition` results are alive at once on the driver."""

    def __init__(self, processes: int):
        super().__init__(processes)
        self.alive = self.results = self.most_alive = 0

    def _track(self, result):
        if not (isinstance(result, dict) and "steps" in result):
            return result  # another map's (pool steps, captions)
        result = Tracked(result)
        weakref.finalize(result, self._freed)
        self.alive += 1
        self.results += 1
        self.most_alive = max(self.most_alive, self.alive)
        return result

    def _freed(self) -> None:
        self.alive -= 1

    def map(self, fn, items, desc=None):
        return [self._track(r) for r in super().map(fn, items, desc)]

    def imap_unordered(self, fn, items, desc=None):
        for i, r in super().imap_unordered(fn, items, desc):
            yield i, self._track(r)


class ShuffledEngine(LocalEngine):
    """The local engine, inline, handing results back in a shuffled order (as a cluster might)."""

    def __init__(self, seed: int):
        super().__init__(1)
        self.rng = np.random.default_rng(seed)

    def imap_unordered(self, fn, items, desc=None):
        got = list(super().imap_unordered(fn, items, desc))
        for k in self.rng.permutation(len(got)):
            yield got[k]


def outputs(out: Path, engine: str) -> dict[str, bytes]:
    """subset.npy, report.html (its line naming the engine and this output folder made neutral), the plots, and
    stats.json less what differs by engine, run and time."""
    files = {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.suffix in (".npy", ".png")}
    files["report.html"] = (out / "report.html").read_bytes().replace(f"engine {engine};".encode(), b"engine E;") \
        .replace(str(out).encode(), b"OUT")
    stats = json.loads((out / "stats.json").read_text())
    files["stats.json"] = json.dumps({k: v for k, v in stats.items() if k not in ("engine", "seconds", "subset_file", "report")},
                                     sort_keys=True).encode()
    return files


def test_the_driver_holds_a_bounded_number_of_results(many_files, tmp_path):
    """Over 200 partitions, at most a few partition results are alive on the driver at any moment (they are folded
    in as they arrive); before, all 200 were, until the end of the run."""
    with CountingEngine(2) as engine:
        run_filters(Pool(many_files / "pool"), recipe_filters(many_files), tmp_path / "out", engine)
    assert engine.results == FILES
    assert engine.most_alive <= 2, engine.most_alive


def test_any_order_of_arrival_gives_the_same_bytes(many_files, tmp_path):
    """Results handed back in partition order and in shuffled orders: the same subset, stats and report, with a
    small score sample (so the hash cut and the uids repeated across files matter)."""
    def run(engine, out):
        with engine:
            run_filters(Pool(many_files / "pool"), recipe_filters(many_files), out, engine, score_sample=60, examples=4)
        return outputs(out, "local")

    want = run(LocalEngine(1), tmp_path / "in_order")
    for seed in (1, 2, 3):
        assert run(ShuffledEngine(seed), tmp_path / f"shuffled{seed}") == want, seed


def test_every_engine_writes_the_same_bytes(many_files, tmp_path):
    """`curate run` through the CLI on the local engine and on Dask, and on Spark in batches of 16 partitions
    (13 jobs, two at a time): the same subset, stats, report and plots."""
    def cli(engine: str) -> dict[str, bytes]:
        out = tmp_path / engine
        rc = subprocess.run([sys.executable, "-m", "curate.cli", "run", "--pool", str(many_files / "pool"), "--config",
                             str(many_files / "recipe.yaml"), "--output", str(out), "--engine", engine, "--processes", "2",
                             "--no-progress"], capture_output=True, text=True, timeout=600, check=False)
        assert rc.returncode == 0, rc.stderr[-3000:]
        return outputs(out, engine)

    want = cli("local")
    assert json.loads(want["stats.json"])["partitions"] == FILES
    assert cli("dask") == want
    if java_available():
        with make_engine("spark", processes=2) as engine:
            engine.batch_tasks = 16
            recipe = load_recipe(many_files / "recipe.yaml")
            run_filters(Pool(many_files / "pool"), recipe.steps, tmp_path / "spark", engine, recipe=recipe.info())
        assert outputs(tmp_path / "spark", "spark") == want
