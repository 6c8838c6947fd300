"""sha256 of the raw image bytes: exact duplicates, and DataComp's `sha256` column."""

from __future__ import annotations

import hashlib


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    """Lowercase hex sha256 of the bytes as stored in the shard (before any decode)."""
    return hashlib.sha256(data).hexdigest()
