"""SSRF guard: webhooks go to public addresses only, unless the operator says otherwise.

A subscriber URL is attacker-controlled input that makes *us* send HTTP requests. Two checks:

1. `check_url` at subscribe time gives a clear 4xx-worthy error early (wrong scheme,
   credentials in the URL, a private IP, a host that resolves to one, a host that does not
   resolve).
2. `GuardedHTTPAdapter` / `guarded_session` at delivery time resolve the host themselves,
   vet every address and connect to the vetted address, so a host that resolved to a public
   address at subscribe time and to 127.0.0.1 now (DNS rebinding) is refused before any
   socket is opened. This is the check that matters; the first one is for good errors.

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
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from socket import getaddrinfo  # module-level name: tests patch `ssrf.getaddrinfo`
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.poolmanager import PoolManager
from urllib3.util.connection import allowed_gai_family

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2048
MAX_HOST_LENGTH = 253
ALLOWED_SCHEMES = ("http", "https")
ALLOW_HINT = "set WATCHER_WEBHOOK_ALLOW_PRIVATE=true to allow private addresses"

# Control characters, whitespace and backslashes: parsers disagree about them (urllib vs
# urllib3 vs the receiving server), and a legitimate webhook URL never needs them raw.
_FORBIDDEN_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")

_AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[Any, ...]]
_GetAddrInfoResult = Sequence[_AddrInfo]


class UnsafeURLError(ValueError):
    """A webhook URL is malformed or points somewhere we refuse to send requests."""


class UnsafeConnectionError(UnsafeURLError, NewConnectionError):
    """Refused at connect time: the host resolved to a non-public address.

    Also a urllib3 `NewConnectionError`, so urllib3 and requests treat it like any failed
    connection (no crash, ``requests.ConnectionError`` for the caller) while
    `find_unsafe_error` can still tell it apart from an ordinary network failure.
    """

    def __init__(
        self, conn: HTTPConnection | None, message: str, *, address: str | None = None
    ) -> None:
        self.address = address
        if conn is None:
            # Unpickling (urllib3's __reduce__ passes conn=None): keep the message readable.
            self.conn = None  # type: ignore[assignment]
            self._message = message
            Exception.__init__(self, message)
        else:
            NewConnectionError.__init__(self, conn, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


# --- address classes ---------------------------------------------------------------------


def _v4(cidr: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(cidr)


def _v6(cidr: str) -> ipaddress.IPv6Network:
    return ipaddress.IPv6Network(cidr)


# Order matters: the first match names the problem.
_IPV4_RULES: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_v4("0.0.0.0/32"), "an unspecified address"),
    (_v4("0.0.0.0/8"), "a reserved address ('this network', 0.0.0.0/8)"),
    (_v4("10.0.0.0/8"), "a private address (RFC 1918)"),
    (_v4("100.64.0.0/10"), "a CGNAT address (shared address space, 100.64.0.0/10)"),
    (_v4("127.0.0.0/8"), "a loopback address"),
    (_v4("169.254.0.0/16"), "a link-local address"),
    (_v4("172.16.0.0/12"), "a private address (RFC 1918)"),
    (_v4("192.0.0.0/24"), "a reserved address (IETF protocol assignments)"),
    (_v4("192.0.2.0/24"), "a documentation address (TEST-NET-1)"),
    (_v4("192.88.99.0/24"), "a reserved address (6to4 relay anycast)"),
    (_v4("192.168.0.0/16"), "a private address (RFC 1918)"),
    (_v4("198.18.0.0/15"), "a benchmarking address (198.18.0.0/15)"),
    (_v4("198.51.100.0/24"), "a documentation address (TEST-NET-2)"),
    (_v4("203.0.113.0/24"), "a documentation address (TEST-NET-3)"),
    (_v4("224.0.0.0/4"), "a multicast address"),
    (_v4("255.255.255.255/32"), "a broadcast address"),
    (_v4("240.0.0.0/4"), "a reserved address (240.0.0.0/4)"),
)

_IPV6_RULES: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_v6("::/128"), "an unspecified address"),
    (_v6("::1/128"), "a loopback address"),
    (_v6("64:ff9b:1::/48"), "a private address (local-use NAT64, 64:ff9b:1::/48)"),
    (_v6("100::/64"), "a reserved address (discard-only, 100::/64)"),
    (_v6("2001:2::/48"), "a benchmarking address (2001:2::/48)"),
    (_v6("2001::/23"), "a reserved address (IETF protocol assignments, 2001::/23)"),
    (_v6("2001:db8::/32"), "a documentation address (2001:db8::/32)"),
    (_v6("3fff::/20"), "a documentation address (3fff::/20)"),
    (_v6("fc00::/7"), "a private address (unique local, fc00::/7)"),
    (_v6("fe80::/10"), "a link-local address"),
    (_v6("fec0::/10"), "a site-local address (deprecated)"),
    (_v6("ff00::/8"), "a multicast address"),
)

_IPV4_MAPPED = _v6("::ffff:0:0/96")
_IPV4_COMPATIBLE = _v6("::/96")
_NAT64 = _v6("64:ff9b::/96")
_SIXTOFOUR = _v6("2002::/16")
_GLOBAL_UNICAST = _v6("2000::/3")


def _embedded_problem(kind: str, embedded: ipaddress.IPv4Address) -> str | None:
    inner = address_problem(embedded)
    if inner is None:
        return None
    return f"{kind} embedding {embedded}, {inner}"


def address_problem(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public unicast address (e.g. "a loopback address"), or None.

    IPv6 forms that carry an IPv4 address (IPv4-mapped, 6to4, NAT64) are judged by the IPv4
    address they carry, because that is where the packets end up.
    """
    if isinstance(ip, ipaddress.IPv4Address):
        for network, problem in _IPV4_RULES:
            if ip in network:
                return problem
        return None

    ip = ipaddress.IPv6Address(ip.packed)  # drop any %scope: it does not change the class
    for network6, problem in _IPV6_RULES:
        if ip in network6:
            return problem
    if ip in _IPV4_MAPPED:
        return _embedded_problem("an IPv4-mapped address", ipaddress.IPv4Address(ip.packed[12:]))
    if ip in _IPV4_COMPATIBLE:
        embedded = ipaddress.IPv4Address(ip.packed[12:])
        return (
            _embedded_problem("a deprecated IPv4-compatible address", embedded)
            or "a reserved address (deprecated IPv4-compatible, ::/96)"
        )
    if ip in _NAT64:
        return _embedded_problem("a NAT64 address", ipaddress.IPv4Address(ip.packed[12:]))
    if ip in _SIXTOFOUR:
        return _embedded_problem("a 6to4 address", ipaddress.IPv4Address(ip.packed[2:6]))
    if ip not in _GLOBAL_UNICAST:
        return "a reserved address (outside 2000::/3 global unicast)"
    return None


