"""The list filter: one immutable value, checked when made, one query-parameter form."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any, get_type_hints

import pytest

from watcher.voltage.filters import (
    ALL_PAYMENTS,
    PaymentFilter,
    PaymentFilterFields,
    build_list_params,
)
from watcher.voltage.models import PaymentStatus

WALLET = "7a68a525-9d11-4c1e-a3dd-1c2bf1378ba2"


def test_keyword_fields_are_the_filters_fields() -> None:
    names = [field.name for field in dataclasses.fields(PaymentFilter)]
    assert list(PaymentFilterFields.__annotations__) == names
    assert get_type_hints(PaymentFilterFields) == get_type_hints(PaymentFilter)


def test_a_filter_is_frozen_and_keeps_no_reference_to_the_callers_values() -> None:
    statuses = ["completed"]
    metadata = {"order": "1"}
    filters = PaymentFilter(statuses=statuses, metadata=metadata)
    statuses.append("failed")
    metadata["order"] = "2"
    assert filters.statuses == ("completed",)
    assert dict(filters.metadata) == {"order": "1"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        filters.wallet_id = WALLET  # type: ignore[misc]
    with pytest.raises(TypeError):
        filters.metadata["order"] = "3"  # type: ignore[index]
    assert filters == PaymentFilter(statuses=("completed",), metadata={"order": "1"})
    assert {filters: "found"}[PaymentFilter(statuses=["completed"], metadata={"order": "1"})]


def test_every_field_becomes_a_query_parameter() -> None:
    filters = PaymentFilter(
        statuses=[PaymentStatus.COMPLETED, "failed"],
        direction="receive",
        kind="bolt11",
        wallet_id=WALLET,
        line_of_credit_id="loc-1",
        payment_category="standard",
        metadata={"a": "1", "b": "2"},
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
        end_date=datetime(2026, 1, 2, tzinfo=UTC),
        sort_key="updated_at",
        sort_order="DESC",
    )
    assert filters.query() == [
        ("wallet_id", WALLET),
        ("line_of_credit_id", "loc-1"),
        ("payment_category", "standard"),
        ("direction", "receive"),
        ("kind", "bolt11"),
        ("sort_key", "updated_at"),
        ("sort_order", "DESC"),
        ("statuses[]", "completed"),
        ("statuses[]", "failed"),
        ("start_date", "2026-01-01T00:00:00Z"),
        ("end_date", "2026-01-02T00:00:00Z"),
        ("metadata[a]", "1"),
        ("metadata[b]", "2"),
    ]
    assert all(type(value) is str for _, value in filters.query())
    assert ALL_PAYMENTS.query() == []


def test_keywords_are_set_over_a_filter() -> None:
    base = PaymentFilter(direction="receive", sort_key="created_at")
    assert base.with_fields() is base
    narrowed = base.with_fields(wallet_id=WALLET, sort_key="updated_at")
    assert narrowed == PaymentFilter(direction="receive", wallet_id=WALLET, sort_key="updated_at")
    assert base.wallet_id is None
    assert build_list_params(base, limit=5, wallet_id=WALLET) == [
        ("pagination", "cursor"),
        ("limit", "5"),
        ("wallet_id", WALLET),
        ("direction", "receive"),
        ("sort_key", "created_at"),
    ]


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"statuses": ["settled"]}, "statuses"),
        ({"statuses": [1]}, "statuses"),
        ({"direction": "inbound"}, "direction"),
        ({"kind": "lightning"}, "kind"),
        ({"payment_category": "other"}, "payment_category"),
        ({"sort_key": "amount"}, "sort_key"),
        ({"sort_order": "asc"}, "sort_order"),
        ({"wallet_id": " "}, "wallet_id"),
        ({"line_of_credit_id": ""}, "line_of_credit_id"),
        ({"metadata": {"k": 1}}, "metadata"),
        ({"end_date": datetime(2026, 1, 1)}, "end_date"),
        ({"start_date": "2026-01-01"}, "start_date"),
    ],
)
def test_a_bad_field_is_refused_when_the_filter_is_made(fields: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        PaymentFilter(**fields)


def test_page_position_is_checked() -> None:
    with pytest.raises(ValueError, match="cursor"):
        build_list_params(cursor="")
    with pytest.raises(ValueError, match="limit"):
        build_list_params(limit=True)
