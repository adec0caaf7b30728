"""The architecture, enforced: layers only point down, and each store owns its Redis.

Layers, bottom to top (a module may import its own layer and the ones below it, never above):

    helpers        keys, ids, settings, logging, time formats, Lua registry, small processes
    voltage/       the Voltage client
    engine/        detection: schedules, polls, sweeps, the payment store
    delivery/      fan-out, attempts, subscriptions, the delivery store
    entry points   runtime (the wiring), tasks, api/, cli/, the supervisor, the demo

Every module must be placed in `LAYERS`; a new module fails `test_every_module_has_a_layer`
until a maintainer decides where it sits. Imports inside functions and under TYPE_CHECKING
count like any other: a lazy upward import is still an upward import.

Only the stores in `STORES` touch Redis: `.redis`, key names (`keys.<name>`, `.keys`, `Keys(`,
`watcher.keys`) and the Lua registry (`watcher.lua`). Everyone else asks a store.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "watcher"

# Bottom to top. A prefix ending in "/" places a whole package.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "helpers",
        (
            "watcher/__init__.py",  # the version
            "watcher/keys.py",
            "watcher/ids.py",
            "watcher/timing.py",
            "watcher/lifecycle.py",
            "watcher/settings.py",
            "watcher/redis_url_passwords.py",
            "watcher/unknown_settings.py",
            "watcher/stack.py",  # settings reads it: where a running `watcher up` listens
            "watcher/logging.py",
            "watcher/durability.py",  # the stores' replica waits
            "watcher/paging.py",  # keyset pages the stores serve
            "watcher/transactions.py",  # read-decide-write under WATCH, for the stores
            "watcher/lua/",
            "watcher/preflight.py",  # checks the supervisor runs before starting anything
            "watcher/redis_server.py",  # one redis-server process; imports nothing of ours
            "watcher/threaded_server.py",  # an HTTP server thread (API and simulator)
        ),
    ),
    ("voltage", ("watcher/voltage/",)),
    ("engine", ("watcher/engine/",)),
    ("delivery", ("watcher/delivery/",)),
    ("access", ("watcher/access/",)),
    (
        "entry points",
        (
            "watcher/__main__.py",
            "watcher/runtime.py",  # the wiring: builds every store and client
            "watcher/tasks.py",
            "watcher/celery.py",
            "watcher/control.py",  # beat's control loop
            "watcher/detection.py",  # the list jobs as beat runs them (wires runtime, tasks)
            "watcher/api/",
            "watcher/cli/",
            "watcher/supervisor.py",
            "watcher/launcher.py",
            "watcher/restarts.py",  # what `watcher up` restarts, and when
            "watcher/interrupts.py",  # Ctrl-C around a foreground command's children
            "watcher/demo.py",
            "watcher/demo_client.py",
            "watcher/demo_console.py",
            "watcher/demo_verdict.py",
            "watcher/receiver.py",  # the demo's and the tests' webhook endpoint
            "watcher/simulator/",  # Voltage's stand-in: only entry points start it
        ),
    ),
)

# Outside watcher/api/, only these may import the API (importing any `watcher.api` module
# runs `watcher/api/__init__.py`, which imports the app and, through it, the runtime).
API_IMPORTERS = {
    "watcher/cli/service.py": "`watcher serve` runs the API server",
}

# The stores: the only modules that touch Redis, key names or the Lua registry.
STORES = {
    "watcher/engine/store.py": "PaymentStore: payment records, transitions, poll schedule",
    "watcher/engine/history.py": "PaymentHistory: pages of payments, their counts, retention",
    "watcher/engine/pending.py": "PendingIndex: pending payments by creation time, watermark",
    "watcher/engine/list_health.py": "ListHealth: whether list calls work (the fallback)",
    "watcher/engine/list_jobs.py": "ListJobs: the list jobs' locks, the reconciliation pass",
    "watcher/engine/hints.py": "HintLedger: webhooks taken, payments re-read this second",
    "watcher/engine/tally.py": "Tally: counters and latency histograms",
    "watcher/delivery/store.py": "DeliveryStore: fan-out, claims, attempts, re-sends",
    "watcher/delivery/history.py": "DeliveryHistory: delivery and event pages, retention",
    "watcher/delivery/attempt_store.py": "AttemptStore: one attempt's read and its write",
    "watcher/delivery/subscriptions.py": "SubscriptionStore: subscriptions and their secrets",
    "watcher/access/audit.py": "AuditLog: who changed what, and when",
    "watcher/access/rate_limit.py": "RateLimiter: each API token's request bucket",
    "watcher/access/tenants.py": "TenantStore: apps and their hashed API keys",
}

# Not stores, and allowed one kind of access each, for the reason given.
ALLOWED = {
    "watcher/runtime.py": ({"redis", "keys"}, "builds the stores from one client and Keys"),
    "watcher/supervisor.py": ({"redis"}, "its `.redis` is the redis-server process it starts"),
}

# Modules whose store access is being moved into their stores by another change in flight.
# `test_awaiting_entries_are_still_needed` fails once an entry is clean, so it is removed.
AWAITING: dict[str, str] = {}


def layer_index(relpath: str) -> int | None:
    found = [
        index
        for index, (_name, members) in enumerate(LAYERS)
        for member in members
        if relpath == member or (member.endswith("/") and relpath.startswith(member))
    ]
    return found[0] if len(found) == 1 else None


def module_file(module: str) -> str | None:
    """watcher.a.b -> watcher/a/b.py or watcher/a/b/__init__.py (None if neither exists)."""
    base = module.replace(".", "/")
    for candidate in (f"{base}.py", f"{base}/__init__.py"):
        if (ROOT / candidate).is_file():
            return candidate
    return None


def package_of(relpath: str) -> str:
    """The package a module is in (a package's `__init__.py` is in the package itself)."""
    return ".".join(Path(relpath).parts[:-1])


@dataclass(frozen=True)
class Imported:
    line: int
    module: str  # dotted name of a module of ours
    file: str  # its path


def imports_of(relpath: str, tree: ast.AST) -> Iterator[Imported]:
    """Every module of the watcher this file imports, wherever the import statement is."""
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_of(relpath).split(".")
                base = base[: len(base) - node.level + 1]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            # `from watcher import keys` imports a module; `from watcher.x import Name` does not.
            subs = [f"{origin}.{a.name}" for a in node.names if module_file(f"{origin}.{a.name}")]
            names = subs if len(subs) == len(node.names) else [*subs, origin]
        for name in names:
            if name == "watcher" or name.startswith("watcher."):
                found = module_file(name)
                if found is not None:
                    yield Imported(node.lineno, name, found)


def upward_imports(relpath: str, source: str) -> list[str]:
    """`path:line imports module (layer above)` for each import that points up, and each
    import of the API from outside it that `API_IMPORTERS` does not allow."""
    own = layer_index(relpath)
    problems = []
    for imported in imports_of(relpath, ast.parse(source)):
        theirs = layer_index(imported.file)
        if own is not None and theirs is not None and theirs > own:
            problems.append(
                f"{relpath}:{imported.line} imports {imported.module} "
                f"({LAYERS[theirs][0]} is above {LAYERS[own][0]})"
            )
        elif (
            imported.file.startswith("watcher/api/")
            and not relpath.startswith("watcher/api/")
            and relpath not in API_IMPORTERS
        ):
            problems.append(
                f"{relpath}:{imported.line} imports {imported.module}, which loads the API app"
            )
    return problems


def store_access(relpath: str, source: str) -> list[str]:
    """`path:line what` for each touch of Redis, key names or Lua outside the stores."""
    if relpath in STORES:
        return []
    allowed = ALLOWED.get(relpath, (set(), ""))[0]
    tree = ast.parse(source)
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    found: list[tuple[int, str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            if node.attr == "redis":
                found.append((node.lineno, "redis", "`.redis`"))
            elif node.attr == "keys" and id(node) not in called:  # dict.keys() is fine
                found.append((node.lineno, "keys", "`.keys`"))
            elif isinstance(node.value, ast.Name) and node.value.id == "keys":
                found.append((node.lineno, "keys", f"`keys.{node.attr}`"))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "Keys"
        ):
            found.append((node.lineno, "keys", "`Keys(`"))
    for imported in imports_of(relpath, tree):
        if imported.module == "watcher.keys":
            found.append((imported.line, "keys", "an import of watcher.keys"))
        elif imported.module == "watcher.lua":
            found.append((imported.line, "lua", "an import of watcher.lua"))
    return [f"{relpath}:{line} {what}" for line, kind, what in sorted(found) if kind not in allowed]


def modules() -> list[tuple[str, str]]:
    return [
        (path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8"))
        for path in sorted(PACKAGE.rglob("*.py"))
    ]


# --- the tree ----------------------------------------------------------------------------------


def test_every_module_has_a_layer() -> None:
    unplaced = [relpath for relpath, _ in modules() if layer_index(relpath) is None]
    assert unplaced == [], "place these in LAYERS (exactly one layer each)"


def test_layers_only_point_down() -> None:
    problems = [p for relpath, source in modules() for p in upward_imports(relpath, source)]
    assert problems == []


def test_only_the_stores_touch_redis() -> None:
    problems = [
        p
        for relpath, source in modules()
        if relpath not in AWAITING
        for p in store_access(relpath, source)
    ]
    assert problems == []


def test_awaiting_entries_are_still_needed() -> None:
    clean = [relpath for relpath in AWAITING if not store_access(relpath, _read(relpath))]
    assert clean == [], "these no longer reach into a store: remove them from AWAITING"


def test_tables_name_modules_that_exist() -> None:
    named = [*STORES, *ALLOWED, *API_IMPORTERS, *AWAITING]
    named += [member for _name, members in LAYERS for member in members]
    assert [name for name in named if not (ROOT / name).exists()] == []


def _read(relpath: str) -> str:
    return (ROOT / relpath).read_text(encoding="utf-8")


# --- each check can fail -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relpath", "source"),
    [
        ("watcher/engine/x.py", "from watcher.delivery.store import DeliveryStore\n"),
        ("watcher/engine/x.py", "from watcher.runtime import Runtime\n"),
        ("watcher/delivery/x.py", "def f():\n    from watcher import runtime\n"),
        ("watcher/voltage/x.py", "import watcher.engine.store\n"),
        ("watcher/keys.py", "from watcher.api.app import create_app\n"),
        ("watcher/cli/x.py", "from watcher.api.routes_deliveries import event_out\n"),
        ("watcher/engine/x.py", "from ..delivery import store\n"),
    ],
)
def test_an_upward_import_is_flagged(relpath: str, source: str) -> None:
    assert len(upward_imports(relpath, source)) == 1


@pytest.mark.parametrize(
    ("relpath", "source"),
    [
        ("watcher/engine/x.py", "from watcher.voltage.models import Payment\n"),
        ("watcher/delivery/x.py", "from watcher.engine.records import iso_timestamp\n"),
        ("watcher/tasks.py", "from watcher.runtime import Runtime\n"),
        ("watcher/api/x.py", "from watcher.api.errors import ApiError\n"),
        ("watcher/cli/service.py", "from watcher.api.server import serve\n"),
    ],
)
def test_a_downward_import_passes(relpath: str, source: str) -> None:
    assert upward_imports(relpath, source) == []


@pytest.mark.parametrize(
    "source",
    [
        "def f(rt):\n    rt.redis.ping()\n",
        "def f(rt):\n    return rt.payments.keys.outbox\n",
        "def f(store):\n    g(store.keys)\n",
        "def f(keys):\n    return keys.outbox\n",
        "from watcher.keys import Keys\n",
        "from watcher import keys\n",
        "def f():\n    return Keys('vw')\n",
        "from watcher.lua import scripts_for\n",
    ],
)
def test_store_access_outside_a_store_is_flagged(source: str) -> None:
    assert len(store_access("watcher/api/x.py", source)) == 1
    assert store_access("watcher/engine/store.py", source) == []


def test_dict_keys_is_not_store_access() -> None:
    assert store_access("watcher/api/x.py", "def f(d):\n    return list(d.keys())\n") == []


def test_an_allowance_covers_only_its_kind() -> None:
    source = "import redis\n\ndef f(rt):\n    rt.redis.close()\n    return rt.keys.outbox\n"
    assert store_access("watcher/runtime.py", source) == []
    assert store_access("watcher/supervisor.py", source) == ["watcher/supervisor.py:5 `.keys`"]
