"""A fake LLM server over real HTTP (OpenAI and Anthropic streaming), for tests.

It serves from a thread of the test process on 127.0.0.1 and a free port, so worker subprocesses
reach it over HTTP while the scripts stay server-side state here. ``POST …/chat/completions``
streams OpenAI SSE (OpenAI clients use ``fake.openai_base_url``, ``…/v1``); ``POST …/messages``
streams Anthropic events (``fake.base_url``). A reply comes from the queue of the request's model,
else from the queue of any model (``model=None``), else it is the default text::

    fake.script(FakeReply(text="Hello world"), FakeReply(tool_calls=[("clock", {})]), model="m1")
    fake.script(FakeError(status=500, message="boom"))
    fake.script(FakeError(status=429, headers={"Retry-After": "1"}))   # a rate-limited answer
    fake.requests  # every request body received, in order
    fake.max_in_flight, fake.arrivals          # peak concurrency, arrival times (monotonic)
    fake.limit_rate(per_minute=120, burst=3)   # answer 429 past that rate (counted in .rejected)
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class FakeReply:
    """One scripted streamed answer.

    ``tool_calls``: ``(name, arguments)``, a ``str`` is sent verbatim (e.g. invalid JSON).
    ``usage``: ``(input, output)`` tokens, None = not reported. ``chunk_delay``: seconds between
    SSE events. ``cut_after``: drop the connection after that many events (a broken stream).
    ``delay``: seconds before the response starts (the request is in flight meanwhile).
    ``first_delay``: seconds between the response's headers and its first event.
    """

    text: str = ""
    tool_calls: Sequence[tuple[str, dict[str, Any] | str]] = ()
    thinking: str = ""
    usage: tuple[int, int] | None = (11, 7)
    chunk_delay: float = 0.0
    cut_after: int | None = None
    delay: float = 0.0
    first_delay: float = 0.0


@dataclass(frozen=True)
class FakeError:
    """A scripted HTTP ``status`` + JSON error body (and ``headers``), or (``mid_stream``) an
    in-stream error after ``after_words`` words of text."""

    status: int = 500
    message: str = "fake server error"
    type: str = "api_error"
    mid_stream: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    after_words: int = 1


Script = FakeReply | FakeError


class FakeLLM:
    """The server; thread-safe, usable as a context manager."""

    def __init__(self, default_text: str = "Hello from the fake LLM.") -> None:
        self.default_text = default_text
        self._lock = threading.Lock()
        self._scripts: dict[str | None, deque[Script]] = {}
        self._log: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        self.arrivals: list[float] = []
        """``time.monotonic()`` of every request accepted (not rate-limited), in order."""
        self.rejected = 0
        self._rate: tuple[float, float] | None = None  # (per second, burst)
        self._bucket = (0.0, 0.0)  # (tokens, at)

    def start(self) -> FakeLLM:
        """Listen on a free port of 127.0.0.1 and serve in a background thread."""
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake, self._server.conns = self, set()
        self._server.conn_lock = threading.Lock()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open streams, close every socket."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        with server.conn_lock:
            conns = list(server.conns)
        for conn in conns:  # unblocks handlers stuck on a slow or stalled client
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (the Anthropic base URL)."""
        assert self._server is not None, "FakeLLM not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def openai_base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1`` (the OpenAI base URL)."""
        return self.base_url + "/v1"

    def script(self, *replies: Script, model: str | None = None) -> None:
        """Queue replies for requests of ``model`` (None: any model)."""
        with self._lock:
            self._scripts.setdefault(model, deque()).extend(replies)

    def reset(self) -> None:
        """Forget every queued reply, recorded request, count and rate limit."""
        with self._lock:
            self._scripts.clear()
            self._log.clear()
            self.max_in_flight = self.in_flight
            self.arrivals.clear()
            self.rejected = 0
            self._rate = None

    def limit_rate(self, per_minute: float, burst: float = 1.0) -> None:
        """Answer 429 (``Retry-After``) to requests beyond ``per_minute`` (token bucket)."""
        with self._lock:
            self._rate = (per_minute / 60, burst)
            self._bucket = (burst, time.monotonic())

    def _admit(self) -> float | None:
        """None when the request is within the rate, else the seconds to wait."""
        with self._lock:
            if self._rate is None:
                return None
            rate, burst = self._rate
            tokens, at = self._bucket
            now = time.monotonic()
            tokens = min(burst, tokens + (now - at) * rate)
            if tokens < 1:
                self._bucket = (tokens, now)
                self.rejected += 1
                return (1 - tokens) / rate
            self._bucket = (tokens - 1, now)
            return None

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.arrivals.append(time.monotonic())

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every request body received so far, in arrival order."""
        with self._lock:
            return list(self._log)

    def requests_for(self, model: str) -> list[dict[str, Any]]:
        """The request bodies whose ``model`` is ``model``."""
        return [body for body in self.requests if body.get("model") == model]

    def _take(self, body: dict[str, Any]) -> tuple[Script, int]:
        with self._lock:
            self._log.append(body)
            serial = next(self._ids)
            for key in (body.get("model"), None):
                queue = self._scripts.get(key)
                if queue:
                    return queue.popleft(), serial
        return FakeReply(text=self.default_text), serial


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeLLM
    conns: set[socket.socket]  # open connections, cut at stop()
    conn_lock: threading.Lock


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.conn_lock:
            self.server.conns.add(self.connection)

    def finish(self) -> None:
        with self.server.conn_lock:
            self.server.conns.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def do_POST(self) -> None:
        self.close_connection = True  # one request per connection: nothing lingers at stop()
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = self.path.split("?", 1)[0]
        kind = "openai" if path.endswith("/chat/completions") else "anthropic"
        if not path.endswith(("/chat/completions", "/messages")):
            return self._json(404, _error_body("openai", FakeError(404, f"no route {path}")))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        if not isinstance(body, dict) or not body.get("stream"):
            error = FakeError(400, "fakellm takes JSON bodies with stream=true only")
            return self._json(400, _error_body(kind, error))
        fake = self.server.fake
        if (wait := fake._admit()) is not None:
            error = FakeError(429, "rate limit exceeded", "rate_limit_error")
            return self._json(429, _error_body(kind, error), {"Retry-After": f"{wait:.3f}"})
        fake._enter()
        self._left = False
        try:
            self._answer(kind, body)
        finally:
            self._leave_once()

    def _leave_once(self) -> None:
        """Count this request out of ``in_flight`` (once).

        Called before the last frame is written: the client may release its capacity and send
        its next request as soon as it reads that frame, before this thread runs again, which
        would count two in flight where the client never had two.
        """
        if not self._left:
            self._left = True
            self.server.fake._leave()

    def _answer(self, kind: str, body: dict[str, Any]) -> None:
        reply, serial = self.server.fake._take(body)
        if isinstance(reply, FakeReply) and reply.delay:
            time.sleep(reply.delay)
        if isinstance(reply, FakeError) and not reply.mid_stream:
            return self._json(reply.status, _error_body(kind, reply), reply.headers)
        script = reply if isinstance(reply, FakeReply) else FakeReply(text="partial")
        model = str(body.get("model", ""))
        if kind == "openai":
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            frames = _openai_frames(script, model, serial, usage)
        else:
            frames = _anthropic_frames(script, model, serial)
        if isinstance(reply, FakeError):  # the start and some text chunks, then the error event
            script = FakeReply(text=" ".join(["partial"] * reply.after_words))
            frames = (
                _openai_frames(script, model, serial, False)
                if kind == "openai"
                else _anthropic_frames(script, model, serial)
            )
            keep, event = (1, None) if kind == "openai" else (3, "error")
            keep += reply.after_words
            frames = [*frames[:keep], _sse(_error_body(kind, reply), event)]
        self._stream(frames, script)

    def _head(
        self,
        status: int,
        content_type: str,
        length: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        chunked = ("Transfer-Encoding", "chunked")
        self.send_header(*chunked if length is None else ("Content-Length", str(length)))
        self.send_header("Connection", "close")
        self.end_headers()

    def _json(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        self._head(status, "application/json", len(data), headers)
        self.wfile.write(data)

    def _stream(self, frames: list[bytes], reply: FakeReply) -> None:
        self._head(200, "text/event-stream")
        with contextlib.suppress(OSError):  # the client went away (a cancelled run): fine
            for i, frame in enumerate(frames):
                if i == reply.cut_after:
                    return  # no terminating chunk: the client sees a broken stream
                if i and reply.chunk_delay:
                    time.sleep(reply.chunk_delay)
                if i == 0 and reply.first_delay:
                    self.wfile.flush()
                    time.sleep(reply.first_delay)
                if i == len(frames) - 1:
                    self._leave_once()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
            self.wfile.write(b"0\r\n\r\n")


def _error_body(kind: str, err: FakeError) -> dict[str, Any]:
    if kind == "openai":
        return {"error": {"message": err.message, "type": err.type, "param": None, "code": None}}
    return {"type": "error", "error": {"type": err.type, "message": err.message}}


def _words(text: str) -> list[str]:
    """``"a b c"`` → ``["a", " b", " c"]`` (one chunk per word, like the mock model)."""
    return [w if i == 0 else " " + w for i, w in enumerate(text.split(" "))] if text else []


def _thirds(arguments: dict[str, Any] | str) -> list[str]:
    """The arguments' JSON in up to three pieces, so they arrive across several chunks."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    step = max(1, -(-len(text) // 3))
    return [text[i : i + step] for i in range(0, len(text), step)] or [""]


