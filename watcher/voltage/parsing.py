"""Voltage's answers into models: a 2xx body that is not what the endpoint promises is a
`VoltageMalformedResponse`, never a half-read model."""

from __future__ import annotations

from typing import Any

import requests

from watcher.voltage.errors import VoltageMalformedResponse
from watcher.voltage.models import HistoryEvent, Payment, PaymentList

# An empty body: create answers 202 with one; anything that wants a body refuses it.
NO_BODY = object()


def decoded_body(response: requests.Response, where: str) -> Any:
    """The decoded body, or NO_BODY when there is none."""
    if not response.content:
        return NO_BODY
    try:
        return response.json()
    except ValueError:
        raise VoltageMalformedResponse(
            f"Voltage answered {response.status_code} on {where} with a body that is not JSON",
            status=response.status_code,
        ) from None


def ignore_body(_body: Any) -> None:
    return None


def require_body(body: Any) -> Any:
    if body is NO_BODY:
        raise VoltageMalformedResponse("the body is empty")
    return body


def parse_payment(body: Any) -> Payment:
    return Payment.from_api(require_body(body))


def parse_page(body: Any) -> PaymentList:
    return PaymentList.from_api(require_body(body))


def parse_history(body: Any) -> list[HistoryEvent]:
    body = require_body(body)
    events = body.get("events") if isinstance(body, dict) else None
    if not isinstance(events, list):
        raise VoltageMalformedResponse("payment history has no 'events' list")
    parsed: list[HistoryEvent] = []
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            raise VoltageMalformedResponse(f"payment history event {index} is not an object")
        try:
            parsed.append(HistoryEvent.model_validate(event))
        except ValueError:
            raise VoltageMalformedResponse(
                f"payment history event {index} has invalid fields"
            ) from None
    return parsed
