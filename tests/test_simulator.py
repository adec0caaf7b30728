"""The Voltage simulator, exercised over real HTTP on loopback, the way the watcher sees it."""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import bolt11
import pytest
import requests

from watcher.simulator import SimulatorConfig, SimulatorServer
from watcher.simulator.app import MAX_BODY_BYTES
from watcher.simulator.create import canonical_uuid
from watcher.simulator.invoices import SIMULATOR_NODE_PUBKEY, make_invoice

FULL_KEY = "sim-key"
READ_KEY = "read-only-key"
RECEIVE_KEY = "receive-only-key"
ORG = "0b6b8a4e-4a1c-4e53-9a43-2d1f3c6e9a01"
ENV = "5f0c9d2e-8b7a-4c3d-9e1f-a2b3c4d5e6f7"
GENERATING_DELAY = 0.3

T = TypeVar("T")


class Http(requests.Session):
    """A session whose requests time out instead of hanging the suite."""

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 10)
        return super().request(*args, **kwargs)


bare = Http()  # no API key


def wait_for(check: Callable[[], T | None], timeout: float = 5.0, what: str = "condition") -> T:
    """Poll `check` until it returns something truthy, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


class Sim:
    """Thin helper around the simulator's two surfaces."""

    def __init__(self, server: SimulatorServer) -> None:
        self.server = server
        self.api = f"{server.base_url}/organizations/{ORG}/environments/{ENV}"
        self.control = server.control_url
        self.http = Http()
        self.http.headers["x-api-key"] = FULL_KEY
        self.wallet = f"wallet-{uuid.uuid4()}"  # isolates list tests from each other

    def body(self, **overrides: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "wallet_id": self.wallet,
            "payment_kind": "bolt11",
            "amount_msats": 10_000,
            "currency": "btc",
            "description": "test payment",
            "expiration": 3600,
        }
        body.update(overrides)
        return {key: value for key, value in body.items() if value is not ...}

    def create(self, **overrides: Any) -> str:
        body = self.body(**overrides)
        response = self.http.post(f"{self.api}/payments", json=body)
        assert response.status_code == 202, response.text
        return str(body["id"])

    def get(self, payment_id: str) -> requests.Response:
        return self.http.get(f"{self.api}/payments/{payment_id}")

    def payment(self, payment_id: str) -> dict[str, Any]:
        response = self.get(payment_id)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def receiving(self, payment_id: str) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            payment = self.payment(payment_id)
            return payment if payment["status"] == "receiving" else None

        return wait_for(check, what=f"{payment_id} to be receiving")

    def history(self, payment_id: str) -> list[dict[str, Any]]:
        response = self.http.get(f"{self.api}/payments/{payment_id}/history")
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()["events"]
        return events

    def list(self, params: list[tuple[str, str]] | dict[str, str]) -> requests.Response:
        return self.http.get(f"{self.api}/payments", params=params)

    def act(self, payment_id: str, action: str, body: Any = None) -> requests.Response:
        return bare.post(f"{self.control}/payments/{payment_id}/{action}", json=body)

    def fault(self, **spec: Any) -> dict[str, Any]:
        response = bare.post(f"{self.control}/faults", json=spec)
        assert response.status_code == 201, response.text
        fault: dict[str, Any] = response.json()
        return fault

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = bare.get(f"{self.control}/stats").json()
        return stats


