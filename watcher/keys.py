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

    def payment_claim(self, payment_id: str) -> str:
        """String with a TTL: who is creating this payment (an app id, "" for an admin), set
        before Voltage is asked, so no one else adopts it before its creator does."""
        return f"{self._base}:payment:{payment_id}:claim"

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

    @property
    def pending_created(self) -> str:
        """Sorted set: pending payment ids scored by Voltage's `created_at` (unix seconds), so
        reconciliation knows where its window starts."""
        return f"{self._base}:pending:created"

    # --- events -------------------------------------------------------------------------------
    @property
    def outbox(self) -> str:
        """Stream: one entry per detected transition; fan-out consumes it as a group."""
        return f"{self._base}:outbox"

    # --- subscriptions and deliveries ----------------------------------------------------------
    def subscription(self, subscription_id: str) -> str:
        """Hash: url, event types, filters, enabled flag and reason, signing secrets."""
        return f"{self._base}:sub:{subscription_id}"

    @property
    def subscriptions_index(self) -> str:
        """Sorted set: every subscription id, scored by creation time."""
        return f"{self._base}:subs"

    def subscription_deliveries(self, subscription_id: str) -> str:
        """Sorted set: a subscription's delivery ids, scored by creation time."""
        return f"{self._base}:sub:{subscription_id}:deliveries"

    def subscription_inflight(self, subscription_id: str) -> str:
        """Sorted set: deliveries being attempted right now, scored by their lease's end."""
        return f"{self._base}:sub:{subscription_id}:inflight"

    def subscription_health(self, subscription_id: str, hour: int) -> str:
        """Hash with a TTL: one unix hour of a subscription's attempts (count, successes,
        latency bucket counts, the hour's last failure), for its 24-hour health."""
        return f"{self._base}:sub:{subscription_id}:health:{hour}"

    def delivery(self, delivery_id: str) -> str:
        """Hash: one (event, subscription) delivery: status, attempt count, next attempt."""
        return f"{self._base}:delivery:{delivery_id}"

    def delivery_attempts(self, delivery_id: str) -> str:
        """List: JSON per attempt (time, status code, latency, truncated body, error)."""
        return f"{self._base}:delivery:{delivery_id}:attempts"

    @property
    def deliveries_index(self) -> str:
        """Sorted set: every delivery id, scored by creation time."""
        return f"{self._base}:deliveries"

    @property
    def deliver_schedule(self) -> str:
        """Sorted set: deliveries due for their first attempt (or a manual re-send)."""
        return f"{self._base}:schedule:deliver"

    @property
    def retry_schedule(self) -> str:
        """Sorted set: deliveries waiting for a retry, scored by when it is due."""
        return f"{self._base}:schedule:retry"

    OUTBOX_GROUP = "fanout"

    # --- housekeeping ---------------------------------------------------------------------------
    @property
    def sweep_state(self) -> str:
        """Hash: the list sweep's watermark and bookkeeping."""
        return f"{self._base}:sweep"

    @property
    def sweep_lock(self) -> str:
        return f"{self._base}:lock:sweep"

    @property
    def reconcile_state(self) -> str:
        """Hash: the reconciliation pass in progress (cursor, window start, pages so far)."""
        return f"{self._base}:reconcile"

    @property
    def reconcile_lock(self) -> str:
        return f"{self._base}:lock:reconcile"

    @property
    def list_health(self) -> str:
        """Hash: when list calls last worked, since when they fail, the fallback flag."""
        return f"{self._base}:list-health"

    def latency(self, kind: str) -> str:
        """Hash: a latency histogram (per-bucket counts, count, sum in microseconds)."""
        return f"{self._base}:latency:{kind}"

    @property
    def counters(self) -> str:
        """Hash: monotonically growing counters (polls, errors, transitions...)."""
        return f"{self._base}:counters"

    @property
    def audit(self) -> str:
        """Stream: who changed what through the API or the CLI, and when (capped)."""
        return f"{self._base}:audit"

    def rate_limit(self, actor: str) -> str:
        """Hash with a TTL: an API token's request bucket (tokens left, when counted)."""
        return f"{self._base}:ratelimit:{actor}"

    # --- apps and their API keys --------------------------------------------------------------
    def app(self, app_id: str) -> str:
        """Hash: an app (tenant): its id, name, when it was made."""
        return f"{self._base}:app:{app_id}"

    def app_name(self, name: str) -> str:
        """String: the id of the app with this name (names are unique)."""
        return f"{self._base}:app-name:{name}"

    @property
    def apps_index(self) -> str:
        """Sorted set: every app id, scored by when it was made."""
        return f"{self._base}:apps"

    def api_key(self, key_id: str) -> str:
        """Hash: an API key by its id: its app, scope, the SHA-256 of the key, dates."""
        return f"{self._base}:apikey:{key_id}"

    def api_key_digest(self, digest: str) -> str:
        """Hash: the same key found by the SHA-256 of what a request presents (id, app,
        scope): one read authenticates it; deleting it revokes the key at once."""
        return f"{self._base}:apikey-digest:{digest}"

    @property
    def api_keys_index(self) -> str:
        """Sorted set: every API key id, scored by when it was made."""
        return f"{self._base}:apikeys"

    # --- Voltage webhook ingress ------------------------------------------------------------------
    def ingress_seen(self, fingerprint: str) -> str:
        """String with a TTL: a Voltage webhook (by id or by body and timestamp) already taken."""
        return f"{self._base}:ingress:seen:{fingerprint}"

    def ingress_read(self, payment_id: str) -> str:
        """String with a TTL: a webhook re-read this payment less than a second ago."""
        return f"{self._base}:ingress:read:{payment_id}"
