"""What every dedup module shares: the methods, the keep rules, the input and output column names, and the
error for missing inputs. It imports nothing of the package, so the package reads top-down: `run` drives
the local engine and dispatches to `dask_job` / `spark_job`, which use `frames` and `semantic`, and all of
them take their names from here."""

from __future__ import annotations

METHODS = ("phash", "sha256", "semantic")
KEEP_RULES = ("first", "highest_clip_score")
SCORE_COLUMNS = ("clip_l14_similarity_score", "clip_b32_similarity_score")
EMBEDDING_COLUMNS = {"l14": "l14_img", "b32": "b32_img"}  # DataComp's own tags; any stage --clip-tag also works


def embedding_column(tag: str) -> str:
    """The pool's image-embedding column for a CLIP tag: DataComp's `l14_img`/`b32_img`, or `<tag>_img` of a
    model `curate stage` embedded with `--clip-tag TAG`."""
    if not tag or not tag.replace("_", "").replace("-", "").isalnum():
        raise DedupError(f"--arch must be a clip tag such as {', '.join(EMBEDDING_COLUMNS)} (or a stage --clip-tag); got {tag!r}")
    return EMBEDDING_COLUMNS.get(tag, f"{tag}_img")


class DedupError(ValueError):
    """Missing inputs (no phash columns, no embeddings, no scores) or bad options."""


def column_names(method: str) -> tuple[str, str]:
    """The output columns of one method: its group id and its keep flag."""
    return f"dedup_{method}_group", f"dedup_{method}_keep"
