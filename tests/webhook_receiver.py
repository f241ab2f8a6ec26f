"""A tiny HTTP receiver of webhooks, on a free port of 127.0.0.1, in a thread of the test."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from walrus_tasks.redis_server import free_port


@dataclass
class Received:
    path: str
    body: dict[str, Any]
    answered: int


@dataclass
class Receiver:
    """Records every POST; answers each path's scripted statuses in turn, then 200."""

    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    script: dict[str, list[int]] = field(default_factory=dict)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"http://{self.host}{path}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._cond:
                    queued = receiver.script.get(self.path) or []
                    status = queued.pop(0) if queued else 200
                    receiver.received.append(Received(self.path, json.loads(raw), status))
                    receiver._cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def posts(self, path: str) -> list[Received]:
        with self._cond:
            return [r for r in self.received if r.path == path]

    def wait(self, path: str, count: int = 1, timeout: float = 30) -> list[Received]:
        """Wait for ``count`` POSTs to ``path``; then a short while for any extra one."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len([r for r in self.received if r.path == path]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{path}: {count} POST(s) expected, got {self.received}")
                self._cond.wait(left)
        # A second delivery would follow within a retry's backoff: give it the chance to show.
        time.sleep(1.5)
        return self.posts(path)
