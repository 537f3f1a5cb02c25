"""Loopback stand-ins for the carbon-intensity services, and answers shaped like theirs.

:class:`FakeApi` is an ``http.server`` on 127.0.0.1 (port 0) in a thread that answers routes
with canned or computed responses and records every request (path, query, headers). Its
``stall`` response holds the connection without answering (bounded: released at ``close``).
:class:`SilentServer` accepts TCP connections and never answers (read timeouts);
:class:`FullBacklogServer` never accepts, with a full queue, so connects time out.

The ``*_answer`` helpers write answers in the documented shapes (see
``shared/notes/intensity.md``):

- Energi Data Service ``/dataset/CO2Emis`` and ``/dataset/CO2EmisProg``: ``{"total", "filters",
  "limit", "dataset", "records": [{"Minutes5UTC", "Minutes5DK", "PriceArea", "CO2Emission"}]}``;
- GB Carbon Intensity API ``/intensity/{from}/fw48h``: ``{"data": [{"from", "to", "intensity":
  {"forecast", "actual", "index"}}]}``; regional ``{"data": {"regionid", "dnoregion",
  "shortname", "postcode", "data": [{"from", "to", "intensity": {"forecast", "index"},
  "generationmix": [{"fuel", "perc"}]}]}}`` (or a list around the region object);
- Electricity Maps v3 ``history`` / ``latest`` / ``forecast``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

STALL_LIMIT_S = 15.0  # a stalled answer is released at close() or after this, whichever first


@dataclass
class Response:
    """A canned answer: status, body (bytes, text, or JSON-able), headers."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    stall: bool = False


@dataclass
class Request:
    """One request the fake received."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]


Handler = Callable[[Request], Response]


class FakeApi:
    """A loopback HTTP server with routes (regular expressions on the path)."""

    def __init__(self) -> None:
        self.routes: list[tuple[re.Pattern[str], Handler | Response | list[Response]]] = []
        self.requests: list[Request] = []
        self.requested = threading.Event()  # set at the first request
        self._release = threading.Event()
        self._lock = threading.Lock()
        api = self

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                req = Request(parts.path, query, {k.lower(): v for k, v in self.headers.items()})
                with api._lock:
                    api.requests.append(req)
                api.requested.set()
                response = api._answer(req)
                if response.stall:
                    api._release.wait(STALL_LIMIT_S)
                    return
                body = response.body
                if isinstance(body, (dict, list)):
                    body = json.dumps(body).encode()
                elif isinstance(body, str):
                    body = body.encode()
                elif body is None:
                    body = b""
                try:
                    self.send_response(response.status)
                    for key, value in response.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def route(self, pattern: str, answer: Handler | Response | list[Response]) -> None:
        """Answer paths matching ``pattern``: a handler, one response, or a list served in
        turn (the last one repeats)."""
        self.routes.append((re.compile(pattern), answer))

    def _answer(self, req: Request) -> Response:
        for pattern, answer in self.routes:
            if pattern.search(req.path):
                if isinstance(answer, Response):
                    return answer
                if isinstance(answer, list):
                    with self._lock:
                        return answer.pop(0) if len(answer) > 1 else answer[0]
                return answer(req)
        return Response(404, {"error": f"no route for {req.path}"})

    def hits(self, pattern: str) -> list[Request]:
        """Requests whose path matches ``pattern``."""
        rx = re.compile(pattern)
        with self._lock:
            return [r for r in self.requests if rx.search(r.path)]

    def close(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()


class SilentServer:
    """Accepts TCP connections and never answers (until closed)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(conn)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)
        for conn in self.conns:
            conn.close()
        self.sock.close()