def is_public_address(ip: IPAddress) -> bool:
    """True when ``ip`` is a public unicast address a webhook may be sent to."""
    return address_problem(ip) is None


# --- subscribe-time validation ---------------------------------------------------------------


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


def _sockaddr_ip(sockaddr: tuple[Any, ...]) -> IPAddress:
    return ipaddress.ip_address(str(sockaddr[0]))


def _resolve(host: str, port: int, family: int = socket.AF_UNSPEC) -> _GetAddrInfoResult:
    """All TCP addresses of ``host``; raises socket.gaierror (or UnicodeError for bad IDNA)."""
    results: _GetAddrInfoResult = getaddrinfo(host, port, family, socket.SOCK_STREAM)
    if not results:
        raise socket.gaierror(socket.EAI_NONAME, "no addresses")
    return results


def check_url(url: str, *, allow_private: bool) -> ParsedTarget:
    """Validate a subscriber URL at subscribe time; raise UnsafeURLError saying what is wrong.

    Resolves the host (all answers) and refuses it if any answer is not public, unless
    ``allow_private``. Opens no connection. Delivery re-checks at connect time anyway.
    """
    if not isinstance(url, str) or not url:
        raise UnsafeURLError("webhook URL is empty")
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeURLError(f"webhook URL is longer than {MAX_URL_LENGTH} characters")
    if _FORBIDDEN_URL_CHARS.search(url):
        raise UnsafeURLError("webhook URL contains whitespace, control characters or '\\'")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise UnsafeURLError(f"webhook URL is malformed: {exc}") from None
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
    try:
        explicit_port = parts.port
    except ValueError:
        raise UnsafeURLError("webhook URL port must be a number from 1 to 65535") from None
    if explicit_port == 0:
        raise UnsafeURLError("webhook URL port must be a number from 1 to 65535")
    port = explicit_port or (443 if scheme == "https" else 80)

    literal = _parse_ip(host)
    if literal is not None:
        addresses: tuple[IPAddress, ...] = (literal,)
    else:
        try:
            infos = _resolve(host, port)
        except (OSError, UnicodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise UnsafeURLError(f"cannot resolve host {host!r}: {reason}") from None
        addresses = tuple(dict.fromkeys(_sockaddr_ip(info[4]) for info in infos))

    if not allow_private:
        for address in addresses:
            problem = address_problem(address)
            if problem is None:
                continue
            if literal is not None:
                raise UnsafeURLError(f"webhook URL host {host} is {problem}; {ALLOW_HINT}")
            raise UnsafeURLError(
                f"webhook URL host {host!r} resolves to {address}, {problem}; {ALLOW_HINT}"
            )
    return ParsedTarget(
        url=url,
        scheme=scheme,
        host=host,
        port=port,
        addresses=addresses,
        is_ip_literal=literal is not None,
    )


# --- connect-time guard --------------------------------------------------------------------


class GuardedHTTPConnection(HTTPConnection):
    """urllib3 connection that resolves, vets and then connects to the vetted address.

    The socket is opened to the exact address that passed the check, so nothing can
    re-resolve between check and connect. TLS still uses the URL's host name for SNI and
    certificate verification (urllib3 takes those from ``self.host``, not the socket).
    """

    def __init__(self, *args: Any, allow_private: bool = False, **kwargs: Any) -> None:
        self.allow_private = allow_private
        super().__init__(*args, **kwargs)

    def _vetted_addresses(self) -> _GetAddrInfoResult:
        host = self._dns_host.strip("[]")
        infos = _resolve(host, self.port or 0, allowed_gai_family())
        if self.allow_private:
            return infos
        for info in infos:
            address = _sockaddr_ip(info[4])
            problem = address_problem(address)
            if problem is not None:
                raise UnsafeConnectionError(
                    self,
                    f"refused to connect to {self.host}:{self.port}: it resolves to "
                    f"{address}, {problem}; {ALLOW_HINT}",
                    address=str(address),
                )
        return infos

    def _new_conn(self) -> socket.socket:
        try:
            infos = self._vetted_addresses()
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        except UnicodeError as exc:
            raise NameResolutionError(
                self.host, self, socket.gaierror(socket.EAI_NONAME, str(exc))
            ) from exc
        try:
            sock = _connect_first(infos, self.timeout, self.source_address, self.socket_options)
        except TimeoutError as exc:
            raise ConnectTimeoutError(
                self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})"
            ) from exc
        except OSError as exc:
            raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc
        sys.audit("http.client.connect", self, self.host, self.port)
        return sock


