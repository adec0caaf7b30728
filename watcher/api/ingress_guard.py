"""What stops Voltage's webhooks from costing more than they are worth: replays, floods, depth.

A captured, validly signed webhook stays valid for the whole tolerance window and each accepted
one costs a Voltage read, so the ingress remembers what it has taken and rations reads per
payment. Both memories live in Redis (engine/hints.py), so they hold across API replicas. The
depth check runs before `json.loads`, whose recursion would otherwise end in a RecursionError
(a 500).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from watcher.api.errors import ApiError
from watcher.runtime import Runtime

# Voltage's payloads nest about four levels; anything near the parser's recursion limit is hostile.
MAX_NESTING = 64
# One Voltage read per payment per this many milliseconds, however many hints arrive.
READ_INTERVAL_MS = 1000
# A rationed hint still gets its payment polled this soon (the poll schedule does it).
DEFERRED_POLL = 1.0
# Kept past the window so a replay at its very edge is still recognised.
REPLAY_MARGIN = 60

_JSON_SPECIAL = re.compile(r'[\[\]{}"\\]')


def nesting_exceeds(text: str, limit: int = MAX_NESTING) -> bool:
    """True when arrays and objects nest deeper than `limit`; brackets inside strings do not count.

    Only visits brackets, quotes and backslashes, and stops at the first level past the limit.
    Malformed JSON is left for the parser to refuse.
    """
    depth, in_string, escaped_at = 0, False, -1
    for match in _JSON_SPECIAL.finditer(text):
        at, char = match.start(), match.group()
        if at == escaped_at:
            continue
        if in_string:
            if char == "\\":
                escaped_at = at + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def load_bounded(body: bytes) -> Any:
    """The parsed body, decoded as json.loads would; ApiError 400 if not JSON or too deep."""
    try:
        text = body.decode(json.detect_encoding(body), "surrogatepass")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_payload", "the webhook body is not JSON") from None
    if nesting_exceeds(text):
        detail = f"the webhook body nests deeper than {MAX_NESTING} levels"
        raise ApiError(400, "invalid_payload", detail)
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid_payload", "the webhook body is not JSON") from None


def fingerprints(body: bytes, timestamp: str, webhook_id: str | None) -> list[str]:
    """The names a webhook is known by: its body and timestamp, and its id when it has one."""
    signed = hashlib.sha256(body + b"." + timestamp.encode("ascii")).hexdigest()
    names = [f"body:{signed}"]
    if webhook_id:
        names.append("id:" + hashlib.sha256(webhook_id.encode("utf-8", "replace")).hexdigest())
    return names


def replay_ttl(tolerance: int) -> int:
    """A timestamp is accepted from `tolerance` before it to `tolerance` after, so the memory of
    a body and timestamp must outlive both halves of the window."""
    return 2 * tolerance + REPLAY_MARGIN


def take_read(rt: Runtime, payment_id: str, *, poll: bool) -> bool:
    """Claim this second's Voltage read of a payment; False if a webhook already took it.

    A refused hint may carry news the earlier read missed, so a watched payment's next poll is
    pulled forward instead (never pushed back), and the poll schedule catches it up.
    """
    if rt.hints.take_read(payment_id, READ_INTERVAL_MS):
        return True
    if poll:
        rt.payments.reschedule(payment_id, rt.clock() + DEFERRED_POLL, only_earlier=True)
    return False
