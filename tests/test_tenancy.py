"""Apps as tenants (issue 15): every /v1 route, taken from the served OpenAPI document, called
with app A's key on app B's objects answers 404 (or 403) and changes nothing; a read key
changes nothing; keys are hashed, revocable at once, rate-limited; admins see everything."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from standardwebhooks.webhooks import Webhook

from tests.conftest import SimControl, Stack
from tests.support import wait_until
from tests.test_api import ApiClient, api_stack, error_of, ok, serve
from tests.test_api_hostile import snapshot
from tests.test_cli import run_cli
from watcher.receiver import Receiver

pytestmark = pytest.mark.timeout(180)

INGRESS = "/v1/voltage/webhooks"
ADMIN_ONLY = ("/v1/apps", "/v1/keys", "/v1/audit")


@dataclass
class Tenant:
    name: str
    key: str
    key_id: str
    read_key: str
    payment: str = ""
    client_id: str = ""
    subscription: str = ""
    delivery: str = ""
    event: str = ""


def make_tenant(api: ApiClient, name: str) -> Tenant:
    ok(api.post("/v1/apps", {"name": name}), 201)
    made = ok(api.post("/v1/keys", {"app": name}), 201)
    read = ok(api.post("/v1/keys", {"app": name, "scope": "read"}), 201)
    return Tenant(name, made["key"], made["id"], read["key"])


def populate(api: ApiClient, tenant: Tenant) -> Tenant:
    """A payment, a subscription, a delivery and an event of the tenant's own."""
    tenant.client_id = f"order-{tenant.name}"
    order = {
        "amount_msats": 1_000,
        "client_id": tenant.client_id,
        "metadata": {"who": f"customer-of-{tenant.name}"},
    }
    tenant.payment = ok(api.post("/v1/payments", order, token=tenant.key), 201)["id"]
    sub = ok(api.post("/v1/subscriptions", {"url": "http://127.0.0.1:9/hook"}, token=tenant.key),
             201)  # fmt: skip
    tenant.subscription = sub["id"]
    test = ok(api.post(f"/v1/subscriptions/{sub['id']}/test", token=tenant.key), 202)
    tenant.delivery, tenant.event = test["delivery_id"], test["event_id"]
    return tenant


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return api_stack(make_stack)


@pytest.fixture
def api(stack: Stack) -> Iterator[ApiClient]:
    with serve(stack) as client:
        yield client


@pytest.fixture
def tenants(api: ApiClient) -> tuple[Tenant, Tenant]:
    return populate(api, make_tenant(api, "a")), populate(api, make_tenant(api, "b"))


def operations(api: ApiClient) -> list[tuple[str, str, dict[str, Any]]]:
    """Every /v1 operation the served document declares (Voltage's webhook ingress aside:
    it takes Voltage's signature, not a key)."""
    document = ok(api.get("/openapi.json", token=None))
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        if path.startswith("/v1/") and path != INGRESS
        for method, operation in item.items()
    ]


def request_for(path: str, b: Tenant) -> tuple[str, Any]:
    """The path filled with B's ids, and a valid body aimed at B's objects."""
    filled = (
        path.replace("{payment_id}", b.payment)
        .replace("{subscription_id}", b.subscription)
        .replace("{delivery_id}", b.delivery)
        .replace("{key_id}", b.key_id)
        .replace("{name}", b.name)
    )
    now = datetime.now(UTC)
    bodies: dict[str, Any] = {
        "/v1/payments": {"amount_msats": 1_000, "client_id": b.client_id},
        "/v1/watches": {"payment_id": b.payment},
        "/v1/subscriptions": {"url": "http://127.0.0.1:9/mine"},
        "/v1/subscriptions/{subscription_id}": {"description": "taken over"},
        "/v1/subscriptions/{subscription_id}/recover": {
            "since": (now - timedelta(hours=1)).isoformat(),
            "until": now.isoformat(),
        },
        "/v1/apps": {"name": "c"},
        "/v1/keys": {"app": b.name},
    }
    return filled, bodies.get(path)


def tenant_data(stack: Stack) -> dict[bytes, Any]:
    """Every watcher key, the counters without the Voltage request counts: watching another
    app's payment reads Voltage, as watching an unknown id does, so that both answer alike."""
    counters = stack.runtime.payments.keys.counters
    data: dict[bytes, Any] = snapshot(stack)
    counted = stack.runtime.redis.hgetall(counters)
    data[counters.encode()] = {
        k: v for k, v in counted.items() if not k.startswith("voltage_requests:")
    }
    return data


