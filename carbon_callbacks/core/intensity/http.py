"""A small JSON-over-HTTP client for the live intensity providers: bounded in count and time.

Every request has a hard connect timeout and a hard read timeout, and the whole call (all
attempts, waits and the body) has a deadline. Retries happen only where a retry can help:

- HTTP 429 (rate limited): wait for ``Retry-After`` (seconds or an HTTP date), capped; if the
  wait does not fit in the deadline the call fails with :attr:`FetchError.retry_after_s` set so
  the caller can come back later;
- HTTP 5xx, connection failures and timeouts: exponential backoff (``backoff_s`` x 2^n, capped);
- anything else (4xx, malformed JSON, a redirect) fails at once: asking again gives the same.

Redirects are not followed: a custom header such as Electricity Maps' ``auth-token`` would be
sent on to whatever host the redirect names. Responses are cached for ``ttl_s`` seconds when
asked, and the last good response of each request is kept (:meth:`HttpClient.last_good`).

Offline is enforced here too, before anything that could open a socket: a client built with
``offline=True``, or any request while ``$CARBON_CALLBACKS_OFFLINE`` is set to a true value,
raises :class:`OfflineError`. ``requests`` itself is imported only when a request is made.

Error messages name the URL and the status, never the request headers (tokens live there).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from carbon_callbacks import __version__

#: Seconds to wait for the TCP (and TLS) connection.
CONNECT_TIMEOUT_S = 2.0
#: Seconds to wait for each read from the socket.
READ_TIMEOUT_S = 5.0
#: Attempts per call, the first included.
MAX_ATTEMPTS = 3
#: Deadline of a whole call (all attempts and waits), seconds.
MAX_TOTAL_S = 20.0
#: First backoff after a 5xx or a connection failure, seconds (doubled each time).
BACKOFF_S = 1.0
#: Largest single backoff, seconds.
MAX_BACKOFF_S = 30.0
#: Largest ``Retry-After`` honoured inside one call; longer waits are left to the caller.
MAX_RETRY_AFTER_S = 60.0
#: Largest response body accepted, bytes.
MAX_BODY_BYTES = 8 * 1024 * 1024
#: Responses kept in the cache (least recently used are dropped).
CACHE_ENTRIES = 64

_TRUE = {"1", "true", "yes", "on"}
USER_AGENT = f"carbon-callbacks/{__version__} (+https://pypi.org/project/carbon-callbacks/)"


class FetchError(Exception):
    """A request that gave no usable answer.

    Attributes:
        url: what was asked (without headers).
        status: the HTTP status, or ``None`` when no response arrived.
        permanent: True when asking again cannot help (4xx, offline, malformed answer shape).
        retry_after_s: seconds the server asked us to wait (HTTP 429), else ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str = "",
        status: int | None = None,
        permanent: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.permanent = permanent
        self.retry_after_s = retry_after_s


class OfflineError(FetchError):
    """The network is off (``offline=True`` or ``$CARBON_CALLBACKS_OFFLINE``): nothing was sent."""


def env_offline(env: Mapping[str, str] | None = None) -> bool:
    """True when ``$CARBON_CALLBACKS_OFFLINE`` holds a true value (1, true, yes, on)."""
    raw = (os.environ if env is None else env).get("CARBON_CALLBACKS_OFFLINE", "")
    return raw.strip().lower() in _TRUE


