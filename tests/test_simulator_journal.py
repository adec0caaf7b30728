"""The simulator's state file (issue 13): payments outlive a restart, exactly as they were.

`watcher up --simulate` promises a restart loses nothing, so a payment pending across a restart
must come back with the same invoice and times, keep moving with the clock, and answer the same
list pages. Every test restarts for real: a new `SimulatorState` (or `SimulatorServer`) on the
same file, with an injected clock so the status machine's deadlines are exact.
"""

from __future__ import annotations

import json
import random
import stat
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import ALL_PERMISSIONS, SIM_KEY, SimControl
from tests.support import wait_until
from watcher.simulator import SimulatorConfig, SimulatorServer, SimulatorState
from watcher.simulator.create import NewPayment
from watcher.simulator.errors import SimulatorError
from watcher.simulator.listing import ListQuery
from watcher.simulator.payment import FINAL_STATUSES, to_micros
from watcher.timing import rfc3339_micros

ORG = "0d2c4b6a-8e1f-4a3b-9c5d-7e6f8a9b0c1d"
ENV = "1e3d5c7b-9f2a-4b4c-8d6e-0f1a2b3c4d5e"
START = 1_750_000_000.0  # a whole second, so invoice timestamps equal created_at
MICROS = 1_000_000


class FakeClock:
    """Unix seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def config(path: Path, **overrides: Any) -> SimulatorConfig:
    settings: dict[str, Any] = {"seed": 11, "generating_delay": 1.0, **overrides}
    return SimulatorConfig(state_file=path, **settings)


def new_payment(wallet_id: str = "w1", expiration: int = 3600, **fields: Any) -> NewPayment:
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "wallet_id": wallet_id,
        "amount_msats": 21_000,
        "description": "Order 42 ✓",
        "expiration": expiration,
        "metadata": {"order": "42"},
        **fields,
    }
    return NewPayment(**values)


def create(state: SimulatorState, **fields: Any) -> str:
    new = new_payment(**fields)
    state.create(ORG, ENV, new)
    return new.id


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def walk(state: SimulatorState, query: ListQuery, *, use_indexes: bool = True) -> list[Any]:
    """Every page of a query, following next_cursor in cursor mode."""
    pages = [state.list(ORG, ENV, query, use_indexes=use_indexes)]
    while pages[-1]["next_cursor"] is not None:
        assert len(pages) < 200, "a cursor walk that never ends"
        following = replace(query, cursor=pages[-1]["next_cursor"])
        pages.append(state.list(ORG, ENV, following, use_indexes=use_indexes))
    return pages


# --- a payment and the clock ---------------------------------------------------------------------


def test_a_payment_comes_back_and_keeps_moving_with_the_clock(tmp_path: Path) -> None:
    path, clock = tmp_path / "simulator.jsonl", FakeClock()
    before = SimulatorState(config(path), clock=clock)
    payment_id = create(before, expiration=10)
    kept = before.raw(payment_id)
    assert kept["status"] == "generating"

    clock.now = START + 0.5
    after = SimulatorState(config(path), clock=clock)
    raw = after.raw(payment_id)
    assert raw == before.raw(payment_id)
    for name in ("payment_request", "payment_hash", "preimage"):
        assert raw["sim"][name] == kept["sim"][name]
    assert raw["created_at"] == kept["created_at"] == rfc3339_micros(int(START * MICROS))
    assert raw["status"] == "generating"

    # Each deadline, to the microsecond, exactly as the state that never restarted sees it.
    steps = [(1.0, "receiving"), (10.0, "receiving"), (10.000001, "expired")]
    for offset, status in steps:
        clock.now = START + offset
        shown = after.get(ORG, ENV, payment_id)
        assert shown == before.get(ORG, ENV, payment_id)
        assert shown["status"] == status, offset
    assert shown["updated_at"] == rfc3339_micros(int((START + 10) * MICROS))
    assert shown["error"]["code"] == "expired"
    assert shown["data"]["payment_request"] == kept["sim"]["payment_request"]
    times = [(e["event_type"], e["time"]) for e in after.history(ORG, ENV, payment_id)["events"]]
    assert times == [
        ("created", rfc3339_micros(int(START * MICROS))),
        ("generated", rfc3339_micros(int((START + 1) * MICROS))),
        ("expired", rfc3339_micros(int((START + 10) * MICROS))),
    ]


def test_deadlines_passed_while_down_are_back_dated(tmp_path: Path) -> None:
    """Down past both deadlines: the first list after restart finds it final as of its expiry."""
    path, clock = tmp_path / "simulator.jsonl", FakeClock()
    before = SimulatorState(config(path), clock=clock)
    payment_id = create(before, expiration=10)

    clock.now = START + 100
    after = SimulatorState(config(path), clock=clock)
    detection = ListQuery(
        cursor_mode=True, statuses=FINAL_STATUSES, sort_key="updated_at", sort_order="DESC"
    )
    page = after.list(ORG, ENV, detection)
    assert [item["id"] for item in page["items"]] == [payment_id]
    assert page["items"][0]["updated_at"] == rfc3339_micros(int((START + 10) * MICROS))
    assert page == before.list(ORG, ENV, detection)
    assert after.history(ORG, ENV, payment_id) == before.history(ORG, ENV, payment_id)


# --- controls -----------------------------------------------------------------------------------


def test_settle_fail_expire_and_hide_survive_and_settle_works_after(tmp_path: Path) -> None:
    path, clock = tmp_path / "simulator.jsonl", FakeClock()
    before = SimulatorState(config(path), clock=clock)
    settled, failed, expired, hidden, settled_hidden = (create(before) for _ in range(5))
    clock.now += 2
    before.settle(settled, amount_msats=25_000)
    before.fail(failed, "rejected", "the payer's node said no")
    before.expire(expired)
    before.hide_from_filtered_lists(hidden)
    before.settle(settled_hidden)
    before.hide_from_filtered_lists(settled_hidden)
    clock.now += 1
    ids = [settled, failed, expired, hidden, settled_hidden]
    kept = {payment_id: before.raw(payment_id) for payment_id in ids}

    after = SimulatorState(config(path), clock=clock)
    assert {payment_id: after.raw(payment_id) for payment_id in ids} == kept
    receipt = kept[settled]["data"]["receipts"][0]["data"]
    assert kept[settled]["status"] == "completed"
    assert kept[settled]["data"]["amount_msats"] == 25_000
    assert receipt["preimage"] == kept[settled]["sim"]["preimage"]
    assert receipt["payment_hash"] == kept[settled]["sim"]["payment_hash"]
    assert kept[failed]["status"] == "failed"
    assert kept[failed]["error"]["code"] == "rejected"
    assert kept[failed]["error"]["detail"] == "the payer's node said no"
    assert kept[expired]["status"] == "expired"
    assert kept[expired]["error"]["code"] == "expired"
    assert kept[hidden]["sim"]["hidden_from_filtered_lists"] is True
    assert kept[settled_hidden]["sim"]["hidden_from_filtered_lists"] is True
    with pytest.raises(SimulatorError) as final:
        after.settle(failed)
    assert final.value.error_type == "payment_final"

    paid = after.settle(hidden)
    assert paid["status"] == "completed"
    assert paid["data"]["receipts"][0]["data"]["preimage"] == kept[hidden]["sim"]["preimage"]
    again = SimulatorState(config(path), clock=clock)
    assert again.raw(hidden) == after.raw(hidden)
    assert again.raw(hidden)["status"] == "completed"


# --- lists --------------------------------------------------------------------------------------


def populate(state: SimulatorState, clock: FakeClock) -> None:
    """Creates, bulk seeds, controls and clock moves: some payments final by the clock alone."""
    rng = random.Random(5)
    ids: list[str] = []
    for step in range(90):
        clock.now += rng.choice([0.0, 0.000001, 0.3, 1.5])
        if step % 30 == 0:
            ids += state.seed_receiving(
                12, organization_id=ORG, environment_id=ENV, wallet_id="w1", expiration=20
            )
        ids.append(
            create(state, wallet_id=rng.choice(["w1", "w2"]), expiration=rng.choice([5, 3600]))
        )
        target = rng.choice(ids)
        action = rng.choice(["settle", "fail", "expire", "hide", "-", "-"])
        if action == "hide":
            state.hide_from_filtered_lists(target, hidden=rng.random() < 0.8)
        elif action != "-" and state.raw(target)["status"] not in FINAL_STATUSES:
            getattr(state, action)(target)


def query_shapes(state: SimulatorState) -> list[ListQuery]:
    created = sorted(
        to_micros(datetime.fromisoformat(item["created_at"])) for item in state.raw_list()["items"]
    )
    return [
        # The watcher's detection query: final payments, most recently updated first.
        ListQuery(
            cursor_mode=True,
            limit=4,
            statuses=FINAL_STATUSES,
            sort_key="updated_at",
            sort_order="DESC",
        ),
        # Its reconciliation sweep: every payment in created order.
        ListQuery(cursor_mode=True, limit=7, sort_key="created_at", sort_order="ASC"),
        ListQuery(limit=10, offset=3, sort_key="created_at", sort_order="DESC"),
        ListQuery(cursor_mode=True, limit=5, statuses=frozenset({"receiving"}), sort_order="ASC"),
        ListQuery(
            cursor_mode=True,
            limit=3,
            statuses=frozenset({"completed"}),
            sort_key="updated_at",
            sort_order="DESC",
        ),
        ListQuery(limit=1000, wallet_id="w2", sort_key="updated_at", sort_order="ASC"),
        ListQuery(
            cursor_mode=True,
            limit=6,
            start_micros=created[len(created) // 4],
            end_micros=created[3 * len(created) // 4],
            sort_order="ASC",
        ),
    ]


@pytest.mark.parametrize("lag", [0.0, 4.0])
def test_lists_answer_the_same_pages_after_restart(tmp_path: Path, lag: float) -> None:
    path, clock = tmp_path / "simulator.jsonl", FakeClock()
    before = SimulatorState(config(path, list_lag=lag), clock=clock)
    populate(before, clock)
    queries = query_shapes(before)
    pages = [walk(before, query) for query in queries]
    assert any(len(walked) > 2 for walked in pages), "the cursor walks should span pages"
    written = {line["id"]: line["status"] for line in lines(path)}  # the last line wins
    by_clock = [p for p in before.raw_list()["items"] if p["status"] != written[p["id"]]]
    # Clock transitions are written when they happen: the file already holds every status
    # the lists showed (a back-dated updated_at could not be recomputed after a restart).
    assert by_clock == []
    assert any(status == "expired" for status in written.values()), "some expired by the clock"

    after = SimulatorState(config(path, list_lag=lag), clock=clock)
    assert after.raw_list() == before.raw_list()
    for query, walked in zip(queries, pages, strict=True):
        assert walk(after, query) == walked, query
        assert walk(after, query, use_indexes=False) == walked, query
        if walked[0]["next_cursor"] is not None:
            # A cursor handed out before the restart continues after it.
            following = replace(query, cursor=walked[0]["next_cursor"])
            assert after.list(ORG, ENV, following) == walked[1], query

    clock.now += 30  # the seeded ones and the short invoices now expire by the clock
    for query in queries:
        assert walk(after, query) == walk(before, query), query
        assert walk(after, query, use_indexes=False) == walk(after, query), query


def test_many_bulk_seeded_payments_survive(tmp_path: Path) -> None:
    path, clock = tmp_path / "simulator.jsonl", FakeClock()
    before = SimulatorState(config(path), clock=clock)
    ids = before.seed_receiving(
        500, organization_id=ORG, environment_id=ENV, wallet_id="bulk", expiration=60
    )
    clock.now += 0.001  # seeded one microsecond apart: let the clock pass the last of them
    assert len(lines(path)) == 500

    after = SimulatorState(config(path), clock=clock)
    assert len(after) == 500
    assert after.raw_list() == before.raw_list()
    sweep = ListQuery(cursor_mode=True, limit=1000, sort_key="created_at", sort_order="ASC")
    assert [item["id"] for item in after.list(ORG, ENV, sweep)["items"]] == ids
    clock.now += 61
    assert walk(after, sweep) == walk(before, sweep)
    assert {item["status"] for item in after.list(ORG, ENV, sweep)["items"]} == {"expired"}


def test_reset_empties_the_file_and_a_restart_has_nothing(tmp_path: Path) -> None:
    path, clock = tmp_path / "simulator.jsonl", FakeClock()
    state = SimulatorState(config(path), clock=clock)
    create(state)
    state.seed_receiving(5, organization_id=ORG, environment_id=ENV, wallet_id="w", expiration=60)
    state.reset()
    assert path.read_text() == ""
    assert mode(path) == 0o600

    empty = SimulatorState(config(path), clock=clock)
    assert len(empty) == 0
    assert empty.list(ORG, ENV, ListQuery())["items"] == []
    kept = create(empty)  # the journal still records after a reset
    assert [p["id"] for p in SimulatorState(config(path), clock=clock).raw_list()["items"]] == [
        kept
    ]


# --- the file itself ------------------------------------------------------------------------------


def _half_a_line(path: Path) -> bytes:
    last = path.read_bytes().splitlines()[-1]
    return last[: len(last) // 2]


TORN_ENDINGS: dict[str, Callable[[Path], bytes]] = {
    "half-a-json-line": _half_a_line,
    "text-garbage": lambda _: b"}{ not json at all\n",
    "zeros-after-power-loss": lambda _: b"\x00" * 64,
    "non-utf8-bytes": lambda _: b"\xff\xfe\x80 torn",
}


@pytest.mark.parametrize("ending", list(TORN_ENDINGS))
def test_a_torn_last_line_is_skipped_and_the_file_compacted(tmp_path: Path, ending: str) -> None:
    path, clock = tmp_path / "simulator.jsonl", FakeClock()
    before = SimulatorState(config(path), clock=clock)
    ids = [create(before) for _ in range(3)]
    clock.now += 2
    before.settle(ids[0])
    before.hide_from_filtered_lists(ids[1])
    # One line per change: three creates, the clock making two of them `receiving` (seen by
    # settle and hide), the settle and the hide.
    assert len(lines(path)) == 7
    with path.open("ab") as file:
        file.write(TORN_ENDINGS[ending](path))

    after = SimulatorState(config(path), clock=clock)
    compacted = lines(path)  # before anything (a read advancing the clock) appends again
    assert len(after) == 3
    assert after.raw_list() == before.raw_list()
    assert sorted(line["id"] for line in compacted) == sorted(ids)
    assert {line["id"]: line["status"] for line in compacted}[ids[0]] == "completed"

    later = create(after)  # appends after the compaction land on a clean line
    assert len(SimulatorState(config(path), clock=clock)) == 4
    assert later in {line["id"] for line in lines(path)}


def test_the_file_is_private(tmp_path: Path) -> None:
    path, clock = tmp_path / "data" / "simulator.jsonl", FakeClock()  # its directory made too
    state = SimulatorState(config(path), clock=clock)
    create(state)
    assert mode(path) == 0o600
    SimulatorState(config(path), clock=clock)  # compacted on load
    assert mode(path) == 0o600

    loose = tmp_path / "loose.jsonl"
    loose.write_text("")
    loose.chmod(0o644)
    SimulatorState(config(loose), clock=clock)
    assert mode(loose) == 0o600


def test_a_leftover_compaction_file_does_not_make_the_state_readable(tmp_path: Path) -> None:
    """The compaction reuses `.NAME.tmp` if it exists, and O_CREAT keeps an existing file's mode."""
    path, clock = tmp_path / "simulator.jsonl", FakeClock()
    leftover = tmp_path / ".simulator.jsonl.tmp"
    leftover.write_text("")
    leftover.chmod(0o644)
    state = SimulatorState(config(path), clock=clock)
    create(state)
    assert mode(path) == 0o600


