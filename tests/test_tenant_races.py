"""Apps and keys changed from several API processes at once: revoke, rotate, key creation and
app deletion racing each other never leave a secret that works and should not, and deleting an
app leaves none of its subscriptions enabled, whatever was created or deleted meanwhile."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import redis

from watcher.access.principal import Scope
from watcher.access.tenants import App, AppNotFound, TenantError, TenantStore, retire_app
from watcher.delivery.subscriptions import SubscriptionNotFound, SubscriptionStore
from watcher.keys import Keys

pytestmark = pytest.mark.timeout(60)

THREADS = 6


@pytest.fixture
def keys() -> Keys:
    return Keys("races")


@pytest.fixture
def tenants(redis_client: redis.Redis, keys: Keys) -> TenantStore:
    return TenantStore(redis_client, keys)


def digests_of(client: redis.Redis, keys: Keys, key_id: str) -> list[str]:
    """Every digest hash in Redis that authenticates as `key_id`."""
    found = []
    for name in client.scan_iter(match=keys.api_key_digest("*"), count=500):
        if client.hget(name, "id") == key_id:
            found.append(str(name))
    return found


def all_at_once(work: Callable[[int], None], count: int = THREADS) -> None:
    """Run `work(i)` on `count` threads released together; re-raise the first failure."""
    start = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        start.wait(timeout=10)
        try:
            work(i)
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a worker thread hung"
    if errors:
        raise errors[0]


def test_concurrent_rotations_leave_exactly_one_working_secret(
    redis_client: redis.Redis, keys: Keys, tenants: TenantStore
) -> None:
    app = tenants.create_app("rotating", now=1.0)
    key, _ = tenants.create_key(app.id, Scope.WRITE, now=1.0)
    secrets: list[str] = []

    def rotate(_i: int) -> None:
        for _ in range(10):
            secrets.append(tenants.rotate(key.id, now=2.0)[1])

    all_at_once(rotate)
    working = [s for s in secrets if tenants.authenticate(s.encode()) is not None]
    assert len(working) == 1
    assert len(digests_of(redis_client, keys, key.id)) == 1


def test_a_key_revoked_while_being_rotated_stays_revoked(
    redis_client: redis.Redis, keys: Keys, tenants: TenantStore
) -> None:
    for round_ in range(5):
        key, _ = tenants.create_key("", Scope.WRITE, now=1.0)
        secrets: list[str] = []

        def rotate_or_revoke(i: int, key_id: str = key.id, secrets: list[str] = secrets) -> None:
            if i == 0:
                tenants.revoke(key_id, now=2.0)
                return
            for _ in range(5):
                try:
                    secrets.append(tenants.rotate(key_id, now=2.0)[1])
                except TenantError:
                    return  # revoked: a rotation now is refused

        all_at_once(rotate_or_revoke)
        assert tenants.get_key(key.id).revoked_at is not None, round_
        assert [s for s in secrets if tenants.authenticate(s.encode())] == [], round_
        assert digests_of(redis_client, keys, key.id) == [], round_


def test_no_key_made_while_its_app_is_deleted_survives(
    redis_client: redis.Redis, keys: Keys, tenants: TenantStore
) -> None:
    app = tenants.create_app("doomed", now=1.0)
    made: list[str] = []
    deleted = threading.Event()

    def make_or_delete(i: int) -> None:
        if i == 0:
            while len(made) < 5:
                threading.Event().wait(0.001)
            tenants.delete_app("doomed", now=2.0)
            deleted.set()
            return
        # Keep making keys until well after the deletion: each is refused or revoked.
        for _ in range(200):
            try:
                made.append(tenants.create_key(app.id, Scope.WRITE, now=2.0)[0].id)
            except TenantError:
                return
            if deleted.is_set() and len(made) > 40:
                return

    all_at_once(make_or_delete)
    assert made
    # Revoked, not merely refused because the app is gone: no digest of theirs is left.
    assert [k for k in made if tenants.get_key(k).revoked_at is None] == []
    assert [k for k in made if digests_of(redis_client, keys, k)] == []


def test_a_key_of_a_deleted_app_is_refused_even_if_its_revocation_was_lost(
    redis_client: redis.Redis, keys: Keys, tenants: TenantStore
) -> None:
    app = tenants.create_app("ghost", now=1.0)
    _key, secret = tenants.create_key(app.id, Scope.WRITE, now=1.0)
    redis_client.delete(keys.app(app.id))  # gone, as if deletion stopped half way
    assert tenants.authenticate(secret.encode()) is None


def test_retiring_an_app_disables_subscriptions_made_meanwhile_and_skips_deleted_ones(
    redis_client: redis.Redis, keys: Keys, tenants: TenantStore
) -> None:
    subs = SubscriptionStore(redis_client, keys, allow_private=True)
    app = tenants.create_app("busy", now=1.0)

    def make_sub() -> str:
        sub, _ = subs.create(url="http://127.0.0.1:9/x", event_types=["payment.completed"],
                             owner=app.id)  # fmt: skip
        return sub.id

    first, gone = make_sub(), make_sub()
    real_page = subs.page
    pages = 0

    def racing_page(*, offset: int = 0, limit: int = 100) -> list:  # type: ignore[type-arg]
        # While the deletion reads the list: one subscription is deleted, one is created.
        nonlocal pages
        batch = real_page(offset=offset, limit=limit)
        pages += 1
        if pages == 1:
            subs.delete(gone)
            created.append(make_sub())
        return batch

    created: list[str] = []
    subs.page = racing_page  # type: ignore[method-assign]
    _app, _revoked, disabled = retire_app(tenants, subs, "busy", now=2.0)
    assert subs.get(first).enabled is False
    assert subs.get(created[0]).enabled is False
    assert set(disabled) == {first, created[0]}


def test_a_subscription_made_by_a_key_of_an_app_being_deleted_is_disabled(
    redis_client: redis.Redis, keys: Keys, tenants: TenantStore
) -> None:
    from watcher.access.tenants import settle_for_app

    subs = SubscriptionStore(redis_client, keys, allow_private=True)
    app = tenants.create_app("late", now=1.0)
    retire_app(tenants, subs, "late", now=2.0)
    sub, _ = subs.create(url="http://127.0.0.1:9/x", event_types=["payment.completed"],
                         owner=app.id)  # fmt: skip
    settled = settle_for_app(tenants, subs, sub, now=3.0)
    assert settled.enabled is False
    assert subs.get(sub.id).enabled is False


def test_a_secret_rotated_while_the_subscription_is_edited_is_kept(
    redis_client: redis.Redis, keys: Keys
) -> None:
    subs = SubscriptionStore(redis_client, keys, allow_private=True)
    sub, _ = subs.create(url="http://127.0.0.1:9/x", event_types=["payment.completed"])
    handed_out: list[str] = []

    def rotate_or_edit(i: int) -> None:
        for n in range(15):
            if i % 2:
                handed_out.append(subs.rotate_secret(sub.id, overlap=3600, now=2.0 + n)[1])
            else:
                subs.update(sub.id, description=f"edit {i}-{n}")

    all_at_once(rotate_or_edit, count=4)
    stored = {s.secret for s in subs.get(sub.id).secrets}
    # Every secret a caller was given signs (within the overlap), none was lost to an edit.
    assert set(handed_out) <= stored


def test_a_subscription_deleted_while_it_is_disabled_stays_deleted(
    redis_client: redis.Redis, keys: Keys
) -> None:
    subs = SubscriptionStore(redis_client, keys, allow_private=True)
    for round_ in range(40):
        sub, _ = subs.create(url="http://127.0.0.1:9/x", event_types=["payment.completed"])

        def disable_or_delete(i: int, sub_id: str = sub.id) -> None:
            try:
                if i == 0:
                    subs.delete(sub_id)
                else:
                    subs.disable(sub_id, "racing", now=2.0)
            except SubscriptionNotFound:
                pass  # the other got there first

        all_at_once(disable_or_delete, count=3)
        assert not redis_client.exists(keys.subscription(sub.id)), round_


def test_a_stale_deletion_of_a_name_leaves_the_app_made_since_alone(tenants: TenantStore) -> None:
    old = tenants.create_app("shop", now=1.0)
    real_app_named = tenants.app_named

    def stale(name: str) -> App:
        found = real_app_named(name)
        tenants.app_named = real_app_named  # type: ignore[method-assign]
        tenants.delete_app(name, now=2.0)  # another operator, meanwhile: delete, make anew
        tenants.create_app(name, now=3.0)
        return found

    tenants.app_named = stale  # type: ignore[method-assign]
    with pytest.raises(AppNotFound):
        tenants.delete_app("shop", now=4.0)
    renewed = tenants.app_named("shop")
    assert renewed.id != old.id
    assert tenants.app_by_id(renewed.id) is not None
