"""The shape of every id the watcher accepts from outside (API paths and queries, the CLI).

An id is spliced into a Redis key name, so a real id with a suffix (`<id>:transitions`) names
another key of another type; checking the shape before anything reaches Redis makes that a
clear refusal instead of a Redis error. Each shape matches how the id is minted:

- payment: a Voltage payment id, a UUID (`watcher/voltage/client.py` sends one on create,
  Voltage and its simulator answer it lower-case hyphenated; client ids map to a UUIDv5);
- subscription: `sub_` + 24 hex (`SubscriptionStore.create`);
- delivery: `dlv_` + 24 hex (`delivery_id_for`);
- event: `evt_` + 32 hex (`new_event_id`, `transition_event_id`);
- outbox position: a Redis stream id `<ms>-<seq>`, each part below 2**64.

`tests/test_api_hostile.py` checks that what the minting code makes passes these.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

STREAM_PART_LIMIT = 2**64


class InvalidId(ValueError):
    """The value is not an id of this kind; the message says what one looks like."""


@dataclass(frozen=True)
class IdKind:
    name: str
    pattern: str  # anchored with ^...$ for OpenAPI; matched in full, so "$" takes no "\n"
    example: str
    canonical: Callable[[str], str] = field(default=str)

    @property
    def regex(self) -> re.Pattern[str]:
        return re.compile(self.pattern.removeprefix("^").removesuffix("$"))

    @property
    def description(self) -> str:
        article = "an" if self.name[0] in "aeiou" else "a"
        return f"{article} {self.name}, like {self.example}"

    def matches(self, value: str) -> bool:
        return self.regex.fullmatch(value) is not None

    def check(self, value: str) -> str:
        """The canonical id, or InvalidId."""
        if not self.matches(value):
            raise InvalidId(f"not {self.description}")
        return self.canonical(value)


_HEX = "[0-9a-f]"
_ANY_HEX = "[0-9a-fA-F]"

PAYMENT = IdKind(
    "payment id (a UUID)",
    rf"^{_ANY_HEX}{{8}}-{_ANY_HEX}{{4}}-{_ANY_HEX}{{4}}-{_ANY_HEX}{{4}}-{_ANY_HEX}{{12}}$",
    "3f8e2a4c-9b1d-4e7f-a2c6-5d0b8e1f7a93",
    canonical=str.lower,  # Voltage answers lower-case; stored records use that form
)
SUBSCRIPTION = IdKind("subscription id", rf"^sub_{_HEX}{{24}}$", "sub_" + "0c4f" * 6)
DELIVERY = IdKind("delivery id", rf"^dlv_{_HEX}{{24}}$", "dlv_" + "7d2a" * 6)
EVENT = IdKind("event id", rf"^evt_{_HEX}{{32}}$", "evt_" + "91be" * 8)

STREAM_ID_PATTERN = "^[0-9]{1,20}-[0-9]{1,20}$"
_STREAM_ID = re.compile(STREAM_ID_PATTERN.removeprefix("^").removesuffix("$"))


def parse_stream_id(value: str) -> tuple[int, int]:
    """(milliseconds, sequence) of a Redis stream id; Redis refuses parts of 2**64 or more."""
    if not _STREAM_ID.fullmatch(value):
        raise InvalidId("not an event cursor (`<milliseconds>-<sequence>`) this API returned")
    millis, sequence = (int(part) for part in value.split("-"))
    if millis >= STREAM_PART_LIMIT or sequence >= STREAM_PART_LIMIT:
        raise InvalidId(f"out of range: each part of an event cursor is below {STREAM_PART_LIMIT}")
    return millis, sequence
