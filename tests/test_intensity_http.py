"""The live providers' HTTP client: timeouts, retries, 429, 5xx, malformed answers, offline."""

from __future__ import annotations

import email.utils
import socket
import time

import pytest
from fake_intensity_api import FullBacklogServer, Response, SilentServer

from carbon_callbacks.core.intensity.http import (
    FetchError,
    HttpClient,
    OfflineError,
    parse_retry_after,
)

pytestmark = pytest.mark.usefixtures("loopback_only")


@pytest.fixture(autouse=True)
def _no_proxy_no_offline(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("CARBON_CALLBACKS_OFFLINE", raising=False)


class Sleeps:
    """Records the waits the client asks for instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> bool:
        self.waits.append(seconds)
        return False


def test_get_json_returns_the_answer_and_sends_no_surprises(api):
    api.route(r"^/ok$", Response(200, {"a": 1}))
    client = HttpClient()
    assert client.get_json(f"{api.url}/ok", params={"x": "1"}) == {"a": 1}
    (req,) = api.requests
    assert req.query == {"x": "1"}
    assert req.headers["user-agent"].startswith("carbon-callbacks/")
    assert client.attempts == 1


def test_cache_serves_within_ttl_and_last_good_survives(api):
    api.route(r"^/v$", [Response(200, {"v": 1}), Response(500, "down")])
    client = HttpClient(max_attempts=1)
    url = f"{api.url}/v"
    assert client.get_json(url, ttl_s=60) == {"v": 1}
    assert client.get_json(url, ttl_s=60) == {"v": 1}
    assert len(api.requests) == 1  # the second came from the cache
    with pytest.raises(FetchError):
        client.get_json(url)  # no ttl: asks, and the server is down
    assert client.last_good(url) == {"v": 1}
    assert client.last_good(f"{api.url}/other") is None


def test_429_waits_for_retry_after_then_succeeds(api):
    api.route(r"^/rl$", [Response(429, "slow down", {"Retry-After": "7"}), Response(200, [1])])
    sleeps = Sleeps()
    client = HttpClient(sleep=sleeps, max_retry_after_s=10)
    assert client.get_json(f"{api.url}/rl") == [1]
    assert sleeps.waits == [7.0]  # honoured exactly, not the exponential backoff
    assert len(api.requests) == 2


def test_429_longer_than_allowed_is_left_to_the_caller(api):
    api.route(r"^/rl$", Response(429, "", {"Retry-After": "3600"}))
    sleeps = Sleeps()
    client = HttpClient(sleep=sleeps, max_retry_after_s=60)
    with pytest.raises(FetchError) as info:
        client.get_json(f"{api.url}/rl")
    assert info.value.status == 429
    assert info.value.retry_after_s == 3600
    assert not info.value.permanent
    assert sleeps.waits == [] and len(api.requests) == 1


def test_429_real_wait_is_honoured(api):
    api.route(r"^/rl$", [Response(429, "", {"Retry-After": "0.3"}), Response(200, {"ok": True})])
    client = HttpClient()
    t0 = time.monotonic()
    assert client.get_json(f"{api.url}/rl") == {"ok": True}
    assert time.monotonic() - t0 >= 0.3


def test_retry_after_forms():
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 90, usegmt=True)
    assert parse_retry_after(date, now_unix_s=now) == pytest.approx(90, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 90, usegmt=True), now_unix_s=now) == 0


def test_5xx_backs_off_exponentially_and_is_bounded_in_count(api):
    api.route(r"^/e$", Response(503, "busy"))
    sleeps = Sleeps()
    client = HttpClient(sleep=sleeps, max_attempts=4, backoff_s=0.5, max_backoff_s=1.5)
    with pytest.raises(FetchError) as info:
        client.get_json(f"{api.url}/e")
    assert len(api.requests) == 4  # exactly max_attempts
    assert sleeps.waits == [0.5, 1.0, 1.5]  # doubled, capped
    assert info.value.status == 503 and not info.value.permanent
    assert "HTTP 503" in str(info.value)


def test_5xx_then_success(api):
    api.route(r"^/e$", [Response(500, "oops"), Response(502, ""), Response(200, {"v": 2})])
    client = HttpClient(sleep=Sleeps())
    assert client.get_json(f"{api.url}/e") == {"v": 2}
    assert len(api.requests) == 3


@pytest.mark.parametrize(
    ("response", "needle", "permanent"),
    [
        (Response(200, "{not json"), "malformed JSON", False),
        (Response(200, b"\xff\xfe"), "malformed JSON", False),
        (Response(404, {"error": "no such zone"}), "HTTP 404", True),
        (Response(401, "bad token"), "HTTP 401", True),
        (Response(302, "", {"Location": "http://elsewhere.example/x"}), "redirect", True),
    ],
)
def test_answers_that_a_retry_cannot_fix_fail_at_once(api, response, needle, permanent):
    api.route(r"^/x$", response)
    client = HttpClient(sleep=Sleeps())
    with pytest.raises(FetchError) as info:
        client.get_json(f"{api.url}/x", headers={"auth-token": "SECRET-TOKEN-123"})
    assert needle in str(info.value)
    assert info.value.permanent is permanent
    assert len(api.requests) == 1
    assert "SECRET-TOKEN-123" not in str(info.value)


def test_body_size_is_bounded(api):
    api.route(r"^/big$", Response(200, b"[" + b"1," * 5000 + b"1]"))
    with pytest.raises(FetchError, match="larger than"):
        HttpClient(max_body_bytes=1000).get_json(f"{api.url}/big")


def test_read_timeout_server_accepts_and_never_answers():
    server = SilentServer()
    try:
        client = HttpClient(
            connect_timeout_s=1.0, read_timeout_s=0.3, max_attempts=2, backoff_s=0.05
        )
        t0 = time.monotonic()
        with pytest.raises(FetchError, match="no answer within 0.3 s"):
            client.get_json(server.url + "/x")
        elapsed = time.monotonic() - t0
    finally:
        server.close()
    assert 0.6 <= elapsed < 5.0  # two attempts of 0.3 s and one short backoff, not hanging
    assert client.attempts == 2


def test_stalled_http_answer_is_bounded_by_the_deadline(api):
    api.route(r"^/stall$", Response(stall=True))
    client = HttpClient(read_timeout_s=2.0, max_attempts=5, max_total_s=1.0, backoff_s=0.05)
    t0 = time.monotonic()
    with pytest.raises(FetchError):
        client.get_json(f"{api.url}/stall")
    assert time.monotonic() - t0 < 5.0  # the whole call's deadline, not 5 x 2 s + waits
    assert client.attempts < 5


def test_connect_timeout_is_bounded():
    server = FullBacklogServer()
    try:
        client = HttpClient(connect_timeout_s=0.25, read_timeout_s=5.0, max_attempts=1)
        t0 = time.monotonic()
        with pytest.raises(FetchError) as info:
            client.get_json(server.url + "/x")
        elapsed = time.monotonic() - t0
    finally:
        server.close()
    assert elapsed < 5.0  # not the system's connect timeout (minutes)
    message = str(info.value)
    assert "no connection within 0.25 s" in message or "no answer within" in message


def test_close_cuts_a_backoff_wait_short(api):
    api.route(r"^/e$", Response(500, ""))
    client = HttpClient(backoff_s=60.0, max_attempts=3, max_total_s=300)
    import threading

    timer = threading.Timer(0.2, client.close)
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(FetchError, match="stopped"):
        client.get_json(f"{api.url}/e")
    assert time.monotonic() - t0 < 30.0  # not the 60 s backoff


def test_offline_client_opens_no_socket(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("socket opened while offline")

    monkeypatch.setattr(socket, "socket", forbidden)
    monkeypatch.setattr(socket, "create_connection", forbidden)
    with pytest.raises(OfflineError):
        HttpClient(offline=True).get_json("https://api.energidataservice.dk/dataset/CO2Emis")
    monkeypatch.setenv("CARBON_CALLBACKS_OFFLINE", "1")
    with pytest.raises(OfflineError) as info:  # the environment wins over an online client
        HttpClient(offline=False).get_json("https://api.carbonintensity.org.uk/intensity")
    assert info.value.permanent


def test_bad_client_settings_are_refused():
    with pytest.raises(ValueError, match="max_attempts"):
        HttpClient(max_attempts=0)
    with pytest.raises(ValueError, match="read_timeout_s"):
        HttpClient(read_timeout_s=float("inf"))
