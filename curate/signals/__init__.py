"""Per-sample signals: one decode per image (decode), then pHash (phash, resize) and sha256."""
