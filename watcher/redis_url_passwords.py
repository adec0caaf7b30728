"""The passwords a Redis URL carries: masked for display, listed for the log redactor.

A Redis URL (or sentinel URLs joined by `;`) may hold a password in its userinfo and in its
query (`password=`, `sentinel_password=`). Settings, the supervisor and the wiring show URLs
only through `mask_redis_url`; the redactor scrubs every form `redis_url_passwords` finds.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlsplit

MASK = "**********"

# `password=...` (also `sentinel_password=`...) anywhere in a URL's query, whatever the case.
_QUERY_PASSWORD = re.compile(r"(?i)((?<![a-z0-9])[a-z0-9_.-]*password=)([^&#;]*)")


def _split_userinfo(part: str) -> tuple[str, str, str] | None:
    """(before, userinfo, after) around the userinfo of one URL whose query passwords are
    already masked, or None without one. The userinfo ends at the last `@`, so a password
    holding an unencoded `/`, `?` or `@` is still all userinfo, whatever a parser makes of it.
    """
    scheme, sep, rest = part.partition("://")
    if not sep:
        scheme, rest = "", part
    at = rest.rfind("@")
    if at < 0:
        return None
    return scheme + sep, rest[:at], rest[at:]


def _mask_query(part: str) -> str:
    return _QUERY_PASSWORD.sub(lambda m: m.group(1) + MASK if m.group(2) else m.group(0), part)


def _mask_one(part: str) -> str:
    masked = _mask_query(part)
    found = _split_userinfo(masked)
    if found is None:
        return masked
    head, userinfo, after = found
    user, colon, _password = userinfo.partition(":")
    # No colon: `redis://secret@host` is how some clients spell a password-only URL.
    return head + (user + colon + MASK if colon else MASK) + after


def mask_redis_url(url: str) -> str:
    """`url` (one URL, or sentinel URLs joined by `;`) with every password replaced."""
    return ";".join(_mask_one(part) for part in url.split(";"))


def redis_url_passwords(url: str) -> list[str]:
    """Every password `url` carries, as written and percent-decoded, for the redactor."""
    found: list[str] = []
    for part in url.split(";"):
        found += [m.group(2) for m in _QUERY_PASSWORD.finditer(part)]
        split = _split_userinfo(_mask_query(part))
        if split is not None:
            user, colon, password = split[1].partition(":")
            found.append(password if colon else user)
        try:  # and whatever a URL parser would send, should it read the URL differently
            parsed = urlsplit(part)
            found += [parsed.password or ""]
            found += [v for k, v in parse_qsl(parsed.query) if k.lower() == "password"]
        except ValueError:
            pass  # not a URL a client could use either
    values = [*found, *(unquote(v) for v in found)]
    return list(dict.fromkeys(v for v in values if v and MASK not in v))
