"""The connect-time SSRF guard: a `requests` session that connects only to vetted addresses.

The connection resolves the host itself, vets every answer and opens the socket to the exact
address that passed, so a host that resolved to a public address at subscribe time and to
127.0.0.1 now (DNS rebinding) is refused before any socket is opened. This is the check that
matters; `watcher.delivery.ssrf.check_url` at subscribe time is there for good errors.

A refusal reaches the caller as ``requests.ConnectionError`` (urllib3 ``MaxRetryError`` whose
``reason`` is our `UnsafeConnectionError`); `watcher.delivery.ssrf.find_unsafe_error` finds it.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Sequence
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.poolmanager import PoolManager
from urllib3.util.connection import allowed_gai_family

from watcher.delivery.public_addresses import address_problem
from watcher.delivery.ssrf import ALLOW_HINT, AddrInfos, UnsafeURLError, resolve, sockaddr_ip


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


class GuardedHTTPConnection(HTTPConnection):
    """urllib3 connection that resolves, vets and then connects to the vetted address.

    The socket is opened to the exact address that passed the check, so nothing can
    re-resolve between check and connect. TLS still uses the URL's host name for SNI and
    certificate verification (urllib3 takes those from ``self.host``, not the socket).
    """

    def __init__(self, *args: Any, allow_private: bool = False, **kwargs: Any) -> None:
        self.allow_private = allow_private
        super().__init__(*args, **kwargs)

    def _vetted_addresses(self) -> AddrInfos:
        host = self._dns_host.strip("[]")
        infos = resolve(host, self.port or 0, allowed_gai_family())
        if self.allow_private:
            return infos
        for info in infos:
            address = sockaddr_ip(info[4])
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
    infos: AddrInfos,
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
