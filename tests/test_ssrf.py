"""The SSRF guard: subscribe-time URL checks and the connect-time adapter.

No test here sends a packet anywhere but loopback: host names are answered by a fake
resolver patched into `watcher.delivery.ssrf`, numeric hosts are parsed without DNS, and
every `socket.connect` is recorded and refused unless it targets loopback.
"""

from __future__ import annotations

import ipaddress
import pickle
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from watcher.delivery import ssrf
from watcher.delivery.guarded_http import GuardedHTTPAdapter, UnsafeConnectionError, guarded_session
from watcher.delivery.public_addresses import address_problem, is_public_address
from watcher.delivery.ssrf import ALLOW_HINT, UnsafeURLError, check_url, find_unsafe_error

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"

_real_getaddrinfo = socket.getaddrinfo
_real_connect = socket.socket.connect


@dataclass
class FakeDNS:
    """Answers for made-up names; numeric hosts go to the real parser, never to DNS."""

    answers: dict[str, Callable[[], list[str]]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def set(self, name: str, *addresses: str) -> None:
        self.answers[name] = lambda: list(addresses)

    def set_sequence(self, name: str, *rounds: list[str]) -> None:
        """Answer with each round in turn, then keep repeating the last one."""
        remaining = list(rounds)

        def answer() -> list[str]:
            return remaining.pop(0) if len(remaining) > 1 else remaining[0]

        self.answers[name] = answer

    def __call__(
        self, host: str, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> list[tuple[Any, ...]]:
        self.calls.append(host)
        if host not in self.answers:
            return _real_getaddrinfo(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)
        results: list[tuple[Any, ...]] = []
        for text in self.answers[host]():
            ip = ipaddress.ip_address(text)
            if ip.version == 4 and family in (0, socket.AF_INET):
                results.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (text, int(port))))
            elif ip.version == 6 and family in (0, socket.AF_INET6):
                results.append(
                    (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (text, int(port), 0, 0))
                )
        if not results:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return results


@pytest.fixture(autouse=True)
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    fake = FakeDNS()
    monkeypatch.setattr(ssrf, "getaddrinfo", fake)
    return fake