def assert_error(response: requests.Response, status: int, error_type: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == error_type, error
    assert isinstance(error["detail"], str)
    assert error["detail"]
    return error


@pytest.fixture(scope="module")
def simulator_server() -> Iterator[SimulatorServer]:
    config = SimulatorConfig(
        api_keys={
            FULL_KEY: frozenset({"read", "receive", "write"}),
            READ_KEY: frozenset({"read"}),
            RECEIVE_KEY: frozenset({"receive"}),
        },
        generating_delay=GENERATING_DELAY,
        seed=1234,
    )
    with SimulatorServer(config) as server:
        yield server


@pytest.fixture
def sim(simulator_server: SimulatorServer) -> Iterator[Sim]:
    helper = Sim(simulator_server)
    yield helper
    bare.delete(f"{helper.control}/faults")
    bare.patch(
        f"{helper.control}/config",
        json={"not_found_window": 0.0, "generating_delay": GENERATING_DELAY},
    )
    helper.http.close()


# --- create and read back --------------------------------------------------------------------


def test_create_answers_202_with_an_empty_body(sim: Sim) -> None:
    response = sim.http.post(f"{sim.api}/payments", json=sim.body())
    assert response.status_code == 202
    assert response.content == b""


def set_config(sim: Sim, **values: float) -> None:
    response = bare.patch(f"{sim.control}/config", json=values)
    assert response.status_code == 200, response.text


def test_a_new_receive_is_generating_then_receiving_with_its_invoice(sim: Sim) -> None:
    set_config(sim, generating_delay=1.0)  # ample time to see `generating` on a loaded machine
    payment_id = sim.create(metadata={"external_id": "order-123"})
    first = sim.payment(payment_id)
    assert first["status"] == "generating"
    assert first["data"]["payment_request"] is None

    payment = sim.receiving(payment_id)
    assert payment["data"]["payment_request"].startswith("lntbs")
    assert payment["updated_at"] > first["updated_at"]
    assert payment["created_at"] == first["created_at"]
    assert payment["created_at"].endswith("Z")
    assert len(payment["created_at"]) == len("2025-02-12T21:21:21.744713Z")
    assert payment["id"] == payment_id
    assert payment["direction"] == "receive"
    assert payment["payment_category"] == "standard"
    assert payment["wallet_id"] == sim.wallet
    assert payment["organization_id"] == ORG
    assert payment["environment_id"] == ENV
    assert payment["metadata"] == {"external_id": "order-123"}
    assert payment["currency"] == "btc"
    assert payment["type"] == "bolt11"
    assert payment["requested_amount"] == {"currency": "btc", "amount": 10_000, "unit": "msats"}
    assert payment["data"]["amount_msats"] == 10_000
    assert payment["data"]["memo"] == "test payment"
    assert payment["data"]["expiration"] == 3600
    assert payment["data"]["receipts"] == []
    assert payment["error"] is None


def test_the_invoice_is_a_real_signed_bolt11(sim: Sim) -> None:
    payment_id = sim.create(
        amount_msats=...,
        amount={"amount": 10_001, "currency": "btc"},
        description="Order 123 ✓",
        expiration=900,
    )
    request = sim.receiving(payment_id)["data"]["payment_request"]
    invoice = bolt11.decode(request)
    assert request.startswith("lntbs")
    assert invoice.currency == "tbs"
    assert invoice.amount_msat == 10_001
    assert invoice.description == "Order 123 ✓"
    assert invoice.expiry == 900
    assert invoice.payee == SIMULATOR_NODE_PUBKEY
    assert invoice.payment_secret

    settled = sim.act(payment_id, "settle").json()
    receipt = settled["data"]["receipts"][0]
    assert receipt["type"] == "lightning"
    assert receipt["data"]["payment_hash"] == invoice.payment_hash
    preimage = bytes.fromhex(receipt["data"]["preimage"])
    assert hashlib.sha256(preimage).hexdigest() == invoice.payment_hash
    uuid.UUID(receipt["data"]["ledger_id"])


@pytest.mark.parametrize("amount_msat", [1, 10_001, 999_999_999, 150_000_000_000])
def test_odd_amounts_round_trip_through_bolt11(amount_msat: int) -> None:
    invoice = make_invoice(
        amount_msat=amount_msat,
        description="",
        expiry=60,
        timestamp=1_700_000_000,
        rng=random.Random(amount_msat),
    )
    decoded = bolt11.decode(invoice.payment_request)
    assert decoded.amount_msat == amount_msat
    assert decoded.description == ""
    assert decoded.date == 1_700_000_000
    assert decoded.payment_hash == invoice.payment_hash


ZERO = {"currency": "btc", "amount": 0, "unit": "msats"}


@pytest.mark.parametrize(
    ("overrides", "requested"),
    [
        ({"amount_msats": ...}, None),
        ({"amount_msats": ..., "currency": ...}, None),
        ({"amount_msats": 0}, ZERO),
        ({"amount_msats": ..., "amount": {"amount": 0, "currency": "btc"}}, ZERO),
    ],
    ids=["omitted", "omitted-no-currency", "legacy-zero", "object-zero"],
)
def test_any_amount_invoices(
    sim: Sim, overrides: dict[str, Any], requested: dict[str, Any] | None
) -> None:
    payment_id = sim.create(**overrides)
    payment = sim.receiving(payment_id)
    assert bolt11.decode(payment["data"]["payment_request"]).amount_msat is None
    assert payment["data"]["amount_msats"] == 0
    assert payment["requested_amount"] == requested
    settled = sim.act(payment_id, "settle", {"amount_msats": 5_000}).json()
    assert settled["data"]["amount_msats"] == 5_000


def test_a_reused_id_is_a_409_payment_exists(sim: Sim) -> None:
    body = sim.body()
    assert sim.http.post(f"{sim.api}/payments", json=body).status_code == 202
    again = sim.http.post(f"{sim.api}/payments", json={**body, "amount_msats": 1})
    error = assert_error(again, 409, "payment_exists")
    assert error["context"] == {"payment_id": body["id"]}
    assert sim.payment(body["id"])["data"]["amount_msats"] == 10_000


def test_ids_are_compared_as_uuids(sim: Sim) -> None:
    payment_id = sim.create()
    assert sim.get(payment_id.upper()).json()["id"] == payment_id
    twin = sim.http.post(f"{sim.api}/payments", json=sim.body(id=payment_id.upper()))
    assert_error(twin, 409, "payment_exists")
    assert_error(sim.get("not-a-uuid"), 400, "invalid_parameter")


def test_unknown_payment_is_a_404_payment_not_found(sim: Sim) -> None:
    unknown = str(uuid.uuid4())
    error = assert_error(sim.get(unknown), 404, "payment_not_found")
    assert error["context"] == {"payment_id": unknown}
    assert sim.history(unknown) == []


def test_payments_are_scoped_to_their_environment(sim: Sim) -> None:
    payment_id = sim.create()
    other = f"{sim.server.base_url}/organizations/{ORG}/environments/{uuid.uuid4()}"
    assert_error(sim.http.get(f"{other}/payments/{payment_id}"), 404, "payment_not_found")


# --- auth --------------------------------------------------------------------------------------


def test_missing_or_unknown_key_is_401_wrong_credentials(sim: Sim) -> None:
    url = f"{sim.api}/payments"
    assert_error(bare.post(url, json=sim.body()), 401, "wrong_credentials")
    assert_error(bare.get(url), 401, "wrong_credentials")
    assert_error(bare.get(url, headers={"x-api-key": "not-a-key"}), 401, "wrong_credentials")
    assert_error(bare.get(url, headers={"x-api-key": ""}), 401, "wrong_credentials")


def test_permissions_are_enforced_with_403_access_rights(sim: Sim) -> None:
    url = f"{sim.api}/payments"
    body = sim.body()
    read_only = bare.post(url, json=body, headers={"x-api-key": READ_KEY})
    assert_error(read_only, 403, "access_rights")
    assert_error(sim.get(body["id"]), 404, "payment_not_found")  # nothing was created

    receive_only = {"x-api-key": RECEIVE_KEY}
    assert bare.post(url, json=body, headers=receive_only).status_code == 202
    assert_error(bare.get(f"{url}/{body['id']}", headers=receive_only), 403, "access_rights")
    assert bare.get(f"{url}/{body['id']}", headers={"x-api-key": READ_KEY}).ok


def test_a_fixed_organization_and_environment_refuse_others() -> None:
    org, env = str(uuid.uuid4()), str(uuid.uuid4())
    config = SimulatorConfig(organization_id=org, environment_id=env)
    with SimulatorServer(config) as server:
        key = {"x-api-key": "sim-key"}
        good = f"{server.base_url}/organizations/{org}/environments/{env}/payments"
        assert bare.get(good, headers=key).json()["items"] == []
        wrong_org = f"{server.base_url}/organizations/{uuid.uuid4()}/environments/{env}/payments"
        wrong_env = f"{server.base_url}/organizations/{org}/environments/{uuid.uuid4()}/payments"
        assert_error(bare.get(wrong_org, headers=key), 403, "access_rights")
        assert_error(bare.get(wrong_env, headers=key), 403, "access_rights")


# --- request validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"id": ...}, "id"),
        ({"id": "order-1"}, "id"),
        ({"id": 12}, "id"),
        ({"wallet_id": ...}, "wallet_id"),
        ({"wallet_id": ""}, "wallet_id"),
        ({"wallet_id": 7}, "wallet_id"),
        ({"payment_kind": ...}, "payment_kind"),
        ({"payment_kind": "lightning"}, "payment_kind"),
        ({"amount_msats": -1}, "amount_msats"),
        ({"amount_msats": "10000"}, "amount_msats"),
        ({"amount_msats": True}, "amount_msats"),
        ({"amount_msats": 10.5}, "amount_msats"),
        ({"amount": {"amount": 10, "currency": "btc"}}, "amount"),
        ({"amount_msats": ..., "amount": 10}, "amount"),
        ({"amount_msats": ..., "amount": {"amount": -5, "currency": "btc"}}, "amount.amount"),
        ({"amount_msats": ..., "amount": {"amount": 5, "currency": "usd"}}, "amount.currency"),
        ({"amount_msats": ..., "amount": {"amount": 5}}, "amount.currency"),
        ({"currency": "usd"}, "currency"),
        ({"description": 42}, "description"),
        ({"description": "é" * 320}, "description"),
        ({"expiration": 0}, "expiration"),
        ({"expiration": 86_401}, "expiration"),
        ({"expiration": "60"}, "expiration"),
        ({"metadata": ["a"]}, "metadata"),
        ({"metadata": {f"k{i}": "v" for i in range(51)}}, "metadata"),
        ({"metadata": {"k": "v" * 257}}, "metadata.k"),
        ({"metadata": {"k": 5}}, "metadata.k"),
    ],
)
def test_invalid_fields_are_422_naming_the_field(
    sim: Sim, overrides: dict[str, Any], field: str
) -> None:
    body = sim.body(**overrides)
    error = assert_error(sim.http.post(f"{sim.api}/payments", json=body), 422, "invalid_data")
    assert field in error["context"]["fields"], error
    assert field in error["detail"]
    if isinstance(body.get("id"), str) and canonical_uuid(body["id"]):
        assert_error(sim.get(body["id"]), 404, "payment_not_found")  # nothing was created


