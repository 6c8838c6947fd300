"""`curate run --filter clip_score --fraction 0.3` next to DataComp's own code, in one run, on a generated pool.

    .venv/bin/python benchmarks/curate_run_bench.py --datacomp-python /tmp/dcenv/bin/python --datacomp-repo DATACOMP \
        [--rows 12800000] [--parts 32] [--repeat 3] [--methods datacomp,datacomp-stubbed,curate] [--processes 2]

1. Makes (once; reused while its manifest matches) a metadata-only pool of --rows rows in DataComp's schema,
   split into --parts parquet files under WORKDIR/pool-<rows>x<parts>/metadata/. The generator here is
   vectorised (arrow compute, no per-row Python); the columns are those of `curate.demo.metadata.generate_metadata`
   (DataComp's names): uid (32 hex), url, text, original_width, original_height, clip_b32_similarity_score and
   clip_l14_similarity_score (float32, ~1% null), sha256. Captions are word salads drawn per row so that
   strings are (nearly) all distinct, as real captions are.
2. Runs, each as a subprocess, the --methods in turn, --repeat rounds (methods alternate, so a busy spell of a
   shared machine hits them alike):
     datacomp          DataComp's own entry, unchanged: `baselines.py --name clip_score --arch l14 --fraction 0.3
                       --num_workers K` (mlfoundations/datacomp 4a8df19; --datacomp-repo is a folder holding
                       baselines.py and baselines/, or a clone or bare mirror, from which they are exported with
                       `git archive` into WORKDIR/datacomp-4a8df19/), run by --datacomp-python, an environment with
                       DataComp's pins (its set-up: benchmarks/datacomp_fidelity.py). apply_filter uses a spawn
                       Pool of K workers, which import what apply_filter.py imports (torch, fasttext, gcld3, nltk);
     datacomp-stubbed  the same, with those four replaced by empty modules (WORKDIR/datacomp-stubs/, first on
                       PYTHONPATH, so spawned workers get them too) that fail loudly if touched: the clip_score path
                       never calls them, so this is DataComp's code at its leanest;
     curate            `curate run --pool POOL --filter clip_score --fraction 0.3 --arch l14 --output OUT --processes K`
                       (with its report, as a user runs it);
     naive             pandas reads the whole pool in one process (all columns, or --naive-columns needed),
                       -np.sort(-s)[int(N*f)], int(uid, 16) per kept row, sort, np.save: the old strawman.
   For each: wall time; user + system CPU time of the process tree; peak memory of the whole process tree (sum of
   RSS, and sum of PSS, which counts pages shared between processes once, sampled with psutil every 50 ms and
   200 ms); and the largest single process's peak RSS as the kernel reports it (`/usr/bin/time -v`).
3. Checks that every subset file of every round is byte-identical to the first method's, and prints a markdown
   table (medians over the rounds) with the machine, the load average and the date on stdout
   (also WORKDIR/runs-<rows>x<parts>/results.md, and every measurement in results.json).

The pool's files are read once before the runs, so every run starts with them in the page cache.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from treemem import TreeSampler  # benchmarks/ is on sys.path when a benchmark runs as a script

import numpy as np

GENERATOR_VERSION = 1
SCORE_COLUMNS = {"b32": "clip_b32_similarity_score", "l14": "clip_l14_similarity_score"}
REPO = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------------------------------------
# The pool: a vectorised generator in DataComp's schema
# --------------------------------------------------------------------------------------------------------

EN_VOCAB = ("a an the of in on with at by and photo picture image view close up red blue green yellow white black "
            "old new small large big little beautiful modern vintage dog cat car house tree street park city beach "
            "mountain river lake sky sunset night morning woman man child people girl boy family wedding food table "
            "kitchen room bedroom garden flower flowers bird birds horse boat boats train road bridge church tower "
            "building window door wall floor chair sofa bed book cake fruit bowl plate cup coffee wine bottle shirt "
            "dress shoes bag hat logo icon vector illustration design pattern background texture art painting "
            "drawing poster print card sign map stock isolated portrait landscape aerial winter summer spring autumn "
            "snow rain clouds sun moon star light dark wooden metal glass stone brick paper plastic two three four "
            "playing sitting standing walking running riding holding looking near under over front behind top side "
            "for sale best cheap free custom 2019 2020 2021 hd 4k wallpaper jpg png").split()
OTHER_VOCAB = ("une photo voiture rouge dans la rue zwei Hunde spielen im Park un cuenco de fruta fresca sobre mesa "
               "paesaggio di montagna al tramonto con nuvole кошка спит на диване 公园 里 玩耍 的 两只 狗 "
               "maison jardin fleur ville strand haus baum fiesta playa ciudad gato perro città mare sole").split()
SHORT_VOCAB = ("img", "photo 1", "DSC_0042", "", "IMG_2231.JPG", "untitled", "1", "image")
DOMAINS = ("https://i.pinimg.com/originals/", "http://cdn.shopify.com/s/files/1/0123/products/",
           "https://images.example-news.co.uk/media/2019/07/", "https://upload.wikimedia.org/wikipedia/commons/thumb/",
           "http://static.blog.example.net/wp-content/uploads/", "https://img.alicdn.com/imgextra/i4/")
EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", "_1024x1024.jpg", ".JPG?w=640")
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _hex_strings(rng: np.random.Generator, n: int, n_bytes: int):
    """n random lowercase hex strings of 2*n_bytes characters, as an arrow string array (no per-row Python)."""
    import pyarrow as pa

    raw = rng.integers(0, 256, size=(n, n_bytes), dtype=np.uint8)
    chars = np.empty((n, 2 * n_bytes), dtype=np.uint8)
    chars[:, 0::2] = _HEX[raw >> 4]
    chars[:, 1::2] = _HEX[raw & 15]
    offsets = np.arange(0, 2 * n_bytes * (n + 1), 2 * n_bytes, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))


def fast_metadata(n: int, seed: int, null_rate: float = 0.01):
    """n rows in DataComp's metadata schema, vectorised; same columns and types as generate_metadata()."""
    import pyarrow as pa
    import pyarrow.compute as pc

    sys.path.insert(0, str(REPO))
    from curate.demo.metadata import sizes_and_scores

    rng = np.random.default_rng(seed)
    uid = _hex_strings(rng, n, 16)
    url = pc.binary_join_element_wise(
        pa.array(DOMAINS).take(pa.array(rng.integers(0, len(DOMAINS), n))),
        uid,
        pa.array(EXTENSIONS).take(pa.array(rng.integers(0, len(EXTENSIONS), n))),
        "",
    )
    # captions: 75% English word salad (2..18 words), 12% other languages, 10% short/empty, 3% null
    kind = rng.choice(4, size=n, p=[0.75, 0.12, 0.10, 0.03])
    words = np.where(kind == 0, rng.integers(2, 19, n), np.where(kind == 1, rng.integers(2, 12, n), 1))
    vocab = [*EN_VOCAB, *OTHER_VOCAB, *SHORT_VOCAB]
    base = np.array([0, len(EN_VOCAB), len(EN_VOCAB) + len(OTHER_VOCAB), 0])
    size = np.array([len(EN_VOCAB), len(OTHER_VOCAB), len(SHORT_VOCAB), 1])
    per_word_kind = np.repeat(kind, words)
    flat = base[per_word_kind] + (rng.random(per_word_kind.size) * size[per_word_kind]).astype(np.int64)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(words, out=offsets[1:])
    lists = pa.ListArray.from_arrays(pa.array(offsets), pa.array(vocab).take(pa.array(flat)))
    text = pc.binary_join(lists, " ")
    text = pc.if_else(pa.array(kind == 3), pa.scalar(None, pa.string()), text)
    width, height, b32, l14 = sizes_and_scores(rng, n)  # as generate_metadata() draws them
    return pa.table({
        "uid": uid,
        "url": url,
        "text": text,
        "original_width": pa.array(width, mask=rng.random(n) < null_rate / 2),
        "original_height": pa.array(height),
        "clip_b32_similarity_score": pa.array(b32, mask=rng.random(n) < null_rate),
        "clip_l14_similarity_score": pa.array(l14, mask=rng.random(n) < null_rate),
        "sha256": _hex_strings(rng, n, 32),
    })


