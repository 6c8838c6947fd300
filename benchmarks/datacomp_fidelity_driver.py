"""Runs DataComp's own baseline functions (baselines/apply_filter.py) on a metadata folder; one subset file each.

Run by benchmarks/datacomp_fidelity.py with the Python of a separate environment holding DataComp's pins (never
this project's .venv). It calls the functions DataComp's `apply_filter(args)` dispatches to, then sorts and saves
as it does. What is changed, and only that:
- where DataComp's `download()` finds its assets (no network here): each asset is given by path;
- with `cpu: true`, `get_centroid_ids_gpu` runs its same einsum and argmax on the CPU (no GPU here).

    python datacomp_fidelity_driver.py CONFIG.json
    CONFIG: {"repo", "metadata", "out", "workers", "baselines": [...], "assets": {name: path}, "scale", "cpu"}
"""

import json
import sys
import time

import numpy as np


def main() -> int:
    cfg = json.load(open(sys.argv[1]))
    sys.path.insert(0, cfg["repo"])
    import torch

    import baselines.apply_filter as af

    metadata, workers, assets = cfg["metadata"], cfg["workers"], cfg["assets"]
    af.download = lambda name, root=None: assets[name]  # forked workers inherit it (DataComp's Pool, default fork)
    if cfg.get("cpu"):
        torch.set_num_threads(1)  # DataComp's workers are forked: an OpenMP pool started before the fork would hang them

        def get_centroid_ids_cpu(features, centroids, batch_size, device):
            labels = torch.zeros(features.shape[0], dtype=torch.long)
            for i in range(0, features.shape[0], batch_size):
                similarity = torch.einsum("ik, jk -> ij", features[i : i + batch_size, :].float(), centroids)
                labels[i : i + batch_size] = torch.argmax(similarity, dim=1).long()
            return labels

        af.get_centroid_ids_gpu = get_centroid_ids_cpu
    scale = cfg.get("scale", "small")
    runs = {
        "no_filter": lambda: af.load_uids(metadata, workers),
        "basic": lambda: af.load_uids_with_basic_filter(metadata, workers),
        "text_based": lambda: af.load_uids_with_text_entity(metadata, workers),
        "laion2b": lambda: af.load_uids_with_clip_score(metadata, "b32", 0.28, None, workers, gcld3_en_filter=True),
        "clip_score_b32_threshold_0.26": lambda: af.load_uids_with_clip_score(metadata, "b32", 0.26, None, workers),
        "clip_score_l14_threshold_0.26": lambda: af.load_uids_with_clip_score(metadata, "l14", 0.26, None, workers),
        "clip_score_l14_fraction_0.3": lambda: af.load_uids_with_clip_score(metadata, "l14", None, 0.3, workers),
        "clip_score_b32_fraction_0.1": lambda: af.load_uids_with_clip_score(metadata, "b32", None, 0.1, workers),
        "image_based": lambda: af.load_uids_with_image_filter(metadata, scale, 1, 1024),
        "image_based_clip_score_l14_fraction_0.3": lambda: af.load_uids_with_image_filter(
            metadata, scale, 1, 1024, arch="l14", fraction=0.3, num_workers=workers),
    }
    if cfg.get("tokens"):  # fastText 0.9.2's own tokenizer over every caption, for image_based's word count
        import glob

        import fasttext
        import pandas as pd

        texts = pd.concat([pd.read_parquet(p, columns=["text"]) for p in sorted(glob.glob(f"{metadata}/*.parquet"))]).text
        np.save(f"{cfg['out']}/fasttext_tokens.npy", texts.apply(lambda x: len(fasttext.tokenize(x))).to_numpy())
    seconds = {}
    for name in cfg["baselines"]:
        t = time.perf_counter()
        uids = runs[name]()
        uids.sort()  # as apply_filter
        np.save(f"{cfg['out']}/{name}.npy", uids)
        seconds[name] = round(time.perf_counter() - t, 2)
    print(json.dumps(seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
