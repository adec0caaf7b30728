"""Pages filtered for one app: every page and cursor is made of that app's items only. A cursor
never holds another app's id (not even where a scan stopped early), and whether there is a next
page never depends on what other apps own after this one's last item."""

from __future__ import annotations

import pytest
import redis

from watcher.paging import decode_cursor, stream_page, zset_page

KEY = "{paging-test}:index"
STREAM = "{paging-test}:stream"


@pytest.fixture
def client(redis_client: redis.Redis) -> redis.Redis:
    redis_client.delete(KEY, STREAM)
    return redis_client


def own(member: str) -> bool:
    return member.startswith("mine-")


def fill_zset(client: redis.Redis, layout: str) -> list[str]:
    """One member per letter ('m' mine, 'o' another app's), scored 1, 2, 3...; mine listed."""
    mine = []
    for i, kind in enumerate(layout, start=1):
        member = f"{'mine' if kind == 'm' else 'other'}-{i:04d}"
        client.zadd(KEY, {member: float(i)})
        if kind == "m":
            mine.append(member)
    return mine


def all_pages(
    client: redis.Redis, *, limit: int, newest_first: bool, max_scan: int
) -> tuple[list[str], list[str]]:
    """Every member a caller keeping only its own sees, and every cursor it was handed."""
    seen: list[str] = []
    cursors: list[str] = []
    cursor = None
    for _ in range(1000):
        items, cursor = zset_page(
            client, KEY, cursor=cursor, limit=limit, newest_first=newest_first,
            load=list, keep=own, max_scan=max_scan,
        )  # fmt: skip
        seen += items
        if cursor is None:
            return seen, cursors
        cursors.append(cursor)
    raise AssertionError("pages never ended")


@pytest.mark.parametrize("newest_first", [False, True])
def test_scan_limited_pages_hand_out_no_foreign_id_and_miss_nothing(
    client: redis.Redis, newest_first: bool
) -> None:
    mine = fill_zset(client, "mooooooooooooomoooooooooooooooooooomm" + "o" * 30)
    seen, cursors = all_pages(client, limit=2, newest_first=newest_first, max_scan=5)
    assert seen == (list(reversed(mine)) if newest_first else mine)
    for cursor in cursors:
        position = decode_cursor(cursor)
        assert position is not None
        assert "other" not in position[1], f"cursor {cursor} names another app's item"


@pytest.mark.parametrize("newest_first", [False, True])
def test_a_full_last_page_says_no_more_when_only_others_items_follow(
    client: redis.Redis, newest_first: bool
) -> None:
    fill_zset(client, "mm" + "o" * 10 if not newest_first else "o" * 10 + "mm")
    items, cursor = zset_page(
        client, KEY, cursor=None, limit=2, newest_first=newest_first,
        load=list, keep=own,
    )  # fmt: skip
    assert len(items) == 2
    assert cursor is None


def fill_stream(client: redis.Redis, layout: str) -> list[str]:
    mine = []
    for i, kind in enumerate(layout, start=1):
        entry = str(client.xadd(STREAM, {"who": "mine" if kind == "m" else "other"}, id=f"{i}-1"))
        if kind == "m":
            mine.append(entry)
    return mine


def stream_pages(client: redis.Redis, *, newest_first: bool) -> tuple[list[str], list[str]]:
    seen: list[str] = []
    cursors: list[str] = []
    cursor = None
    for _ in range(1000):
        entries, cursor = stream_page(
            client, STREAM, cursor=cursor, limit=2, newest_first=newest_first,
            since_ms=None, until_ms=None, keep=lambda _id, f: f["who"] == "mine", max_scan=5,
        )  # fmt: skip
        seen += [entry_id for entry_id, _ in entries]
        if cursor is None:
            return seen, cursors
        cursors.append(cursor)
    raise AssertionError("pages never ended")


@pytest.mark.parametrize("newest_first", [False, True])
def test_stream_pages_hand_out_no_foreign_entry_id_and_stop_at_the_last_own(
    client: redis.Redis, newest_first: bool
) -> None:
    layout = "moooooooooooomoooooooooomm" + "o" * 12
    mine = fill_stream(client, layout if not newest_first else layout[::-1])
    others = {f"{i}-1" for i, kind in enumerate(layout, start=1) if kind == "o"}
    if newest_first:
        others = {f"{i}-1" for i, kind in enumerate(layout[::-1], start=1) if kind == "o"}
    seen, cursors = stream_pages(client, newest_first=newest_first)
    assert seen == (list(reversed(mine)) if newest_first else mine)
    assert not others & set(cursors), cursors
