"""A Hugging Face hub on 127.0.0.1 for the tests: the three endpoints huggingface_hub calls to list and fetch a
dataset repo, served from a mirror folder (`DIR/<owner>/<name>/` with its `.hub_tree.json`).

    GET /api/datasets/<repo>/revision/<rev>          {"id", "sha"}            (HfApi.dataset_info)
    GET /api/datasets/<repo>/tree/<rev>?recursive=1  the mirror's tree entries (HfApi.list_repo_tree)
    GET /datasets/<repo>/resolve/<rev>/<path>        the file's bytes, honouring `Range: bytes=N-`

With `delay` it sends each 64 KiB after that many seconds, so a test can kill a download half-way. Every
file request is logged (path and range) so a test can see that a rerun resumed rather than restarted.
"""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import unquote, urlsplit

from curate.demo.server import LoopbackImageServer

BLOCK = 64 * 1024


class LoopbackHub(LoopbackImageServer):
    """The image server's thread and socket, answering as the hub instead."""

    def __init__(self, hub_root: Path, delay: float = 0.0, log: Path | None = None):
        super().__init__(hub_root)
        self.delay, self.log = delay, log
        self.httpd.RequestHandlerClass = self._handler()

    @property
    def endpoint(self) -> str:
        return self.base

    def requests(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log and self.log.exists() else []

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                path = unquote(urlsplit(self.path).path)
                parts = path.strip("/").split("/")
                if parts[:2] == ["api", "datasets"] and len(parts) >= 6 and parts[4] in ("revision", "tree"):
                    manifest = self._manifest("/".join(parts[2:4]))
                    if manifest is None:
                        return self._json(404, {"error": "Repository not found"})
                    if parts[4] == "revision":
                        return self._json(200, {"id": "/".join(parts[2:4]), "sha": manifest["revision"]})
                    return self._json(200, manifest["files"])
                if parts[:1] == ["datasets"] and len(parts) >= 6 and parts[3] == "resolve":
                    return self._file("/".join(parts[1:3]), "/".join(parts[5:]))
                self._json(404, {"error": "not found"})

            def _manifest(self, repo: str):
                f = hub.root / repo / ".hub_tree.json"
                return json.loads(f.read_text()) if f.is_file() else None

            def _json(self, code: int, obj) -> None:
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _file(self, repo: str, rel: str) -> None:
                f = hub.root / repo / rel
                if not f.is_file():
                    return self._json(404, {"error": "Entry not found"})
                data = f.read_bytes()
                rng = self.headers.get("Range")
                start = int(rng.split("=", 1)[1].split("-", 1)[0]) if rng else 0
                if hub.log:
                    with open(hub.log, "a") as log:
                        log.write(f"{rel} {start}\n")
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(data) - start))
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                try:
                    for i in range(start, len(data), BLOCK):
                        if hub.delay:
                            time.sleep(hub.delay)
                        self.wfile.write(data[i:i + BLOCK])
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client was killed

            def log_message(self, *args):
                pass

        return Handler
