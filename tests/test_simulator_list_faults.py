"""The simulator's list-endpoint faults, over real HTTP, plus the indexes and bulk seeding.

Voltage warns that `updated_at` is an ordering, not a watermark; that cursor pages are not a
snapshot; and that a status filter can hide a payment. The watcher's list-based detection must
survive each, so the simulator can produce each on demand: these tests prove it does.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import bolt11
import pytest
import requests
from bolt11 import Bolt11, Feature, Features, FeatureState, MilliSatoshi, TagChar, Tags

from tests.support import wait_until
from watcher.simulator import SimulatorConfig, SimulatorServer, SimulatorState
from watcher.simulator.app import parse_list_query
from watcher.simulator.create import NewPayment
from watcher.simulator.invoices import (
    INVOICE_CURRENCY,
    MIN_FINAL_CLTV_EXPIRY,
    SIMULATOR_NODE_PRIVATE_KEY,
    SIMULATOR_NODE_PUBKEY,
    make_invoice,
)
from watcher.simulator.payment import FINAL_STATUSES, to_micros

KEY = "sim-key"
ORG = "3c1f0e2a-9d4b-4c8e-a1f2-0b9c8d7e6f50"
ENV = "7a6b5c4d-3e2f-4a1b-9c8d-e7f6a5b4c3d2"
FINAL = [("statuses[]", "completed"), ("statuses[]", "failed"), ("statuses[]", "expired")]
# The watcher's detection query: final payments, most recently updated first.
DETECTION = [*FINAL, ("sort_key", "updated_at"), ("sort_order", "DESC"), ("pagination", "cursor")]
DEFAULTS = {"not_found_window": 0.0, "generating_delay": 0.05}
OFF = {"updated_at_backdate": 0.0, "list_lag": 0.0}


class Sim:
    """The two surfaces of one simulator, with a wallet of its own per test."""

    def __init__(self, server: SimulatorServer) -> None:
        self.api = f"{server.base_url}/organizations/{ORG}/environments/{ENV}"
        self.control = server.control_url
        self.http = requests.Session()
        self.http.headers["x-api-key"] = KEY
        self.bare = requests.Session()
        self.wallet = f"wallet-{uuid.uuid4()}"

    def create(self) -> str:
        payment_id = str(uuid.uuid4())
        body = {
            "id": payment_id,
            "wallet_id": self.wallet,
            "payment_kind": "bolt11",
            "amount_msats": 21_000,
            "expiration": 3600,
        }
        response = self.http.post(f"{self.api}/payments", json=body, timeout=10)
        assert response.status_code == 202, response.text
        return payment_id

    def read(self, payment_id: str) -> requests.Response:
        return self.http.get(f"{self.api}/payments/{payment_id}", timeout=10)

    def payment(self, payment_id: str) -> dict[str, Any]:
        response = self.read(payment_id)
        assert response.status_code == 200, response.text
        payment: dict[str, Any] = response.json()
        return payment

    def receiving(self, payment_id: str) -> dict[str, Any]:
        return wait_until(
            lambda: (p := self.payment(payment_id))["status"] == "receiving" and p,
            timeout=10,
            message=f"{payment_id} to be receiving",
        )

    def query(self, params: list[tuple[str, str]]) -> requests.Response:
        return self.http.get(f"{self.api}/payments", params=params, timeout=10)

    def page(self, params: list[tuple[str, str]]) -> dict[str, Any]:
        response = self.query([("wallet_id", self.wallet), *params])
        assert response.status_code == 200, response.text
        page: dict[str, Any] = response.json()
        return page

    def listed(self, params: list[tuple[str, str]]) -> dict[str, dict[str, Any]]:
        """Every payment of this wallet the query lists, by id, following next_cursor."""
        found: dict[str, dict[str, Any]] = {}
        page = self.page([*params, ("limit", "1000")])
        while True:
            for item in page["items"]:
                assert item["id"] not in found, "a cursor walk repeated a payment"
                found[item["id"]] = item
            if not page["has_more"]:
                return found
            rest = [(k, v) for k, v in params if k != "pagination"]
            page = self.page([*rest, ("limit", "1000"), ("cursor", page["next_cursor"])])

    def control_call(self, method: str, path: str, body: Any = None) -> requests.Response:
        return self.bare.request(method, f"{self.control}{path}", json=body, timeout=60)

    def act(self, payment_id: str, action: str) -> dict[str, Any]:
        response = self.control_call("POST", f"/payments/{payment_id}/{action}")
        assert response.status_code == 200, response.text
        payment: dict[str, Any] = response.json()
        return payment

    def configure(self, **settings: float) -> dict[str, Any]:
        response = self.control_call("PATCH", "/config", settings)
        assert response.status_code == 200, response.text
        config: dict[str, Any] = response.json()
        return config

    def fault(self, **spec: Any) -> dict[str, Any]:
        response = self.control_call("POST", "/faults", spec)
        assert response.status_code == 201, response.text
        fault: dict[str, Any] = response.json()
        return fault

    def bulk(self, **body: Any) -> list[str]:
        response = self.control_call("POST", "/payments/bulk", body)
        assert response.status_code == 200, response.text
        ids: list[str] = response.json()["ids"]
        return ids


def micros(timestamp: str) -> int:
    return to_micros(datetime.fromisoformat(timestamp))


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorServer]:
    config = SimulatorConfig(
        api_keys={KEY: frozenset({"read", "receive", "write"})},
        not_found_window=DEFAULTS["not_found_window"],
        generating_delay=DEFAULTS["generating_delay"],
        seed=7,
    )
    with SimulatorServer(config) as sim:
        yield sim


@pytest.fixture
def sim(server: SimulatorServer) -> Iterator[Sim]:
    helper = Sim(server)
    yield helper
    helper.control_call("DELETE", "/faults")
    helper.configure(**DEFAULTS, **OFF)
    helper.http.close()
    helper.bare.close()


# --- configuration ---------------------------------------------------------------------------


def test_the_new_settings_read_back_and_reject_bad_values(sim: Sim) -> None:
    config = sim.control_call("GET", "/config").json()
    assert config["updated_at_backdate"] == 0.0
    assert config["list_lag"] == 0.0
    patched = sim.configure(updated_at_backdate=2.5, list_lag=0.5)
    assert (patched["updated_at_backdate"], patched["list_lag"]) == (2.5, 0.5)
    for bad in ({"list_lag": -1}, {"updated_at_backdate": 3601}, {"list_lag": "soon"}):
        response = sim.control_call("PATCH", "/config", bad)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["type"] == "invalid_data"
    with pytest.raises(ValueError, match="list_lag"):
        SimulatorConfig(list_lag=-0.1)


# --- 1. updated_at is an ordering, not a watermark ------------------------------------------


def test_a_backdated_updated_at_lies_while_the_read_is_truthful(sim: Sim) -> None:
    older = sim.create()
    sim.receiving(older)
    newer = sim.create()
    before = sim.receiving(newer)
    sim.configure(updated_at_backdate=3600)

    settle_started = time.time()
    sim.act(newer, "settle")
    sim.act(older, "settle")

    read = sim.payment(newer)
    assert read["status"] == "completed"  # the change itself is there at once
    shown = micros(read["updated_at"])
    assert shown < settle_started * 1_000_000  # ...but its updated_at claims it came earlier
    assert shown > micros(before["updated_at"])  # still strictly increasing per payment
    completed_event = [e for e in history(sim, newer) if e["event_type"] == "completed"]
    # History keeps the true time (allowing a millisecond for float rounding).
    assert micros(completed_event[0]["time"]) >= settle_started * 1_000_000 - 1000

    # Settled later, sorted earlier: a poller keeping "updated_at > last seen" would miss it.
    listed = sim.page([*DETECTION, ("limit", "10")])["items"]
    assert [item["id"] for item in listed] == [newer, older]
    assert micros(listed[1]["updated_at"]) < micros(listed[0]["updated_at"])


def history(sim: Sim, payment_id: str) -> list[dict[str, Any]]:
    response = sim.http.get(f"{sim.api}/payments/{payment_id}/history", timeout=10)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


# --- 2. cursor pages are not a snapshot: the list lags the read -----------------------------


def test_a_lagging_list_hides_a_fresh_completion_that_a_read_shows(sim: Sim) -> None:
    payment_id = sim.create()
    sim.receiving(payment_id)
    sim.configure(list_lag=3.0)
    unfiltered_query = [("sort_key", "created_at"), ("pagination", "cursor")]
    wait_until(
        lambda: sim.listed(unfiltered_query).get(payment_id, {}).get("status") == "receiving",
        timeout=10,
        message="the lagging list to show the payment receiving",
    )

    settled = sim.act(payment_id, "settle")
    assert sim.payment(payment_id)["status"] == "completed"
    assert payment_id not in sim.listed(DETECTION)
    unfiltered = sim.listed(unfiltered_query)
    assert unfiltered[payment_id]["status"] == "receiving"  # rendered as it was
    assert unfiltered[payment_id]["data"]["receipts"] == []

    shown = wait_until(
        lambda: sim.listed(DETECTION).get(payment_id),
        timeout=15,
        message="the completion to reach the lagging list",
    )
    assert shown["status"] == "completed"
    assert shown["updated_at"] == settled["updated_at"]


def test_a_payment_younger_than_the_lag_is_not_listed_yet(sim: Sim) -> None:
    sim.configure(list_lag=2.0)
    payment_id = sim.create()
    assert sim.payment(payment_id)["id"] == payment_id
    assert sim.page([("pagination", "cursor")])["items"] == []
    wait_until(
        lambda: sim.page([("pagination", "cursor")])["items"],
        timeout=10,
        message="the payment to reach the lagging list",
    )


# --- 3. faults aimed at one route -------------------------------------------------------------


def test_a_list_route_fault_fails_lists_while_reads_by_id_work(sim: Sim) -> None:
    payment_id = sim.create()
    sim.receiving(payment_id)
    unavailable = sim.fault(kind="status", status=503, route="list")
    assert unavailable["route"] == "list"

    failed = sim.query([("wallet_id", sim.wallet)])
    assert failed.status_code == 503
    assert failed.json()["error"]["type"] == "read_temporarily_unavailable"
    assert sim.read(payment_id).status_code == 200
    assert sim.http.get(f"{sim.api}/payments/{payment_id}/history", timeout=10).ok

    sim.control_call("DELETE", f"/faults/{unavailable['id']}")
    sim.fault(kind="rate_limit", route="list", retry_after=2)
    limited = sim.query([("wallet_id", sim.wallet)])
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "2"
    assert limited.json()["error"]["type"] == "rate_limited"
    assert sim.read(payment_id).status_code == 200
    assert sim.create()  # creates are another route


def test_route_and_method_combine_and_bad_routes_are_refused(sim: Sim) -> None:
    payment_id = sim.create()
    sim.receiving(payment_id)
    sim.fault(kind="status", status=500, route="read", count=1)
    assert sim.query([("wallet_id", sim.wallet)]).status_code == 200
    assert sim.read(payment_id).status_code == 500
    assert sim.read(payment_id).status_code == 200  # count spent
    sim.fault(kind="status", status=502, route="list", method="POST")
    assert sim.query([("wallet_id", sim.wallet)]).status_code == 200  # lists are GETs
    response = sim.control_call("POST", "/faults", {"kind": "status", "route": "settle"})
    assert response.status_code == 422


# --- 4. a status filter can hide a payment ----------------------------------------------------


def test_a_hidden_payment_is_missing_only_from_status_filtered_lists(sim: Sim) -> None:
    shown, hidden = sim.create(), sim.create()
    for payment_id in (shown, hidden):
        sim.receiving(payment_id)
        sim.act(payment_id, "settle")
    marked = sim.control_call("POST", f"/payments/{hidden}/hide-from-filtered-lists")
    assert marked.status_code == 200, marked.text
    assert marked.json()["sim"]["hidden_from_filtered_lists"] is True

    assert set(sim.listed(DETECTION)) == {shown}
    assert set(sim.listed([("statuses[]", "completed")])) == {shown}
    sweep = sim.listed(
        [
            ("sort_key", "created_at"),
            ("sort_order", "ASC"),
            ("direction", "receive"),
            ("pagination", "cursor"),
        ]
    )
    assert set(sweep) == {shown, hidden}
    assert sweep[hidden]["status"] == "completed"
    assert sim.payment(hidden)["status"] == "completed"

    sim.control_call("DELETE", f"/payments/{hidden}/hide-from-filtered-lists")
    assert set(sim.listed(DETECTION)) == {shown, hidden}
    unknown = sim.control_call("POST", f"/payments/{uuid.uuid4()}/hide-from-filtered-lists")
    assert unknown.status_code == 404


# --- 6. bulk seeding ----------------------------------------------------------------------------


def test_bulk_seeded_payments_have_decodable_invoices(sim: Sim) -> None:
    ids = sim.bulk(
        count=40,
        wallet_id=sim.wallet,
        expiration=600,
        amount_msats=5_000,
        organization_id=ORG,
        environment_id=ENV,
    )
    assert len(set(ids)) == 40
    for payment_id in ids:
        payment = sim.payment(payment_id)
        assert payment["status"] == "receiving"
        invoice = bolt11.decode(payment["data"]["payment_request"])
        assert invoice.amount_msat == 5_000
        assert invoice.expiry == 600
        assert invoice.payee == SIMULATOR_NODE_PUBKEY
        raw = sim.control_call("GET", f"/payments/{payment_id}").json()
        assert invoice.payment_hash == raw["sim"]["payment_hash"]
    any_amount = sim.bulk(
        count=1, wallet_id=sim.wallet, expiration=60, organization_id=ORG, environment_id=ENV
    )
    request = sim.payment(any_amount[0])["data"]["payment_request"]
    assert bolt11.decode(request).amount_msat is None


def test_cursor_paging_over_a_full_bulk_batch_returns_each_once(sim: Sim) -> None:
    first = sim.create()
    start = sim.payment(first)["created_at"]
    ids = sim.bulk(
        count=10_000,
        wallet_id=sim.wallet,
        expiration=3600,
        organization_id=ORG,
        environment_id=ENV,
    )
    seen: list[str] = []
    params = [
        ("wallet_id", sim.wallet),
        ("sort_key", "created_at"),
        ("sort_order", "ASC"),
        ("start_date", start),
        ("direction", "receive"),
    ]
    page = sim.query([*params, ("pagination", "cursor"), ("limit", "777")]).json()
    while True:
        seen += [item["id"] for item in page["items"]]
        if not page["has_more"]:
            break
        page = sim.query([*params, ("cursor", page["next_cursor"]), ("limit", "777")]).json()
    assert seen == [first, *ids]
    sample = random.Random(3).sample(ids, 25)
    for payment_id in sample:
        bolt11.decode(sim.payment(payment_id)["data"]["payment_request"])


def test_bulk_limits_and_missing_scope_are_422(sim: Sim) -> None:
    scope = {"organization_id": ORG, "environment_id": ENV}
    for body in (
        {"count": 0, "wallet_id": "w", "expiration": 60, **scope},
        {"count": 10_001, "wallet_id": "w", "expiration": 60, **scope},
        {"count": 1, "wallet_id": "", "expiration": 60, **scope},
        {"count": 1, "wallet_id": "w", "expiration": 0, **scope},
        {"count": 1, "wallet_id": "w", "expiration": 60},  # the simulator accepts any org
    ):
        response = sim.control_call("POST", "/payments/bulk", body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]["type"] == "invalid_data"


# --- 5. the indexes answer exactly what a full scan answers -------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now


def random_query(rng: random.Random, start: str, end: str) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = [
        ("sort_key", rng.choice(["created_at", "updated_at"])),
        ("sort_order", rng.choice(["ASC", "DESC"])),
        ("limit", str(rng.choice([1, 3, 10, 1000]))),
    ]
    statuses = rng.choice(
        [[], ["completed", "failed", "expired"], ["completed"], ["receiving"], ["generating"]]
    )
    params += [("statuses[]", status) for status in statuses]
    if rng.random() < 0.5:
        params.append(("pagination", "cursor"))
    else:
        params.append(("offset", str(rng.choice([0, 2, 7]))))
    if rng.random() < 0.3:
        params.append(("start_date", start))
    if rng.random() < 0.3:
        params.append(("end_date", end))
    if rng.random() < 0.2:
        params.append(("wallet_id", "w1"))
    return params


def act(state: SimulatorState, payment_id: str, action: str) -> None:
    if action == "hide":
        state.hide_from_filtered_lists(payment_id, hidden=random.random() < 0.8)
    elif action != "-" and state.raw(payment_id)["status"] not in FINAL_STATUSES:
        getattr(state, action)(payment_id)


def walk(state: SimulatorState, params: list[tuple[str, str]], use_indexes: bool) -> list[Any]:
    pages = [state.list(ORG, ENV, parse_list_query(params), use_indexes=use_indexes)]
    while pages[-1]["next_cursor"] is not None and len(pages) < 50:
        rest = [(k, v) for k, v in params if k != "pagination"]
        query = parse_list_query([*rest, ("cursor", pages[-1]["next_cursor"])])
        pages.append(state.list(ORG, ENV, query, use_indexes=use_indexes))
    return pages


@pytest.mark.parametrize("lag", [0.0, 4.0])
def test_indexed_lists_equal_full_scans(lag: float) -> None:
    clock = FakeClock()
    state = SimulatorState(SimulatorConfig(seed=11, generating_delay=1.0), clock=clock)
    rng = random.Random(5)
    ids: list[str] = []
    for step in range(120):
        clock.now += rng.choice([0.0, 0.000001, 0.3, 1.5])
        if step % 40 == 0:
            ids += state.seed_receiving(
                15, organization_id=ORG, environment_id=ENV, wallet_id="w1", expiration=30
            )
        new = NewPayment(
            id=str(uuid.UUID(int=rng.getrandbits(128))),
            wallet_id=rng.choice(["w1", "w2"]),
            amount_msats=1000,
            description=None,
            expiration=rng.choice([5, 3600]),
            metadata={},
        )
        state.create(ORG if step % 9 else "other-org", ENV, new)
        ids.append(new.id)
        if step == 60:
            state.update_config(updated_at_backdate=20.0)
        act(state, rng.choice(ids), rng.choice(["settle", "fail", "expire", "hide", "-", "-"]))
    state.update_config(list_lag=lag)
    # Bounds on payments' own created_at, so ties with the inclusive bounds are exercised.
    created = sorted(p["created_at"] for p in state.raw_list()["items"])
    for _ in range(200):
        start, end = rng.choice(created), rng.choice(created)
        params = random_query(rng, start, end)
        assert walk(state, params, True) == walk(state, params, False), params
        clock.now += 0.5


# --- the fast invoice encoder is bolt11's own encoding ------------------------------------------

_FEATURES = Features.from_feature_list(
    {
        Feature.var_onion_optin: FeatureState.required,
        Feature.payment_secret: FeatureState.required,
        Feature.basic_mpp: FeatureState.supported,
    }
)


def reference_encoding(amount_msat: int | None, description: str, expiry: int) -> tuple[str, str]:
    """The simulator's invoice and what `bolt11.encode` makes of the same fields."""
    invoice = make_invoice(
        amount_msat=amount_msat,
        description=description,
        expiry=expiry,
        timestamp=1_700_000_000 + expiry,
        rng=random.Random(expiry),
    )
    tags = Tags()
    tags.add(TagChar.payment_hash, invoice.payment_hash)
    tags.add(TagChar.payment_secret, invoice.payment_secret)
    tags.add(TagChar.description, description)
    tags.add(TagChar.expire_time, expiry)
    tags.add(TagChar.min_final_cltv_expiry, MIN_FINAL_CLTV_EXPIRY)
    tags.add(TagChar.features, _FEATURES)
    expected = Bolt11(
        currency=INVOICE_CURRENCY,
        date=invoice.timestamp,
        tags=tags,
        amount_msat=MilliSatoshi(amount_msat) if amount_msat else None,
    )
    return invoice.payment_request, bolt11.encode(expected, private_key=SIMULATOR_NODE_PRIVATE_KEY)


@pytest.mark.parametrize("amount_msat", [None, 0, 1, 10, 999, 10_001, 150_000_000_000])
@pytest.mark.parametrize("description", ["", "x", "Order 123 ✓", "é" * 319, "a" * 639])
@pytest.mark.parametrize("expiry", [1, 32, 3600, 86400])
def test_the_fast_encoder_matches_bolt11_encode(
    amount_msat: int | None, description: str, expiry: int
) -> None:
    ours, theirs = reference_encoding(amount_msat, description, expiry)
    assert ours == theirs


@pytest.mark.parametrize("amount_msat", [100_000_000_000_000, 2_100_000_000_000_000_000])
def test_whole_thousands_of_btc_keep_their_amount(amount_msat: int) -> None:
    """`bolt11.encode` drops a factor 1000 from these amounts; the simulator's encoder does not."""
    invoice = make_invoice(
        amount_msat=amount_msat,
        description="",
        expiry=60,
        timestamp=1_700_000_000,
        rng=random.Random(1),
    )
    assert bolt11.decode(invoice.payment_request).amount_msat == amount_msat
