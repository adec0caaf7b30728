"""One HTTP attempt at a subscriber: signed POST, no redirects, bounded in time and size.

A subscriber can be hostile (huge or endless bodies, a slow drip, invalid UTF-8): the answer is
read only up to a cap and a deadline, and only a short, decoded excerpt is ever stored.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

from watcher.delivery.ssrf import find_unsafe_error
from watcher.timing import parse_retry_after

# Bytes of a response we read at most (then close the connection), and characters we keep.
READ_CAP = 64 * 1024
KEPT_BODY_CHARS = 1024


@dataclass(frozen=True)
class AttemptResult:
    status_code: int | None
    latency_ms: float
    response_excerpt: str
    error: str | None
    retry_after: float | None = None
    refused: bool = False  # the SSRF guard refused the address actually resolved

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def post_webhook(
    session: requests.Session,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    connect_timeout: float,
    timeout: float,
) -> AttemptResult:
    """POST once. `timeout` bounds the whole answer, not just each socket read."""
    started = time.monotonic()
    deadline = started + connect_timeout + timeout

    def elapsed_ms() -> float:
        return round((time.monotonic() - started) * 1000, 1)

    try:
        response = session.post(
            url,
            data=body,
            headers=headers,
            timeout=(connect_timeout, timeout),
            allow_redirects=False,
            stream=True,
        )
    except requests.RequestException as exc:
        refused = find_unsafe_error(exc)
        if refused is not None:
            return AttemptResult(None, elapsed_ms(), "", str(refused), refused=True)
        return AttemptResult(None, elapsed_ms(), "", _describe(exc))

    excerpt, read_error = _read_capped(response, deadline)
    return AttemptResult(
        status_code=response.status_code,
        latency_ms=elapsed_ms(),
        response_excerpt=excerpt,
        error=read_error,
        retry_after=parse_retry_after(response.headers),
    )


def _read_capped(response: requests.Response, deadline: float) -> tuple[str, str | None]:
    chunks: list[bytes] = []
    size = 0
    error = None
    try:
        for chunk in response.iter_content(chunk_size=4096):
            chunks.append(chunk)
            size += len(chunk)
            if size >= READ_CAP:
                break
            if time.monotonic() > deadline:
                error = "response body still arriving at the deadline; stopped reading"
                break
    except requests.RequestException as exc:
        error = f"reading the response failed: {_describe(exc)}"
    finally:
        response.close()
    text = b"".join(chunks)[:READ_CAP].decode("utf-8", errors="replace")
    return text[:KEPT_BODY_CHARS], error


def _describe(exc: requests.RequestException) -> str:
    """What went wrong, for a person reading the delivery log: not urllib3's wrapper chain
    ("_GuardedHTTPConnectionPool(...): Max retries exceeded with url ...")."""
    target = _target(exc)
    root = _root_cause(exc)
    if isinstance(exc, requests.ConnectTimeout):
        return f"timed out connecting to {target}"
    if isinstance(exc, requests.Timeout):
        return f"timed out waiting for {target} to answer"
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS with {target} failed: {_short(root)}"
    if isinstance(root, ConnectionRefusedError):
        return f"connection refused by {target}"
    if isinstance(root, ConnectionResetError):
        return f"connection reset by {target}"
    if isinstance(root, socket.gaierror) or "NameResolution" in type(root).__name__:
        return f"cannot resolve the host of {target}"
    if isinstance(root, OSError) and root.strerror:
        return f"cannot reach {target}: {root.strerror}"
    return f"{type(root).__name__} from {target}: {_short(root)}"


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost error: through urllib3's MaxRetryError.reason and raise-from chains."""
    seen: set[int] = set()
    current = exc
    while id(current) not in seen:
        seen.add(id(current))
        inner = (
            getattr(current, "reason", None)
            or current.__cause__
            or (current.args[0] if current.args else None)
        )
        if not isinstance(inner, BaseException):
            break
        current = inner
    return current


def _target(exc: requests.RequestException) -> str:
    """host:port of the request, never its path or query (they may carry tokens)."""
    url = exc.request.url if exc.request is not None and exc.request.url else ""
    parts = urlsplit(str(url))
    if not parts.hostname:
        return "the subscriber"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__
