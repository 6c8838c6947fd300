"""`curate embed-evals`: the eval images' CLIP embeddings that `curate decontaminate --eval-embeddings` reads.

Cosine decontamination compares pool and eval images in one embedding space, so the eval side must be
embedded exactly as `curate stage` embeds the pool: the same model (architecture and weights), the same
decode (`curate.signals.decode`, bounded pixels, first frame, RGB) and open_clip's evaluation transform for
that model, L2-normalised float32 features. An eval image whose bytes equal a pool image's gets the pool's
embedding (to float rounding), so cosine 1.

The eval images are read as `curate decontaminate` reads them (`wds_<task>_test/test/{i}.tar`, keys from
the tar member names), and the npz carries `eval_set` and `eval_key` per row so a match names the eval image.
Both the eval folder and the npz may be in object storage (s3:// URLs, through curate.storage).
It also records the model and weights it used (`model`, `pretrained`, `clip_tag`), so a reader can tell
which pool embeddings it belongs with.
"""

from __future__ import annotations

import os

import numpy as np

from curate import storage
from curate.atomic import atomic_open
from curate.decontaminate import eval_sets, iter_eval_images
from curate.signals.clip import ClipSpec


def embed_eval_sets(eval_dir: str | os.PathLike, spec: ClipSpec, output: str | os.PathLike, device: str = "cpu",
                    precision: str = "fp32", batch_size: int = 64, progress=None) -> dict:
    """Embed every image of every eval set under `eval_dir` with `spec`; write the npz whole. Returns counts."""
    import torch

    from curate.signals.clip import get_transform, launch, load_clip, no_random_init_warning, to_numpy
    from curate.signals.decode import convert, decode_image

    found = eval_sets(eval_dir)  # a missing eval folder is named before the model loads
    with no_random_init_warning():
        loaded = load_clip(spec, device=device, precision=precision)
    transform = get_transform(loaded.preprocess_cfg)
    sets, keys, chunks = [], [], []
    failed: dict[str, int] = {}
    batch: list = []

    def flush() -> None:
        if batch:
            img, _ = launch(loaded, torch.stack(batch), None)
            chunks.append(to_numpy(img).astype(np.float32))
            batch.clear()

    for name, folder in found:
        for _, key, data in iter_eval_images(folder):
            dec = decode_image(data, forms=())
            if not dec.ok:
                failed[name] = failed.get(name, 0) + 1
                continue
            try:
                batch.append(transform(convert(dec.image, "RGB")))
            except Exception:  # a mode or size the transform cannot take: counted, as in stage
                failed[name] = failed.get(name, 0) + 1
                continue
            sets.append(name)
            keys.append(key)
            if len(batch) >= batch_size:
                flush()
            if progress is not None:
                progress(1)
    flush()
    width = loaded.embed_dim or 0
    embeddings = np.concatenate(chunks) if chunks else np.zeros((0, width), np.float32)
    output = storage.path(output)  # a file, or an object (written locally, then uploaded whole)
    with atomic_open(output) as f:  # a file object: np.savez would add ".npz" to a temporary name
        np.savez(f, embeddings=embeddings, eval_set=np.array(sets, dtype=str), eval_key=np.array(keys, dtype=str),
                 model=np.array(spec.model), pretrained=np.array(str(spec.pretrained)), clip_tag=np.array(spec.column_tag))
    return {"eval_images": len(sets), "eval_images_failed": failed, "width": int(embeddings.shape[1]),
            "clip_tag": spec.column_tag, "output": str(output)}