def test_edge_values_are_accepted(sim: Sim) -> None:
    payment_id = sim.create(
        expiration=86_400,
        description="é" * 319,  # 638 bytes
        metadata={f"k{i}": "v" * 256 for i in range(50)},
    )
    assert len(sim.payment(payment_id)["metadata"]) == 50
    assert sim.create(expiration=1, description=...)


def test_other_payment_kinds_are_refused_as_unsupported(sim: Sim) -> None:
    response = sim.http.post(f"{sim.api}/payments", json=sim.body(payment_kind="onchain"))
    error = assert_error(response, 422, "invalid_data")
    assert error["context"]["fields"] == ["payment_kind"]
    assert "only supports bolt11" in error["detail"]


def test_a_body_that_is_not_json_is_415_or_422(sim: Sim) -> None:
    url = f"{sim.api}/payments"
    text = json.dumps(sim.body())
    plain = sim.http.post(url, data=text, headers={"content-type": "text/plain"})
    assert_error(plain, 415, "missing_content_type")
    assert_error(sim.http.post(url, data=text.encode()), 415, "missing_content_type")
    broken = sim.http.post(url, data=text[:-3], headers={"content-type": "application/json"})
    assert assert_error(broken, 422, "invalid_data")["context"]["fields"] == ["body"]
    array = sim.http.post(url, json=[sim.body()])
    assert_error(array, 422, "invalid_data")
    charset = sim.http.post(
        url, data=text, headers={"content-type": "application/json; charset=utf-8"}
    )
    assert charset.status_code == 202


