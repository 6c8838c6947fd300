"""The downloader's network guards: what a hostile web may not make `curate download` do.

img2dataset fetches with `urllib.request.urlopen(...).read()`. We keep its fetching code and install,
in each download process, an opener that adds what urllib lacks:

* only http(s), on the first request and on every redirect hop;
* no private address: every connection resolves its host here and connects only to public IPs (loopback,
  private, link-local such as cloud metadata at 169.254.169.254, multicast, reserved and shared addresses
  are refused before a byte is sent), so a redirect or a DNS name cannot reach inside;
* a byte bound on every response (Content-Length checked first, then counted while reading);
* a deadline on the whole request, redirects and body included: a socket timeout bounds one read, so a
  server dripping a byte a second would otherwise hold a request for ever. One watchdog thread per process
  shuts the socket of a request that is past its deadline.

Environment proxies are not used: the address check must see the IP the request goes to.
Each refusal raises an error whose message starts with a fixed phrase; `reasons.short_reason` maps it to
`private_address`, `too_large` or `deadline`.
"""

from __future__ import annotations

import functools
import heapq
import http.client
import ipaddress
import itertools
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

ALLOWED_SCHEMES = ("http", "https")
DEFAULT_MAX_BYTES = 50_000_000  # far above any real web image; bounds memory per download thread
READ_CHUNK = 1 << 20

PRIVATE_ADDRESS = "private address refused"
TOO_LARGE = "response too large"
DEADLINE = "request deadline exceeded"
SCHEME_REDIRECT = "redirect to a non-http(s) URL refused"


@functools.lru_cache(maxsize=4096)
def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone
    return ip.ipv4_mapped if ip.version == 6 and ip.ipv4_mapped is not None else ip


@dataclass(frozen=True)
class FetchLimits:
    """What one request may cost. `deadline` is seconds for the whole request (None: no deadline)."""

    max_bytes: int = DEFAULT_MAX_BYTES
    deadline: float | None = 30.0
    allow_private: bool = False
    allow_networks: tuple[str, ...] = ()  # CIDRs allowed although not public (an internal mirror, a test server)

    @functools.cached_property
    def _networks(self) -> tuple:
        return tuple(ipaddress.ip_network(net, strict=False) for net in self.allow_networks)

    def allows(self, address: str) -> bool:
        """May we connect to `address` (an IP as getaddrinfo gives it)?"""
        if self.allow_private:
            return True
        ip = _ip(address)
        return is_public(ip) or any(ip in net for net in self._networks)


class GuardError(urllib.error.URLError):
    """A request the guard stopped; the message says why (it becomes the sample's error message)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@functools.lru_cache(maxsize=4096)
def is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for an address on the public internet (not loopback, private, link-local, multicast, reserved)."""
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _checked_addresses(host: str, port: int, limits: FetchLimits) -> list[tuple]:
    """getaddrinfo's answers for host that we may connect to; raises GuardError when none may be."""
    infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    if limits.allow_private:
        return infos
    allowed = [info for info in infos if limits.allows(info[4][0])]
    if not allowed:
        ips = ", ".join(sorted({info[4][0] for info in infos}))
        raise GuardError(f"{PRIVATE_ADDRESS}: {host} is {ips}")
    return allowed


def _connector(limits: FetchLimits):
    """A replacement for socket.create_connection that connects only to the addresses we allow."""

    def create_connection(address, timeout=socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None, **_):
        host, port = address
        error: OSError | None = None
        for family, socktype, proto, _name, sockaddr in _checked_addresses(host, port, limits):
            sock = socket.socket(family, socktype, proto)
            try:
                if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                    sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)
                return sock
            except OSError as e:
                error = e
                sock.close()
        raise error or OSError(f"cannot connect to {host}:{port}")

    return create_connection