@pytest.fixture(autouse=True)
def connects(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Every socket.connect in the test; anything but loopback fails the test on the spot."""
    seen: list[Any] = []

    def guarded_connect(sock: socket.socket, address: Any) -> None:
        seen.append(address)
        if isinstance(address, tuple):
            ip = ipaddress.ip_address(str(address[0]).split("%")[0])
            if not ip.is_loopback:
                raise AssertionError(f"test attempted a connection to {address}")
        _real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    yield seen
    for address in seen:
        if isinstance(address, tuple):
            assert ipaddress.ip_address(str(address[0]).split("%")[0]).is_loopback


# --- a webhook receiver on loopback ------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    port: int
    requests: list[tuple[str, str, str | None]]  # (method, path, Host header)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    seen: list[tuple[str, str, str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            seen.append((self.command, self.path, self.headers.get("Host")))
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            if self.path.startswith("/redirect"):
                self.send_response(302)
                self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "11")
            self.end_headers()
            self.wfile.write(b'{"ok":true}')

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        yield Receiver(url=f"http://127.0.0.1:{port}", port=port, requests=seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# --- address classes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1", "loopback"),
        ("127.1.2.3", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "CGNAT"),
        ("100.127.255.254", "CGNAT"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "reserved"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.10", "documentation"),
        ("198.51.100.7", "documentation"),
        ("203.0.113.9", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("192.0.0.8", "reserved"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fe80::1%1", "link-local"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("2001:db8::1", "documentation"),
        ("3fff::1", "documentation"),
        ("100::1", "reserved"),
        ("2001::1", "reserved"),
        ("4000::1", "reserved"),
        ("::ffff:127.0.0.1", "IPv4-mapped address embedding 127.0.0.1, a loopback"),
        ("::ffff:10.1.2.3", "IPv4-mapped address embedding 10.1.2.3, a private"),
        ("::127.0.0.1", "IPv4-compatible address embedding 127.0.0.1"),
        (f"::{PUBLIC_V4}", "deprecated IPv4-compatible"),
        ("64:ff9b::169.254.169.254", "NAT64 address embedding 169.254.169.254, a link-local"),
        ("64:ff9b:1::1", "local-use NAT64"),
        ("2002:c0a8:101::1", "6to4 address embedding 192.168.1.1, a private"),
        ("2002:7f00:1::1", "6to4 address embedding 127.0.0.1, a loopback"),
    ],
)
def test_non_public_addresses_are_named(address: str, problem: str) -> None:
    ip = ipaddress.ip_address(address)
    named = address_problem(ip)
    assert named is not None
    assert problem in named
    assert not is_public_address(ip)


@pytest.mark.parametrize(
    "address",
    [
        PUBLIC_V4,
        "8.8.8.8",
        "1.1.1.1",
        "100.63.255.255",
        "100.128.0.1",
        "172.32.0.1",
        PUBLIC_V6,
        f"::ffff:{PUBLIC_V4}",
        f"64:ff9b::{PUBLIC_V4}",
        "2002:5db8:d822::1",
    ],
)
def test_public_addresses_pass(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert address_problem(ip) is None
    assert is_public_address(ip)


# --- check_url ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1/hook", "127.0.0.1 is a loopback address"),
        ("http://127.1.2.3:8080/hook", "loopback"),
        ("http://10.0.0.1/", "private"),
        ("https://172.16.0.1/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://100.64.0.1/", "CGNAT"),
        ("http://0.0.0.0:8000/", "unspecified"),
        ("http://[::1]:8000/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "embedding 127.0.0.1, a loopback"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[fc00::1]/", "private"),
        ("http://224.0.0.1/", "multicast"),
        ("http://2130706433/", "resolves to 127.0.0.1, a loopback"),
        ("http://0x7f.1/", "resolves to 127.0.0.1, a loopback"),
        ("http://017700000001/", "resolves to 127.0.0.1, a loopback"),
        ("HTTP://LOCALHOST.example./", None),  # resolved below via the fake DNS
    ],
)
def test_non_public_hosts_are_refused_unless_allowed(
    dns: FakeDNS, url: str, problem: str | None
) -> None:
    dns.set("localhost.example.", "127.0.0.1")
    with pytest.raises(UnsafeURLError) as excinfo:
        check_url(url, allow_private=False)
    message = str(excinfo.value)
    assert message.startswith("webhook URL host ")
    assert message.endswith(ALLOW_HINT)
    if problem is not None:
        assert problem in message
    target = check_url(url, allow_private=True)
    assert target.scheme in ("http", "https")
    assert not any(is_public_address(address) for address in target.addresses)


def test_hostname_resolving_to_loopback_is_refused(dns: FakeDNS) -> None:
    dns.set("hooks.internal.test", "127.0.0.1")
    with pytest.raises(UnsafeURLError) as excinfo:
        check_url("https://hooks.internal.test/lightning", allow_private=False)
    assert str(excinfo.value) == (
        "webhook URL host 'hooks.internal.test' resolves to 127.0.0.1, a loopback address; "
        "set WATCHER_WEBHOOK_ALLOW_PRIVATE=true to allow private addresses"
    )
    target = check_url("https://hooks.internal.test/lightning", allow_private=True)
    assert target.addresses == (ipaddress.ip_address("127.0.0.1"),)
    assert (target.host, target.port, target.is_ip_literal) == ("hooks.internal.test", 443, False)


def test_hostname_with_one_private_answer_among_public_ones_is_refused(dns: FakeDNS) -> None:
    dns.set("mixed.test", PUBLIC_V4, PUBLIC_V6, "10.0.0.7")
    with pytest.raises(UnsafeURLError, match=r"resolves to 10\.0\.0\.7, a private address"):
        check_url("https://mixed.test/", allow_private=False)
    dns.set("mixed6.test", PUBLIC_V4, "fd00::7")
    with pytest.raises(UnsafeURLError, match="resolves to fd00::7"):
        check_url("https://mixed6.test/", allow_private=False)


def test_public_hostname_passes_with_all_its_addresses(dns: FakeDNS, connects: list[Any]) -> None:
    dns.set("hooks.shop.test", PUBLIC_V4, PUBLIC_V6)
    target = check_url("https://hooks.shop.test:8443/voltage?x=1", allow_private=False)
    assert target.addresses == (ipaddress.ip_address(PUBLIC_V4), ipaddress.ip_address(PUBLIC_V6))
    assert (target.scheme, target.host, target.port) == ("https", "hooks.shop.test", 8443)
    assert target.url == "https://hooks.shop.test:8443/voltage?x=1"
    assert connects == []


def test_public_ip_literal_passes_without_any_lookup_or_connection(
    dns: FakeDNS, connects: list[Any]
) -> None:
    target = check_url(f"http://{PUBLIC_V4}/hook", allow_private=False)
    assert target.addresses == (ipaddress.ip_address(PUBLIC_V4),)
    assert target.is_ip_literal
    assert target.port == 80
    target6 = check_url(f"https://[{PUBLIC_V6}]:8443/hook", allow_private=False)
    assert target6.host == PUBLIC_V6
    assert dns.calls == []
    assert connects == []


def test_unresolvable_host_is_refused_with_a_clear_message(dns: FakeDNS) -> None:
    for allow_private in (False, True):
        with pytest.raises(UnsafeURLError, match=r"cannot resolve host 'nowhere\.invalid'"):
            check_url("https://nowhere.invalid/hook", allow_private=allow_private)
    assert "nowhere.invalid" in dns.calls


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://example.com/hook", "must use http or https (scheme is 'ftp')"),
        ("file:///etc/passwd", "scheme is 'file'"),
        ("gopher://example.com:70/_", "scheme is 'gopher'"),
        ("javascript:alert(1)", "scheme is 'javascript'"),
        ("example.com/hook", "scheme is none"),
        ("//example.com/hook", "scheme is none"),
        ("http://user:pass@example.com/hook", "credentials"),
        ("http://user@example.com/hook", "credentials"),
        (f"http://{PUBLIC_V4}@127.0.0.1/", "credentials"),
        ("http:///hook", "no host"),
        ("http://:8080/hook", "no host"),
        ("https://", "no host"),
        ("http://example.com:0/", "port"),
        ("http://example.com:65536/", "port"),
        ("http://example.com:http/", "port"),
        ("http://[::1/", "malformed"),
        ("http://example.com\\@127.0.0.1/", "'\\'"),
        ("http://exa mple.com/", "whitespace"),
        ("http://example.com/\r\nX-Evil: 1", "control"),
        ("", "empty"),
        ("https://example.com/" + "a" * 2048, "longer than 2048"),
        ("https://" + "a" * 254 + "/", "host is longer"),
    ],
)
def test_malformed_urls_are_refused_even_when_private_is_allowed(url: str, problem: str) -> None:
    for allow_private in (False, True):
        with pytest.raises(UnsafeURLError, match="webhook URL") as excinfo:
            check_url(url, allow_private=allow_private)
        assert problem in str(excinfo.value)


def test_ports_at_the_edges_are_accepted(dns: FakeDNS) -> None:
    dns.set("edge.test", PUBLIC_V4)
    assert check_url("http://edge.test:1/", allow_private=False).port == 1
    assert check_url("http://edge.test:65535/", allow_private=False).port == 65535
    assert check_url("https://edge.test/", allow_private=False).port == 443


# --- the connect-time guard --------------------------------------------------------------------


def test_adapter_refuses_loopback_without_sending_anything(
    receiver: Receiver, connects: list[Any]
) -> None:
    session = guarded_session(allow_private=False)
    with pytest.raises(requests.ConnectionError) as excinfo:
        session.post(receiver.url + "/hook", data=b"{}", timeout=5, allow_redirects=False)
    unsafe = find_unsafe_error(excinfo.value)
    assert isinstance(unsafe, UnsafeConnectionError)
    assert unsafe.address == "127.0.0.1"
    assert str(unsafe) == (
        f"refused to connect to 127.0.0.1:{receiver.port}: it resolves to 127.0.0.1, "
        f"a loopback address; {ALLOW_HINT}"
    )
    assert connects == []
    assert receiver.requests == []


def test_adapter_refuses_https_to_loopback_before_any_tls(
    receiver: Receiver, connects: list[Any]
) -> None:
    session = guarded_session(allow_private=False)
    with pytest.raises(requests.ConnectionError) as excinfo:
        session.get(f"https://127.0.0.1:{receiver.port}/", timeout=5)
    assert isinstance(find_unsafe_error(excinfo.value), UnsafeConnectionError)
    assert connects == []


def test_adapter_allows_loopback_when_private_is_allowed(
    receiver: Receiver, dns: FakeDNS, connects: list[Any]
) -> None:
    session = guarded_session(allow_private=True)
    response = session.post(receiver.url + "/hook", data=b"{}", timeout=5, allow_redirects=False)
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    # The recorder sees our connections, so `connects == []` elsewhere means something.
    assert connects == [("127.0.0.1", receiver.port)]
    # A host name works too, and the request still carries it as the Host header.
    dns.set("receiver.test", "127.0.0.1")
    response = session.get(f"http://receiver.test:{receiver.port}/named", timeout=5)
    assert response.status_code == 200
    assert receiver.requests[-1] == ("GET", "/named", f"receiver.test:{receiver.port}")


def test_dns_rebinding_is_refused_at_connect_time(
    receiver: Receiver, dns: FakeDNS, connects: list[Any]
) -> None:
    """Public when the subscription is checked, loopback when the delivery connects."""
    dns.set_sequence("rebind.test", [PUBLIC_V4], ["127.0.0.1"])
    url = f"http://rebind.test:{receiver.port}/hook"
    target = check_url(url, allow_private=False)
    assert target.addresses == (ipaddress.ip_address(PUBLIC_V4),)

    session = guarded_session(allow_private=False)
    with pytest.raises(requests.ConnectionError) as excinfo:
        session.post(url, data=b"{}", timeout=5, allow_redirects=False)
    unsafe = find_unsafe_error(excinfo.value)
    assert isinstance(unsafe, UnsafeConnectionError)
    assert "rebind.test" in str(unsafe)
    assert "resolves to 127.0.0.1, a loopback address" in str(unsafe)
    assert dns.calls == ["rebind.test", "rebind.test"]
    assert connects == []  # neither the public nor the loopback address was ever connected to
    assert receiver.requests == []


def test_adapter_refuses_when_any_answer_is_private(
    receiver: Receiver, dns: FakeDNS, connects: list[Any]
) -> None:
    dns.set("mixed.test", "127.0.0.1", PUBLIC_V4)
    with pytest.raises(requests.ConnectionError) as excinfo:
        guarded_session(allow_private=False).get(f"http://mixed.test:{receiver.port}/", timeout=5)
    assert isinstance(find_unsafe_error(excinfo.value), UnsafeConnectionError)
    assert connects == []


def test_redirects_are_not_followed(receiver: Receiver) -> None:
    session = guarded_session(allow_private=True)
    response = session.post(
        receiver.url + "/redirect", data=b"{}", allow_redirects=False, timeout=5
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/elsewhere"
    # Even a caller that forgets allow_redirects=False gets the 3xx, not the target.
    response = session.get(receiver.url + "/redirect", timeout=5)
    assert response.status_code == 302
    assert response.history == []
    assert [path for _, path, _ in receiver.requests] == ["/redirect", "/redirect"]


def test_proxies_are_refused_and_proxy_variables_ignored(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = guarded_session(allow_private=True)
    with pytest.raises(UnsafeURLError, match="proxies"):
        session.get(receiver.url, proxies={"http": "http://127.0.0.1:9"}, timeout=5)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    assert session.get(receiver.url + "/direct", timeout=5).status_code == 200
    assert receiver.requests[-1][1] == "/direct"


def test_ordinary_connection_failures_are_not_mistaken_for_refusals() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(requests.ConnectionError) as excinfo:
        guarded_session(allow_private=True).get(f"http://127.0.0.1:{closed_port}/", timeout=5)
    assert find_unsafe_error(excinfo.value) is None
    assert find_unsafe_error(None) is None


def test_unresolvable_host_at_connect_time_is_a_connection_error(dns: FakeDNS) -> None:
    with pytest.raises(requests.ConnectionError) as excinfo:
        guarded_session(allow_private=False).get("http://gone.invalid/", timeout=5)
    assert find_unsafe_error(excinfo.value) is None
    assert "gone.invalid" in dns.calls


def test_adapter_survives_pickling_with_its_setting() -> None:
    adapter = pickle.loads(pickle.dumps(GuardedHTTPAdapter(allow_private=True)))  # noqa: S301
    assert isinstance(adapter, GuardedHTTPAdapter)
    assert adapter.allow_private is True
    assert adapter.poolmanager.allow_private is True