def parse_retry_after(value: str | None, now_unix_s: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date.

    Returns ``None`` when the header is missing or unreadable, else a number >= 0.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            import email.utils  # only for an HTTP-date Retry-After (7 ms to import)

            moment = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if moment is None:
            return None
        now = time.time() if now_unix_s is None else now_unix_s
        seconds = moment.timestamp() - now
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


class HttpClient:
    """GET JSON with hard timeouts, bounded retries, a small cache and the last good answer.

    Args:
        offline: refuse every request (no socket is opened).
        connect_timeout_s / read_timeout_s: per-attempt socket timeouts, seconds.
        max_attempts: attempts per call, the first included (>= 1).
        max_total_s: deadline of a whole call, seconds.
        backoff_s / max_backoff_s: exponential backoff after a 5xx or a connection failure.
        max_retry_after_s: longest ``Retry-After`` waited for inside a call.
        max_body_bytes: larger bodies are refused.
        stop: an event that, once set, ends waits and refuses new attempts (``close``).
        sleep: ``sleep(seconds) -> stopped``; default waits on ``stop`` (tests pass their own).
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        *,
        offline: bool = False,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        read_timeout_s: float = READ_TIMEOUT_S,
        max_attempts: int = MAX_ATTEMPTS,
        max_total_s: float = MAX_TOTAL_S,
        backoff_s: float = BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
        max_retry_after_s: float = MAX_RETRY_AFTER_S,
        max_body_bytes: int = MAX_BODY_BYTES,
        stop: threading.Event | None = None,
        sleep: Callable[[float], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        for name, value in (
            ("connect_timeout_s", connect_timeout_s),
            ("read_timeout_s", read_timeout_s),
            ("max_total_s", max_total_s),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        self.offline = bool(offline)
        self.connect_timeout_s = float(connect_timeout_s)
        self.read_timeout_s = float(read_timeout_s)
        self.max_attempts = int(max_attempts)
        self.max_total_s = float(max_total_s)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.max_retry_after_s = float(max_retry_after_s)
        self.max_body_bytes = int(max_body_bytes)
        self.stop = stop or threading.Event()
        self._sleep = sleep or self.stop.wait
        self._clock = clock
        self._session: Any = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._last_good: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        #: Requests sent (attempts, not calls); for tests and diagnostics.
        self.attempts = 0

    # -- public ---------------------------------------------------------------------------
    def get_json(
        self,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        ttl_s: float = 0.0,
    ) -> Any:
        """GET ``url`` and return the decoded JSON body.

        Args:
            url: the address (``http`` or ``https``).
            params: query parameters.
            headers: extra request headers (never logged, never part of an error message).
            ttl_s: serve a cached answer younger than this many seconds without a request.

        Raises:
            OfflineError: the network is off; nothing was sent.
            FetchError: no usable answer within the bounds (see the module docstring).
        """
        shown = _display_url(url, params)
        if self.offline or env_offline():
            raise OfflineError(f"not fetched (offline): {shown}", url=shown, permanent=True)
        key = shown
        if ttl_s > 0:
            with self._lock:
                hit = self._cache.get(key)
            if hit is not None and self._clock() - hit[0] < ttl_s:
                return hit[1]
        data = self._fetch(url, params, headers, shown)
        now = self._clock()
        with self._lock:
            for store in (self._cache, self._last_good):
                store[key] = (now, data)
                store.move_to_end(key)
                while len(store) > CACHE_ENTRIES:
                    store.popitem(last=False)
        return data

    def last_good(self, url: str, params: Mapping[str, Any] | None = None) -> Any | None:
        """The last good answer to this request, however old, or ``None``."""
        with self._lock:
            hit = self._last_good.get(_display_url(url, params))
        return None if hit is None else hit[1]

    def close(self) -> None:
        """End waits, refuse new attempts and close the connection pool. Idempotent."""
        self.stop.set()
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            try:
                session.close()
            except Exception:  # noqa: BLE001 - closing must never raise
                pass

    # -- internals ------------------------------------------------------------------------
    def _session_obj(self) -> Any:
        with self._lock:
            if self._session is None:
                import requests  # lazily: importing the package opens and imports nothing

                session = requests.Session()
                session.headers["User-Agent"] = USER_AGENT
                session.headers["Accept"] = "application/json"
                self._session = session
            return self._session

    def _fetch(
        self,
        url: str,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        shown: str,
    ) -> Any:
        import requests

        deadline = self._clock() + self.max_total_s
        last: FetchError | None = None
        for attempt in range(1, self.max_attempts + 1):
            if self.stop.is_set():
                raise FetchError(f"stopped before fetching {shown}", url=shown)
            remaining = deadline - self._clock()
            if remaining <= 0:
                break
            wait: float | None = None
            try:
                self.attempts += 1
                return self._attempt(url, params, headers, shown, deadline, remaining)
            except _Retryable as exc:
                last = exc.error
                wait = exc.wait_s
            except requests.exceptions.ConnectTimeout:
                last = FetchError(
                    f"no connection within {self.connect_timeout_s:g} s: {shown}", url=shown
                )
            except requests.exceptions.ReadTimeout:
                last = FetchError(f"no answer within {self.read_timeout_s:g} s: {shown}", url=shown)
            except requests.exceptions.RequestException as exc:
                last = FetchError(f"request failed ({type(exc).__name__}): {shown}", url=shown)
            if attempt == self.max_attempts:
                break
            if wait is None:
                wait = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
            if wait > deadline - self._clock():
                if last is not None and last.retry_after_s is None:
                    last.retry_after_s = wait
                break
            if wait > 0 and self._sleep(wait):
                raise FetchError(f"stopped while waiting to retry {shown}", url=shown)
        if last is None:
            last = FetchError(f"no answer within {self.max_total_s:g} s: {shown}", url=shown)
        raise last

    def _attempt(
        self,
        url: str,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        shown: str,
        deadline: float,
        remaining: float,
    ) -> Any:
        session = self._session_obj()
        response = session.get(
            url,
            params=dict(params) if params else None,
            headers=dict(headers) if headers else None,
            timeout=(min(self.connect_timeout_s, remaining), min(self.read_timeout_s, remaining)),
            stream=True,
            allow_redirects=False,
        )
        try:
            status = int(response.status_code)
            if status == 429:
                wait = parse_retry_after(response.headers.get("Retry-After"))
                error = FetchError(
                    f"rate limited (HTTP 429) by {shown}"
                    + (f"; asked to wait {wait:g} s" if wait is not None else ""),
                    url=shown,
                    status=429,
                    retry_after_s=wait,
                )
                if wait is not None and wait > self.max_retry_after_s:
                    raise error
                raise _Retryable(error, wait)
            if 500 <= status < 600:
                raise _Retryable(
                    FetchError(
                        f"server error (HTTP {status}) from {shown}", url=shown, status=status
                    ),
                    None,
                )
            if 300 <= status < 400:
                where = response.headers.get("Location", "?")
                raise FetchError(
                    f"HTTP {status} redirect from {shown} to {where} not followed (a token "
                    "header would go along): set the base URL to the final address",
                    url=shown,
                    status=status,
                    permanent=True,
                )
            body = self._read_body(response, shown, deadline)
            if status != 200:
                raise FetchError(
                    f"HTTP {status} from {shown}: {_snippet(body)}",
                    url=shown,
                    status=status,
                    permanent=400 <= status < 500,
                )
            try:
                return json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise FetchError(
                    f"malformed JSON from {shown} ({exc.__class__.__name__}: {_snippet(body)})",
                    url=shown,
                    status=status,
                ) from None
        finally:
            response.close()

    def _read_body(self, response: Any, shown: str, deadline: float) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_content(chunk_size=65536):
            size += len(chunk)
            if size > self.max_body_bytes:
                raise FetchError(
                    f"answer from {shown} larger than {self.max_body_bytes} bytes: refused",
                    url=shown,
                    permanent=True,
                )
            if self._clock() > deadline:
                raise FetchError(f"answer from {shown} took longer than {self.max_total_s:g} s")
            chunks.append(chunk)
        return b"".join(chunks)


class _Retryable(Exception):
    def __init__(self, error: FetchError, wait_s: float | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.wait_s = wait_s


def _display_url(url: str, params: Mapping[str, Any] | None) -> str:
    if not params:
        return url
    from urllib.parse import urlencode

    return f"{url}?{urlencode(sorted((str(k), str(v)) for k, v in params.items()))}"


def _snippet(body: bytes, limit: int = 120) -> str:
    text = body[:limit].decode("utf-8", "replace").replace("\n", " ").strip()
    return repr(text + ("..." if len(body) > limit else ""))
