"""Keyset pages over Redis sorted sets and the outbox stream, for the stores that own them.

A cursor is the position of the last item a page returned, so a page never skips or repeats
an item when others are added meanwhile (offsets would). Sorted-set cursors are opaque
base64url JSON of (score, member); ties on a score are broken by the member, the same order
Redis itself uses. Filtering happens while scanning; a scan stops after `max_scan` items and
returns a cursor to continue, so one request never walks an unbounded index.

It sits at the bottom so the payment and the delivery stores share one copy; the stores pass
their own client and key, and nothing here knows a key name.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar, cast

import redis

from watcher.ids import STREAM_PART_LIMIT, InvalidId, parse_stream_id

T = TypeVar("T")

Position = tuple[float, str]
Entry = tuple[str, dict[str, str]]

MAX_SCAN = 5000
_AFTER_EVERY_MEMBER = "\uffff"  # sorts after every id: a tie-break past all of a score
_LAST_STREAM_ID = (STREAM_PART_LIMIT - 1, STREAM_PART_LIMIT - 1)


class CursorError(ValueError):
    """A cursor no page returned; the message says why (the API answers 422 with it)."""


def encode_cursor(position: Position) -> str:
    raw = json.dumps([position[0], position[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> Position | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise CursorError("not a cursor this API returned") from None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not isinstance(value[0], int | float)
        or isinstance(value[0], bool)
        or not math.isfinite(value[0])
        or not isinstance(value[1], str)
    ):
        raise CursorError("not a cursor this API returned")
    return float(value[0]), value[1]


def _chunk_after(
    client: redis.Redis, key: str, after: Position | None, count: int, newest_first: bool
) -> list[Position]:
    """Up to `count` (score, member) pairs strictly after `after` in the chosen order."""
    if after is None:
        if newest_first:
            raw = client.zrevrangebyscore(key, "+inf", "-inf", start=0, num=count, withscores=True)
        else:
            raw = client.zrangebyscore(key, "-inf", "+inf", start=0, num=count, withscores=True)
        return [(float(s), m) for m, s in cast(list[tuple[str, float]], raw)]
    score, member = after
    bound = repr(score)
    ties_raw = cast(
        list[tuple[str, float]], client.zrangebyscore(key, bound, bound, withscores=True)
    )
    if newest_first:
        ties = sorted((m for m, _ in ties_raw if m < member), reverse=True)
    else:
        ties = sorted(m for m, _ in ties_raw if m > member)
    found: list[Position] = [(score, m) for m in ties[:count]]
    if len(found) < count:
        left = count - len(found)
        if newest_first:
            raw = client.zrevrangebyscore(
                key, f"({bound}", "-inf", start=0, num=left, withscores=True
            )
        else:
            raw = client.zrangebyscore(key, f"({bound}", "+inf", start=0, num=left, withscores=True)
        found += [(float(s), m) for m, s in cast(list[tuple[str, float]], raw)]
    return found


def _walk(
    client: redis.Redis,
    key: str,
    position: Position | None,
    newest_first: bool,
    batch: int,
    load: Callable[[Sequence[str]], Sequence[T | None]],
) -> Iterator[tuple[Position, T | None]]:
    """Every (position, loaded item) after `position`, a chunk at a time."""
    while chunk := _chunk_after(client, key, position, batch, newest_first):
        loaded = load([member for _, member in chunk])
        yield from zip(chunk, loaded, strict=True)
        position = chunk[-1]


def _past_score(score: float, newest_first: bool) -> Position:
    """A position after every member of `score`, naming none of them."""
    return score, "" if newest_first else _AFTER_EVERY_MEMBER


def zset_page(
    client: redis.Redis,
    key: str,
    *,
    cursor: str | None,
    limit: int,
    newest_first: bool,
    load: Callable[[Sequence[str]], Sequence[T | None]],
    keep: Callable[[T], bool] = lambda _item: True,
    max_scan: int = MAX_SCAN,
) -> tuple[list[T], str | None]:
    """One page of loaded, filtered items and the cursor of the next page (None at the end).

    A cursor names only an item this caller was shown, or a score where the scan stopped (once
    past `max_scan`, at the end of a score): never an item `keep` refused. A next page is
    promised only when another kept item was found."""
    items: list[T] = []
    shown: Position | None = None  # where the last item returned lies
    last: Position | None = None  # where the walk is
    scanned = 0
    batch = max(20, min(200, limit * 2))
    walk = _walk(client, key, decode_cursor(cursor), newest_first, batch, load)
    for position, item in walk:
        if scanned >= max_scan and last is not None and position[0] != last[0]:
            # Out of scan budget: go on from the last item shown, or from this score.
            resume = shown if len(items) == limit else _past_score(last[0], newest_first)
            return items, encode_cursor(resume) if resume else None
        scanned += 1
        last = position
        if item is None or not keep(item):
            continue
        if len(items) == limit:
            return items, encode_cursor(shown) if shown else None
        items.append(item)
        shown = position
    return items, None


# --- streams ----------------------------------------------------------------------------------


def check_stream_cursor(cursor: str | None) -> tuple[int, int] | None:
    """The cursor as a stream position; Redis would refuse one past 2**64 with an error."""
    if cursor is None:
        return None
    try:
        return parse_stream_id(cursor)
    except InvalidId as exc:
        raise CursorError(str(exc)) from None


def stream_page(
    client: redis.Redis,
    key: str,
    *,
    cursor: str | None,
    limit: int,
    newest_first: bool,
    since_ms: int | None,
    until_ms: int | None,
    keep: Callable[[str, dict[str, str]], bool],
    max_scan: int = MAX_SCAN,
) -> tuple[list[Entry], str | None]:
    """Entries of a stream between two times (ms, inclusive), after `cursor`, filtered. As in
    `zset_page`, a cursor is an entry shown or a millisecond the scan ended on, never an entry
    `keep` refused, and a next page is promised only when a kept entry follows."""
    position = check_stream_cursor(cursor)
    if position == (_LAST_STREAM_ID if not newest_first else (0, 0)):
        return [], None  # nothing lies beyond either end, and Redis refuses `(` on them
    low: str = "-" if since_ms is None else str(since_ms)
    high: str = "+" if until_ms is None else str(until_ms)
    if position is not None:
        after = f"({position[0]}-{position[1]}"
        if newest_first:
            high = after
        else:
            low = after
    items: list[Entry] = []
    last_ms: int | None = None
    scanned = 0
    batch = max(20, min(200, limit * 2))
    for entry_id, fields in _stream_walk(client, key, low, high, newest_first, batch):
        ms = int(entry_id.partition("-")[0])
        if scanned >= max_scan and last_ms is not None and ms != last_ms:
            if len(items) == limit:
                return items, items[-1][0]
            return items, f"{last_ms}-0" if newest_first else f"{last_ms}-{_LAST_STREAM_ID[1]}"
        scanned += 1
        last_ms = ms
        if not keep(entry_id, fields):
            continue
        if len(items) == limit:
            return items, items[-1][0]
        items.append((entry_id, fields))
    return items, None


def _stream_walk(
    client: redis.Redis, key: str, low: str, high: str, newest_first: bool, batch: int
) -> Iterator[Entry]:
    """Every entry between `low` and `high` in the chosen order, a batch at a time."""
    while True:
        raw: Any
        if newest_first:
            raw = client.xrevrange(key, max=high, min=low, count=batch)
        else:
            raw = client.xrange(key, min=low, max=high, count=batch)
        entries = cast(list[Entry], raw)
        if not entries:
            return
        yield from entries
        if newest_first:
            high = f"({entries[-1][0]}"
        else:
            low = f"({entries[-1][0]}"


def first_score(pairs: object) -> float | None:
    """The score in a `ZRANGE key 0 0 WITHSCORES` answer: None when the set is empty."""
    items = cast(list[tuple[str, float]], pairs)
    return float(items[0][1]) if items else None


# --- retention ----------------------------------------------------------------------------------


def walk_older(
    client: redis.Redis,
    key: str,
    cutoff: float,
    max_items: int,
    forget: Callable[[list[str]], list[bool]],
    batch: int = 500,
) -> int:
    """Walk a sorted set scored by creation time up to `cutoff`, oldest first, at most
    `max_items` members; `forget` deletes what it may and says which ones it deleted. Kept
    members are stepped over. Returns how many were deleted."""
    removed = kept = seen = 0
    while seen < max_items:
        ids = cast(list[str], client.zrangebyscore(key, "-inf", cutoff, start=kept, num=batch))
        if not ids:
            break
        done = forget(ids)
        seen += len(ids)
        removed += sum(done)
        kept += len(ids) - sum(done)
    return removed