def test_a_body_over_one_mebibyte_is_413(sim: Sim) -> None:
    url = f"{sim.api}/payments"
    body = sim.body()
    text = json.dumps(body)
    exactly = text + " " * (MAX_BODY_BYTES - len(text))
    json_type = {"content-type": "application/json"}
    assert sim.http.post(url, data=exactly, headers=json_type).status_code == 202
    over = json.dumps(sim.body()) + " " * MAX_BODY_BYTES
    assert_error(sim.http.post(url, data=over, headers=json_type), 413, "payload_too_large")


# --- eventual consistency ------------------------------------------------------------------------


def test_a_fresh_payment_is_404_during_the_not_found_window(sim: Sim) -> None:
    set_config(sim, not_found_window=0.5)
    payment_id = sim.create()
    started = time.monotonic()
    assert_error(sim.get(payment_id), 404, "payment_not_found")
    assert sim.list({"wallet_id": sim.wallet}).json()["items"] == []
    assert sim.history(payment_id) == []
    # "Not yet", not "gone": the id is already taken.
    reuse = sim.http.post(f"{sim.api}/payments", json=sim.body(id=payment_id))
    assert_error(reuse, 409, "payment_exists")

    payment = wait_for(lambda: sim.get(payment_id).ok, what="the payment to appear")
    assert payment
    assert time.monotonic() - started >= 0.4
    assert [p["id"] for p in sim.list({"wallet_id": sim.wallet}).json()["items"]] == [payment_id]


def test_config_reads_and_rejects_bad_values(sim: Sim) -> None:
    config = bare.get(f"{sim.control}/config").json()
    assert config["generating_delay"] == GENERATING_DELAY
    assert config["not_found_window"] == 0.0
    patched = bare.patch(f"{sim.control}/config", json={"not_found_window": 0.25})
    assert patched.json()["not_found_window"] == 0.25
    assert patched.json()["generating_delay"] == GENERATING_DELAY
    bad = bare.patch(f"{sim.control}/config", json={"generating_delay": -1})
    assert assert_error(bad, 422, "invalid_data")["context"]["fields"] == ["generating_delay"]
    unknown = bare.patch(f"{sim.control}/config", json={"speed": 1})
    assert_error(unknown, 422, "invalid_data")


