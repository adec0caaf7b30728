"""Sending requests to Voltage: one pooled ``requests.Session``, explicit (connect, read)
timeouts on every request, typed errors (see ``errors.py``) and retries within a time budget
(see ``retry.py``). Nothing here knows what a payment is; ``client.py`` does.

The API key travels only in the ``x-api-key`` header of each request. It is kept as a
``SecretStr`` and never appears in a message, a repr or a log line: error bodies are scrubbed
of it before they are parsed, transport errors are reported by class and path only, and
redirects are never followed (``requests`` would forward the header to the new host).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import requests
import structlog
from pydantic import SecretStr
from requests.adapters import HTTPAdapter

import watcher
from watcher.lifecycle import Closing
from watcher.voltage.checks import check_text
from watcher.voltage.errors import (
    VoltageConflict,
    VoltageError,
    VoltageMalformedResponse,
    VoltageNotFound,
    VoltageTransientError,
    error_from_response,
)
from watcher.voltage.parsing import decoded_body
from watcher.voltage.purpose import Purpose
from watcher.voltage.retry import RetryPolicy

log = structlog.stdlib.get_logger(__name__)

T = TypeVar("T")

USER_AGENT = f"voltage-watcher/{watcher.__version__}"
REDACTED = "[redacted]"


class VoltageTransport(Closing):
    """Requests to one Voltage environment with one API key. Thread-safe; reuse it."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: SecretStr | str,
        organization_id: str,
        environment_id: str,
        connect_timeout: float = 3.05,
        read_timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        session: requests.Session | None = None,
        pool_maxsize: int = 16,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http:// or https:// URL")
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        check_text(key, "api_key")
        check_text(organization_id, "organization_id")
        check_text(environment_id, "environment_id")
        for name, timeout in (("connect_timeout", connect_timeout), ("read_timeout", read_timeout)):
            if not isinstance(timeout, int | float) or not 0 < timeout < float("inf"):
                raise ValueError(f"{name} must be a positive number of seconds")
        if pool_maxsize < 1:
            raise ValueError("pool_maxsize must be at least 1")

        self.base_url = base_url.rstrip("/")
        self.organization_id = organization_id
        self.environment_id = environment_id
        self.timeout: tuple[float, float] = (float(connect_timeout), float(read_timeout))
        self.retry = retry if retry is not None else RetryPolicy()
        self._api_key = SecretStr(key)
        self._environment_path = (
            f"/organizations/{quote(organization_id, safe='')}"
            f"/environments/{quote(environment_id, safe='')}"
        )
        self._base_path = urlsplit(self.base_url).path.rstrip("/")
        self._owns_session = session is None
        if session is None:
            session = _pooled_session(self.base_url, pool_maxsize)
        self._session = session
        self._lock = threading.Lock()
        self._request_count = 0
        self._closed = False
        # Told of every request sent, with its purpose (the runtime counts them in Redis).
        self.on_request: Callable[[Purpose], None] | None = None

    @property
    def request_count(self) -> int:
        """HTTP requests actually sent by this client, retries included."""
        return self._request_count

    def close(self) -> None:
        """Release pooled connections (only when the session is ours)."""
        self._closed = True
        if self._owns_session:
            self._session.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base_url={self.base_url!r},"
            f" organization_id={self.organization_id!r}, environment_id={self.environment_id!r})"
        )

    def __reduce__(self) -> Any:
        raise TypeError(
            f"{type(self).__name__} holds an API key and a connection pool; do not pickle it"
        )

    def _call(
        self,
        method: str,
        path: str,
        *,
        parse: Callable[[Any], T],
        params: list[tuple[str, str]] | None = None,
        json_body: dict[str, Any] | None = None,
        payment_id: str | None = None,
        purpose: Purpose = Purpose.OTHER,
    ) -> T:
        """One logical call: attempts until success, a final error or the budget runs out."""
        policy = self.retry
        started = policy.clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._attempt(method, path, parse, params, json_body, purpose)
            except VoltageError as exc:
                elapsed = policy.clock() - started
                delay = policy.next_delay(exc, attempt=attempt, elapsed=elapsed)
                fields: dict[str, Any] = {
                    "method": method,
                    "path": self._base_path + path,
                    "status": exc.status,
                    "error": type(exc).__name__,
                    "error_type": exc.type,
                    "attempt": attempt,
                }
                if payment_id is not None:
                    fields["payment_id"] = payment_id
                if delay is None:
                    if exc.retryable:
                        log.warning(
                            "voltage.give_up",
                            elapsed=round(elapsed, 3),
                            retry_after=exc.retry_after,
                            **fields,
                        )
                    elif not isinstance(exc, VoltageNotFound | VoltageConflict):
                        log.info("voltage.request_failed", **fields)
                    raise
                log.warning(
                    "voltage.retry",
                    delay=round(delay, 3),
                    retry_after=exc.retry_after,
                    **fields,
                )
                policy.sleep(delay)

    def _attempt(
        self,
        method: str,
        path: str,
        parse: Callable[[Any], T],
        params: list[tuple[str, str]] | None,
        json_body: dict[str, Any] | None,
        purpose: Purpose,
    ) -> T:
        """Exactly one HTTP request; its outcome as a value or a typed error."""
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed")
        where = f"{method} {self._base_path}{path}"
        with self._lock:
            self._request_count += 1
        if self.on_request is not None:
            self.on_request(purpose)
        started = time.perf_counter()
        response = self._send(method, path, where, params, json_body)
        with response:
            status = response.status_code
            log.debug(
                "voltage.response",
                method=method,
                path=self._base_path + path,
                status=status,
                ms=round((time.perf_counter() - started) * 1000, 1),
            )
            if 200 <= status < 300:
                # Even create's answer is read: a 2xx whose body is not JSON did not come
                # from Voltage (a proxy, a cut connection), so "created" is not known and the
                # call is retried; with the same id that is safe (409 then means it exists).
                try:
                    return parse(decoded_body(response, where))
                except VoltageMalformedResponse as exc:
                    if exc.status is not None:
                        raise
                    raise VoltageMalformedResponse(
                        f"Voltage answered {status} on {where} with an unusable body: {exc}",
                        status=status,
                    ) from None
            raise self._failure(response, where)

    def _send(
        self,
        method: str,
        path: str,
        where: str,
        params: list[tuple[str, str]] | None,
        json_body: dict[str, Any] | None,
    ) -> requests.Response:
        """The response, or the network's failure as a typed error naming only the path."""
        headers = {
            "x-api-key": self._api_key.get_secret_value(),
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
        }
        try:
            return self._session.request(
                method,
                self.base_url + path,
                params=params,
                json=json_body,
                headers=headers,
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.Timeout as exc:
            kind = "connect" if isinstance(exc, requests.ConnectTimeout) else "read"
            limit = self.timeout[0] if kind == "connect" else self.timeout[1]
            raise VoltageTransientError(
                f"Voltage {kind} timeout after {limit:g}s on {where}"
            ) from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            raise VoltageTransientError(
                f"connection error on {where} ({type(exc).__name__})"
            ) from None
        except requests.RequestException as exc:
            # Anything else requests raises is about the request we built, not the network.
            raise VoltageError(f"could not send {where} ({type(exc).__name__})") from None

    def _failure(self, response: requests.Response, where: str) -> VoltageError:
        """The typed error for an answer that is not a 2xx."""
        status = response.status_code
        if 300 <= status < 400:
            return VoltageError(
                f"Voltage answered {status} (redirect) on {where}; redirects are not"
                " followed, check the base URL",
                status=status,
            )
        body = self._error_body(response)
        return error_from_response(
            status, body, self.retry.retry_after(response.headers), where=where
        )

    def _error_body(self, response: requests.Response) -> Any:
        """The error envelope, or None when the body is not JSON; scrubbed of the key."""
        try:
            text = response.text
        except (requests.RequestException, UnicodeDecodeError):
            return None
        key = self._api_key.get_secret_value()
        if key in text:
            text = text.replace(key, REDACTED)
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except ValueError:
            return None


def _pooled_session(base_url: str, pool_maxsize: int) -> requests.Session:
    """A session of our own. Proxy and CA-bundle variables are read now rather than on every
    request: requests' per-request environment lookup was about a quarter of a poll's CPU
    (0.4 of 1.5 ms)."""
    session = requests.Session()
    # No urllib3-level retries: ours know about budgets, Retry-After and idempotency.
    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=pool_maxsize, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.proxies.update(requests.utils.get_environ_proxies(base_url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    session.trust_env = False
    return session