def _sse(payload: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(payload)}\n\n".encode()


def _openai_frames(reply: FakeReply, model: str, serial: int, usage: bool) -> list[bytes]:
    base = {"id": f"chatcmpl-{serial}", "object": "chat.completion.chunk", "model": model}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return _sse({**base, "choices": [choice]})

    frames = [chunk({"role": "assistant", "content": ""})]
    frames += [chunk({"reasoning_content": piece}) for piece in _words(reply.thinking)]
    frames += [chunk({"content": piece}) for piece in _words(reply.text)]
    for i, (name, arguments) in enumerate(reply.tool_calls):
        head = {"index": i, "id": f"call_{serial}_{i}", "type": "function"}
        frames.append(
            chunk({"tool_calls": [{**head, "function": {"name": name, "arguments": ""}}]})
        )
        for piece in _thirds(arguments):
            frames.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}))
    frames.append(chunk({}, "tool_calls" if reply.tool_calls else "stop"))
    if usage and reply.usage is not None:
        tokens = {"prompt_tokens": reply.usage[0], "completion_tokens": reply.usage[1]}
        frames.append(_sse({**base, "choices": [], "usage": {**tokens, "total_tokens": 0}}))
    return [*frames, b"data: [DONE]\n\n"]


def _ev(kind: str, **fields: Any) -> bytes:
    """An Anthropic SSE event: the ``event:`` name is the payload's ``type``."""
    return _sse({"type": kind, **fields}, kind)