def ensure_pool(workdir: Path, rows: int, parts: int, seed: int) -> Path:
    """The pool folder for (rows, parts, seed): generated once, reused while its manifest matches."""
    import pyarrow.parquet as pq

    pool = workdir / f"pool-{rows}x{parts}"
    meta = pool / "metadata"
    manifest_path = pool / "manifest.json"
    want = {"rows": rows, "parts": parts, "seed": seed, "generator": GENERATOR_VERSION}
    names = [f"{i:08d}.parquet" for i in range(parts)]
    if manifest_path.exists():
        try:
            have = json.loads(manifest_path.read_text())
        except ValueError:
            have = None
        if have and {k: have.get(k) for k in want} == want and all((meta / f).exists() for f in names):
            log(f"pool: reusing {pool} ({rows:,} rows in {parts} files)")
            return pool
    if pool.exists():
        shutil.rmtree(pool)
    meta.mkdir(parents=True)
    start = time.perf_counter()
    sizes = [len(a) for a in np.array_split(np.arange(rows), parts)]
    for i, (name, n) in enumerate(zip(names, sizes)):
        table = fast_metadata(n, seed=seed * 1_000_003 + i)
        tmp = meta / f".{name}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, meta / name)
        log(f"pool: wrote {name} ({n:,} rows) [{i + 1}/{parts}, {time.perf_counter() - start:.0f} s]")
    manifest_path.write_text(json.dumps({**want, "seconds": round(time.perf_counter() - start, 1)}, indent=2) + "\n")
    return pool


