"""Keep freed memory in the process heap (glibc), for processes that run many same-sized tasks.

A partition task allocates and frees some 100 MB of numpy arrays. glibc hands large blocks back to the
kernel on free (mmap'd blocks, and the heap's top past 128 KB), so the next task faults the same pages in
again: a third of a `curate run` worker's CPU time went to page faults. Raising both thresholds keeps
those pages for reuse (at most KEEP_BYTES of them); the peak is unchanged, as they were in use at the peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
KEEP_BYTES = 64 << 20  # blocks up to this size come from the heap, which keeps up to this much free
_done = False


def keep_freed_memory() -> None:
    """Once per process: glibc keeps up to KEEP_BYTES of freed memory for reuse (a no-op elsewhere)."""
    global _done
    if _done:
        return
    _done = True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return
    mallopt(_M_MMAP_THRESHOLD, KEEP_BYTES)
    mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES)
