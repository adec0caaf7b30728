"""How a simulated environment behaves: its API keys and permissions, and the delays and list
quirks it reproduces. Checked when built, so a bad `PATCH /_sim/config` is a 400, not a crash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

PERMISSIONS = frozenset({"read", "receive", "write"})
CREATE_PERMISSIONS = frozenset({"receive", "write"})


@dataclass
class SimulatorConfig:
    """How the simulated environment behaves.

    `api_keys` maps each accepted `x-api-key` to its permissions (`read`, `receive`, `write`).
    `organization_id`/`environment_id` None accept any id in the path. A new payment answers
    404 for `not_found_window` seconds (Voltage's eventual consistency) and stays `generating`
    for `generating_delay` seconds. `seed` makes preimages and fault dice reproducible.

    Two switches reproduce what Voltage's contract warns about the list endpoint, and apply to
    every payment from the moment they are set: `updated_at_backdate` > 0 writes each status
    transition's `updated_at` up to that many seconds in the past (the order is not a
    watermark), and `list_lag` > 0 makes list calls show payments as they were that many
    seconds ago (pages lag behind reads by id).
    """

    api_keys: dict[str, frozenset[str]] = field(default_factory=lambda: {"sim-key": PERMISSIONS})
    organization_id: str | None = None
    environment_id: str | None = None
    not_found_window: float = 0.0
    generating_delay: float = 0.05
    seed: int | None = None
    updated_at_backdate: float = 0.0
    list_lag: float = 0.0
    # Where payments are kept across restarts (`watcher up --simulate`); None: memory only.
    state_file: Path | None = None

    def __post_init__(self) -> None:
        keys: dict[str, frozenset[str]] = {}
        for key, permissions in self.api_keys.items():
            if not isinstance(key, str) or not key:
                raise ValueError("api_keys: every key must be a non-empty string")
            normalized = frozenset(permissions)
            unknown = normalized - PERMISSIONS
            if unknown:
                raise ValueError(
                    f"api_keys: unknown permission(s) {sorted(unknown)} for a key; "
                    f"expected some of {sorted(PERMISSIONS)}"
                )
            keys[key] = normalized
        self.api_keys = keys
        check_seconds("not_found_window", self.not_found_window)
        check_seconds("generating_delay", self.generating_delay)
        check_seconds("updated_at_backdate", self.updated_at_backdate)
        check_seconds("list_lag", self.list_lag)


def check_seconds(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 3600:
        raise ValueError(f"{name}: expected seconds between 0 and 3600, got {value!r}")