# --- secrets after a restart ----------------------------------------------------------------------


def secrets(state: SimulatorState) -> tuple[set[str], set[str], set[str]]:
    items = state.raw_list()["items"]
    return (
        {item["id"] for item in items},
        {item["sim"]["payment_hash"] for item in items},
        {item["sim"]["preimage"] for item in items},
    )


def test_new_payments_after_restart_get_fresh_ids_and_preimages(tmp_path: Path) -> None:
    path, clock = tmp_path / "simulator.jsonl", FakeClock()
    before = SimulatorState(config(path, seed=7), clock=clock)
    first_bulk = before.seed_receiving(
        20, organization_id=ORG, environment_id=ENV, wallet_id="w", expiration=60
    )
    for _ in range(5):
        create(before)
    settled = create(before)
    old_ids, old_hashes, old_preimages = secrets(before)
    old_ledger = before.settle(settled)["data"]["receipts"][0]["data"]["ledger_id"]
    # The same seed in memory makes the same ids: the check below is not vacuous.
    twin = SimulatorState(SimulatorConfig(seed=7), clock=FakeClock())
    assert (
        twin.seed_receiving(
            20, organization_id=ORG, environment_id=ENV, wallet_id="w", expiration=60
        )
        == first_bulk
    )

    after = SimulatorState(config(path, seed=7), clock=clock)
    fresh_bulk = after.seed_receiving(
        20, organization_id=ORG, environment_id=ENV, wallet_id="w", expiration=60
    )
    fresh = [create(after) for _ in range(5)]
    ids, hashes, preimages = secrets(after)
    new_ids = ids - old_ids
    assert new_ids == {*fresh_bulk, *fresh}
    new_hashes = {after.raw(i)["sim"]["payment_hash"] for i in new_ids}
    new_preimages = {after.raw(i)["sim"]["preimage"] for i in new_ids}
    assert len(new_hashes) == len(new_preimages) == 25
    assert not new_hashes & old_hashes
    assert not new_preimages & old_preimages
    assert hashes == old_hashes | new_hashes
    assert preimages == old_preimages | new_preimages
    ledger = after.settle(fresh[0])["data"]["receipts"][0]["data"]["ledger_id"]
    assert ledger != old_ledger


