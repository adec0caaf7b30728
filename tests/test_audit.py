"""The audit log (issue 15): which token or CLI user created, changed, deleted, rotated,
tested, recovered or redelivered what, and when; never a token or a secret."""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from tests.conftest import Stack
from tests.test_api import OTHER_TOKEN, TOKEN, ApiClient, api_stack, error_of, ok, serve
from tests.test_cli import run_cli
from watcher.access.audit import token_actor

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return api_stack(make_stack)


@pytest.fixture
def api(stack: Stack) -> Iterator[ApiClient]:
    with serve(stack) as client:
        yield client


def entries(api: ApiClient, **params: Any) -> list[dict[str, Any]]:
    return list(ok(api.get("/v1/audit", params=params))["items"])


def raw_log(stack: Stack) -> str:
    rt = stack.runtime
    return json.dumps(rt.redis.xrange(rt.payments.keys.audit))


def test_every_change_names_its_token_and_its_object(api: ApiClient, stack: Stack) -> None:
    hook = "http://127.0.0.1:9/hook?token=hunter2-url-password"
    sub = ok(api.post("/v1/subscriptions", {"url": hook}), 201)
    ok(api.patch(f"/v1/subscriptions/{sub['id']}", {"description": "shop", "enabled": False}))
    ok(api.patch(f"/v1/subscriptions/{sub['id']}", {"enabled": True}))
    rotated = ok(api.post(f"/v1/subscriptions/{sub['id']}/rotate-secret", token=OTHER_TOKEN))
    test = ok(api.post(f"/v1/subscriptions/{sub['id']}/test"), 202)
    ok(api.post(f"/v1/deliveries/{test['delivery_id']}/redeliver"), 202)
    now = datetime.now(UTC)
    window = {"since": (now - timedelta(hours=1)).isoformat(), "until": now.isoformat()}
    ok(api.post(f"/v1/subscriptions/{sub['id']}/recover", window), 202)
    order = {"amount_msats": 5_000, "client_id": "order-1"}
    payment = ok(api.post("/v1/payments", order), 201)
    ok(api.post("/v1/payments", order), 200)  # the same create again changes nothing
    ok(api.get(f"/v1/payments/{payment['id']}"))  # nor does a read
    ok(api.delete(f"/v1/subscriptions/{sub['id']}"), 204)

    log = entries(api)
    assert [(e["action"], e["target"]) for e in log] == [
        ("subscription.deleted", sub["id"]),
        ("payment.created", payment["id"]),
        ("subscription.recovered", sub["id"]),
        ("delivery.redelivered", test["delivery_id"]),
        ("subscription.test_sent", sub["id"]),
        ("subscription.secret_rotated", sub["id"]),
        ("subscription.changed", sub["id"]),
        ("subscription.changed", sub["id"]),
        ("subscription.created", sub["id"]),
    ]
    me, other = token_actor(TOKEN.encode()), token_actor(OTHER_TOKEN.encode())
    assert {e["actor"] for e in log} == {me, other}
    assert [e["action"] for e in log if e["actor"] == other] == ["subscription.secret_rotated"]
    assert [e["detail"] for e in log[-3:-1]] == ["enabled", "description, enabled"]
    assert all(e["at"].endswith("Z") for e in log)
    written = raw_log(stack)
    for secret in (TOKEN, OTHER_TOKEN, sub["secret"], rotated["secret"], "hunter2-url-password"):
        assert secret not in written


def test_pages_and_filters(api: ApiClient, stack: Stack) -> None:
    made = [
        ok(api.post("/v1/subscriptions", {"url": f"http://127.0.0.1:9/{i}"}), 201) for i in range(5)
    ]
    ok(api.delete(f"/v1/subscriptions/{made[0]['id']}"), 204)
    assert [e["action"] for e in entries(api, action="subscription.deleted")] == [
        "subscription.deleted"
    ]
    assert [e["action"] for e in entries(api, target=made[0]["id"])] == [
        "subscription.deleted",
        "subscription.created",
    ]
    assert entries(api, actor=token_actor(OTHER_TOKEN.encode())) == []
    first = ok(api.get("/v1/audit", params={"limit": 4}))
    rest = ok(api.get("/v1/audit", params={"limit": 4, "cursor": first["next_cursor"]}))
    assert len(first["items"]) == 4
    assert len(rest["items"]) == 2
    assert rest["next_cursor"] is None
    seen = [e["id"] for e in first["items"] + rest["items"]]
    assert seen == sorted(seen, reverse=True)
    assert len(set(seen)) == 6


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"action": "payment.exploded"}, "query.action"),
        ({"limit": "0"}, "query.limit"),
        ({"limit": "501"}, "query.limit"),
        ({"cursor": "not-a-cursor"}, "query.cursor"),
        ({"actor": "x" * 65}, "query.actor"),
        ({"colour": "red"}, "query.colour"),
    ],
)
def test_bad_queries_are_422_naming_the_parameter(
    api: ApiClient, params: dict[str, str], field: str
) -> None:
    error = error_of(api.get("/v1/audit", params=params), 422)
    assert field in json.dumps(error)


def test_the_cli_records_its_user_and_reads_the_log(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(WATCHER_WEBHOOK_ALLOW_PRIVATE="true")
    added = run_cli(stack, "subscriptions", "add", "http://127.0.0.1:9/hook", "--json")
    assert added.returncode == 0, added.stderr
    sub = json.loads(added.stdout)
    assert run_cli(stack, "subscriptions", "disable", sub["id"]).returncode == 0
    assert run_cli(stack, "subscriptions", "rotate", sub["id"]).returncode == 0
    shown = run_cli(stack, "audit", "--json")
    assert shown.returncode == 0, shown.stderr
    log = json.loads(shown.stdout)
    assert [e["action"] for e in log] == [
        "subscription.secret_rotated",
        "subscription.changed",
        "subscription.created",
    ]
    assert {e["actor"] for e in log} == {f"cli:{getpass.getuser()}"}
    table = run_cli(stack, "audit", "--action", "subscription.created")
    assert sub["id"] in table.stdout
    assert "secret_rotated" not in table.stdout
    bad = run_cli(stack, "audit", "--before", "nope")
    assert bad.returncode != 0
    assert "--before" in bad.stderr
    assert sub["secret"] not in raw_log(stack)


class NoStreams:
    """A Redis client whose XADD fails, as during a failover."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def xadd(self, *_args: Any, **_kwargs: Any) -> None:
        raise redis.ConnectionError("Redis went away")


def test_a_change_whose_entry_cannot_be_written_still_answers_its_secret(
    api: ApiClient, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The subscription exists once it is created: its one-time secret must reach the caller
    even when the audit entry after it fails."""
    monkeypatch.setattr(stack.runtime.audit, "redis", NoStreams(stack.runtime.redis))
    sub = ok(api.post("/v1/subscriptions", {"url": "http://127.0.0.1:9/hook"}), 201)
    assert sub["secret"].startswith("whsec_")
    rotated = ok(api.post(f"/v1/subscriptions/{sub['id']}/rotate-secret"))
    assert rotated["secret"].startswith("whsec_")
    monkeypatch.undo()
    assert entries(api) == []
