"""The simulator's payments on disk, so `watcher up --simulate` keeps its promise that a restart
loses nothing: a payment pending across a restart must still be there to be paid.

An append-only file of JSON lines, one per change, each the whole payment as it then was; the
last line for an id wins. Loading compacts it to one line per payment. Transitions the clock
makes (`receiving`, `expired`) are written too when they happen: a back-dated `updated_at` is
drawn at random, and a final payment must not change across a restart.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from watcher.simulator.invoices import SimInvoice
from watcher.simulator.payment import HistoryEntry, PaymentView, SimPayment


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file: IO[str] | None = None

    def load(self) -> list[SimPayment]:
        """Every payment the file holds, then the file rewritten with only those."""
        latest: dict[str, SimPayment] = {}
        with contextlib.suppress(FileNotFoundError), self.path.open("rb") as file:
            for line in file:
                payment = _decode(line)
                if payment is not None:
                    latest[payment.id] = payment
        self._rewrite(latest.values())
        return list(latest.values())

    def record(self, payments: Iterable[SimPayment]) -> None:
        file = self._open()
        for payment in payments:
            file.write(json.dumps(asdict(payment), separators=(",", ":")) + "\n")
        file.flush()

    def clear(self) -> None:
        self._rewrite([])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open(self) -> IO[str]:
        if self._file is None:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._file = os.fdopen(fd, "a")
        return self._file

    def _rewrite(self, payments: Iterable[SimPayment]) -> None:
        """Atomically: a crash mid-compaction leaves the old file, not half of a new one."""
        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        # Made afresh: a leftover file would keep its own mode, and the state become readable.
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            for payment in payments:
                file.write(json.dumps(asdict(payment), separators=(",", ":")) + "\n")
        temporary.replace(self.path)


def _decode(line: bytes) -> SimPayment | None:
    """One stored payment; a torn or damaged line (a crash mid-write, bytes that are not
    UTF-8) is skipped, not fatal."""
    try:
        raw: dict[str, Any] = json.loads(line.decode("utf-8"))
        raw["invoice"] = SimInvoice(**raw["invoice"])
        raw["history"] = [HistoryEntry(**entry) for entry in raw["history"]]
        raw["past"] = [(int(at), PaymentView(**view)) for at, view in raw["past"]]
        return SimPayment(**raw)
    except (ValueError, TypeError, KeyError):
        return None
