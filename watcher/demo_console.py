"""What the demo shows a person: short friendly lines, each webhook as it arrives, the verdict;
and the children's output kept out of the way, in a log file."""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from watcher.demo_client import Deadline, DemoError
from watcher.demo_verdict import Verdict
from watcher.receiver import Delivery, VerifyingReceiver


class Console:
    """Short, friendly lines on stdout; plain ASCII when the terminal cannot show symbols."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        encoding = getattr(self.stream, "encoding", None) or "ascii"
        try:
            "✓✗".encode(encoding)
            self.fancy = True
        except (UnicodeEncodeError, LookupError):
            self.fancy = False

    @property
    def tick(self) -> str:
        return "✓" if self.fancy else "OK"

    @property
    def cross(self) -> str:
        return "✗" if self.fancy else "X"

    def say(self, text: str = "") -> None:
        print(text, file=self.stream, flush=True)

    def step(self, number: int, total: int, text: str) -> None:
        self.say(f"\n[{number}/{total}] {text}")

    def detail(self, text: str) -> None:
        self.say(f"      {text}")

    @property
    def is_tty(self) -> bool:
        return bool(getattr(self.stream, "isatty", lambda: False)())

    def qr(self, text: str) -> None:
        """A QR code of `text`, only on a terminal (never into a pipe or a file)."""
        if not self.is_tty:
            return
        try:
            import segno
        except ImportError:  # pragma: no cover - segno is a dependency
            return
        segno.make_qr(text, error="l").terminal(out=self.stream, compact=True)
        self.stream.flush()


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Point this process's stdout and stderr (fds 1 and 2) at `path` for a moment.

    The supervisor starts its children with inherited stdout/stderr; while they are started,
    those go to the log file, so Celery banners and process logs do not drown the demo.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    try:
        with path.open("ab") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        os.close(saved[0])
        os.close(saved[1])


@dataclass
class Progress:
    """What the demo prints as webhooks arrive, and which expected payments have theirs."""

    console: Console
    receiver: VerifyingReceiver
    expected: dict[str, str] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    done: set[str] = field(default_factory=set)  # payment ids with their verified event
    acted_at: dict[str, float] = field(default_factory=dict)

    def show(self, delivery: Delivery) -> None:
        c = self.console
        if not delivery.verified:
            c.detail(
                f"{c.cross} webhook {delivery.webhook_id or '?'} FAILED verification: "
                f"{delivery.error}"
            )
            return
        if delivery.webhook_id in self.seen:
            c.detail(
                f"  (re-delivery of {delivery.webhook_id}: same webhook-id, "
                "a receiver dedupes it; fine)"
            )
            return
        self.seen.add(delivery.webhook_id)
        payment_id = delivery.payment_id or "?"
        after = ""
        if payment_id in self.acted_at:
            after = f"  ({delivery.at - self.acted_at[payment_id]:.1f} s)"
        if payment_id in self.expected:
            self.done.add(payment_id)
        c.detail(
            f"{c.tick} webhook {delivery.event_type}  payment {payment_id}{after}\n"
            f"        webhook-id {delivery.webhook_id}  signature verified {c.tick}"
        )

    def collect(
        self, wanted: set[str], deadline: Deadline, alive: Callable[[], str | None]
    ) -> None:
        """Print webhooks as they arrive until each wanted payment has one, or time is up."""
        while not wanted <= self.done:
            remaining = deadline.remaining()
            if remaining <= 0:
                return
            try:
                delivery = self.receiver.arrivals.get(timeout=min(0.25, remaining))
            except queue.Empty:
                dead = alive()
                if dead:
                    raise DemoError(dead) from None
                continue
            self.show(delivery)

    def linger(self, seconds: float) -> None:
        """Keep listening a moment for late duplicates or extra events."""
        end = time.monotonic() + seconds
        while (remaining := end - time.monotonic()) > 0:
            try:
                self.show(self.receiver.arrivals.get(timeout=remaining))
            except queue.Empty:
                return

    def report(self, verdict: Verdict, *, finished: bool = True) -> None:
        """The verdict for a person; `finished` False: the run stopped early (say what is
        missing, not that all is well)."""
        c = self.console
        for webhook_id in verdict.duplicates:
            c.detail(f"note: {webhook_id} was delivered more than once (same webhook-id: allowed)")
        if verdict.ok and finished:
            c.detail(
                f"{c.tick} all {len(self.expected)} events arrived exactly once, "
                "each signature verified"
            )
            return
        for event_type, payment_id in verdict.missing:
            c.detail(f"{c.cross} missing: {event_type} for payment {payment_id}")
        for problem in verdict.problems:
            c.detail(f"{c.cross} {problem}")
