"""SSRF guard: webhooks go to public addresses only, unless the operator says otherwise.

A subscriber URL is attacker-controlled input that makes *us* send HTTP requests. Two checks:

1. `check_url` (here) at subscribe time gives a clear 4xx-worthy error early (wrong scheme,
   credentials in the URL, a private IP, a host that resolves to one, a host that does not
   resolve).
2. `guarded_session` (`watcher.delivery.guarded_http`) at delivery time resolves the host
   itself, vets every address and connects to the vetted address, so a host that resolved to
   a public address at subscribe time and to 127.0.0.1 now (DNS rebinding) is refused before
   any socket is opened. This is the check that matters; the first one is for good errors.

Which addresses count as public is `watcher.delivery.public_addresses`. Both checks resolve
through `resolve` here (tests patch this module's `getaddrinfo`).

``WATCHER_WEBHOOK_ALLOW_PRIVATE=true`` (``allow_private=True``) switches the address-class
check off entirely, for development and tests; the URL shape checks still apply.

Recognising a refusal at delivery time: `requests` wraps it as ``requests.ConnectionError``
(urllib3 ``MaxRetryError`` whose ``reason`` is our `UnsafeConnectionError`). Call
`find_unsafe_error(exc)` on whatever was raised; it returns the `UnsafeConnectionError` or
None. Such an attempt should be recorded with ``str(unsafe)`` as its error.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from socket import getaddrinfo  # module-level name: tests patch `ssrf.getaddrinfo`
from typing import Any
from urllib.parse import SplitResult, urlsplit

from watcher.delivery.public_addresses import IPAddress, address_problem

MAX_URL_LENGTH = 2048
MAX_HOST_LENGTH = 253
ALLOWED_SCHEMES = ("http", "https")
ALLOW_HINT = "set WATCHER_WEBHOOK_ALLOW_PRIVATE=true to allow private addresses"

# Control characters, whitespace and backslashes: parsers disagree about them (urllib vs
# urllib3 vs the receiving server), and a legitimate webhook URL never needs them raw.
_FORBIDDEN_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")

_AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[Any, ...]]
AddrInfos = Sequence[_AddrInfo]


class UnsafeURLError(ValueError):
    """A webhook URL is malformed or points somewhere we refuse to send requests."""


@dataclass(frozen=True, slots=True)
class ParsedTarget:
    """A validated webhook URL and what its host resolved to when it was checked."""

    url: str
    scheme: str
    host: str  # lower-case, without IPv6 brackets
    port: int
    addresses: tuple[IPAddress, ...]
    is_ip_literal: bool


def _parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def sockaddr_ip(sockaddr: tuple[Any, ...]) -> IPAddress:
    """The address of a getaddrinfo answer's socket address."""
    return ipaddress.ip_address(str(sockaddr[0]))


def resolve(host: str, port: int, family: int = socket.AF_UNSPEC) -> AddrInfos:
    """All TCP addresses of ``host``; raises socket.gaierror (or UnicodeError for bad IDNA)."""
    results: AddrInfos = getaddrinfo(host, port, family, socket.SOCK_STREAM)
    if not results:
        raise socket.gaierror(socket.EAI_NONAME, "no addresses")
    return results


def check_url(url: str, *, allow_private: bool) -> ParsedTarget:
    """Validate a subscriber URL at subscribe time; raise UnsafeURLError saying what is wrong.

    Resolves the host (all answers) and refuses it if any answer is not public, unless
    ``allow_private``. Opens no connection. Delivery re-checks at connect time anyway.
    """
    parts = _split_url(url)
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        shown = f"{scheme!r}" if scheme else "none"
        raise UnsafeURLError(f"webhook URL must use http or https (scheme is {shown})")
    if "@" in parts.netloc:
        raise UnsafeURLError("webhook URL must not contain credentials (user:pass@host)")
    host = parts.hostname or ""
    if not host:
        raise UnsafeURLError("webhook URL has no host")
    if len(host) > MAX_HOST_LENGTH:
        raise UnsafeURLError(f"webhook URL host is longer than {MAX_HOST_LENGTH} characters")
    port = _port(parts, scheme)
    literal = _parse_ip(host)
    addresses = (literal,) if literal is not None else _resolve_for_check(host, port)
    if not allow_private:
        _refuse_non_public(host, addresses, is_literal=literal is not None)
    return ParsedTarget(
        url=url,
        scheme=scheme,
        host=host,
        port=port,
        addresses=addresses,
        is_ip_literal=literal is not None,
    )


def _split_url(url: str) -> SplitResult:
    """The URL's parts, once its length and characters are ones every parser reads alike."""
    if not isinstance(url, str) or not url:
        raise UnsafeURLError("webhook URL is empty")
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeURLError(f"webhook URL is longer than {MAX_URL_LENGTH} characters")
    if _FORBIDDEN_URL_CHARS.search(url):
        raise UnsafeURLError("webhook URL contains whitespace, control characters or '\\'")
    try:
        return urlsplit(url)
    except ValueError as exc:
        raise UnsafeURLError(f"webhook URL is malformed: {exc}") from None


def _port(parts: SplitResult, scheme: str) -> int:
    try:
        explicit_port = parts.port
    except ValueError:
        raise UnsafeURLError("webhook URL port must be a number from 1 to 65535") from None
    if explicit_port == 0:
        raise UnsafeURLError("webhook URL port must be a number from 1 to 65535")
    return explicit_port or (443 if scheme == "https" else 80)


def _resolve_for_check(host: str, port: int) -> tuple[IPAddress, ...]:
    try:
        infos = resolve(host, port)
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UnsafeURLError(f"cannot resolve host {host!r}: {reason}") from None
    return tuple(dict.fromkeys(sockaddr_ip(info[4]) for info in infos))


def _refuse_non_public(host: str, addresses: tuple[IPAddress, ...], *, is_literal: bool) -> None:
    for address in addresses:
        problem = address_problem(address)
        if problem is None:
            continue
        if is_literal:
            raise UnsafeURLError(f"webhook URL host {host} is {problem}; {ALLOW_HINT}")
        raise UnsafeURLError(
            f"webhook URL host {host!r} resolves to {address}, {problem}; {ALLOW_HINT}"
        )


def find_unsafe_error(exc: BaseException | None) -> UnsafeURLError | None:
    """The UnsafeURLError behind ``exc`` (as wrapped by urllib3/requests), or None.

    Walks ``reason`` (urllib3 MaxRetryError), ``args``, ``__cause__`` and ``__context__``.
    """
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        current = stack.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, UnsafeURLError):
            return current
        stack.extend(current.args)
        stack.extend((getattr(current, "reason", None), current.__cause__, current.__context__))
    return None
