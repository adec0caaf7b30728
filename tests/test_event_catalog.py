"""The event catalog (issue 16): a JSON Schema per event type, served at GET /v1/event-types
and in the OpenAPI document's `webhooks`; every body a test receives is checked against it
(tests/conftest.py's `receivers`, the fault suite's subscribers), and so are docs/events.md's
examples."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import jsonschema
import pytest

from tests.conftest import SimControl, Stack
from tests.support import wait_until
from tests.test_api import ApiClient, api_stack, ok, serve
from watcher.delivery.event_catalog import EVENT_MODELS, schema_of
from watcher.receiver import Receiver

pytestmark = pytest.mark.timeout(90)

EVENTS_DOC = Path(__file__).resolve().parent.parent / "docs" / "events.md"


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return api_stack(make_stack)


@pytest.fixture
def api(stack: Stack) -> Iterator[ApiClient]:
    with serve(stack, invoice_wait=3.0) as client:
        yield client


def test_every_event_type_is_published_in_the_openapi_document_and_the_api(
    api: ApiClient,
) -> None:
    document = ok(api.get("/openapi.json", token=None))
    assert document["openapi"].startswith("3.1")
    assert set(document["webhooks"]) == set(EVENT_MODELS)
    for event_type, item in document["webhooks"].items():
        body = item["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body, event_type
    listed = ok(api.get("/v1/event-types"))["items"]
    assert [t["type"] for t in listed] == list(EVENT_MODELS)
    for entry in listed:
        assert entry["schema"] == schema_of(entry["type"])
        assert entry["versions"] == [1]
        assert entry["description"]


def test_the_schemas_refuse_what_a_receiver_could_trip_on() -> None:
    good = {
        "type": "payment.completed",
        "timestamp": "2026-12-03T12:00:00.000Z",
        "version": 1,
        "data": {"payment_id": "p", "previous_status": "receiving", "status": "completed",
                 "payment": {"id": "p"}},
    }  # fmt: skip
    jsonschema.validate(good, schema_of("payment.completed"))
    for broken in (
        {k: v for k, v in good.items() if k != "version"},
        {**good, "type": "payment.expired"},
        {**good, "data": {**good["data"], "status": "paid"}},  # type: ignore[dict-item]
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema_of("payment.completed"))


def doc_examples() -> list[dict[str, object]]:
    text = EVENTS_DOC.read_text(encoding="utf-8")
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.S)]


def test_docs_show_a_valid_example_of_every_event_type() -> None:
    examples = doc_examples()
    assert sorted(str(e["type"]) for e in examples) == sorted(EVENT_MODELS)
    for example in examples:
        jsonschema.validate(example, schema_of(str(example["type"])))


def test_real_bodies_carry_their_schema_version_and_validate(
    api: ApiClient,
    stack: Stack,
    sim_control: SimControl,
    receivers: Callable[[], Receiver],
) -> None:
    stack.start_worker(concurrency=2)
    stack.start_beat()
    receiver = receivers()
    sub = ok(api.post("/v1/subscriptions", {"url": receiver.url()}), 201)
    payment = ok(api.post("/v1/payments", {"amount_msats": 5_000}), 201)
    sim_control.settle(payment["id"])
    ok(api.post(f"/v1/subscriptions/{sub['id']}/test"), 202)
    wait_until(lambda: len(receiver.received) >= 2, timeout=30, message="both webhooks")
    bodies = [json.loads(b) for b in receiver.bodies()]
    assert sorted(b["type"] for b in bodies) == ["payment.completed", "webhook.test"]
    for body in bodies:
        assert body["version"] == 1
        jsonschema.validate(body, schema_of(body["type"]))