class FullBacklogServer:
    """Listens with a full accept queue and never accepts: new connections time out."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.fillers = []
        for _ in range(3):  # fill the queue (Linux keeps backlog + 1)
            c = socket.socket()
            c.settimeout(0.05)
            try:
                c.connect(self.sock.getsockname())
            except OSError:
                pass
            self.fillers.append(c)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        for c in self.fillers:
            c.close()
        self.sock.close()


# -- answers in the services' shapes ---------------------------------------------------------


def iso(unix_s: float, fmt: str = "%Y-%m-%dT%H:%M:%S") -> str:
    return dt.datetime.fromtimestamp(unix_s, tz=dt.timezone.utc).strftime(fmt)


def _danish(unix_s: float) -> str:
    try:
        from zoneinfo import ZoneInfo

        return dt.datetime.fromtimestamp(unix_s, tz=ZoneInfo("Europe/Copenhagen")).strftime(
            "%Y-%m-%dT%H:%M:%S"
        )
    except Exception:  # noqa: BLE001 - no tz database: UTC+1 is close enough for a fixture
        return iso(unix_s + 3600)


def eds_records(
    start_unix_s: float, values: Sequence[float | None], areas: Sequence[str] = ("DK1",)
) -> list[dict[str, Any]]:
    """Energi Data Service rows, one per 5-minute slot and price area."""
    rows = []
    for i, value in enumerate(values):
        t = start_unix_s + 300 * i
        for area in areas:
            rows.append(
                {
                    "Minutes5UTC": iso(t),
                    "Minutes5DK": _danish(t),
                    "PriceArea": area,
                    "CO2Emission": value,
                }
            )
    return rows


def eds_handler(dataset_rows: dict[str, list[dict[str, Any]]]) -> Handler:
    """Serves ``/dataset/<name>`` pages from rows, honouring ``offset`` and ``limit``."""

    def handle(req: Request) -> Response:
        name = req.path.rsplit("/", 1)[-1]
        rows = dataset_rows.get(name)
        if rows is None:
            return Response(404, {"error": "dataset not found"})
        offset = int(req.query.get("offset", 0))
        limit = int(req.query.get("limit", 100))
        page = rows[offset : offset + limit]
        return Response(
            200,
            {
                "total": len(rows),
                "filters": req.query.get("filter", ""),
                "limit": limit,
                "dataset": name,
                "records": page,
            },
        )

    return handle


def gb_national_answer(
    start_unix_s: float, actual: Sequence[float | None], forecast: Sequence[float]
) -> dict[str, Any]:
    """``/intensity/{from}/fw48h``: half-hour periods from ``start``."""
    data = []
    for i, fc in enumerate(forecast):
        t = start_unix_s + 1800 * i
        act = actual[i] if i < len(actual) else None
        data.append(
            {
                "from": iso(t, "%Y-%m-%dT%H:%MZ"),
                "to": iso(t + 1800, "%Y-%m-%dT%H:%MZ"),
                "intensity": {"forecast": fc, "actual": act, "index": "moderate"},
            }
        )
    return {"data": data}


def gb_regional_answer(
    start_unix_s: float,
    forecast: Sequence[float],
    *,
    regionid: int = 13,
    shortname: str = "London",
    postcode: str | None = None,
    as_list: bool = False,
) -> dict[str, Any]:
    """Regional forecast; ``as_list`` wraps the region in a list like the current-period calls."""
    periods = []
    for i, fc in enumerate(forecast):
        t = start_unix_s + 1800 * i
        periods.append(
            {
                "from": iso(t, "%Y-%m-%dT%H:%MZ"),
                "to": iso(t + 1800, "%Y-%m-%dT%H:%MZ"),
                "intensity": {"forecast": fc, "index": "moderate"},
                "generationmix": [{"fuel": "gas", "perc": 40.1}, {"fuel": "wind", "perc": 30.5}],
            }
        )
    region = {
        "regionid": regionid,
        "dnoregion": "UKPN London",
        "shortname": shortname,
        "data": periods,
    }
    if postcode is not None:
        region["postcode"] = postcode
    return {"data": [region] if as_list else region}


def em_entry(unix_s: float, value: float | None, **extra: Any) -> dict[str, Any]:
    entry = {
        "zone": extra.pop("zone", "DE"),
        "carbonIntensity": value,
        "datetime": iso(unix_s, "%Y-%m-%dT%H:%M:%S.000Z"),
        "updatedAt": iso(unix_s + 600, "%Y-%m-%dT%H:%M:%S.000Z"),
        "createdAt": iso(unix_s - 86400, "%Y-%m-%dT%H:%M:%S.000Z"),
        "emissionFactorType": "lifecycle",
        "isEstimated": False,
        "estimationMethod": None,
    }
    entry.update(extra)
    return entry


def em_history_answer(start_unix_s: float, values: Sequence[float], zone: str = "DE") -> dict:
    return {
        "zone": zone,
        "history": [em_entry(start_unix_s + 3600 * i, v, zone=zone) for i, v in enumerate(values)],
    }


def em_forecast_answer(start_unix_s: float, values: Sequence[float], zone: str = "DE") -> dict:
    return {
        "zone": zone,
        "forecast": [
            {
                "carbonIntensity": v,
                "datetime": iso(start_unix_s + 3600 * i, "%Y-%m-%dT%H:%M:%S.000Z"),
            }
            for i, v in enumerate(values)
        ],
        "updatedAt": iso(start_unix_s, "%Y-%m-%dT%H:%M:%S.000Z"),
    }


class LoopbackOnly:
    """Refuses (and records) name lookups of anything but loopback: a test that would reach the
    internet fails at teardown instead of quietly trying."""

    ALLOWED = {"127.0.0.1", "localhost", "::1"}

    def __init__(self, monkeypatch: Any) -> None:
        self.refused: list[str] = []
        original = socket.getaddrinfo

        def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
            name = host.decode() if isinstance(host, bytes) else str(host)
            if name not in self.ALLOWED:
                self.refused.append(name)
                raise OSError(f"test tried to reach {name}")
            return original(host, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", guarded)
