"""The downloader's network guard on its own: which addresses are public, and what each guard stops, against
real sockets on loopback (a TCP listener that records every connection it accepts)."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
import urllib.request

import pytest

from curate.download import guard
from curate.download.reasons import short_reason


@pytest.mark.parametrize("address, public", [
    ("8.8.8.8", True), ("2606:4700:4700::1111", True),
    ("127.0.0.1", False), ("127.8.9.10", False), ("::1", False), ("0.0.0.0", False),
    ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False), ("100.64.0.1", False),
    ("169.254.169.254", False), ("fe80::1", False), ("fc00::1", False),
    ("224.0.0.1", False), ("239.255.255.250", False), ("ff02::1", False),
    ("255.255.255.255", False), ("240.0.0.1", False), ("192.0.2.1", False),
    ("::ffff:127.0.0.1", False), ("::ffff:169.254.169.254", False), ("::ffff:8.8.8.8", True),
])
def test_which_addresses_are_public(address, public):
    assert guard.is_public(ipaddress.ip_address(address)) is public


class Listener:
    """A loopback TCP server that answers each connection with `reply(conn)` and counts connections."""

    def __init__(self, reply):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.reply = reply
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn):
        try:
            self.reply(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.sock.close()


def fetch(url: str, limits: guard.FetchLimits, timeout: float = 2.0) -> tuple[str, float]:
    """What img2dataset does with a URL (urlopen + read) under the guard: 'ok:<bytes>' or the error's reason."""
    opener = guard.build_opener(limits)
    start = time.monotonic()
    try:
        with opener.open(url, timeout=timeout) as r:
            return f"ok:{len(r.read())}", time.monotonic() - start
    except Exception as e:  # the error message is what img2dataset records
        return short_reason(str(e)), time.monotonic() - start


def ok_body(conn):
    conn.recv(65536)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "0x7f000001", "2130706433", "127.1"])
def test_loopback_in_any_spelling_is_refused_before_connecting(host):
    srv = Listener(ok_body)
    try:
        for scheme in ("http", "https"):
            reason, _ = fetch(f"{scheme}://{host}:{srv.port}/x.jpg", guard.FetchLimits())
            assert reason == "private_address"
        assert srv.accepted == 0
        assert fetch(f"http://{host}:{srv.port}/x.jpg", guard.FetchLimits(allow_private=True))[0] == "ok:5"
        assert fetch(f"http://{host}:{srv.port}/x.jpg", guard.FetchLimits(allow_networks=("127.0.0.0/8",)))[0] == "ok:5"
    finally:
        srv.close()


def test_a_redirect_hop_to_a_refused_address_is_never_connected():
    inner = Listener(ok_body)  # stands for the metadata service: must never be reached
    outer = Listener(lambda c: (c.recv(65536), c.sendall(
        f"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.2:{inner.port}/latest\r\nContent-Length: 0\r\n\r\n".encode())))
    try:
        reason, _ = fetch(f"http://127.0.0.1:{outer.port}/", guard.FetchLimits(allow_networks=("127.0.0.1/32",)))
        assert reason == "private_address" and outer.accepted == 1 and inner.accepted == 0
    finally:
        inner.close()
        outer.close()


def test_bodies_are_bounded_in_bytes_declared_or_not():
    def endless(conn):
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        while True:
            conn.sendall(b"\0" * 65536)

    def declared(conn):
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n" + b"\0" * 1000)

    def redirect_with_endless_body(conn):  # urllib reads a redirect's body itself
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/\r\nConnection: close\r\n\r\n")
        while True:
            conn.sendall(b"\0" * 65536)

    limits = guard.FetchLimits(max_bytes=1_000_000, allow_private=True)
    for reply in (endless, declared, redirect_with_endless_body):
        srv = Listener(reply)
        try:
            assert fetch(f"http://127.0.0.1:{srv.port}/", limits)[0] == "too_large", reply.__name__
        finally:
            srv.close()
    srv = Listener(ok_body)
    try:
        assert fetch(f"http://127.0.0.1:{srv.port}/", guard.FetchLimits(max_bytes=5, allow_private=True))[0] == "ok:5"
        assert fetch(f"http://127.0.0.1:{srv.port}/", guard.FetchLimits(max_bytes=4, allow_private=True))[0] == "too_large"
    finally:
        srv.close()


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_a_drip_is_stopped_by_the_whole_request_deadline(phase):
    def drip(conn):
        conn.recv(65536)
        data = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100 if phase == "headers" else None
        if data is None:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
            data = b"x" * 100
        for byte in data:
            conn.sendall(bytes([byte]))
            time.sleep(0.3)  # each read is well inside the 2 s socket timeout

    srv = Listener(drip)
    try:
        reason, took = fetch(f"http://127.0.0.1:{srv.port}/", guard.FetchLimits(deadline=1.5, allow_private=True))
        assert reason == "deadline" and took < 4
    finally:
        srv.close()


def test_installed_opener_is_what_urlopen_uses():
    srv = Listener(ok_body)
    try:
        guard.install(guard.FetchLimits())
        with pytest.raises(Exception, match=guard.PRIVATE_ADDRESS):
            urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/", timeout=2)
        assert srv.accepted == 0
    finally:
        urllib.request.install_opener(None)
        srv.close()
