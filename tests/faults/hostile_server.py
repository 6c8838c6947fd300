"""A loopback web server that does what a hostile or broken web does, for the download tests.

Run as its own process (`python -m tests.faults.hostile_server ROOT LOG`), so the memory the tests measure
is the downloader's alone; it prints its port, then serves until killed. Every request path is appended
to LOG, so a test can tell what was requested at all.

Routes:
  /img/NAME            the file ROOT/NAME (404 when missing)
  /bomb.png            a real PNG of 30000 x 30000 grey pixels (900 MB decoded) in under 1 MB
  /endless             200 with no length and a body that never ends
  /drip                200 with a 1000-byte length, sent one byte a second
  /huge                200 declaring a Content-Length of 10 GB (and sending a little)
  /redirect/URL        302 to http://URL (e.g. /redirect/169.254.169.254/latest/meta-data/)
  /flaky/N/NAME        503 for the first N requests of this path, then ROOT/NAME
  /slow/NAME           ROOT/NAME after 50 ms (so a kill lands mid-download)
"""

from __future__ import annotations

import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

BOMB_SIDE = 30000


def png_bomb(side: int = BOMB_SIDE) -> bytes:
    """A valid 8-bit grey PNG of side x side zero pixels: ~870 KB that decode to side^2 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte 0 + zero pixels
    body = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def make_handler(root: Path, log: Path):
    lock = threading.Lock()
    seen: Counter = Counter()
    bomb: list[bytes] = []  # made on first request (3 s of zlib)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # noqa: N802
            with lock:
                seen[self.path] += 1
                count = seen[self.path]
                with open(log, "a") as f:
                    f.write(self.path + "\n")
            try:
                self._route(count)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _send(self, code: int, body: bytes, length: int | None = None):
            self.send_response(code)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def _file(self, name: str):
            f = root / name
            if "/" in name or not f.is_file():
                self._send(404, b"not found")
            else:
                self._send(200, f.read_bytes())

        def _route(self, count: int):
            path = self.path
            if path.startswith("/img/"):
                self._file(path[len("/img/"):])
            elif path == "/bomb.png":
                with lock:
                    if not bomb:
                        bomb.append(png_bomb())
                self._send(200, bomb[0])
            elif path == "/endless":
                self.send_response(200)
                self.send_header("Connection", "close")
                self.end_headers()
                block = b"\0" * 65536
                while True:
                    self.wfile.write(block)
            elif path == "/drip":
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.send_header("Connection", "close")
                self.end_headers()
                for _ in range(1000):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(1)
            elif path == "/huge":
                self._send(200, b"\0" * 1000, length=10 * 10**9)
            elif path.startswith("/redirect/"):
                self.send_response(302)
                self.send_header("Location", "http://" + path[len("/redirect/"):])
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif path.startswith("/slow/"):
                time.sleep(0.05)
                self._file(path[len("/slow/"):])
            elif path.startswith("/flaky/"):
                _, _, n, name = path.split("/", 3)
                if count <= int(n):
                    self._send(503, b"busy")
                else:
                    self._file(name)
            else:
                self._send(404, b"not found")

        def log_message(self, *args):
            pass

    return Handler


class HostileServer:
    """The server in its own process: `.base` is its URL, `.requested()` the paths asked for so far."""

    def __init__(self, root: Path, log: Path):
        self.root, self.log = root, log
        log.touch()
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.faults.hostile_server", str(root), str(log)],
                                     stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
        self.port = int(self.proc.stdout.readline())
        self.base = f"http://127.0.0.1:{self.port}"

    def requested(self) -> list[str]:
        return self.log.read_text().splitlines()

    def close(self):
        self.proc.kill()
        self.proc.wait()

    def __enter__(self) -> "HostileServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def serve(root: str, log: str) -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(Path(root), Path(log)))
    httpd.daemon_threads = True
    print(httpd.server_address[1], flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
