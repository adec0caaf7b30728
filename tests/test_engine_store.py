"""The engine's Redis steps on a real Redis: leases, adoption, exactly-once transitions."""

from __future__ import annotations

import random
import threading
import uuid
from typing import Any

import pytest
import redis

from watcher.engine.poller import apply_observation, poll_payment
from watcher.engine.records import PaymentRecord, is_legal_move
from watcher.engine.schedule import PollPolicy
from watcher.engine.store import PaymentStore
from watcher.keys import Keys
from watcher.simulator.invoices import make_invoice
from watcher.voltage import models
from watcher.voltage.errors import VoltageAuthError, VoltageNotFound, VoltageTransientError
from watcher.voltage.models import Invoice, Payment

NOW = 1_800_000_000.0

POLICY = PollPolicy(
    steps=((60.0, 1.0), (600.0, 5.0), (3600.0, 30.0)),
    generating_interval=0.5,
    not_found_window=10.0,
    expiry_grace=5.0,
    hard_limit=60.0,
    max_watch_age=86400.0,
    error_backoff_max=300.0,
    jitter=0.0,
)


def voltage_payment(payment_id: str, status: str, **extra: Any) -> Payment:
    raw: dict[str, Any] = {
        "id": payment_id,
        "status": status,
        "direction": "receive",
        "wallet_id": "wallet-1",
        "updated_at": "2027-01-15T08:00:00.000000Z",
        "data": {"payment_request": None, "amount_msats": 1000},
        **extra,
    }
    return Payment.from_api(raw)


@pytest.fixture
def store(redis_client: redis.Redis) -> PaymentStore:
    return PaymentStore(redis_client, Keys(f"t{uuid.uuid4().hex[:8]}"))


def adopt(store: PaymentStore, status: str = "receiving", **extra: Any) -> PaymentRecord:
    payment_id = str(uuid.uuid4())
    assert store.adopt(
        voltage_payment(payment_id, status, **extra), source="created", now=NOW, first_poll_at=NOW
    )
    record = store.get(payment_id)
    assert record is not None
    return record


class FixedReader:
    def __init__(self, payment: Payment | Exception) -> None:
        self.answer = payment
        self.calls = 0

    def get_payment(self, payment_id: str, **_: Any) -> Payment:
        self.calls += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_claims_are_leases(store: PaymentStore) -> None:
    ids = [adopt(store).id for _ in range(3)]
    first = store.claim_due(NOW, lease=30, limit=2)
    assert len(first) == 2
    assert store.claim_due(NOW, lease=30, limit=10) == [i for i in ids if i not in first]
    assert store.claim_due(NOW + 29, lease=30, limit=10) == []
    # Nobody finished: the lease runs out and everything comes due again.
    assert sorted(store.claim_due(NOW + 31, lease=30, limit=10)) == sorted(ids)


def test_adopting_twice_changes_nothing(store: PaymentStore) -> None:
    record = adopt(store)
    again = voltage_payment(record.id, "completed")
    assert not store.adopt(again, source="watched", now=NOW + 5, first_poll_at=NOW + 5)
    stored = store.get(record.id)
    assert stored is not None
    assert stored.status == "receiving"
    assert store.outbox_events() == []


def test_adopting_a_final_payment_emits_its_event_once(store: PaymentStore) -> None:
    payment = voltage_payment(str(uuid.uuid4()), "completed")
    assert store.adopt(payment, source="watched", now=NOW, first_poll_at=NOW)
    assert not store.adopt(payment, source="watched", now=NOW, first_poll_at=NOW)
    events = store.outbox_events()
    assert [e["type"] for e in events] == ["payment.completed"]
    assert store.next_poll_at(payment.id) is None