def test_every_route_keeps_app_b_from_app_a(
    api: ApiClient, stack: Stack, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    seen = []
    for method, path, operation in operations(api):
        url, body = request_for(path, b)
        if "requestBody" in operation:
            assert body is not None, f"add a body for {method} {path} to the table"
        before = tenant_data(stack)
        answer = api.call(method, url, body, token=a.key)
        seen.append((method, path, answer.status_code))
        if path.startswith(ADMIN_ONLY):
            error_of(answer, 403, "forbidden")
        elif "{" in path or path == "/v1/watches":
            error_of(answer, 404, "not_found")
        elif method == "GET":
            ok(answer)
            for own in (b.payment, b.subscription, b.delivery, b.event, "customer-of-b"):
                assert own not in answer.text, f"{method} {path} shows B's {own}"
            continue
        else:  # a create: A's own object, never B's
            made = ok(answer, 201)
            assert made["id"] not in (b.payment, b.subscription)
            assert made["app_id"] != ok(api.get(f"/v1/apps/{b.name}"))["id"]
            continue
        assert tenant_data(stack) == before, f"{method} {path} changed something"
    assert len(seen) >= 20, seen


def test_lists_filtered_by_b_ids_show_a_nothing(
    api: ApiClient, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    queries = [
        ("/v1/deliveries", {"subscription_id": b.subscription}),
        ("/v1/deliveries", {"event_id": b.event}),
        ("/v1/events", {"payment_id": b.payment}),
        ("/v1/events", {"type": "webhook.test"}),
    ]
    for path, params in queries:
        items = ok(api.get(path, params=params, token=a.key))["items"]
        assert all(b.event not in json.dumps(i) for i in items), (path, params)
    own = ok(api.get("/v1/events", params={"type": "webhook.test"}, token=a.key))["items"]
    assert [e["id"] for e in own] == [a.event]


def test_a_filter_on_another_apps_big_subscription_answers_as_an_unknown_one(
    api: ApiClient, stack: Stack, tenants: tuple[Tenant, Tenant]
) -> None:
    """More of B's deliveries than one scan reads: A still gets what an unknown id gets (an
    empty page, no cursor), not a cursor that says B's subscription is busy, and when."""
    a, b = tenants
    keys = stack.runtime.payments.keys
    many = {f"dlv_{i:024x}": 1_000.0 + i for i in range(6_000)}
    stack.runtime.redis.zadd(keys.subscription_deliveries(b.subscription), many)
    unknown = ok(api.get("/v1/deliveries", params={"subscription_id": "sub_" + "0" * 24},
                         token=a.key))  # fmt: skip
    theirs = ok(api.get("/v1/deliveries", params={"subscription_id": b.subscription},
                        token=a.key))  # fmt: skip
    assert theirs == unknown == {"items": [], "next_cursor": None}


def test_a_read_key_changes_nothing(
    api: ApiClient, stack: Stack, tenants: tuple[Tenant, Tenant]
) -> None:
    a, _b = tenants
    for method, path, _operation in operations(api):
        url, body = request_for(path, a)  # its own objects
        before = snapshot(stack)
        answer = api.call(method, url, body, token=a.read_key)
        if method == "GET":
            assert answer.status_code in (200, 403), (path, answer.text)
            continue
        error_of(answer, 403, "forbidden")
        assert snapshot(stack) == before, f"{method} {path} changed something"
    assert ok(api.get(f"/v1/subscriptions/{a.subscription}", token=a.read_key))["id"]


def test_admins_see_every_app_and_pre_app_data_stays_theirs(
    api: ApiClient, stack: Stack, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    rt = stack.runtime
    old, _secret = rt.subscriptions.create(url="http://127.0.0.1:9/old")  # before apps
    admin_key = ok(api.post("/v1/keys", {"admin": True}), 201)["key"]
    for token in (True, admin_key):
        subs = {s["id"] for s in ok(api.get("/v1/subscriptions", token=token))["items"]}
        assert {a.subscription, b.subscription, old.id} <= subs
        payment = ok(api.get(f"/v1/payments/{b.payment}", token=token))
        assert payment["app_id"] == ok(api.get("/v1/apps/b", token=token))["id"]
        ok(api.post(f"/v1/deliveries/{a.delivery}/redeliver", token=token), 202)
    error_of(api.get(f"/v1/subscriptions/{old.id}", token=a.key), 404, "not_found")
    ok(api.patch(f"/v1/subscriptions/{old.id}", {"description": "still mine"}))


def test_each_apps_client_ids_are_its_own(api: ApiClient, tenants: tuple[Tenant, Tenant]) -> None:
    a, b = tenants
    again = ok(api.post("/v1/payments", {"amount_msats": 1_000, "client_id": b.client_id},
                        token=b.key), 200)  # fmt: skip
    assert again["id"] == b.payment
    mine = ok(api.post("/v1/payments", {"amount_msats": 1_000, "client_id": b.client_id},
                       token=a.key), 201)  # fmt: skip
    assert mine["id"] != b.payment


def test_keys_are_kept_hashed_and_a_revoked_key_is_refused_within_a_second(
    api: ApiClient, stack: Stack, tenants: tuple[Tenant, Tenant]
) -> None:
    a, _b = tenants
    raw = redis.Redis.from_url(stack.settings.watcher_redis_url)
    try:
        everything = b"".join(
            k + b"".join(f + v for f, v in raw.hgetall(k).items())
            if raw.type(k) == b"hash" else k
            for k in raw.scan_iter()
        )  # fmt: skip
    finally:
        raw.close()
    assert a.key.encode() not in everything
    assert hashlib.sha256(a.key.encode()).hexdigest().encode() in everything
    ok(api.get("/v1/payments", token=a.key))
    ok(api.delete(f"/v1/keys/{a.key_id}"))
    revoked_at = time.monotonic()
    wait_until(
        lambda: api.get("/v1/payments", token=a.key).status_code == 401,
        timeout=1.0,
        interval=0.05,
        message="the revoked key refused",
    )
    assert time.monotonic() - revoked_at < 1.0
    listed = ok(api.get("/v1/keys", params={"app": "a"}))["items"]
    assert [k["revoked_at"] is not None for k in listed if k["id"] == a.key_id] == [True]
    assert all("key" not in k for k in listed)


def test_rotating_a_key_refuses_the_old_secret_at_once(
    api: ApiClient, tenants: tuple[Tenant, Tenant]
) -> None:
    a, _b = tenants
    rotated = ok(api.post(f"/v1/keys/{a.key_id}/rotate"))
    assert rotated["id"] == a.key_id
    assert rotated["key"] != a.key
    error_of(api.get("/v1/payments", token=a.key), 401, "unauthorized")
    assert ok(api.get(f"/v1/payments/{a.payment}", token=rotated["key"]))["id"] == a.payment


def test_an_app_key_over_its_rate_gets_429(make_stack: Callable[..., Stack]) -> None:
    stack = api_stack(make_stack, WATCHER_API_RATE_LIMIT="1", WATCHER_API_RATE_BURST="4")
    with serve(stack) as api:
        a = make_tenant(api, "a")  # three requests of the admin's
        for _ in range(4):
            ok(api.get("/v1/subscriptions", token=a.key))
        refused = api.get("/v1/subscriptions", token=a.key)
        error_of(refused, 429, "rate_limited")
        assert int(refused.headers["Retry-After"]) >= 1
        ok(api.get("/v1/subscriptions", token=a.read_key))  # another key, its own bucket


def test_deleting_an_app_revokes_its_keys_and_disables_its_subscriptions(
    api: ApiClient, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    deleted = ok(api.delete("/v1/apps/a"))
    assert a.key_id in deleted["revoked_keys"]
    assert deleted["disabled_subscriptions"] == [a.subscription]
    error_of(api.get("/v1/payments", token=a.key), 401, "unauthorized")
    sub = ok(api.get(f"/v1/subscriptions/{a.subscription}"))
    assert not sub["enabled"]
    assert "deleted" in sub["disabled_reason"]
    again = api.patch(f"/v1/subscriptions/{a.subscription}", {"enabled": True})
    error_of(again, 409, "conflict")  # nothing is sent for a tenant that is gone
    assert not ok(api.get(f"/v1/subscriptions/{a.subscription}"))["enabled"]
    ok(api.get(f"/v1/subscriptions/{b.subscription}", token=b.key))
    renewed = make_tenant(api, "a")  # the name is free; the new app owns nothing old
    error_of(api.get(f"/v1/payments/{a.payment}", token=renewed.key), 404, "not_found")


def test_bad_tenant_input_is_a_clear_4xx(api: ApiClient, tenants: tuple[Tenant, Tenant]) -> None:
    error_of(api.post("/v1/apps", {"name": "Not Valid!"}), 422)
    error_of(api.post("/v1/apps", {"name": "a"}), 409, "conflict")
    error_of(api.post("/v1/keys", {"app": "a", "admin": True}), 422)
    error_of(api.post("/v1/keys", {}), 422)
    error_of(api.post("/v1/keys", {"app": "nobody"}), 404, "not_found")
    error_of(api.post("/v1/keys", {"app": "a", "scope": "root"}), 422)
    error_of(api.delete("/v1/keys/key_0000000000000000"), 404, "not_found")


def test_the_cli_manages_apps_and_keys(make_stack: Callable[..., Stack]) -> None:
    stack = api_stack(make_stack)
    made = run_cli(stack, "apps", "create", "shop", "--json")
    assert made.returncode == 0, made.stderr
    key = run_cli(stack, "keys", "create", "--app", "shop", "--scope", "read", "--json")
    assert key.returncode == 0, key.stderr
    created = json.loads(key.stdout)
    assert created["key"].startswith("vwk_")
    assert created["id"].startswith("key_")
    listed = run_cli(stack, "keys", "list", "--app", "shop")
    assert created["id"] in listed.stdout
    assert created["key"] not in listed.stdout
    shown = run_cli(stack, "apps", "show", "shop")
    assert created["id"] in shown.stdout
    principal = stack.runtime.tenants.authenticate(created["key"].encode())
    assert principal is not None
    assert principal.scope == "read"
    rotated = run_cli(stack, "keys", "rotate", created["id"])
    assert rotated.returncode == 0
    assert rotated.stdout.strip().startswith("vwk_")
    assert stack.runtime.tenants.authenticate(created["key"].encode()) is None
    assert run_cli(stack, "keys", "revoke", created["id"]).returncode == 0
    assert stack.runtime.tenants.authenticate(rotated.stdout.strip().encode()) is None
    both = run_cli(stack, "keys", "create", "--app", "shop", "--admin")
    assert both.returncode != 0
    assert "not both" in both.stderr
    gone = run_cli(stack, "apps", "delete", "shop")
    assert gone.returncode == 0
    assert "deleted app shop" in gone.stdout
    assert "shop" not in run_cli(stack, "apps", "list").stdout
    actions = [e.action for e in stack.runtime.audit.page(cursor=None, limit=20)[0]]
    assert actions == ["app.deleted", "key.revoked", "key.rotated", "key.created", "app.created"]


def test_the_cli_makes_payments_and_subscriptions_for_an_app(
    make_stack: Callable[..., Stack],
) -> None:
    stack = api_stack(make_stack)
    app_id = json.loads(run_cli(stack, "apps", "create", "shop", "--json").stdout)["id"]
    made = run_cli(stack, "create", "--amount-msats", "1000", "--app", "shop", "--json")
    assert made.returncode == 0, made.stderr
    payment = json.loads(made.stdout)
    assert payment["app_id"] == app_id
    sub = run_cli(stack, "subscriptions", "add", "http://127.0.0.1:9/x", "--app", "shop", "--json")
    assert sub.returncode == 0, sub.stderr
    assert json.loads(sub.stdout)["app_id"] == app_id
    again = run_cli(stack, "watch", payment["id"], "--app", "shop")
    assert again.returncode == 0, again.stderr
    assert "already watched" in again.stdout
    admins = run_cli(stack, "create", "--amount-msats", "1000", "--json")
    theirs = run_cli(stack, "watch", json.loads(admins.stdout)["id"], "--app", "shop")
    assert theirs.returncode != 0
    assert "another app" in theirs.stderr
    unknown = run_cli(stack, "create", "--amount-msats", "1000", "--app", "nope")
    assert unknown.returncode != 0
    assert "no app named 'nope'" in unknown.stderr


def test_through_a_real_worker_each_app_receives_only_its_own_payments(
    make_stack: Callable[..., Stack], sim_control: SimControl, receivers: Callable[[], Receiver]
) -> None:
    stack = api_stack(make_stack)
    stack.start_worker(concurrency=4)
    stack.start_beat()
    hooks = {name: receivers() for name in ("a", "b", "admin")}
    with serve(stack) as api:
        a, b = make_tenant(api, "a"), make_tenant(api, "b")
        secrets = {}
        for name, token in (("a", a.key), ("b", b.key), ("admin", True)):
            made = ok(api.post("/v1/subscriptions", {"url": hooks[name].url()}, token=token), 201)
            secrets[name] = made["secret"]
        paid = {}
        for tenant in (a, b):
            order = {"amount_msats": 2_000}
            paid[tenant.name] = ok(api.post("/v1/payments", order, token=tenant.key), 201)["id"]
            sim_control.settle(paid[tenant.name])
        wait_until(
            lambda: (
                len(hooks["admin"].received) == 2 and hooks["a"].received and hooks["b"].received
            ),
            timeout=60,
            message="every subscriber's webhooks",
        )
        # More dispatch ticks pass: nothing else arrives anywhere.
        counters = stack.runtime.payments.counters
        ticks = counters()["dispatch_ticks"]
        wait_until(lambda: counters()["dispatch_ticks"] >= ticks + 5, message="more ticks")

    def payments_of(name: str) -> list[str]:
        bodies = [Webhook(secrets[name]).verify(r.body, r.headers) for r in hooks[name].received]
        return sorted(body["data"]["payment"]["id"] for body in bodies)

    assert payments_of("a") == [paid["a"]]
    assert payments_of("b") == [paid["b"]]
    assert payments_of("admin") == sorted(paid.values())
