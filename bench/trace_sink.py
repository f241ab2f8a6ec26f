"""``--tracing``: an OTLP/HTTP endpoint that takes spans and discards them.

The benchmark's processes export every span to it, so the figures include the cost of making
and sending the spans (``walrus_tasks.tracing``) and nothing of a collector's. The tests'
receiver (``tests/test_tracing.py``) is the same endpoint, keeping what it is sent.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@contextmanager
def sink(take: Callable[[bytes], None] | None = None) -> Iterator[dict[str, str]]:
    """Serve the sink on a free loopback port; the ``OTEL_*`` variables that point at it.

    ``take``: given each export's body (an OTLP ``ExportTraceServiceRequest``, unzipped);
    None discards it unread.
    """

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a collector serves the exporter

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if take is not None:
                gzipped = self.headers.get("Content-Encoding") == "gzip"
                take(gzip.decompress(body) if gzipped else body)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}"}
    finally:
        server.shutdown()
        server.server_close()