def _anthropic_frames(reply: FakeReply, model: str, serial: int) -> list[bytes]:
    tokens_in, tokens_out = reply.usage or (0, 0)
    message: dict[str, Any] = {"id": f"msg_{serial}", "type": "message", "role": "assistant"}
    message |= {"model": model, "content": [], "stop_reason": None, "stop_sequence": None}
    message["usage"] = {"input_tokens": tokens_in, "output_tokens": 1}
    frames = [_ev("message_start", message=message), _ev("ping")]
    blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    if reply.thinking:
        deltas = [{"type": "thinking_delta", "thinking": w} for w in _words(reply.thinking)]
        deltas.append({"type": "signature_delta", "signature": f"sig{serial}"})
        blocks.append(({"type": "thinking", "thinking": "", "signature": ""}, deltas))
    if reply.text:
        deltas = [{"type": "text_delta", "text": w} for w in _words(reply.text)]
        blocks.append(({"type": "text", "text": ""}, deltas))
    for i, (name, arguments) in enumerate(reply.tool_calls):
        start = {"type": "tool_use", "id": f"toolu_{serial}_{i}", "name": name, "input": {}}
        pieces = _thirds(arguments)
        blocks.append((start, [{"type": "input_json_delta", "partial_json": p} for p in pieces]))
    for index, (start, deltas) in enumerate(blocks):
        frames.append(_ev("content_block_start", index=index, content_block=start))
        frames += [_ev("content_block_delta", index=index, delta=d) for d in deltas]
        frames.append(_ev("content_block_stop", index=index))
    stop = {"stop_reason": "tool_use" if reply.tool_calls else "end_turn", "stop_sequence": None}
    frames.append(_ev("message_delta", delta=stop, usage={"output_tokens": tokens_out}))
    return [*frames, _ev("message_stop")]
