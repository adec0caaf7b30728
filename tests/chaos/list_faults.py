"""The list faults of the fault suite: windows where Voltage's list endpoint fails, writes
`updated_at` in the past, or shows the past, each undone when it ends.

They are windows, not instants like a SIGKILL: the fault thread opens one and goes on with its
other faults (a worker killed while the watcher is in its fallback is the point), and a closer
thread of this class undoes it when it is due. Undoing goes through the simulator's control
surface, which is away while a Voltage outage lasts: the closer then tries again, so a window can
end a few seconds late, never not at all. `close_all` resets everything (config back to 0) and
is safe to call twice, so the runner calls it on every way out.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from tests.chaos.plan import ChaosParams

# (status, long): long outages outlast WATCHER_FALLBACK_AFTER, short ones do not. Cycled, so
# the first list outage of every run is a long one and both answers get both lengths.
OUTAGES = ((503, True), (429, False), (429, True), (503, False))
RULES: dict[int, dict[str, Any]] = {
    503: {"kind": "status", "status": 503, "route": "list"},
    429: {"kind": "rate_limit", "route": "list", "retry_after": 2},
}
KINDS = ("list outage", "updated_at backdate", "list lag")  # at most one window of each open


@dataclass
class Window:
    kind: str
    label: str  # what the timeline shows
    opened: float
    until: float
    undo: Callable[[], None]


class ListFaults:
    """Opens list-fault windows (from the fault thread) and closes them when due (own thread)."""

    def __init__(self, control_url: str, params: ChaosParams, rng: random.Random) -> None:
        self.control = control_url
        self.params = params
        self.rng = rng
        self.done: Counter[str] = Counter()
        self.timeline: list[tuple[float, float, str]] = []  # (from, to, what), when closed
        self.errors: list[str] = []
        self._open: dict[str, Window] = {}
        self._lock = threading.Lock()
        self._outages = itertools.cycle(OUTAGES)
        self._backdates = 0
        self._session = requests.Session()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._close_due, name="chaos-lists", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def busy(self, kind: str) -> bool:
        with self._lock:
            return kind in self._open

    # --- the windows -----------------------------------------------------------------------------
    def list_outage(self) -> str:
        """List calls answer 503 or 429 (reads by id keep working) for a short or long while."""
        status, long = next(self._outages)
        span = self.params.list_outage_long if long else self.params.list_outage_short
        seconds = self.rng.uniform(*span)
        fault = self._call("POST", "/faults", RULES[status]).json()
        length = "long" if long else "short"
        self._open_window(
            "list outage",
            f"list outage {status} ({length}) {seconds:.1f} s",
            seconds,
            lambda: self._delete_fault(fault["id"]),
        )
        return f"list outage {status} ({length})"

    def backdate(self) -> str:
        """Every transition meanwhile writes `updated_at` up to N s in the past."""
        self._backdates += 1
        beyond = self.params.backdate_beyond_overlap
        if beyond is not None and self._backdates == 2:
            amount, label = beyond, "updated_at backdate beyond the overlap"
        else:
            amount, label = self.rng.uniform(*self.params.backdate), "updated_at backdate"
        seconds = self.rng.uniform(*self.params.list_window)
        self._patch(updated_at_backdate=amount)
        self._open_window(
            "updated_at backdate",
            f"{label} {amount:.1f} s, for {seconds:.1f} s",
            seconds,
            lambda: self._patch(updated_at_backdate=0),
        )
        return label

    def lag(self) -> str:
        """List calls show every payment as it was N s ago; reads by id show the present."""
        amount = self.rng.uniform(*self.params.list_lag)
        seconds = self.rng.uniform(*self.params.list_window)
        self._patch(list_lag=amount)
        self._open_window(
            "list lag",
            f"list lag {amount:.1f} s, for {seconds:.1f} s",
            seconds,
            lambda: self._patch(list_lag=0),
        )
        return "list lag"

    def _open_window(self, kind: str, label: str, seconds: float, undo: Callable[[], None]) -> None:
        now = time.time()
        with self._lock:
            self._open[kind] = Window(kind, label, now, now + seconds, undo)

    # --- closing ---------------------------------------------------------------------------------
    def _close_due(self) -> None:
        while not self._stop.wait(0.2):
            with self._lock:
                due = [w for w in self._open.values() if w.until <= time.time()]
            for window in due:
                self._close(window)

    def _close(self, window: Window) -> bool:
        try:
            window.undo()
        except requests.RequestException:
            return False  # the simulator is down (a Voltage outage): next round
        with self._lock:
            self._open.pop(window.kind, None)
            self.timeline.append((window.opened, time.time(), window.label))
        return True

    def close_all(self) -> None:
        """Undo every open window and put the list config back to 0: before the drain, and on
        any way out of a run. Idempotent."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        deadline = time.time() + 30
        with self._lock:
            left = list(self._open.values())
        for window in left:
            while not self._close(window) and time.time() < deadline:
                time.sleep(0.3)
        while True:
            try:
                self._patch(updated_at_backdate=0, list_lag=0)
                break
            except requests.RequestException as exc:
                if time.time() > deadline:
                    self.errors.append(f"list config not reset: {exc!r}")
                    break
                time.sleep(0.3)
        with self._lock:
            self.errors += [f"list window not undone: {w.label}" for w in self._open.values()]

    # --- the control surface ---------------------------------------------------------------------
    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self._session.request(method, self.control + path, json=body, timeout=10)
        response.raise_for_status()
        return response

    def _patch(self, **config: float) -> None:
        self._call("PATCH", "/config", config)

    def _delete_fault(self, fault_id: str) -> None:
        """Count what the rule refused, then remove it."""
        rules = self._call("GET", "/faults").json()["faults"]
        response = self._session.delete(f"{self.control}/faults/{fault_id}", timeout=10)
        if response.status_code not in (200, 404):  # 404: already cleared
            response.raise_for_status()
        for rule in rules:
            if rule["id"] == fault_id:
                self.done[f"voltage {rule['kind']} answers (list only)"] += rule["applied"]