class GuardedHTTPSConnection(GuardedHTTPConnection, HTTPSConnection):
    """The HTTPS twin: the guarded `_new_conn`, then urllib3's TLS on top of that socket."""


def _connect_first(
    infos: _GetAddrInfoResult,
    timeout: float | None,
    source_address: tuple[str, int] | None,
    socket_options: Sequence[tuple[int, int, int | bytes]] | None,
) -> socket.socket:
    """Connect to the first address that answers, in resolver order (like create_connection)."""
    error: OSError | None = None
    for family, socktype, proto, _canonname, sockaddr in infos:
        sock = socket.socket(family, socktype, proto)
        try:
            for level, option, value in socket_options or ():
                sock.setsockopt(level, option, value)
            sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error or OSError("no address to connect to")


class _GuardedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = GuardedHTTPConnection


class _GuardedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = GuardedHTTPSConnection


class _GuardedPoolManager(PoolManager):
    """A PoolManager whose pools build guarded connections with our ``allow_private``."""

    def __init__(self, *args: Any, allow_private: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allow_private = allow_private
        self.pool_classes_by_scheme = {
            "http": _GuardedHTTPConnectionPool,
            "https": _GuardedHTTPSConnectionPool,
        }

    def _new_pool(
        self,
        scheme: str,
        host: str,
        port: int,
        request_context: dict[str, Any] | None = None,
    ) -> HTTPConnectionPool:
        # Added after the pool key is computed (PoolKey has no such field); the pool hands
        # unknown keyword arguments on to every connection it creates.
        context = dict(self.connection_pool_kw if request_context is None else request_context)
        context["allow_private"] = self.allow_private
        return super()._new_pool(scheme, host, port, context)


class GuardedHTTPAdapter(HTTPAdapter):
    """A `requests` transport adapter that refuses non-public peers at connect time.

    Proxies are refused: through a proxy we would vet the proxy's address, not the
    subscriber's, so the guard would be meaningless.
    """

    __attrs__ = [*HTTPAdapter.__attrs__, "allow_private"]  # noqa: RUF012 (requests' own name)

    def __init__(self, *, allow_private: bool = False, **kwargs: Any) -> None:
        self.allow_private = allow_private  # before super(): it calls init_poolmanager
        super().__init__(**kwargs)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        self._pool_connections = connections
        self._pool_maxsize = maxsize
        self._pool_block = block
        self.poolmanager = _GuardedPoolManager(
            num_pools=connections,
            maxsize=maxsize,
            block=block,
            allow_private=self.allow_private,
            **pool_kwargs,
        )

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        raise UnsafeURLError(
            "webhook deliveries do not go through proxies: the SSRF guard could not check "
            "the address the proxy connects to"
        )


class GuardedSession(requests.Session):
    """A Session that never follows redirects: a 3xx is returned as the response.

    Deliveries treat 3xx as a failed attempt (DESIGN: redirects are not followed), and a
    redirect is also a way round the SSRF check. ``max_redirects = 0`` alone is not enough:
    requests then raises TooManyRedirects even with ``allow_redirects=False`` (it still
    computes ``response.next``), so the redirect target is hidden instead.
    """

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        return None


def guarded_session(allow_private: bool) -> requests.Session:
    """A Session for webhook delivery: guarded adapter, no redirects, no ambient config.

    A 3xx comes back as the response whatever ``allow_redirects`` says (pass
    ``allow_redirects=False`` anyway, to be explicit). ``trust_env = False`` ignores proxy
    variables and ``.netrc`` (which would otherwise add our credentials to requests going to
    subscriber-chosen hosts).
    """
    session = GuardedSession()
    session.trust_env = False
    session.max_redirects = 0
    adapter = GuardedHTTPAdapter(allow_private=allow_private)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


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
