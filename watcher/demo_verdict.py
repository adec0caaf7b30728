"""The demo's verdict: did every expected event arrive exactly once, verified?

A pure function over what the demo's receiver got, so it is tested without any process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from watcher.receiver import Delivery


@dataclass(frozen=True)
class Verdict:
    ok: bool
    # (event type, payment id) expected but not received verified
    missing: tuple[tuple[str, str], ...] = ()
    # webhook-ids delivered more than once (allowed: delivery is at least once)
    duplicates: tuple[str, ...] = ()
    # everything else that makes the run a failure, for a person to read
    problems: tuple[str, ...] = ()


def check_deliveries(expected: Mapping[str, str], deliveries: Sequence[Delivery]) -> Verdict:
    """Did every expected event (payment id -> event type) arrive exactly once, verified?

    Deliveries are deduplicated by webhook-id: the same webhook-id twice is a re-delivery,
    reported but allowed. A delivery that failed verification, a webhook-id reused for a
    different event, an event for a payment or of a type nobody expected, and a second
    *distinct* event for one payment are failures; so is every expected event that is missing.
    """
    problems: list[str] = []
    distinct: dict[str, Delivery] = {}
    counts: dict[str, int] = {}
    for delivery in deliveries:
        if not delivery.verified:
            problems.append(
                f"a webhook failed verification (webhook-id {delivery.webhook_id or '?'}): "
                f"{delivery.error or 'unknown reason'}"
            )
            continue
        counts[delivery.webhook_id] = counts.get(delivery.webhook_id, 0) + 1
        first = distinct.setdefault(delivery.webhook_id, delivery)
        if (first.event_type, first.payment_id) != (delivery.event_type, delivery.payment_id):
            problems.append(
                f"webhook-id {delivery.webhook_id} carried two different events: "
                f"{first.event_type} for {first.payment_id} and "
                f"{delivery.event_type} for {delivery.payment_id}"
            )
    duplicates = tuple(webhook_id for webhook_id, n in counts.items() if n > 1)

    by_payment: dict[str, list[Delivery]] = {}
    for delivery in distinct.values():
        payment_id = delivery.payment_id or "?"
        if payment_id not in expected:
            problems.append(
                f"unexpected {delivery.event_type} for payment {payment_id} "
                f"(webhook-id {delivery.webhook_id})"
            )
            continue
        by_payment.setdefault(payment_id, []).append(delivery)

    missing: list[tuple[str, str]] = []
    for payment_id, event_type in expected.items():
        got = by_payment.get(payment_id, [])
        if len(got) > 1:
            problems.append(
                f"payment {payment_id} got {len(got)} distinct events, expected one: "
                + ", ".join(f"{d.event_type} ({d.webhook_id})" for d in got)
            )
        for delivery in got:
            if delivery.event_type != event_type:
                problems.append(
                    f"payment {payment_id} got {delivery.event_type}, expected {event_type} "
                    f"(webhook-id {delivery.webhook_id})"
                )
        if not any(d.event_type == event_type for d in got):
            missing.append((event_type, payment_id))

    ok = not problems and not missing
    return Verdict(ok=ok, missing=tuple(missing), duplicates=duplicates, problems=tuple(problems))
