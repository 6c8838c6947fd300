"""A loopback HTTP server for generated images: the demo's and the download tests' stand-in for the web.

Serves files from a folder by name under /img/, answers 404 for the rest, and /redirect/<scheme>/...
with a 302 to another scheme, so the downloader's refusal of non-http(s) redirects can be shown.
Binds 127.0.0.1 only.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote


def _handler(root: Path):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            path = unquote(self.path.split("?", 1)[0])
            if path.startswith("/redirect/"):
                target = path[len("/redirect/"):]
                self.send_response(302)
                self.send_header("Location", target.replace("/", "://", 1))
                self.end_headers()
                return
            if not path.startswith("/img/"):
                self.send_error(404)
                return
            name = path[len("/img/"):]
            if "/" in name or name.startswith("."):
                self.send_error(404)
                return
            f = root / name
            if not f.is_file():
                self.send_error(404)
                return
            data = f.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    return Handler


class LoopbackImageServer:
    """`with LoopbackImageServer(folder) as srv: srv.url("x.jpg")` serves folder/x.jpg on 127.0.0.1."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.root))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, name: str) -> str:
        return f"{self.base}/img/{name}"

    def __enter__(self) -> "LoopbackImageServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