# --- listing -----------------------------------------------------------------------------------


def test_cursor_pagination_walks_every_payment_once(sim: Sim) -> None:
    created = [sim.create() for _ in range(23)]
    seen: list[str] = []
    params: dict[str, str] = {"wallet_id": sim.wallet, "pagination": "cursor", "limit": "5"}
    pages = 0
    while True:
        page = sim.list(params).json()
        pages += 1
        assert page["limit"] == 5
        assert page["offset"] == 0
        assert page["total"] is None
        seen += [item["id"] for item in page["items"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        assert len(page["items"]) == 5
        params = {"wallet_id": sim.wallet, "cursor": page["next_cursor"], "limit": "5"}
    assert pages == 5
    assert len(seen) == len(set(seen)) == 23
    assert set(seen) == set(created)
    # Default order: newest first, ties broken by id.
    created_at = [sim.payment(pid)["created_at"] for pid in seen]
    assert created_at == sorted(created_at, reverse=True)

    offset_page = sim.list({"wallet_id": sim.wallet, "offset": "20", "limit": "5"}).json()
    assert offset_page["total"] == 23
    assert offset_page["offset"] == 20
    assert offset_page["has_more"] is False
    assert [item["id"] for item in offset_page["items"]] == seen[20:]


def test_statuses_filter_uses_repeated_bracket_params(sim: Sim) -> None:
    settled, failed, expired, pending = (sim.create() for _ in range(4))
    assert sim.act(settled, "settle").ok
    assert sim.act(failed, "fail").ok
    assert sim.act(expired, "expire").ok
    params = [("wallet_id", sim.wallet), ("statuses[]", "completed"), ("statuses[]", "failed")]
    page = sim.list(params).json()
    assert {item["id"] for item in page["items"]} == {settled, failed}
    assert page["total"] == 2
    only_pending = sim.list(
        [("wallet_id", sim.wallet), ("statuses[]", "generating"), ("statuses[]", "receiving")]
    ).json()
    assert [item["id"] for item in only_pending["items"]] == [pending]
    bad = sim.list([("statuses[]", "done")])
    assert_error(bad, 400, "invalid_parameter")
    assert_error(sim.list([("statuses", "completed")]), 400, "invalid_parameter")


def test_sort_by_updated_at(sim: Sim) -> None:
    first, second, third = (sim.create() for _ in range(3))
    for payment_id in (second, third, first):
        assert sim.act(payment_id, "settle").ok
    ascending = sim.list(
        {"wallet_id": sim.wallet, "sort_key": "updated_at", "sort_order": "ASC"}
    ).json()
    assert [item["id"] for item in ascending["items"]] == [second, third, first]
    descending_pages: list[str] = []
    params = {
        "wallet_id": sim.wallet,
        "sort_key": "updated_at",
        "pagination": "cursor",
        "limit": "2",
    }
    page = sim.list(params).json()
    descending_pages += [item["id"] for item in page["items"]]
    params = {
        "wallet_id": sim.wallet,
        "sort_key": "updated_at",
        "cursor": page["next_cursor"],
        "limit": "2",
    }
    descending_pages += [item["id"] for item in sim.list(params).json()["items"]]
    assert descending_pages == [first, third, second]


def test_a_cursor_only_works_with_its_own_filters_and_sort(sim: Sim) -> None:
    for _ in range(3):
        sim.create()
    first = sim.list({"wallet_id": sim.wallet, "pagination": "cursor", "limit": "1"}).json()
    cursor = first["next_cursor"]
    assert cursor
    for changed in (
        {"wallet_id": "another-wallet"},
        {"wallet_id": sim.wallet, "sort_order": "ASC"},
        {"wallet_id": sim.wallet, "sort_key": "updated_at"},
        {},
    ):
        error = assert_error(sim.list({**changed, "cursor": cursor}), 400, "invalid_cursor")
        assert error["context"]["field"] == "cursor"
    for garbage in ("garbage", "e30", cursor[:-4], "%%%"):
        assert_error(sim.list({"wallet_id": sim.wallet, "cursor": garbage}), 400, "invalid_cursor")
    same = sim.list({"wallet_id": sim.wallet, "cursor": cursor, "limit": "5"}).json()
    assert len(same["items"]) == 2


def test_metadata_and_date_filters(sim: Sim) -> None:
    tagged = sim.create(metadata={"external_id": "order-1", "tenant": "a"})
    sim.create(metadata={"external_id": "order-2", "tenant": "a"})
    page = sim.list(
        [("wallet_id", sim.wallet), ("metadata[tenant]", "a"), ("metadata[external_id]", "order-1")]
    ).json()
    assert [item["id"] for item in page["items"]] == [tagged]

    created_at = sim.payment(tagged)["created_at"]
    since = sim.list({"wallet_id": sim.wallet, "start_date": created_at}).json()
    until = sim.list({"wallet_id": sim.wallet, "end_date": created_at}).json()
    assert tagged in {item["id"] for item in since["items"]}
    assert [item["id"] for item in until["items"]] == [tagged]
    assert_error(sim.list({"start_date": "yesterday"}), 400, "invalid_parameter")
    assert_error(sim.list({"start_date": "2025-01-01T00:00:00"}), 400, "invalid_parameter")
    assert_error(sim.list({"limit": "0"}), 400, "invalid_parameter")
    assert_error(sim.list({"limit": "1001"}), 400, "invalid_parameter")
    assert_error(sim.list({"surprise": "1"}), 400, "invalid_parameter")
    assert sim.list({"wallet_id": sim.wallet, "direction": "send"}).json()["items"] == []
    assert sim.list({"wallet_id": sim.wallet, "kind": "onchain"}).json()["items"] == []
    assert len(sim.list({"wallet_id": sim.wallet, "kind": "bolt11"}).json()["items"]) == 2


# --- the status machine and the control surface ---------------------------------------------------


def test_settle_completes_with_a_receipt_and_history(sim: Sim) -> None:
    payment_id = sim.create()
    receiving = sim.receiving(payment_id)
    response = sim.act(payment_id, "settle")
    assert response.status_code == 200
    settled = response.json()
    assert settled["status"] == "completed"
    assert settled == sim.payment(payment_id)
    assert settled["updated_at"] > receiving["updated_at"]
    events = sim.history(payment_id)
    assert [e["event_type"] for e in events] == ["created", "generated", "completed"]
    assert [e["position"] for e in events] == [0, 1, 2]
    assert events[0]["time"] == settled["created_at"]
    assert events[-1]["time"] == settled["updated_at"]
    assert all(e["error"] is None for e in events)

    again = sim.act(payment_id, "fail")
    assert assert_error(again, 409, "payment_final")["context"]["status"] == "completed"
    assert_error(sim.act(payment_id, "expire"), 409, "payment_final")
    assert_error(sim.act(str(uuid.uuid4()), "settle"), 404, "payment_not_found")


def test_settling_a_generating_payment_jumps_through_receiving(sim: Sim) -> None:
    payment_id = sim.create()
    settled = sim.act(payment_id, "settle").json()
    assert settled["status"] == "completed"
    assert settled["data"]["payment_request"].startswith("lntbs")
    assert [e["event_type"] for e in sim.history(payment_id)] == [
        "created",
        "generated",
        "completed",
    ]


def test_fail_sets_the_receive_error(sim: Sim) -> None:
    set_config(sim, generating_delay=30)
    early = sim.create()
    set_config(sim, generating_delay=GENERATING_DELAY)
    failed = sim.act(early, "fail").json()
    assert failed["status"] == "failed"
    assert failed["data"]["payment_request"] is None  # it never got an invoice
    assert failed["error"]["type"] == "receive_failed"
    assert failed["error"]["code"] == "no_route"

    later = sim.create()
    sim.receiving(later)
    coded = sim.act(later, "fail", {"code": "invalid_payment_amount", "detail": "too small"})
    assert coded.json()["error"]["code"] == "invalid_payment_amount"
    assert coded.json()["error"]["detail"] == "too small"
    events = sim.history(later)
    assert [e["event_type"] for e in events] == ["created", "generated", "failed"]
    assert events[-1]["error"] == "invalid_payment_amount"
    assert_error(sim.act(sim.create(), "fail", {"code": "bored"}), 422, "invalid_data")


def test_expire_control(sim: Sim) -> None:
    payment_id = sim.create()
    expired = sim.act(payment_id, "expire").json()
    assert expired["status"] == "expired"
    assert expired["error"]["code"] == "expired"
    assert expired["data"]["receipts"] == []
    assert [e["event_type"] for e in sim.history(payment_id)][-1] == "expired"
    assert_error(sim.act(payment_id, "settle"), 409, "payment_final")


def test_a_receiving_invoice_expires_on_its_own(sim: Sim) -> None:
    payment_id = sim.create(expiration=1)

    def expired() -> dict[str, Any] | None:
        payment = sim.payment(payment_id)
        return payment if payment["status"] == "expired" else None

    payment = wait_for(expired, timeout=5.0, what="the invoice to expire")
    invoice = bolt11.decode(payment["data"]["payment_request"])
    assert time.time() > invoice.date + invoice.expiry
    assert payment["error"] == {
        "type": "receive_failed",
        "code": "expired",
        "detail": payment["error"]["detail"],
        "context": None,
    }
    events = sim.history(payment_id)
    assert [e["event_type"] for e in events] == ["created", "generated", "expired"]
    assert events[-1]["time"] == payment["updated_at"]
    listed = sim.list([("wallet_id", sim.wallet), ("statuses[]", "expired")]).json()
    assert [item["id"] for item in listed["items"]] == [payment_id]
    assert_error(sim.act(payment_id, "settle"), 409, "payment_final")


def test_raw_payments_show_hidden_state(sim: Sim) -> None:
    set_config(sim, not_found_window=30)
    payment_id = sim.create()
    raw = bare.get(f"{sim.control}/payments/{payment_id}").json()
    assert raw["sim"]["visible"] is False
    assert raw["sim"]["payment_request"].startswith("lntbs")
    assert payment_id in {p["id"] for p in bare.get(f"{sim.control}/payments").json()["items"]}
    assert sim.act(payment_id, "settle").json()["status"] == "completed"


# --- faults --------------------------------------------------------------------------------------


def test_status_fault_answers_the_envelope_a_limited_number_of_times(sim: Sim) -> None:
    payment_id = sim.create()
    fault = sim.fault(kind="status", status=503, count=2, method="GET", path=payment_id)
    assert fault["remaining"] == 2
    for _ in range(2):
        error = assert_error(sim.get(payment_id), 503, "read_temporarily_unavailable")
        assert "detail" in error
    assert sim.get(payment_id).status_code == 200
    listed = bare.get(f"{sim.control}/faults").json()["faults"]
    assert listed[0]["remaining"] == 0
    assert listed[0]["applied"] == 2
    five_hundred = sim.fault(kind="status", status=500, count=1)
    assert_error(sim.get(payment_id), 500, "internal_error")
    assert bare.delete(f"{sim.control}/faults/{five_hundred['id']}").json() == {"deleted": 1}
    assert_error(bare.delete(f"{sim.control}/faults/{five_hundred['id']}"), 404, "fault_not_found")


def test_rate_limit_fault_sends_retry_headers(sim: Sim) -> None:
    sim.fault(kind="rate_limit", count=1, retry_after=2, retry_after_ms=1500)
    limited = sim.list({"wallet_id": sim.wallet})
    assert_error(limited, 429, "rate_limited")
    assert limited.headers["retry-after"] == "2"
    assert limited.headers["x-retry-after-ms"] == "1500"
    assert sim.list({"wallet_id": sim.wallet}).ok

    sim.fault(kind="rate_limit", count=1)
    default = sim.list({"wallet_id": sim.wallet})
    assert default.status_code == 429
    assert default.headers["retry-after"] == "1"
    assert "x-retry-after-ms" not in default.headers


def test_malformed_fault_answers_broken_json(sim: Sim) -> None:
    payment_id = sim.create()
    sim.fault(kind="malformed", count=1)
    broken = sim.get(payment_id)
    assert broken.status_code == 200
    assert broken.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken.content)
    assert sim.payment(payment_id)["id"] == payment_id


def test_latency_fault_delays_only_the_matching_request(sim: Sim) -> None:
    slow_id, fast_id = sim.create(), sim.create()
    sim.fault(kind="latency", latency=0.8, count=1, path=slow_id)
    timings: dict[str, float] = {}

    def slow_read() -> None:
        started = time.monotonic()
        timings["status"] = bare.get(
            f"{sim.api}/payments/{slow_id}", headers={"x-api-key": FULL_KEY}
        ).status_code
        timings["slow"] = time.monotonic() - started

    reader = threading.Thread(target=slow_read)
    reader.start()
    wait_for(
        lambda: bare.get(f"{sim.control}/faults").json()["faults"][0]["remaining"] == 0,
        what="the latency fault to fire",
    )
    started = time.monotonic()
    assert sim.get(fast_id).ok
    fast = time.monotonic() - started
    reader.join(timeout=5)
    assert timings["status"] == 200  # latency delays, then the request carries on
    assert timings["slow"] >= 0.8
    assert fast < 0.5


def test_latency_then_status_fault_apply_in_order(sim: Sim) -> None:
    payment_id = sim.create()
    sim.fault(kind="latency", latency=0.2, count=1)
    sim.fault(kind="status", status=502, count=1)
    started = time.monotonic()
    assert_error(sim.get(payment_id), 502, "simulated_fault")
    assert time.monotonic() - started >= 0.2


def test_a_faulted_create_creates_nothing(sim: Sim) -> None:
    sim.fault(kind="status", status=503, count=1, method="POST")
    body = sim.body()
    url = f"{sim.api}/payments"
    assert sim.http.post(url, json=body).status_code == 503
    assert_error(sim.get(body["id"]), 404, "payment_not_found")
    assert sim.http.post(url, json=body).status_code == 202
    assert sim.get(body["id"]).ok


def test_fault_rate_and_filters(sim: Sim) -> None:
    payment_id = sim.create()
    never = sim.fault(kind="status", status=500, rate=0.0)
    post_only = sim.fault(kind="status", status=500, method="POST", path="/history")
    for _ in range(5):
        assert sim.get(payment_id).ok
    faults = {f["id"]: f for f in bare.get(f"{sim.control}/faults").json()["faults"]}
    assert faults[never["id"]]["applied"] == 0
    assert faults[never["id"]]["remaining"] is None
    assert faults[post_only["id"]]["applied"] == 0
    assert bare.delete(f"{sim.control}/faults").json() == {"deleted": 2}
    assert bare.get(f"{sim.control}/faults").json() == {"faults": []}
    # The control surface itself is never faulted.
    sim.fault(kind="status", status=500)
    assert bare.get(f"{sim.control}/stats").ok


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "explode"},
        {"kind": "latency"},
        {"kind": "status", "status": 200},
        {"kind": "status", "rate": 1.5},
        {"kind": "status", "count": 0},
        {"kind": "rate_limit", "method": "PUT"},
        {"kind": "status", "latency": 1},
    ],
)
def test_bad_fault_specs_are_422(sim: Sim, spec: dict[str, Any]) -> None:
    response = bare.post(f"{sim.control}/faults", json=spec)
    assert_error(response, 422, "invalid_data")


