"""A loopback HTTP server with scripted faults, and the network faults loopback cannot make.

Reusable by any test of a network client (the live-intensity providers, issue 5)::

    with LoopbackServer([Reply(status=429, headers={"Retry-After": "7"}),
                         Reply(json={"carbonIntensity": 123})]) as server:
        client.fetch(server.url("/v3/carbon-intensity/latest?zone=DK-DK1"))
        assert server.requests[0].headers["auth-token"] == "..."

The server binds 127.0.0.1 on a free port, serves each request with the next :class:`Reply`
(the last one repeats; or pass a function ``request -> Reply``) and records every request.
A reply can be slow (``delay_s``: a read timeout for a client with a shorter one), cut off
(``close_before_reply``: the connection closes without an answer; ``truncate_body``: the headers
and half the body, then close), malformed (``body=b"{not json"``) or carry any status and
headers. Two faults never reach a loopback server and are made in the client's process instead:
:func:`fail_connect` (connect timeout: ``socket.create_connection`` and ``socket.connect``
raise ``TimeoutError``) and :func:`fail_dns` (``socket.getaddrinfo`` raises ``gaierror``), both
with pytest's ``monkeypatch``, so they cover the standard library, ``requests`` and ``urllib3``.
"""

from __future__ import annotations

import json as jsonlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted answer.

    Attributes:
        status: HTTP status code.
        json: a body to send as JSON (sets the content type); else ``body`` is sent as is.
        body: raw body bytes.
        headers: extra response headers (e.g. ``{"Retry-After": "7"}``).
        delay_s: seconds to wait before answering (after reading the request).
        close_before_reply: close the connection without sending anything.
        truncate_body: send the headers and only the first half of the body, then close.
    """

    status: int = 200
    json: Any = None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    close_before_reply: bool = False
    truncate_body: bool = False

    def payload(self) -> bytes:
        return jsonlib.dumps(self.json).encode() if self.json is not None else self.body


@dataclass(frozen=True)
class Request:
    """A request the server received: method, path (with query), headers, body, arrival time."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    time_monotonic_s: float


class LoopbackServer:
    """An HTTP server on 127.0.0.1 answering with scripted :class:`Reply` objects.

    Args:
        replies: the answers in order (the last repeats), or ``request -> Reply``.
    """

    def __init__(self, replies: list[Reply] | Callable[[Request], Reply]):
        self._replies = replies
        self._index = 0
        self._lock = threading.Lock()
        self.requests: list[Request] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Request(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    time.monotonic(),
                )
                reply = server._next(request)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if reply.close_before_reply:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                payload = reply.payload()
                self.send_response(reply.status)
                if reply.json is not None:
                    self.send_header("Content-Type", "application/json")
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if reply.truncate_body:
                    self.wfile.write(payload[: len(payload) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(payload)

            do_GET = do_POST = _serve  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="loopback-http", daemon=True
        )

    def _next(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            if callable(self._replies):
                return self._replies(request)
            reply = self._replies[min(self._index, len(self._replies) - 1)]
            self._index += 1
            return reply

    def url(self, path: str = "/") -> str:
        """``http://127.0.0.1:<port><path>``."""
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def fail_connect(monkeypatch: Any) -> None:
    """Every TCP connect in this process times out (``TimeoutError``), as to a dead host."""

    def timeout(*args: Any, **kwargs: Any) -> Any:
        raise TimeoutError("connect timed out (simulated)")

    monkeypatch.setattr(socket, "create_connection", timeout)
    monkeypatch.setattr(socket.socket, "connect", timeout)


def fail_dns(monkeypatch: Any) -> None:
    """Every name lookup in this process fails (``socket.gaierror``), as without DNS."""

    def no_dns(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (simulated)")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
