"""Checks made before work goes to a real cluster, so a mistake is one line in seconds, not a hang.

A scheduler or master address that does not answer is found by a plain TCP connect (Dask's client and
Spark's standalone client otherwise retry for 30 s to minutes). Once connected, one small task on each
worker stats the paths the command reads and checks it may write its output: a worker started in another
folder, or on a machine without the shared filesystem, otherwise fails deep inside a task with a
"Failed to open local file" traceback, or silently writes its results somewhere the driver never looks.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from curate.engines.base import EngineTaskError

CONNECT_TIMEOUT_S = 5.0  # a TCP connect, then the client handshake: each bounded by this
DEFAULT_WAIT_S = 30.0  # how long a reachable cluster may take to offer its first worker or executor


class ClusterError(EngineTaskError):
    """The cluster cannot run this command: unreachable, without workers, or blind to its files."""


def host_ports(address: str) -> list[tuple[str, int]]:
    """The (host, port) pairs of a `tcp://h:p`, `spark://h1:p1,h2:p2` or `h:p` address; [] when it names none."""
    rest = address.split("://", 1)[1] if "://" in address else address
    pairs = []
    for part in rest.split(","):
        try:
            parsed = urlsplit(f"//{part.strip()}")
            if parsed.hostname and parsed.port:
                pairs.append((parsed.hostname, parsed.port))
        except ValueError:  # a malformed port
            continue
    return pairs


def require_reachable(address: str, what: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise ClusterError unless a TCP connection to one of the address's host:port pairs opens in `timeout`
    (an address without host:port, such as inproc://, is left to the engine's own client)."""
    pairs = host_ports(address)
    reasons = []
    for host, port in pairs:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return
        except OSError as e:
            reasons.append(f"{host}:{port}: {_reason(e)}")
    if reasons:
        raise ClusterError(f"cannot reach {what} {address}: {'; '.join(reasons)}")


def one_line(e: BaseException) -> str:
    """An exception's message on one line (a JVM's or a client's may span many)."""
    return " ".join(str(e).split()) or type(e).__name__


def _reason(e: OSError) -> str:
    if isinstance(e, socket.timeout):
        return "no answer (timed out)"
    return e.strerror or str(e) or type(e).__name__


@dataclass(frozen=True)
class SharedPaths:
    """What every worker must see: paths it reads, and outputs it must be able to create or write.

    Keys are the labels the user knows them by (`--pool`); values are absolute paths."""

    read: dict[str, str] = field(default_factory=dict)
    write: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.read or self.write)


def worker_view(paths: SharedPaths) -> tuple[str, list[str]]:
    """Run on a worker: (its host name, a problem per path it cannot see or write). Writes nothing."""
    problems = []
    for label, path in paths.read.items():
        try:
            os.stat(path)
        except OSError as e:
            problems.append(f"cannot see {label} {path} ({_reason(e)})")
    for label, path in paths.write.items():
        existing = path
        while not os.path.exists(existing) and os.path.dirname(existing) != existing:
            existing = os.path.dirname(existing)
        if not os.access(existing, os.W_OK):
            where = "" if existing == path else f" (its nearest existing folder {existing})"
            problems.append(f"cannot write {label} {path}{where}: permission denied or a read-only filesystem")
    return socket.gethostname(), problems


def raise_if_blind(views: dict[str, tuple[str, list[str]]]) -> None:
    """Raise one ClusterError line naming the first worker (label: `Dask worker tcp://...`) and host that
    cannot see or write a path; `views` maps each worker's label to what `worker_view` returned there."""
    blind = [(label, host, problems) for label, (host, problems) in sorted(views.items()) if problems]
    if not blind:
        return
    label, host, problems = blind[0]
    more = f" and {len(problems) - 1} more path(s)" if len(problems) > 1 else ""
    others = f" (so do {len(blind) - 1} other workers)" if len(blind) > 1 else ""
    raise ClusterError(f"{label} on host {host} {problems[0]}{more}{others}: every worker must see the pool and "
                       f"outputs at the same absolute paths as this machine (a shared filesystem)")