# --- list faults that move with the clock ---------------------------------------------------------


def test_a_back_dated_clock_transition_keeps_its_updated_at_across_restart(tmp_path: Path) -> None:
    """Final payments never change, so the `updated_at` a list showed must survive a restart."""
    path, clock = tmp_path / "simulator.jsonl", FakeClock()
    before = SimulatorState(config(path, updated_at_backdate=5.0), clock=clock)
    payment_id = create(before, expiration=10)
    clock.now += 20
    shown = before.get(ORG, ENV, payment_id)
    assert shown["status"] == "expired"

    after = SimulatorState(config(path, updated_at_backdate=5.0), clock=clock)
    assert after.get(ORG, ENV, payment_id)["updated_at"] == shown["updated_at"]


# --- end to end over HTTP -------------------------------------------------------------------------


def test_a_payment_made_over_http_is_read_back_from_a_new_server(tmp_path: Path) -> None:
    sim_config = SimulatorConfig(
        api_keys={SIM_KEY: ALL_PERMISSIONS},
        generating_delay=0.05,
        state_file=tmp_path / "simulator.jsonl",
    )
    http = requests.Session()
    http.headers["x-api-key"] = SIM_KEY
    ids = [str(uuid.uuid4()), str(uuid.uuid4())]

    def read(server: SimulatorServer, payment_id: str, tail: str = "") -> requests.Response:
        url = f"{server.base_url}/organizations/{ORG}/environments/{ENV}/payments/{payment_id}"
        return http.get(url + tail, timeout=10)

    with SimulatorServer(sim_config) as first:
        for payment_id in ids:
            body = {
                "id": payment_id,
                "wallet_id": "wallet-journal",
                "payment_kind": "bolt11",
                "amount_msats": 21_000,
                "currency": "btc",
                "description": "Order 42",
                "expiration": 3600,
                "metadata": {"order": "42"},
            }
            url = f"{first.base_url}/organizations/{ORG}/environments/{ENV}/payments"
            response = http.post(url, json=body, timeout=10)
            assert response.status_code == 202, response.text
        wait_until(
            lambda: all(read(first, i).json().get("status") == "receiving" for i in ids),
            timeout=5,
            message="both payments receiving",
        )
        SimControl(first).settle(ids[0])
        seen = {i: read(first, i).json() for i in ids}
        timelines = {i: read(first, i, "/history").json() for i in ids}

    with SimulatorServer(sim_config) as second:
        for payment_id in ids:
            response = read(second, payment_id)
            assert response.status_code == 200, response.text
            assert response.json() == seen[payment_id]
            assert read(second, payment_id, "/history").json() == timelines[payment_id]
        assert seen[ids[0]]["status"] == "completed"
        assert seen[ids[1]]["data"]["payment_request"].startswith("ln")
        assert SimControl(second).settle(ids[1])["status"] == "completed"
    http.close()