# --- stats and errors -------------------------------------------------------------------------


def test_stats_count_every_v1_request(sim: Sim) -> None:
    assert bare.post(f"{sim.control}/stats/reset").json()["requests"] == 0
    payment_id = sim.create()
    sim.get(payment_id)
    sim.get(payment_id)
    sim.history(payment_id)
    sim.list({"wallet_id": sim.wallet})
    sim.fault(kind="status", status=503, count=1)
    sim.get(payment_id)
    bare.get(f"{sim.api}/payments/{payment_id}")  # no key: 401, still counted
    sim.act(payment_id, "settle")  # control surface: not counted
    stats = sim.stats()
    assert stats["requests"] == 7
    assert stats["by_route"] == {
        "POST /payments": 1,
        "GET /payments/{id}": 4,
        "GET /payments/{id}/history": 1,
        "GET /payments": 1,
    }
    assert stats["by_status"] == {"202": 1, "200": 4, "503": 1, "401": 1}
    assert stats["per_payment"] == {payment_id: 4}


def test_every_error_uses_the_envelope(sim: Sim) -> None:
    root = sim.server.base_url.removesuffix("/v1")
    assert_error(bare.get(f"{root}/nowhere"), 404, "not_found")
    assert_error(bare.get(f"{sim.server.base_url}/nowhere"), 404, "not_found")
    assert_error(sim.http.delete(f"{sim.api}/payments"), 405, "method_not_allowed")
    bad_json = bare.post(
        f"{sim.control}/faults", data="{", headers={"content-type": "application/json"}
    )
    assert_error(bad_json, 422, "invalid_data")


