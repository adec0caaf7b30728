"""Our Standard Webhooks signing, proven against the official `standardwebhooks` library.

The official library is the receiver's view: if it verifies what we send, any Standard
Webhooks receiver can. Our own `verify` is checked the other way round, on messages the
official library signed.
"""

from __future__ import annotations

import base64
import json
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError as OfficialVerificationError

from watcher.delivery import signing
from watcher.delivery.signing import (
    WebhookVerificationError,
    generate_secret,
    secret_bytes,
    sign,
    signature_header,
    verify,
    verify_and_parse,
    webhook_headers,
)

USER_AGENT = "voltage-watcher-tests/1"
MSG_ID = "evt_01JDTESTEVENT"
BODY = (
    b'{"type":"payment.completed","timestamp":"2026-11-25T19:00:00.123Z",'
    b'"data":{"payment_id":"p1","previous_status":"receiving","status":"completed"}}'
)

msg_ids = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-",
    min_size=1,
    max_size=64,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
# The official library decodes the body as UTF-8, so bodies are text (what we send is JSON).
bodies = st.one_of(
    st.text().map(str.encode),
    json_values.map(lambda value: json.dumps(value, ensure_ascii=False).encode()),
)


def headers_for(secrets: list[str], body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    return webhook_headers(
        msg_id=MSG_ID,
        timestamp=int(time.time()) if timestamp is None else timestamp,
        body=body,
        secrets=secrets,
        user_agent=USER_AGENT,
    )


def official_headers(secret: str, body: bytes, *, at: datetime | None = None) -> dict[str, str]:
    """Headers as a sender using the official library would produce them."""
    moment = (at or datetime.now(tz=UTC)).replace(microsecond=0)
    return {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": Webhook(secret).sign(MSG_ID, moment, body.decode()),
    }


# --- secrets ---------------------------------------------------------------------------------


def test_generated_secrets_are_whsec_base64_of_32_random_bytes() -> None:
    secrets = {generate_secret() for _ in range(20)}
    assert len(secrets) == 20
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert base64.b64decode(secret.removeprefix("whsec_"), validate=True) == secret_bytes(
            secret
        )
        assert len(secret_bytes(secret)) == 32


def test_secret_bytes_accepts_unpadded_and_unprefixed_secrets() -> None:
    key = bytes(range(24))
    padded = base64.b64encode(key).decode()
    assert secret_bytes("whsec_" + padded) == key
    assert secret_bytes(padded) == key
    key33 = bytes(range(33))
    assert secret_bytes("whsec_" + base64.b64encode(key33).decode().rstrip("=")) == key33


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        ("whsec_", "empty"),
        ("", "empty"),
        ("whsec_not base64 at all!!", "not valid base64"),
        ("whsec_c2VjcmV0LXRvby1zaG9ydA==", "24..64 bytes, got 16"),
        ("whsec_" + base64.b64encode(b"k" * 65).decode(), "24..64 bytes, got 65"),
        ("whsec_" + base64.b64encode(b"k" * 32).decode() + "%%", "not valid base64"),
    ],
)
def test_malformed_secrets_are_refused_without_revealing_them(secret: str, reason: str) -> None:
    with pytest.raises(ValueError, match="webhook secret") as excinfo:
        secret_bytes(secret)
    assert reason in str(excinfo.value)
    rendered = "".join(traceback.format_exception(excinfo.value))
    payload = secret.removeprefix("whsec_")
    if payload:
        assert payload not in rendered
        assert payload not in repr(excinfo.value)


def test_signing_with_a_malformed_secret_does_not_reveal_it() -> None:
    bad = "whsec_" + "A" * 10 + "!" + "B" * 30
    with pytest.raises(ValueError, match="not valid base64") as excinfo:
        signature_header([generate_secret(), bad], MSG_ID, 1, b"{}")
    assert bad.removeprefix("whsec_") not in "".join(traceback.format_exception(excinfo.value))


