"""The fault suite's short mode: a few hundred payments under crashes, restarts and hostile
peers, and not one event or delivery lost. The long mode: `python -m tests.chaos --long`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.plan import ChaosParams
from tests.chaos.runner import run_chaos

pytestmark = pytest.mark.timeout(900)


def test_nothing_is_lost_or_announced_twice_under_fire(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = run_chaos(ChaosParams.short(), tmp_path)
    with capsys.disabled():
        print("\n" + report.format())
    assert report.problems() == []
    assert report.events_expected == report.payments
    assert report.deliveries_lost == 0
    # The default layout under a 60 s hang: every payment reached both healthy subscribers.
    assert report.hanging is not None
    assert report.hanging.expected == 2 * report.hanging.payments > 0
    assert report.hanging.lost == 0
    # The faults really happened: a run where nothing was killed proves nothing.
    for fault in ("worker SIGKILL", "beat SIGKILL"):
        assert report.faults[fault] > 0, report.faults
    assert report.faults["redis SIGKILL"] + report.faults["redis SIGTERM"] > 0, report.faults
    # The list faults too: a list outage long enough for the fallback, the others, the hidden.
    assert report.faults["list outage 503 (long)"] > 0, report.faults
    for fault in ("updated_at backdate", "list lag", "hidden from filtered lists"):
        assert report.faults[fault] > 0, report.faults
    assert report.watcher_counters.get("fallback_entries", 0) > 0, report.watcher_counters
    assert sum(report.hidden_by_status.values()) == report.hidden_planned > 0