# --- the server ----------------------------------------------------------------------------------


def test_server_urls_and_restart_on_the_same_port() -> None:
    server = SimulatorServer(SimulatorConfig(generating_delay=0))
    with server:
        assert server.port > 0
        assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
        assert server.control_url == f"http://127.0.0.1:{server.port}/_sim"
        api = f"{server.base_url}/organizations/o/environments/e/payments"
        payment_id = str(uuid.uuid4())
        body = {"id": payment_id, "wallet_id": "w", "payment_kind": "bolt11"}
        assert bare.post(api, json=body, headers={"x-api-key": "sim-key"}).status_code == 202
        port = server.port
    with pytest.raises(requests.ConnectionError):
        bare.get(f"{server.control_url}/health", timeout=2)
    with server:
        assert server.port == port
        read = bare.get(f"{api}/{payment_id}", headers={"x-api-key": "sim-key"})
        assert read.json()["status"] == "receiving"
        assert bare.post(f"{server.control_url}/reset").ok
        assert_error(
            bare.get(f"{api}/{payment_id}", headers={"x-api-key": "sim-key"}),
            404,
            "payment_not_found",
        )
    server.stop()  # idempotent


def test_config_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="api_keys"):
        SimulatorConfig(api_keys={"k": frozenset({"admin"})})
    with pytest.raises(ValueError, match="not_found_window"):
        SimulatorConfig(not_found_window=-1)
