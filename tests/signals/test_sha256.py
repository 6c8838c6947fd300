"""sha256 of the raw bytes: the standard test vectors, and bytes not pixels."""

from __future__ import annotations

from curate.signals.sha256 import sha256_hex


def test_standard_vectors():
    # FIPS 180-2 examples.
    assert sha256_hex(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_accepts_memoryview_and_differs_on_one_byte():
    data = bytearray(b"\xff\xd8\xff" + bytes(range(256)))
    assert sha256_hex(memoryview(data)) == sha256_hex(bytes(data))
    other = bytearray(data)
    other[-1] ^= 1
    assert sha256_hex(other) != sha256_hex(data)
