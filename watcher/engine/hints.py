"""What the ingress remembers of Voltage's webhooks (the hints): which ones it took, so a
replay reads nothing, and which payments a hint re-read this second, so a flood costs at most
one Voltage read per payment per interval. In Redis, so both hold across API replicas."""

from __future__ import annotations

import redis

from watcher.keys import Keys


class HintLedger:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    def first_sighting(self, names: list[str], ttl: int) -> bool:
        """Remember every name of one webhook for `ttl` seconds; True only if none of them was
        known before."""
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.set(self.keys.ingress_seen(name), "1", nx=True, ex=ttl)
        return all(pipe.execute())

    def take_read(self, payment_id: str, interval_ms: int) -> bool:
        """Claim this interval's Voltage read of a payment; False if a hint already took it."""
        key = self.keys.ingress_read(payment_id)
        return bool(self.redis.set(key, "1", nx=True, px=interval_ms))
