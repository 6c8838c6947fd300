"""DataComp uids: 32 hex characters (128 bits), stored in subset files as (upper 64 bits, lower 64 bits).

Vectorised conversion, because a pool holds billions of uids and DataComp's own `int(uid, 16)` per row
is the slowest step of its baseline script.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

UID_DTYPE = np.dtype("u8,u8")
UID_HEX_CHARS = 32

_NIBBLE = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _NIBBLE[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _NIBBLE[_c] = 10 + _i


class UidError(ValueError):
    """A uid that is not 32 hex characters."""


def uids_to_pairs(uids) -> np.ndarray:
    """Convert uid hex strings (list, numpy array or arrow array) to a `u8,u8` structured array.

    Raises UidError naming the first bad uid; `valid_uid_mask` finds them all without raising.
    """
    mask, nibbles = _nibbles(uids)
    if not mask.all():
        bad = _as_arrow(uids)[int(np.flatnonzero(~mask)[0])].as_py()
        raise UidError(f"uid {bad!r} is not {UID_HEX_CHARS} hex characters")
    return _pack(nibbles)


def parse_uids(uids) -> tuple[np.ndarray, np.ndarray]:
    """(valid mask, `u8,u8` pairs for every row) from one parse; invalid rows hold (0, 0)."""
    mask, nibbles = _nibbles(uids)
    pairs = _pack(nibbles)
    pairs[~mask] = (0, 0)
    return mask, pairs


def valid_uid_mask(uids) -> np.ndarray:
    """True where the uid is exactly 32 hex characters."""
    return _nibbles(uids)[0]


def pairs_to_hex(pairs: np.ndarray) -> list[str]:
    """The inverse of `uids_to_pairs`: lowercase 32-character hex strings."""
    return [f"{int(hi):016x}{int(lo):016x}" for hi, lo in zip(pairs["f0"], pairs["f1"])]


def hex_to_pair(uid: str) -> tuple[int, int]:
    """One uid to its (upper, lower) pair, as DataComp's resharder computes it."""
    if len(uid) != UID_HEX_CHARS:
        raise UidError(f"uid {uid!r} is not {UID_HEX_CHARS} hex characters")
    try:
        return divmod(int(uid, 16), 2**64)
    except ValueError as e:
        raise UidError(f"uid {uid!r} is not hexadecimal") from e


def _as_arrow(uids) -> pa.Array:
    if isinstance(uids, pa.ChunkedArray):
        uids = uids.combine_chunks()
    if not isinstance(uids, pa.Array):
        uids = pa.array(list(uids) if not isinstance(uids, np.ndarray) else uids.tolist(), type=pa.string())
    if pa.types.is_large_string(uids.type):
        uids = uids.cast(pa.string())
    return uids


def _nibbles(uids) -> tuple[np.ndarray, np.ndarray]:
    arr = _as_arrow(uids)
    n = len(arr)
    if n == 0:
        return np.ones(0, bool), np.zeros((0, UID_HEX_CHARS), np.uint8)
    length_ok = np.asarray(pc.fill_null(pc.equal(pc.binary_length(arr), UID_HEX_CHARS), False))
    # Replace bad rows by a valid placeholder so the fixed-width view below is well formed.
    placeholder = "0" * UID_HEX_CHARS
    if not length_ok.all():
        arr = pc.if_else(pa.array(length_ok), arr, placeholder)
    fixed = arr.cast(pa.binary()).cast(pa.binary(UID_HEX_CHARS))
    raw = np.frombuffer(fixed.buffers()[1], dtype=np.uint8, count=n * UID_HEX_CHARS, offset=fixed.offset * UID_HEX_CHARS)
    nib = _NIBBLE[raw.reshape(n, UID_HEX_CHARS)]
    # Invalid characters map to 255: test 8 nibbles at a time for a high bit.
    bad = (nib.view("<u8") & np.uint64(0x8080808080808080)).any(axis=1)
    mask = length_ok & ~bad
    return mask, nib


def _pack(nib: np.ndarray) -> np.ndarray:
    n = nib.shape[0]
    packed = np.ascontiguousarray((nib[:, 0::2] << 4) | nib[:, 1::2])  # 16 big-endian bytes per uid
    words = packed.view(">u8").reshape(n, 2)
    out = np.empty(n, dtype=UID_DTYPE)
    out["f0"] = words[:, 0]
    out["f1"] = words[:, 1]
    return out
