"""Subscribers that fail, hang and recover, and check every request they get as it arrives.

Signatures are verified at receipt time (as a real receiver does): verifying at the end would
trip the Standard Webhooks timestamp tolerance on a long run.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass

import jsonschema
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.chaos.plan import SubscriberSpec
from tests.support import check_event_body
from watcher.receiver import Answer, Received, Receiver

HANG_SECONDS = 4.0  # past the suite's 2 s webhook timeout


@dataclass(frozen=True)
class Receipt:
    webhook_id: str
    body: bytes
    at: float
    status: int
    hung: bool
    verified: bool

    @property
    def accepted(self) -> bool:
        """The sender saw a 2xx in time: this receipt counts as delivered."""
        return 200 <= self.status < 300 and not self.hung


class ChaosSubscriber:
    """A receiver on loopback whose answers follow its spec while `misbehaving` is set."""

    def __init__(self, spec: SubscriberSpec, seed: int) -> None:
        self.spec = spec
        self.receiver = Receiver()
        self.receiver.policy = self._answer
        self.rng = random.Random(seed)
        self.misbehaving = False
        self.outage_until = 0.0
        self.hang_until = 0.0
        self.receipts: list[Receipt] = []
        self.subscription_id = ""
        self._webhook: Webhook | None = None
        self._lock = threading.Lock()

    def start(self) -> ChaosSubscriber:
        self.receiver.start()
        return self

    def stop(self) -> None:
        self.receiver.stop()

    def url(self) -> str:
        return self.receiver.url(f"/{self.spec.name}")

    def subscribed(self, subscription_id: str, secret: str) -> None:
        self.subscription_id = subscription_id
        self._webhook = Webhook(secret)

    def outage(self, seconds: float) -> None:
        self.outage_until = time.time() + seconds

    def hang(self, seconds: float) -> None:
        self.hang_until = time.time() + seconds

    def _answer(self, got: Received) -> Answer:
        """Runs under the receiver's lock, one request at a time."""
        answer = self._choose()
        self.receipts.append(
            Receipt(
                webhook_id=got.headers.get("webhook-id", ""),
                body=got.body,
                at=got.at,
                status=answer.status,
                hung=answer.delay > 0,
                verified=self._verified(got),
            )
        )
        return answer

    def _choose(self) -> Answer:
        if not self.misbehaving:
            return Answer()
        now = time.time()
        if now < self.hang_until:
            return Answer(delay=HANG_SECONDS)
        if now < self.outage_until:
            return Answer(status=503, body=b"down for maintenance")
        if self.rng.random() < self.spec.error_rate:
            headers = {"retry-after": str(self.spec.retry_after)} if self.spec.retry_after else {}
            return Answer(status=self.spec.error_status, body=b"not now", headers=headers)
        return Answer()

    def _verified(self, got: Received) -> bool:
        """Signed by the subscription's secret, and the body matches its type's published
        JSON Schema (tests/support.check_event_body)."""
        if self._webhook is None:
            return False
        try:
            self._webhook.verify(got.body, got.headers)
            check_event_body(got.body)
        except (WebhookVerificationError, AssertionError, jsonschema.ValidationError):
            return False
        return True
