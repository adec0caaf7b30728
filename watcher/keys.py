"""Every Redis key name the watcher uses, in one place, under one configurable prefix.

Keys that a Lua script touches together share a hash tag (`{prefix}`) so the same scripts
would also run on Redis Cluster.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "vw"

    @property
    def _base(self) -> str:
        return "{" + self.prefix + "}"

    # --- payments ---------------------------------------------------------------------------
    def payment(self, payment_id: str) -> str:
        """Hash: the payment record (status, version, invoice, last poll, raw answer...)."""
        return f"{self._base}:payment:{payment_id}"

    def transitions(self, payment_id: str) -> str:
        """List: JSON entries, one per observed status change, oldest first."""
        return f"{self._base}:payment:{payment_id}:transitions"

    @property
    def payments_index(self) -> str:
        """Sorted set: every watched payment id, scored by when the watch began."""
        return f"{self._base}:payments"

    @property
    def poll_schedule(self) -> str:
        """Sorted set: pending payment ids scored by the unix time of their next poll."""
        return f"{self._base}:schedule:poll"

    # --- events -------------------------------------------------------------------------------
    @property
    def outbox(self) -> str:
        """Stream: one entry per detected transition; fan-out consumes it as a group."""
        return f"{self._base}:outbox"

    # --- housekeeping ---------------------------------------------------------------------------
    @property
    def sweep_state(self) -> str:
        """Hash: the list sweep's watermark and bookkeeping."""
        return f"{self._base}:sweep"

    @property
    def sweep_lock(self) -> str:
        return f"{self._base}:lock:sweep"

    @property
    def counters(self) -> str:
        """Hash: monotonically growing counters (polls, errors, transitions...)."""
        return f"{self._base}:counters"
