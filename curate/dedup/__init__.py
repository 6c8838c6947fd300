"""Deduplication: pHash near-duplicates (exact multi-index hashing), exact byte duplicates (sha256),
semantic duplicates (SemDeDup-style, CLIP embeddings), and the pool-level runs that write
`POOL/columns/dedup_<method>/`. Decontamination against evaluation sets lives in `curate.decontaminate`.
"""