# --- signing ---------------------------------------------------------------------------------


def test_matches_the_standard_webhooks_test_vector() -> None:
    """The vector published with the Standard Webhooks specification."""
    signature = sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_webhook_headers_carry_everything_the_spec_and_design_ask_for() -> None:
    secret = generate_secret()
    headers = headers_for([secret], BODY, timestamp=1_800_000_000)
    assert headers == {
        "webhook-id": MSG_ID,
        "webhook-timestamp": "1800000000",
        "webhook-signature": sign(secret, MSG_ID, 1_800_000_000, BODY),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


@settings(max_examples=60, deadline=None)
@given(body=bodies, msg_id=msg_ids)
def test_official_library_verifies_our_signatures(body: bytes, msg_id: str) -> None:
    new, old = generate_secret(), generate_secret()
    headers = webhook_headers(
        msg_id=msg_id,
        timestamp=int(time.time()),
        body=body,
        secrets=[new, old],
        user_agent=USER_AGENT,
    )
    assert len(headers["webhook-signature"].split(" ")) == 2
    # During a rotation overlap a receiver holding either secret verifies.
    for secret in (new, old):
        Webhook(secret).verify(body, headers, json_parse=False)
        verify(secret, headers, body)
    with pytest.raises(OfficialVerificationError):
        Webhook(generate_secret()).verify(body, headers, json_parse=False)


def test_official_library_parses_our_json_body() -> None:
    secret = generate_secret()
    assert Webhook(secret).verify(BODY, headers_for([secret], BODY)) == json.loads(BODY)


def test_official_library_rejects_a_tampered_body() -> None:
    secret = generate_secret()
    headers = headers_for([secret], BODY)
    with pytest.raises(OfficialVerificationError, match="No matching signature"):
        Webhook(secret).verify(BODY.replace(b"completed", b"expired"), headers)


def test_official_library_rejects_an_old_timestamp() -> None:
    secret = generate_secret()
    headers = headers_for([secret], BODY, timestamp=int(time.time()) - 600)
    with pytest.raises(OfficialVerificationError, match="too old"):
        Webhook(secret).verify(BODY, headers)


def test_duplicate_secrets_sign_once() -> None:
    secret = generate_secret()
    assert signature_header([secret, secret], MSG_ID, 1, BODY) == sign(secret, MSG_ID, 1, BODY)


def test_signing_refuses_inputs_that_would_sign_something_else_than_is_sent() -> None:
    secret = generate_secret()
    with pytest.raises(TypeError):
        sign(secret, MSG_ID, 1.5, BODY)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sign(secret, MSG_ID, True, BODY)
    with pytest.raises(TypeError):
        sign(secret, MSG_ID, 1, BODY.decode())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="webhook id"):
        sign(secret, "evt 1\r\nx-evil: 1", 1, BODY)
    with pytest.raises(TypeError, match="sequence"):
        signature_header(secret, MSG_ID, 1, BODY)
    with pytest.raises(ValueError, match="at least one"):
        signature_header([], MSG_ID, 1, BODY)


# --- our verifier ----------------------------------------------------------------------------


def test_verify_accepts_messages_signed_by_the_official_library() -> None:
    secret = generate_secret()
    verify(secret, official_headers(secret, BODY), BODY)
    assert verify_and_parse(secret, official_headers(secret, BODY), BODY) == json.loads(BODY)


def test_verify_matches_header_names_case_insensitively() -> None:
    secret = generate_secret()
    headers = {name.title(): value for name, value in official_headers(secret, BODY).items()}
    assert "Webhook-Signature" in headers
    verify(secret, headers, BODY)


def test_verify_accepts_any_one_matching_v1_signature() -> None:
    secret = generate_secret()
    headers = official_headers(secret, BODY)
    other = sign(generate_secret(), MSG_ID, int(headers["webhook-timestamp"]), BODY)
    headers["webhook-signature"] = (
        f"v2,abc {other} v1,!!notbase64 nonsense {headers['webhook-signature']}"
    )
    verify(secret, headers, BODY)


