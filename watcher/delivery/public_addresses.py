"""Which IP addresses a webhook may go to: public unicast only, each refusal named.

The rules are tables (the first match names the problem), so a reviewer can check them
against the IANA special-purpose registries line by line. IPv6 forms that carry an IPv4
address are judged by the address they carry. `watcher.delivery.ssrf` asks at subscribe time,
`watcher.delivery.guarded_http` at connect time.
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


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
