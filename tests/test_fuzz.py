"""Property-based fuzzing of everything that parses outside input: whatever arrives, the
answer is a value or the one documented error, never a crash."""

from __future__ import annotations

import contextlib
import string
import uuid
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from watcher.api.ingress import SignatureError, verify_voltage_webhook
from watcher.delivery.signing import WebhookVerificationError
from watcher.delivery.signing import verify as verify_webhook
from watcher.engine.poller import apply_observation
from watcher.engine.schedule import PollPolicy
from watcher.engine.store import PaymentStore
from watcher.keys import Keys
from watcher.settings import ConfigError, Settings, load_settings
from watcher.timing import parse_retry_after
from watcher.voltage.errors import VoltageError, VoltageMalformedResponse, error_from_response
from watcher.voltage.models import InvalidInvoice, Payment, PaymentList, decode_invoice

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=25,
)
PAYMENT_KEYS = [
    "id",
    "status",
    "data",
    "metadata",
    "updated_at",
    "created_at",
    "error",
    "requested_amount",
    "wallet_id",
    "direction",
]
payment_like = st.dictionaries(
    st.sampled_from(PAYMENT_KEYS) | st.text(max_size=8), json_values, max_size=10
)


@FUZZ
@given(st.one_of(json_values, payment_like))
def test_any_payment_answer_parses_or_is_malformed(raw: Any) -> None:
    try:
        payment = Payment.from_api(raw)
    except VoltageMalformedResponse:
        return
    assert payment.raw is raw
    with contextlib.suppress(InvalidInvoice):
        payment.invoice()


@FUZZ
@given(
    st.one_of(
        json_values,
        st.dictionaries(
            st.sampled_from(["items", "next_cursor", "has_more", "total", "limit", "offset"]),
            json_values,
        ),
    )
)
def test_any_list_page_parses_or_is_malformed(raw: Any) -> None:
    with contextlib.suppress(VoltageMalformedResponse):
        PaymentList.from_api(raw)


@FUZZ
@given(
    st.integers(min_value=100, max_value=599),
    json_values,
    st.none() | st.floats(min_value=0, max_value=1e6),
)
def test_any_error_answer_becomes_a_typed_error(
    status: int, body: Any, retry: float | None
) -> None:
    error = error_from_response(status, body, retry)
    assert isinstance(error, VoltageError)
    assert str(error).startswith(f"Voltage answered {status}")


@FUZZ
@given(
    st.text(max_size=400)
    | st.text(alphabet=string.ascii_lowercase + string.digits, max_size=400).map(
        lambda s: "lntbs" + s
    )
)
def test_any_invoice_string_decodes_or_is_refused(text: str) -> None:
    with contextlib.suppress(InvalidInvoice):
        decode_invoice(text)


@FUZZ
@given(st.dictionaries(st.sampled_from(["retry-after", "x-retry-after-ms"]), st.text(max_size=40)))
def test_any_retry_after_header_is_a_wait_or_nothing(headers: dict[str, str]) -> None:
    wait = parse_retry_after(headers)
    assert wait is None or wait >= 0


SETTING_NAMES = sorted(Settings.model_fields)


@FUZZ
@given(st.dictionaries(st.sampled_from(SETTING_NAMES), st.text(max_size=60), max_size=4))
def test_any_setting_value_loads_or_names_the_variable(values: dict[str, str]) -> None:
    message = ""
    try:
        load_settings(_env_file=None, **values)
    except ConfigError as exc:
        message = str(exc)
    if message:
        assert any(name.upper() in message for name in values), message


@FUZZ
@given(
    st.binary(max_size=200),
    st.dictionaries(
        st.sampled_from(["x-voltage-signature", "x-voltage-timestamp"]), st.text(max_size=60)
    ),
)
def test_any_voltage_webhook_verifies_or_is_refused(body: bytes, headers: dict[str, str]) -> None:
    with contextlib.suppress(SignatureError):
        verify_voltage_webhook(
            "the-secret",
            body,
            timestamp=headers.get("x-voltage-timestamp"),
            signature=headers.get("x-voltage-signature"),
            now=1_800_000_000,
        )


@FUZZ
@given(
    st.binary(max_size=200),
    st.dictionaries(
        st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature"]),
        st.text(max_size=80),
    ),
)
def test_any_standard_webhook_verifies_or_is_refused(body: bytes, headers: dict[str, str]) -> None:
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    with contextlib.suppress(WebhookVerificationError):
        verify_webhook(secret, headers, body, now=1_800_000_000)


POLICY = PollPolicy(
    steps=((60.0, 1.0),),
    generating_interval=0.5,
    not_found_window=10.0,
    expiry_grace=5.0,
    hard_limit=60.0,
    max_watch_age=86400.0,
    error_backoff_max=300.0,
    jitter=0.0,
)


@pytest.fixture(scope="module")
def fuzz_store(redis_server: Any) -> PaymentStore:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    return PaymentStore(client, Keys(f"f{uuid.uuid4().hex[:8]}"))


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    st.sampled_from(["generating", "receiving", "completed"]),
    st.text(max_size=12) | st.sampled_from(["completed", "failed", "expired", "receiving"]),
    payment_like,
)
def test_any_observed_status_is_applied_or_refused_without_a_crash(
    fuzz_store: PaymentStore, stored: str, observed: str, extra: dict[str, Any]
) -> None:
    payment_id = str(uuid.uuid4())
    fuzz_store.adopt(
        Payment.from_api({"id": payment_id, "status": stored}),
        source="watched",
        now=1_800_000_000,
        first_poll_at=1_800_000_000,
    )
    record = fuzz_store.get(payment_id)
    assert record is not None
    raw = {
        **{k: v for k, v in extra.items() if k not in ("id", "status")},
        "id": payment_id,
        "status": observed,
    }
    try:
        payment = Payment.from_api(raw)
    except VoltageMalformedResponse:
        return
    outcome = apply_observation(fuzz_store, POLICY, record, payment, 1_800_000_001)
    assert outcome.outcome in {"unchanged", "moved", "final", "lost_race", "illegal", "stopped"}
