"""Standard Webhooks signatures (https://www.standardwebhooks.com), our own implementation.

What we send is what the spec describes, so any Standard Webhooks receiver (the official
`standardwebhooks` libraries included) can verify it:

- ``webhook-id``: the event id, stable across attempts, so receivers can dedupe;
- ``webhook-timestamp``: unix seconds of this attempt, so receivers can refuse replays;
- ``webhook-signature``: ``v1,<base64 HMAC-SHA256(key, f"{id}.{timestamp}." + body)>``,
  space-separated when several secrets are active (rotation overlap).

Secrets are ``whsec_`` + base64 of the key. Nothing in this module logs a secret or puts one
into an exception message: errors say what is wrong with a secret, never what it is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping, Sequence
from secrets import token_bytes
from typing import Any, TypedDict, Unpack

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
SECRET_BYTES = 32
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
DEFAULT_TOLERANCE = 300
SIGNATURE_VERSION = "v1"

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"

_TIMESTAMP_RE = re.compile(r"[0-9]{1,15}")
# Printable ASCII without spaces: the id goes into a header and into the signed string.
_MSG_ID_RE = re.compile(r"[\x21-\x7e]{1,256}")


class WebhookVerificationError(ValueError):
    """A webhook failed verification; the message says why (never which secret)."""


def generate_secret() -> str:
    """A fresh subscription secret: ``whsec_`` + standard base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(token_bytes(SECRET_BYTES)).decode("ascii")


def secret_bytes(secret: str) -> bytes:
    """The HMAC key inside a ``whsec_`` secret.

    Unpadded base64 is accepted (other providers emit it). Raises ValueError naming the
    problem, never the secret, because these messages end up in logs and API answers.
    """
    if not isinstance(secret, str):
        raise TypeError("webhook secret must be a string")
    encoded = secret.removeprefix(SECRET_PREFIX)
    if not encoded:
        raise ValueError("webhook secret is empty after the 'whsec_' prefix")
    encoded += "=" * (-len(encoded) % 4)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("webhook secret is not valid base64 after the 'whsec_' prefix") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(
            f"webhook secret must decode to {MIN_SECRET_BYTES}..{MAX_SECRET_BYTES} bytes, "
            f"got {len(key)}"
        )
    return key


def _check_msg_id(msg_id: str) -> None:
    if not isinstance(msg_id, str) or not _MSG_ID_RE.fullmatch(msg_id):
        raise ValueError("webhook id must be 1..256 printable ASCII characters without spaces")


def _check_timestamp(timestamp: int) -> None:
    # A float or bool would sign a different string than the header carries.
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
        raise TypeError("webhook timestamp must be a non-negative int (unix seconds)")


def _digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return hmac.new(key, signed, hashlib.sha256).digest()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature of ``body`` as sent with this id and timestamp."""
    _check_msg_id(msg_id)
    _check_timestamp(timestamp)
    if not isinstance(body, bytes):
        raise TypeError("webhook body must be bytes: the exact bytes sent are the bytes signed")
    digest = _digest(secret_bytes(secret), msg_id, timestamp, body)
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def signature_header(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per active secret, space-separated.

    During a rotation overlap both the new and the old secret sign, so receivers still on
    the old secret keep verifying until they switch.
    """
    if isinstance(secrets, str):
        raise TypeError("pass a sequence of secrets, not a single secret string")
    unique = list(dict.fromkeys(secrets))
    if not unique:
        raise ValueError("at least one webhook secret is required to sign")
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in unique)


def webhook_headers(
    *, msg_id: str, timestamp: int, body: bytes, secrets: Sequence[str], user_agent: str
) -> dict[str, str]:
    """Every header a delivery attempt carries (lower-case names, as the spec writes them)."""
    return {
        HEADER_ID: msg_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_SIGNATURE: signature_header(secrets, msg_id, timestamp, body),
        "content-type": "application/json",
        "user-agent": user_agent,
    }


class VerifyOptions(TypedDict, total=False):
    """`verify`'s keyword arguments, shared with `verify_and_parse`."""

    tolerance: int
    now: float | None


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> None:
    """Check a received webhook; return None if genuine, else raise WebhookVerificationError.

    For Python receivers (our tests, the demo, bench receivers). Header names are matched
    case-insensitively; the timestamp must be within ``tolerance`` seconds of ``now`` either
    way (replay protection); any one ``v1`` signature matching is enough (rotation), and every
    candidate is compared in constant time. A malformed *secret* raises plain ValueError,
    because that is the receiver's configuration error, not a bad webhook.
    """
    if tolerance < 0:
        raise ValueError("tolerance must be zero or positive seconds")
    key = secret_bytes(secret)
    lowered = {str(name).lower(): value for name, value in headers.items()}
    missing = [
        name for name in (HEADER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE) if not lowered.get(name)
    ]
    if missing:
        raise WebhookVerificationError("missing webhook headers: " + ", ".join(missing))
    msg_id = lowered[HEADER_ID]
    timestamp = _fresh_timestamp(lowered[HEADER_TIMESTAMP], tolerance, now)
    if not isinstance(body, bytes):
        raise TypeError("webhook body must be the raw bytes received")
    _check_signatures(_digest(key, msg_id, timestamp, body), lowered[HEADER_SIGNATURE])


def _fresh_timestamp(header: str, tolerance: int, now: float | None) -> int:
    """The header's unix seconds, if within ``tolerance`` of ``now`` either way (replays)."""
    raw_timestamp = header.strip()
    if not _TIMESTAMP_RE.fullmatch(raw_timestamp):
        raise WebhookVerificationError("webhook-timestamp is not an integer number of unix seconds")
    timestamp = int(raw_timestamp)
    current = time.time() if now is None else now
    if timestamp < current - tolerance:
        raise WebhookVerificationError(
            f"webhook-timestamp is too old ({current - timestamp:.0f} s ago; "
            f"tolerance {tolerance} s)"
        )
    if timestamp > current + tolerance:
        raise WebhookVerificationError(
            f"webhook-timestamp is too far in the future ({timestamp - current:.0f} s ahead; "
            f"tolerance {tolerance} s)"
        )
    return timestamp


def _check_signatures(expected: bytes, header: str) -> None:
    """Any one v1 signature matching is enough; each is compared, so all cost the same."""
    seen_v1 = False
    matched = False
    for candidate in header.split(" "):
        version, sep, encoded = candidate.partition(",")
        if version != SIGNATURE_VERSION or not sep:
            continue
        seen_v1 = True
        try:
            given = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        # No early exit: every candidate costs the same whichever one matches.
        matched |= hmac.compare_digest(expected, given)
    if not seen_v1:
        raise WebhookVerificationError("webhook-signature holds no v1 signature")
    if not matched:
        raise WebhookVerificationError("no v1 signature in webhook-signature matches the body")


def verify_and_parse(
    secret: str, headers: Mapping[str, str], body: bytes, **options: Unpack[VerifyOptions]
) -> dict[str, Any]:
    """`verify`, then the JSON object in the body (parsed only once it is known genuine)."""
    verify(secret, headers, body, **options)
    try:
        parsed = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise WebhookVerificationError("webhook body is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise WebhookVerificationError("webhook body is not a JSON object")
    return parsed