class _Watchdog:
    """One thread per process that shuts the sockets of requests past their deadline."""

    def __init__(self):
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, "_Request"]] = []
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, request: "_Request") -> None:
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="download-deadlines", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (request.deadline, next(self._ids), request))
            if self._heap[0][2] is request:  # due before all others: the thread must wait less
                self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][2].finished:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                due, _, request = self._heap[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                request.expire()


_WATCHDOG = _Watchdog()


class _Request:
    """The deadline of one request (all its hops) and the sockets it opened."""

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.expired = False
        self.finished = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()

    def add_socket(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.append(sock)
            if self.expired:
                _shut(sock)

    def expire(self) -> None:
        with self._lock:
            if self.finished:
                return
            self.expired = True
            for sock in self._socks:
                _shut(sock)

    def finish(self) -> None:
        with self._lock:
            self.finished = True
            self._socks.clear()


def _shut(sock: socket.socket) -> None:
    """Wake whatever thread is blocked reading `sock` (the plain socket call, so TLS state is left alone)."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


def _connection_class(base: type, limits: FetchLimits):
    create_connection = _connector(limits)

    class GuardedConnection(base):
        """An http.client connection that connects only where we allow and reports its socket to the watch."""

        def __init__(self, *args, watch: "_Request | None" = None, **kwargs):
            super().__init__(*args, **kwargs)
            self._create_connection = create_connection
            self._watch = watch

        def connect(self):
            super().connect()
            if self._watch is not None:
                self._watch.add_socket(self.sock)

    return GuardedConnection


class _BoundedResponse:
    """The response urlopen returns, with `read` bounded in bytes and by the request's deadline."""

    def __init__(self, response, limits: FetchLimits, watch: _Request | None):
        self._response = response
        self._limits = limits
        self._watch = watch

    def __getattr__(self, name):
        return getattr(self._response, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if self._watch is not None:
            self._watch.finish()
        self._response.close()

    def read(self, amt: int | None = None) -> bytes:
        limit = self._limits.max_bytes
        length = self._response.headers.get("Content-Length")
        declared = int(length) if length is not None and length.strip().isdigit() else None
        if declared is not None and declared > limit:
            raise GuardError(f"{TOO_LARGE}: Content-Length {declared} > {limit} bytes")
        if declared is not None and (amt is None or amt < 0) and not self._response.chunked:
            # http.client reads exactly the declared length, already bounded above
            try:
                data = self._response.read()
            except Exception as e:
                self._raise_if_expired()
                raise e
            self._raise_if_expired()
            return data
        want = limit + 1 if amt is None or amt < 0 else min(amt, limit + 1)
        chunks: list[bytes] = []
        got = 0
        try:
            while got < want:
                chunk = self._response.read(min(READ_CHUNK, want - got))
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
        except Exception as e:
            self._raise_if_expired()
            raise e
        self._raise_if_expired()
        if got > limit:
            raise GuardError(f"{TOO_LARGE}: more than {limit} bytes")
        return b"".join(chunks)

    def _raise_if_expired(self) -> None:
        if self._watch is not None and self._watch.expired:
            raise GuardError(f"{DEADLINE}: {self._limits.deadline:g} s")


def _handlers(limits: FetchLimits) -> list:
    http_conn = _connection_class(http.client.HTTPConnection, limits)
    https_conn = _connection_class(http.client.HTTPSConnection, limits)

    def factory(conn_class, req):
        watch = getattr(req, "_curate_watch", None)
        return lambda host, **kwargs: conn_class(host, watch=watch, **kwargs)

    class GuardedHTTPHandler(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(factory(http_conn, req), req)

    class GuardedHTTPSHandler(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(factory(https_conn, req), req, context=self._context)

    class HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
        """Follow redirects only to http(s) (urllib follows one to ftp://), keeping the request's deadline."""

        def redirect_request(self, req, fp, code, msg, headers, newurl):
            if urllib.parse.urlsplit(newurl).scheme.lower() not in ALLOWED_SCHEMES:
                raise urllib.error.HTTPError(newurl, code, f"{SCHEME_REDIRECT}: {newurl}", headers, fp)
            new = super().redirect_request(req, fp, code, msg, headers, newurl)
            if new is not None:
                new._curate_watch = getattr(req, "_curate_watch", None)
            return new

    class BoundedResponses(urllib.request.BaseHandler):
        # before the error processor: a redirect's body is read (by urllib) and must be bounded too
        handler_order = 500

        def http_response(self, req, response):
            if isinstance(response, _BoundedResponse):  # already wrapped by the redirect's own open
                return response
            return _BoundedResponse(response, limits, getattr(req, "_curate_watch", None))

        https_response = http_response

    return [GuardedHTTPHandler(), GuardedHTTPSHandler(), HttpOnlyRedirects(), BoundedResponses()]


class _GuardedOpener(urllib.request.OpenerDirector):
    """Starts each request's deadline at its first hop; a request stopped by the deadline says so."""

    def __init__(self, limits: FetchLimits):
        super().__init__()
        self.limits = limits

    def open(self, fullurl, data=None, timeout=socket._GLOBAL_DEFAULT_TIMEOUT):
        req = fullurl if isinstance(fullurl, urllib.request.Request) else urllib.request.Request(fullurl, data)
        watch = getattr(req, "_curate_watch", None)
        if watch is None and self.limits.deadline is not None:
            watch = req._curate_watch = _Request(time.monotonic() + self.limits.deadline)
            _WATCHDOG.watch(watch)
        try:
            return super().open(req, data, timeout)
        except Exception:
            if watch is not None:
                watch.finish()
                if watch.expired:
                    raise GuardError(f"{DEADLINE}: {self.limits.deadline:g} s") from None
            raise


def build_opener(limits: FetchLimits) -> urllib.request.OpenerDirector:
    """An opener that fetches under `limits`; urllib's own handlers for other schemes are left out."""
    opener = _GuardedOpener(limits)
    for handler in [urllib.request.UnknownHandler(), urllib.request.HTTPDefaultErrorHandler(),
                    urllib.request.HTTPErrorProcessor(), *_handlers(limits)]:
        opener.add_handler(handler)
    return opener


def install(limits: FetchLimits) -> None:
    """Make `urllib.request.urlopen` (what img2dataset calls) fetch under `limits` in this process."""
    urllib.request.install_opener(build_opener(limits))