def test_verify_rejects_a_tampered_body_id_or_wrong_secret() -> None:
    secret = generate_secret()
    headers = official_headers(secret, BODY)
    with pytest.raises(WebhookVerificationError, match=r"no v1 signature .* matches"):
        verify(secret, headers, BODY + b" ")
    with pytest.raises(WebhookVerificationError, match="matches"):
        verify(secret, {**headers, "webhook-id": "evt_other"}, BODY)
    with pytest.raises(WebhookVerificationError, match="matches"):
        verify(generate_secret(), headers, BODY)


def test_verify_rejects_stale_and_future_timestamps() -> None:
    secret = generate_secret()
    headers = official_headers(secret, BODY)
    sent = int(headers["webhook-timestamp"])
    verify(secret, headers, BODY, now=sent + 300)
    verify(secret, headers, BODY, now=sent - 300)
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(secret, headers, BODY, now=sent + 301)
    with pytest.raises(WebhookVerificationError, match="future"):
        verify(secret, headers, BODY, now=sent - 301)
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(secret, headers, BODY, now=sent + 31, tolerance=30)
    past = datetime.fromtimestamp(time.time() - 3600, tz=UTC)
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(secret, official_headers(secret, BODY, at=past), BODY)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_verify_names_missing_headers(missing: str) -> None:
    secret = generate_secret()
    headers = official_headers(secret, BODY)
    del headers[missing]
    with pytest.raises(WebhookVerificationError, match=f"missing webhook headers: {missing}"):
        verify(secret, headers, BODY)
    with pytest.raises(WebhookVerificationError, match=missing):
        verify(secret, {**headers, missing: ""}, BODY)


@pytest.mark.parametrize("timestamp", ["abc", "12.5", "-5", "1e9", "", "0x10"])
def test_verify_rejects_a_timestamp_that_is_not_an_int(timestamp: str) -> None:
    secret = generate_secret()
    headers = {**official_headers(secret, BODY), "webhook-timestamp": timestamp}
    with pytest.raises(WebhookVerificationError):
        verify(secret, headers, BODY)


@pytest.mark.parametrize(
    ("signature", "reason"),
    [
        ("garbage", "no v1 signature"),
        ("v2,abcd", "no v1 signature"),
        ("v1", "no v1 signature"),
        ("v1,", "matches"),
        ("v1,%%%%", "matches"),
        ("v1,AAAA", "matches"),
    ],
)
def test_verify_rejects_garbage_signatures(signature: str, reason: str) -> None:
    secret = generate_secret()
    headers = {**official_headers(secret, BODY), "webhook-signature": signature}
    with pytest.raises(WebhookVerificationError, match=reason):
        verify(secret, headers, BODY)


def test_verify_and_parse_refuses_bodies_that_are_not_json_objects() -> None:
    secret = generate_secret()
    for body in (b"[1, 2]", b"not json", b"\xff\xfe"):
        headers = headers_for([secret], body)
        verify(secret, headers, body)  # the signature itself is fine
        with pytest.raises(WebhookVerificationError, match="JSON"):
            verify_and_parse(secret, headers, body)


def test_verify_errors_never_contain_the_secret() -> None:
    secret = generate_secret()
    headers = official_headers(secret, BODY)
    attempts: list[Callable[[], None]] = [
        lambda: verify(secret, headers, BODY + b"x"),
        lambda: verify(secret, {}, BODY),
        lambda: verify(secret, headers, BODY, now=0),
    ]
    for attempt in attempts:
        with pytest.raises(WebhookVerificationError) as excinfo:
            attempt()
        rendered = "".join(traceback.format_exception(excinfo.value))
        assert secret.removeprefix("whsec_") not in rendered
        assert base64.b64encode(signing.secret_bytes(secret)).decode() not in rendered