def test_completed_payment_makes_one_event_and_leaves_the_schedule(store: PaymentStore) -> None:
    record = adopt(store)
    payment = voltage_payment(record.id, "completed", metadata={"order": "42"})
    outcome = poll_payment(store, FixedReader(payment), POLICY, record.id, NOW + 2)
    assert outcome.outcome == "final"
    events = store.outbox_events()
    assert len(events) == 1
    assert events[0]["event_id"] == outcome.event_id
    assert events[0]["payment_id"] == record.id
    assert store.next_poll_at(record.id) is None
    # A later poll of the same answer does nothing at all.
    again = poll_payment(store, FixedReader(payment), POLICY, record.id, NOW + 3)
    assert again.outcome == "skipped"
    assert len(store.outbox_events()) == 1
    stored = store.get(record.id)
    assert stored is not None
    assert stored.status == "completed"
    assert [t["to"] for t in store.transitions(record.id)] == ["receiving", "completed"]


def test_racing_workers_produce_exactly_one_event(store: PaymentStore) -> None:
    record = adopt(store)
    completed = voltage_payment(record.id, "completed")
    stale_copies = [store.get(record.id) for _ in range(16)]
    barrier = threading.Barrier(len(stale_copies))
    outcomes: list[str] = []

    def race(copy: PaymentRecord | None) -> None:
        assert copy is not None
        barrier.wait()
        outcomes.append(apply_observation(store, POLICY, copy, completed, NOW + 1).outcome)

    threads = [threading.Thread(target=race, args=(c,)) for c in stale_copies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert outcomes.count("final") == 1
    assert outcomes.count("lost_race") == 15
    assert len(store.outbox_events()) == 1


def test_a_final_status_never_changes_back(store: PaymentStore) -> None:
    record = adopt(store)
    poll_payment(store, FixedReader(voltage_payment(record.id, "expired")), POLICY, record.id, NOW)
    final = store.get(record.id)
    assert final is not None
    outcome = apply_observation(
        store, POLICY, final, voltage_payment(record.id, "completed"), NOW + 1
    )
    assert outcome.outcome == "lost_race"
    assert [e["type"] for e in store.outbox_events()] == ["payment.expired"]


def test_an_illegal_move_is_counted_not_emitted(store: PaymentStore) -> None:
    record = adopt(store, status="receiving")
    outcome = poll_payment(
        store, FixedReader(voltage_payment(record.id, "generating")), POLICY, record.id, NOW
    )
    assert outcome.outcome == "illegal"
    assert store.outbox_events() == []
    assert store.counters()["transitions:illegal"] == 1
    assert store.next_poll_at(record.id) is not None


def test_transient_errors_back_off_without_dropping(store: PaymentStore) -> None:
    record = adopt(store)
    reader = FixedReader(VoltageTransientError("Voltage answered 503", status=503))
    delays = []
    for i in range(4):
        now = NOW + i
        poll_payment(store, reader, POLICY, record.id, now)
        next_at = store.next_poll_at(record.id)
        assert next_at is not None
        delays.append(next_at - now)
    assert delays == sorted(delays)
    assert delays[-1] > delays[0]
    stored = store.get(record.id)
    assert stored is not None
    assert stored.error_count == 4
    assert "503" in (stored.last_error or "")


def test_credential_errors_are_counted_and_rechecked_slowly(store: PaymentStore) -> None:
    record = adopt(store)
    reader = FixedReader(VoltageAuthError("Voltage answered 401 wrong_credentials", status=401))
    outcome = poll_payment(store, reader, POLICY, record.id, NOW)
    assert outcome.outcome == "error"
    assert store.counters()["voltage_errors:auth"] == 1
    next_at = store.next_poll_at(record.id)
    assert next_at is not None
    assert next_at - NOW >= 60


def test_retry_after_is_respected(store: PaymentStore) -> None:
    record = adopt(store)
    reader = FixedReader(VoltageTransientError("429", status=429, retry_after=42.0))
    poll_payment(store, reader, POLICY, record.id, NOW)
    next_at = store.next_poll_at(record.id)
    assert next_at is not None
    assert next_at - NOW >= 42.0


def test_early_404s_are_tolerated_then_believed(store: PaymentStore) -> None:
    record = adopt(store, status="generating")
    reader = FixedReader(VoltageNotFound("404", status=404))
    assert poll_payment(store, reader, POLICY, record.id, NOW).outcome == "not_found"
    assert poll_payment(store, reader, POLICY, record.id, NOW + 5).outcome == "not_found"
    assert poll_payment(store, reader, POLICY, record.id, NOW + 11).outcome == "stopped"
    stored = store.get(record.id)
    assert stored is not None
    assert stored.stopped_reason == "not_found"
    assert store.next_poll_at(record.id) is None
    # Issue 13: polls answered 404 were timed (watcher_poll_duration_seconds) but not counted.
    _buckets, timed, _total = store.latency_histogram("poll")
    assert store.counters()["polls"] == timed == 3


def test_schedule_slows_with_age_and_reads_once_after_expiry() -> None:
    record = PaymentRecord(id="p", status="receiving", version=1, source="created", watched_at=NOW)
    assert POLICY.next_poll(record, NOW + 10) == pytest.approx(NOW + 11)
    assert POLICY.next_poll(record, NOW + 100) == pytest.approx(NOW + 105)
    assert POLICY.next_poll(record, NOW + 1000) == pytest.approx(NOW + 1030)
    record.expires_at = NOW + 1010
    # The next regular poll would be at +1030; the final check right after expiry comes first.
    assert POLICY.next_poll(record, NOW + 1000) == pytest.approx(NOW + 1015)
    record.status = "generating"
    assert POLICY.next_poll(record, NOW + 1000) == pytest.approx(NOW + 1000.5)


def test_hard_limit_stops_polling(store: PaymentStore) -> None:
    record = adopt(store)
    store.redis.hset(store.keys.payment(record.id), "expires_at", repr(NOW + 10))
    unchanged = FixedReader(voltage_payment(record.id, "receiving"))
    assert poll_payment(store, unchanged, POLICY, record.id, NOW + 20).outcome == "unchanged"
    assert poll_payment(store, unchanged, POLICY, record.id, NOW + 80).outcome == "stopped"
    stored = store.get(record.id)
    assert stored is not None
    assert stored.stopped_reason == "hard_limit"
    assert store.counters()["stopped:hard_limit"] == 1
    assert store.next_poll_at(record.id) is None


def test_legal_moves() -> None:
    assert is_legal_move("generating", "receiving")
    assert is_legal_move("generating", "failed")
    assert is_legal_move("receiving", "completed")
    assert is_legal_move("generating", "completed")
    assert not is_legal_move("receiving", "generating")
    assert not is_legal_move("completed", "failed")
    assert not is_legal_move("expired", "completed")
    assert not is_legal_move("receiving", "receiving")
    assert not is_legal_move("receiving", "weird")


def test_a_transition_detected_again_keeps_its_event_id(store: PaymentStore) -> None:
    """If Redis lost the last writes and the watcher detects the same transition again,
    receivers see the same webhook-id and dedupe it."""
    record = adopt(store)
    completed = voltage_payment(record.id, "completed")
    first = poll_payment(store, FixedReader(completed), POLICY, record.id, NOW + 1)
    store.redis.delete(store.keys.payment(record.id), store.keys.transitions(record.id))
    store.adopt(
        voltage_payment(record.id, "receiving"),
        source="created",
        now=NOW + 2,
        first_poll_at=NOW + 2,
    )
    again = poll_payment(store, FixedReader(completed), POLICY, record.id, NOW + 3)
    assert first.event_id is not None
    assert again.event_id == first.event_id


def test_an_unchanged_poll_does_not_decode_the_invoice_again(
    store: PaymentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    invoice = make_invoice(
        amount_msat=5_000, description="", expiry=600, timestamp=int(NOW), rng=random.Random(1)
    )
    payment_id = str(uuid.uuid4())
    data = {"payment_request": invoice.payment_request, "amount_msats": 5_000}
    payment = voltage_payment(payment_id, "receiving", data=data)
    store.adopt(payment, source="created", now=NOW, first_poll_at=NOW)
    decodes: list[str] = []
    real_decode = models.decode_invoice

    def counting_decode(request: str) -> Invoice:
        decodes.append(request)
        return real_decode(request)

    monkeypatch.setattr(models, "decode_invoice", counting_decode)
    for i in range(3):
        poll_payment(store, FixedReader(payment), POLICY, payment_id, NOW + i)
    assert decodes == []  # decoding was almost half of a poll's CPU
    record = store.get(payment_id)
    assert record is not None
    assert record.payment_hash == invoice.payment_hash
    assert record.expires_at == NOW + 600
    assert record.poll_count == 3


def test_pending_payments_are_indexed_by_creation_time_and_leave_it_when_final(
    store: PaymentStore,
) -> None:
    first = adopt(store)
    second = adopt(store)
    assert store.pending.among([second.id, "not-watched", first.id]) == [second.id, first.id]
    assert store.pending.oldest_created() == pytest.approx(NOW)  # no created_at: watch time
    poll_payment(store, FixedReader(voltage_payment(first.id, "completed")), POLICY, first.id, NOW)
    assert store.pending.among([first.id, second.id]) == [second.id]
    assert store.redis.zscore(store.keys.pending_created, first.id) is None


def test_an_upgrade_backfills_the_creation_index_from_the_records(store: PaymentStore) -> None:
    record = adopt(store, created_at="2027-01-15T07:00:00Z")
    store.redis.delete(store.keys.pending_created)  # as if watched by a version without it
    assert store.pending.oldest_created() is None
    assert store.pending.backfill(NOW) == 1
    assert store.pending.oldest_created() == pytest.approx(NOW - 3600)
    assert store.redis.zscore(store.keys.pending_created, record.id) is not None
    assert store.pending.backfill(NOW) == 0


def test_the_fallback_brings_every_pending_read_forward_but_never_back(
    store: PaymentStore,
) -> None:
    later = adopt(store)
    sooner = adopt(store)
    store.reschedule(later.id, NOW + 3600)
    store.reschedule(sooner.id, NOW + 0.5)
    assert store.pending.pull_forward(NOW, spread=2.0) == 1
    moved = store.next_poll_at(later.id)
    assert moved is not None
    assert NOW <= moved <= NOW + 2.0
    assert store.next_poll_at(sooner.id) == pytest.approx(NOW + 0.5)


def test_the_watermark_only_rises(store: PaymentStore) -> None:
    assert store.pending.raise_watermark(100.0) == 100.0
    assert store.pending.raise_watermark(90.0) == 100.0
    assert store.pending.raise_watermark(120.5) == 120.5


def test_a_failing_list_is_probed_when_the_fallback_is_due_and_backs_off_after(
    redis_client: redis.Redis,
) -> None:
    from watcher.engine.list_health import ListHealth

    health = ListHealth(
        redis_client, Keys(f"t{uuid.uuid4().hex[:8]}"), fallback_after=5.0, base_backoff=1.0
    )
    assert not health.failed(NOW).entered_fallback
    assert not health.may_list(NOW + 0.5)
    assert health.may_list(NOW + 1.2)
    assert not health.failed(NOW + 1.2).entered_fallback
    assert not health.failed(NOW + 3.3).entered_fallback
    # Doubling would wait 4 s more; the next probe comes when the fallback is due instead.
    assert health.may_list(NOW + 5.0)
    assert health.failed(NOW + 5.0).entered_fallback
    assert health.in_fallback()
    assert health.succeeded(NOW + 9.0).left_fallback
    assert not health.in_fallback()
