"""Which payments a list call asks Voltage for, as one immutable value.

A cursor is valid only with the filters and sort it came from (shared/voltage-api.md), so
every page of one listing is asked for with the same `PaymentFilter`. It is checked when it is
made, before anything is sent, and turned into the list endpoint's query parameters here and
nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType
from typing import Literal, TypedDict, Unpack, get_args

from watcher.timing import rfc3339_utc
from watcher.voltage.checks import check_metadata, check_text
from watcher.voltage.models import PaymentStatus

# The enums of Voltage's OpenAPI document (shared/voltage-openapi.json).
Direction = Literal["receive", "send"]
Kind = Literal["bolt11", "onchain", "bip21", "taprootasset", "usdbatch"]
Category = Literal["standard", "treasury"]
SortKey = Literal["created_at", "updated_at"]
SortOrder = Literal["ASC", "DESC"]

DEFAULT_PAGE_SIZE = 100  # Voltage's own default

_CHOICES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("direction", get_args(Direction)),
    ("kind", get_args(Kind)),
    ("payment_category", get_args(Category)),
    ("sort_key", get_args(SortKey)),
    ("sort_order", get_args(SortOrder)),
)
_STATUSES = frozenset(str(status) for status in PaymentStatus)


def _status_tuple(statuses: Iterable[str] | None) -> tuple[str, ...]:
    """Plain strings of Voltage's statuses; one status alone may be given as a string."""
    if statuses is None:
        return ()
    items = (statuses,) if isinstance(statuses, str) else tuple(statuses)
    for status in items:
        if not isinstance(status, str) or status not in _STATUSES:
            expected = ", ".join(sorted(_STATUSES))
            raise ValueError(f"statuses must be among {expected}, not {status!r}")
    return tuple(str(status) for status in items)


class PaymentFilterFields(TypedDict, total=False):
    """`PaymentFilter`'s fields as keywords, for a call that names them loose:
    ``client.iter_payments(statuses=["receiving"])``."""

    statuses: Iterable[str]
    direction: Direction | None
    kind: Kind | None
    wallet_id: str | None
    line_of_credit_id: str | None
    payment_category: Category | None
    metadata: Mapping[str, str]
    start_date: datetime | None
    end_date: datetime | None
    sort_key: SortKey | None
    sort_order: SortOrder | None


@dataclass(frozen=True)
class PaymentFilter:
    """The list endpoint's filters and sort; ``None`` or empty leaves one out.

    A payment matches when its status is any of ``statuses`` and it carries every
    ``metadata`` pair; ``start_date``/``end_date`` bound its *creation* time, inclusive (there
    is no "updated since": ``updated_at`` is a sort, not a watermark). Voltage sorts by
    ``created_at``, newest first, unless told otherwise. ``statuses`` is kept as a tuple and
    ``metadata`` as a read-only copy, so a caller's list or dict changed later changes nothing.
    """

    statuses: Iterable[str] = ()
    direction: Direction | None = None
    kind: Kind | None = None
    wallet_id: str | None = None
    line_of_credit_id: str | None = None
    payment_category: Category | None = None
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)
    start_date: datetime | None = None
    end_date: datetime | None = None
    sort_key: SortKey | None = None
    sort_order: SortOrder | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "statuses", _status_tuple(self.statuses))
        metadata = check_metadata(self.metadata, "metadata") or {}
        object.__setattr__(self, "metadata", MappingProxyType(metadata))
        for name, allowed in _CHOICES:
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
        for name in ("wallet_id", "line_of_credit_id"):
            if getattr(self, name) is not None:
                check_text(getattr(self, name), name)
        self.query()  # refuses a naive or non-datetime date now, naming it

    def with_fields(self, **fields: Unpack[PaymentFilterFields]) -> PaymentFilter:
        """This filter with ``fields`` set over it (itself when there are none)."""
        return replace(self, **fields) if fields else self

    def query(self) -> list[tuple[str, str]]:
        """The filter as query parameters, in a stable order."""
        singles = (
            ("wallet_id", self.wallet_id),
            ("line_of_credit_id", self.line_of_credit_id),
            ("payment_category", self.payment_category),
            ("direction", self.direction),
            ("kind", self.kind),
            ("sort_key", self.sort_key),
            ("sort_order", self.sort_order),
        )
        params = [(name, value) for name, value in singles if value is not None]
        params += [("statuses[]", status) for status in self.statuses]
        for name, date in (("start_date", self.start_date), ("end_date", self.end_date)):
            if date is not None:
                params.append((name, rfc3339_utc(date, name)))
        params += [(f"metadata[{key}]", value) for key, value in self.metadata.items()]
        return params


ALL_PAYMENTS = PaymentFilter()


def build_list_params(
    filters: PaymentFilter = ALL_PAYMENTS,
    *,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
    **fields: Unpack[PaymentFilterFields],
) -> list[tuple[str, str]]:
    """Query parameters for one page: where it starts, how long it is, then the filter."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError("limit must be an integer >= 1")
    if cursor is None:
        params = [("pagination", "cursor")]
    else:
        params = [("cursor", check_text(cursor, "cursor"))]
    params.append(("limit", str(limit)))
    return params + filters.with_fields(**fields).query()
