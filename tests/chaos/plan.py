"""What a fault-suite run does, decided up front from a seed: the payments and the faults.

Keeping the plan apart from the machinery means a failing run can be replayed with the same
seed, and the expectations (which subscriber must get which event) come from the plan and the
simulator, never from the code under test.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# Whatever the watcher did, these are the statuses the simulator will end in.
ACTIONS = ("settle", "fail", "expire")
FINAL_OF_ACTION = {"settle": "completed", "fail": "failed", "expire": "expired"}
EVENT_OF_STATUS = {
    "completed": "payment.completed",
    "failed": "payment.failed",
    "expired": "payment.expired",
}
SHOPS = ("a", "b")


@dataclass(frozen=True)
class ChaosParams:
    """One fault-suite run. `short()` is what CI runs, `long()` the documented long run."""

    payments: int = 200
    create_window: float = 40.0  # creates are spread over this many seconds
    act_after: tuple[float, float] = (1.0, 35.0)  # settle/fail this long after the create
    expire_after: tuple[int, int] = (10, 35)  # invoice expiration of the never-paid
    shares: tuple[float, float, float] = (0.55, 0.15, 0.30)  # settle, fail, expire
    chaos_duration: float = 75.0  # faults go on this long from the first create
    chaos_gap: tuple[float, float] = (1.5, 4.0)  # pause between two fault actions
    drain_timeout: float = 180.0  # after the faults stop, everything must arrive by then
    workers: int = 2
    seed: int = 7
    sentinel_payments: int = 0  # > 0: the Sentinel failover phase, with this many payments
    # List faults (windows the fault thread opens): list calls failing, short and long (past
    # WATCHER_FALLBACK_AFTER = 5 s through the list backoff of 1, 2, 4 s: the fallback);
    list_outage_short: tuple[float, float] = (1.0, 4.0)
    list_outage_long: tuple[float, float] = (9.0, 20.0)
    # updated_at written up to N s in the past (within the 10 s sweep overlap), once beyond it;
    backdate: tuple[float, float] = (3.0, 8.0)
    backdate_beyond_overlap: float | None = None
    list_lag: tuple[float, float] = (2.0, 5.0)  # lists showing the past
    list_window: tuple[float, float] = (5.0, 15.0)  # how long a backdate or lag window lasts
    hidden_share: float = 0.04  # hidden from filtered lists right after the create

    @classmethod
    def short(cls, seed: int = 7) -> ChaosParams:
        return cls(seed=seed)

    @classmethod
    def long(cls, seed: int = 7) -> ChaosParams:
        return cls(
            payments=1000,
            create_window=300.0,
            act_after=(1.0, 90.0),
            expire_after=(10, 90),
            chaos_duration=420.0,
            drain_timeout=300.0,
            seed=seed,
            sentinel_payments=200,
            backdate_beyond_overlap=30.0,  # only reconciliation or the expiry check finds these
        )

    def __post_init__(self) -> None:
        if self.payments < 1:
            raise ValueError("payments: at least 1")
        if abs(sum(self.shares) - 1.0) > 1e-9 or min(self.shares) < 0:
            raise ValueError("shares: three non-negative shares adding up to 1")
        if self.act_after[1] >= 3600 or self.expire_after[0] < 5:
            raise ValueError("act_after/expire_after: settle well before the 1 h default expiry")
        if not 0 <= self.hidden_share <= 1:
            raise ValueError("hidden_share: a share of the payments, 0 to 1")


@dataclass(frozen=True)
class PlannedPayment:
    index: int
    create_at: float  # seconds from the start
    action: str  # settle | fail | expire
    act_at: float | None  # settle/fail time from the start; None: left to expire
    expiration: int | None  # invoice expiration for the ones left to expire
    shop: str  # metadata["shop"], which one subscriber filters on
    amount_msats: int
    hidden: bool = False  # hidden from statuses-filtered lists right after the create

    @property
    def client_id(self) -> str:
        return f"chaos-{self.index}"


@dataclass(frozen=True)
class SubscriberSpec:
    """A subscriber and how it misbehaves while faults go on."""

    name: str
    event_types: tuple[str, ...] | None  # None: every event type
    shop: str | None  # metadata filter {"shop": shop}
    error_rate: float = 0.0  # share of requests answered with an error status
    error_status: int = 500
    retry_after: int | None = None  # sent with error answers (429 honours it)
    outages: bool = False  # whole windows of errors the fault thread opens
    hangs: bool = False  # whole windows of answers held past the webhook timeout

    def wants(self, event_type: str, shop: str) -> bool:
        types_ok = self.event_types is None or event_type in self.event_types
        return types_ok and (self.shop is None or shop == self.shop)


SUBSCRIBERS = (
    SubscriberSpec("healthy", None, None),
    SubscriberSpec("flaky", None, None, error_rate=0.3, outages=True),
    SubscriberSpec("hanging", ("payment.completed",), None, error_rate=0.1, hangs=True),
    SubscriberSpec(
        "shop-a-throttled",
        ("payment.completed", "payment.expired"),
        "a",
        error_rate=0.25,
        error_status=429,
        retry_after=1,
    ),
)


@dataclass(frozen=True)
class Plan:
    payments: list[PlannedPayment] = field(default_factory=list)


def make_plan(params: ChaosParams) -> Plan:
    rng = random.Random(params.seed)
    # A generator of its own, so the hidden ones add to a seed's plan without changing it.
    hidden_count = round(params.payments * params.hidden_share)
    hidden = set(random.Random(params.seed + 2).sample(range(params.payments), hidden_count))
    planned = []
    for index in range(params.payments):
        create_at = rng.uniform(0, params.create_window)
        action = rng.choices(ACTIONS, weights=params.shares)[0]
        if action == "expire":
            act_at, expiration = None, rng.randint(*params.expire_after)
        else:
            act_at, expiration = create_at + rng.uniform(*params.act_after), None
        planned.append(
            PlannedPayment(
                index=index,
                create_at=create_at,
                action=action,
                act_at=act_at,
                expiration=expiration,
                shop=rng.choice(SHOPS),
                amount_msats=rng.randint(1, 500) * 1000,
                hidden=index in hidden,
            )
        )
    return Plan(sorted(planned, key=lambda p: p.create_at))
