"""Per-sample signals computed in one pass over the shards (decode once, then pHash, sha256, text, ...)."""