def warm_page_cache(pool: Path) -> int:
    total = 0
    for p in sorted((pool / "metadata").glob("*.parquet")):
        with open(p, "rb") as f:
            while chunk := f.read(1 << 24):
                total += len(chunk)
    return total


# --------------------------------------------------------------------------------------------------------
# The naive way, as DataComp's baseline script does it (run in a child process: `--naive-child`)
# --------------------------------------------------------------------------------------------------------


def naive_child(pool: str, output: str, fraction: float, column: str, columns: str) -> None:
    import pandas as pd

    phases = {}
    t = time.perf_counter()
    paths = sorted(str(p) for p in (Path(pool) / "metadata").glob("*.parquet"))
    read_columns = None if columns == "all" else ["uid", column]
    df = pd.concat([pd.read_parquet(p, columns=read_columns) for p in paths], ignore_index=True)
    phases["read"] = time.perf_counter() - t

    t = time.perf_counter()
    scores = df[column].values
    n = int(len(df) * fraction)
    threshold = -np.sort(-scores)[n]
    phases["threshold"] = time.perf_counter() - t

    t = time.perf_counter()
    kept = df[df[column] >= threshold]["uid"]
    ints = kept.apply(lambda x: int(x, 16))
    uids = np.array([(i >> 64, i & 0xFFFFFFFFFFFFFFFF) for i in ints], np.dtype("u8,u8"))
    phases["uids"] = time.perf_counter() - t

    t = time.perf_counter()
    uids.sort()
    Path(output).mkdir(parents=True, exist_ok=True)
    np.save(Path(output) / "subset.npy", uids)
    phases["sort+save"] = time.perf_counter() - t
    stats = {"rows_in": len(df), "rank": n, "threshold": float(threshold), "kept": len(uids),
             "phases": {k: round(v, 3) for k, v in phases.items()}}
    (Path(output) / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")


# --------------------------------------------------------------------------------------------------------
# DataComp's own code: its baselines.py entry, run in an environment with DataComp's pins
# --------------------------------------------------------------------------------------------------------

DATACOMP_COMMIT = "4a8df19"  # mlfoundations/datacomp, as benchmarks/datacomp_fidelity.py compares against
#: modules apply_filter.py imports at its top that the clip_score path never calls: with --methods
#: datacomp-stubbed each is an empty module that fails loudly if anything but the import touches it
DATACOMP_STUBS = {
    "torch/__init__.py": "class cuda:  # baselines.py reads these for its --num_gpus default and image_based check\n"
                         "    device_count = staticmethod(lambda: 0)\n    is_available = staticmethod(lambda: False)\n"
                         "class Tensor:  # in apply_filter.py's annotations\n    pass\n"
                         "def no_grad():  # a decorator in apply_filter.py\n    return lambda f: f\n",
    "fasttext/__init__.py": "class FastText:  # apply_filter.py silences fastText's warnings at import\n    eprint = None\n",
    "gcld3/__init__.py": "",
    "nltk/__init__.py": "",
    "nltk/corpus/__init__.py": "wordnet = None\n",
}
_STUB_GUARD = ("\ndef __getattr__(name):\n    raise AttributeError(f\"{__name__}.{name}: stubbed by curate_run_bench (not on "
               "DataComp's clip_score path)\")\n")


def datacomp_checkout(workdir: Path, source: str, commit: str = DATACOMP_COMMIT) -> Path:
    """A folder holding DataComp's baselines.py and baselines/ at `commit`: `source` is such a folder already,
    or a clone (a bare mirror will do) from which `git archive` exports them into WORKDIR/datacomp-<commit>/."""
    src = Path(source)
    if (src / "baselines.py").exists() and (src / "baselines" / "apply_filter.py").exists():
        return src
    dest = workdir / f"datacomp-{commit}"
    if not (dest / "baselines.py").exists():
        import io
        import tarfile

        tar = subprocess.run(["git", f"--git-dir={src}" if (src / "HEAD").exists() else f"--git-dir={src / '.git'}",
                              "archive", "--format=tar", commit, "baselines.py", "baselines"], check=True, capture_output=True).stdout
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            t.extractall(tmp, filter="data")
        os.replace(tmp, dest)
    return dest


def datacomp_stubs(workdir: Path) -> Path:
    """A folder of the DATACOMP_STUBS modules, to put first on DataComp's PYTHONPATH (spawned workers inherit it)."""
    root = workdir / "datacomp-stubs"
    for rel, code in DATACOMP_STUBS.items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(code + _STUB_GUARD)
    return root


def datacomp_command(python: str, checkout: Path, pool: Path, out: Path, fraction: float, arch: str, workers: int) -> list[str]:
    """DataComp's own entry, as its README runs it: baselines.py --name clip_score (apply_filter: a spawn Pool
    of `workers` processes computes the threshold from the score column, then filters each file)."""
    out.mkdir(parents=True, exist_ok=True)
    return [python, str(checkout / "baselines.py"), "--name", "clip_score", "--metadata_dir", str(pool / "metadata"),
            "--save_path", str(out / "subset.npy"), "--arch", arch, "--fraction", str(fraction), "--num_workers", str(workers)]


# --------------------------------------------------------------------------------------------------------
# Measuring a command: wall time, process-tree memory, largest process
# --------------------------------------------------------------------------------------------------------

_RUSAGE_WRAPPER = (
    "import json, resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[2:])\n"
    "ru = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "json.dump({'max_rss_kb': ru.ru_maxrss, 'cpu_s': ru.ru_utime + ru.ru_stime, 'rc': rc}, open(sys.argv[1], 'w'))\n"
    "sys.exit(rc)\n"
)


def measure(cmd: list[str], log_path: Path, env: dict | None = None) -> dict:
    """Run cmd under /usr/bin/time -v (or a getrusage wrapper), sampling its process tree.

    `cpu_s` is the user + system time of the whole tree (every process the command started and waited for):
    on a shared machine it moves less than wall time does."""
    report = log_path.with_suffix(".rusage")
    gnu_time = shutil.which("time", path="/usr/bin:/bin")
    if gnu_time:
        wrapped = [gnu_time, "-v", "-o", str(report), *cmd]
    else:
        wrapped = [sys.executable, "-c", _RUSAGE_WRAPPER, str(report), *cmd]
    with open(log_path, "w") as logf:
        start = time.perf_counter()
        proc = subprocess.Popen(wrapped, stdout=logf, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        sampler = TreeSampler(proc.pid, interval=0.05, pss_every=4, include_root=False)  # the root is /usr/bin/time
        sampler.start()
        rc = proc.wait()
        wall = time.perf_counter() - start
        sampler.stop()
    if gnu_time:
        text = report.read_text()
        field = {line.rsplit(":", 1)[0].strip(): line.rsplit(":", 1)[1].strip() for line in text.splitlines() if ":" in line}
        max_rss_kb = int(field["Maximum resident set size (kbytes)"])
        cpu_s = float(field["User time (seconds)"]) + float(field["System time (seconds)"])
    else:
        usage = json.loads(report.read_text())
        max_rss_kb, cpu_s = usage["max_rss_kb"], usage["cpu_s"]
    if rc != 0:
        raise SystemExit(f"command failed (exit {rc}): {' '.join(cmd)}\n--- {log_path} ---\n{log_path.read_text()[-4000:]}")
    return {
        "wall_s": wall,
        "cpu_s": cpu_s,
        "tree_rss_mb": sampler.peak_rss / 2**20,
        "tree_pss_mb": sampler.peak_pss / 2**20,
        "largest_process_mb": max_rss_kb / 1024,
        "processes": sampler.max_procs,
        "samples": sampler.samples,
        "peak_from": "/usr/bin/time -v" if gnu_time else "getrusage(RUSAGE_CHILDREN)",
    }


# --------------------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        import psutil

        mem = f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    except ImportError:
        mem = "RAM unknown"
    return f"{cpu_model()}, {cores} cores usable ({os.cpu_count()} online), {mem}"


def versions() -> str:
    import pandas
    import pyarrow

    return f"Python {platform.python_version()}, numpy {np.__version__}, pandas {pandas.__version__}, pyarrow {pyarrow.__version__}"


def curate_executable() -> str:
    local = Path(sys.executable).parent / "curate"
    return str(local) if local.exists() else (shutil.which("curate") or "curate")


METHODS = ("datacomp", "datacomp-stubbed", "curate", "naive")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=12_800_000, help="pool rows (DataComp small: 12.8M)")
    ap.add_argument("--parts", type=int, default=32, help="parquet files in the pool")
    ap.add_argument("--workdir", default="benchmarks/_work", help="scratch folder (pools, outputs, logs)")
    ap.add_argument("--methods", default="datacomp,curate",
                    help=f"comma-separated, run in this order each round: {', '.join(METHODS)}; the first is the reference")
    ap.add_argument("--repeat", type=int, default=1, help="rounds (methods alternate); the table shows medians")
    ap.add_argument("--processes", type=int, nargs="+", default=[2],
                    help="curate --processes and DataComp --num_workers; several values run each once per value")
    ap.add_argument("--datacomp-python", default=None, help="python of an environment with DataComp's pins "
                    "(see benchmarks/datacomp_fidelity.py for its set-up)")
    ap.add_argument("--datacomp-repo", default=None, help="DataComp's baselines.py and baselines/ folder, or a clone or "
                    f"bare mirror of mlfoundations/datacomp to export commit {DATACOMP_COMMIT} from")
    ap.add_argument("--fraction", type=float, default=0.3)
    ap.add_argument("--arch", choices=sorted(SCORE_COLUMNS), default="l14")
    ap.add_argument("--naive-columns", choices=["all", "needed"], default="all",
                    help="naive reads every column (default) or only uid and the score (DataComp's clip_score path)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep-outputs", action="store_true", help="keep the subset files (the pool is always kept)")
    ap.add_argument("--naive-child", nargs=2, metavar=("POOL", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    column = SCORE_COLUMNS[args.arch]

    if args.naive_child:
        naive_child(*args.naive_child, args.fraction, column, args.naive_columns)
        return 0

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        ap.error(f"--methods: unknown {', '.join(unknown) or '(none)'}; choose from {', '.join(METHODS)}")
    workdir = Path(args.workdir)
    if not workdir.is_absolute():
        workdir = (REPO / workdir) if not workdir.exists() else workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    checkout = stubs = None
    if any(m.startswith("datacomp") for m in methods):
        if not (args.datacomp_python and args.datacomp_repo):
            ap.error("the datacomp methods need --datacomp-python and --datacomp-repo")
        checkout = datacomp_checkout(workdir, args.datacomp_repo)
        stubs = datacomp_stubs(workdir) if "datacomp-stubbed" in methods else None
    started = dt.datetime.now().astimezone()
    load_before = os.getloadavg()

    t = time.perf_counter()
    pool = ensure_pool(workdir, args.rows, args.parts, args.seed)
    gen_s = time.perf_counter() - t
    pool_bytes = warm_page_cache(pool)
    log(f"pool: {pool_bytes / 2**20:,.0f} MiB on disk, read once to warm the page cache")

    runs_dir = workdir / f"runs-{args.rows}x{args.parts}"
    if runs_dir.exists():
        shutil.rmtree(runs_dir)
    runs_dir.mkdir(parents=True)

    def command(method: str, k: int, out: Path) -> tuple[list[str], dict | None, str]:
        if method.startswith("datacomp"):
            env = dict(os.environ)
            if method == "datacomp-stubbed":
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(stubs), env.get("PYTHONPATH")]))
            cmd = datacomp_command(args.datacomp_python, checkout, pool, out, args.fraction, args.arch, k)
            label = "DataComp baselines.py" + (" (unused imports stubbed)" if method == "datacomp-stubbed" else "")
            return cmd, env, label
        if method == "curate":
            return ([curate_executable(), "run", "--pool", str(pool), "--filter", "clip_score", "--fraction", str(args.fraction),
                     "--arch", args.arch, "--output", str(out), "--processes", str(k)], None, "`curate run`")
        return ([sys.executable, str(Path(__file__).resolve()), "--naive-child", str(pool), str(out), "--fraction",
                 str(args.fraction), "--arch", args.arch, "--naive-columns", args.naive_columns], None,
                f"naive (pandas, {args.naive_columns} columns)")

    variants = [(m, k) for m in methods for k in (args.processes if m != "naive" else [1])]
    runs: dict[tuple[str, int], list[dict]] = {v: [] for v in variants}
    labels = {}
    for r in range(args.repeat):
        for method, k in variants:
            out = runs_dir / f"{method}-p{k}-r{r}"
            cmd, env, labels[(method, k)] = command(method, k, out)
            log(f"round {r + 1}/{args.repeat}: {labels[(method, k)]}, {k} processes ...")
            m = measure(cmd, runs_dir / f"{method}-p{k}-r{r}.log", env=env)
            m["subset"] = out / "subset.npy"
            m["sha256"] = sha256(m["subset"])
            m["kept"] = int(np.load(m["subset"], mmap_mode="r").shape[0])
            runs[(method, k)].append(m)
            log(f"  {m['wall_s']:.1f} s wall, {m['cpu_s']:.1f} s CPU, tree PSS {m['tree_pss_mb']:,.0f} MB, kept {m['kept']:,}")
            if not args.keep_outputs and r:
                m["subset"].unlink()

    ref_hash = runs[variants[0]][0]["sha256"]
    identical = all(m["sha256"] == ref_hash for ms in runs.values() for m in ms)
    med = {v: {key: float(np.median([m[key] for m in ms])) for key in ("wall_s", "cpu_s", "tree_pss_mb", "tree_rss_mb", "largest_process_mb")}
           for v, ms in runs.items()}
    ref = med[variants[0]]
    lines = [
        f"### `curate run --filter clip_score --fraction {args.fraction} --arch {args.arch}` vs {labels[variants[0]]}, "
        f"{args.rows:,} rows",
        "",
        f"- date: {started:%Y-%m-%d %H:%M %Z}; machine: {machine_line()}; load average (1 min) before/after: "
        f"{load_before[0]:.2f} / {os.getloadavg()[0]:.2f}",
        f"- {versions()}" + (f"; DataComp {DATACOMP_COMMIT} under {datacomp_versions(args.datacomp_python)}" if checkout else ""),
        f"- pool: {args.rows:,} rows in {args.parts} parquet files ({pool_bytes / 2**20:,.0f} MiB, page cache warm), "
        f"generated in {gen_s:.0f} s (0 when reused)",
        f"- subset: {runs[variants[0]][0]['kept']:,} uids kept; every subset file of every round byte-identical: "
        f"**{'yes' if identical else 'NO'}** (sha256 {ref_hash[:16]}...)",
        f"- {args.repeat} round(s), methods alternating; each cell is the median over the rounds (wall: min-max in brackets). "
        "*CPU s* is user + system time of the whole process tree; *tree PSS* sums the proportional set size of every "
        "process in the tree (shared pages counted once), *tree RSS* sums RSS, both sampled every 200/50 ms; "
        f"*largest process* is the kernel's peak RSS of the biggest single process ({ms_peak_from(runs)}).",
        "",
        "| rows | method | processes | wall s | CPU s | peak MB (tree PSS) | peak MB (tree RSS) | largest process MB "
        "| ref/this wall | ref/this memory (PSS) | identical |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for v in variants:
        m, ms = med[v], runs[v]
        walls = [x["wall_s"] for x in ms]
        lines.append(
            f"| {args.rows:,} | {labels[v]} | {v[1]} (tree: {max(x['processes'] for x in ms)}) | {m['wall_s']:.1f} "
            f"[{min(walls):.1f}-{max(walls):.1f}] | {m['cpu_s']:.1f} | {m['tree_pss_mb']:,.0f} | {m['tree_rss_mb']:,.0f} "
            f"| {m['largest_process_mb']:,.0f} | {ref['wall_s'] / m['wall_s']:.2f}x | {ref['tree_pss_mb'] / max(m['tree_pss_mb'], 1e-9):.2f}x "
            f"| {'yes' if all(x['sha256'] == ref_hash for x in ms) else 'NO'} |")
    print("\n".join(lines), flush=True)
    (runs_dir / "results.md").write_text("\n".join(lines) + "\n")
    (runs_dir / "results.json").write_text(json.dumps({f"{k[0]}-p{k[1]}": [{a: (str(b) if isinstance(b, Path) else b)
                                                                           for a, b in x.items()} for x in ms]
                                                       for k, ms in runs.items()}, indent=2) + "\n")
    if not args.keep_outputs:
        for ms in runs.values():
            ms[0]["subset"].unlink(missing_ok=True)
    return 0 if identical else 1


def ms_peak_from(runs: dict) -> str:
    return next(iter(runs.values()))[0]["peak_from"]


def datacomp_versions(python: str) -> str:
    code = ("import platform, numpy, pandas, pyarrow; print(f'Python {platform.python_version()}, numpy {numpy.__version__}, "
            "pandas {pandas.__version__}, pyarrow {pyarrow.__version__}')")
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
