"""The event catalog over HTTP: `GET /v1/event-types` and the OpenAPI document's `webhooks`
(one entry per event type, its body's schema), both from delivery/event_catalog.py."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, Field

from watcher.api.errors import error_responses
from watcher.delivery.event_catalog import EVENT_MODELS, SCHEMA_VERSIONS, describe, schema_of

router = APIRouter(tags=["events"])


class EventTypeOut(BaseModel):
    type: str = Field(description="As in the body's `type` and in a subscription's event_types.")
    description: str
    versions: list[int] = Field(description="Schema versions a subscription can pin.")
    schema_: dict[str, Any] = Field(alias="schema", description="The body's JSON Schema.")


class EventTypeList(BaseModel):
    items: list[EventTypeOut]


@router.get(
    "/event-types",
    response_model=EventTypeList,
    response_model_by_alias=True,
    summary="Every event type a subscriber can receive, with its body's JSON Schema",
    responses=error_responses(401, 422, 500, 503),
)
def list_event_types() -> EventTypeList:
    return EventTypeList(
        items=[
            EventTypeOut.model_validate(
                {
                    "type": event_type,
                    "description": describe(event_type),
                    "versions": list(SCHEMA_VERSIONS),
                    "schema": schema_of(event_type),
                }
            )
            for event_type in EVENT_MODELS
        ]
    )


def declare_webhooks(app: FastAPI) -> None:
    """One `webhooks` entry per event type: what the watcher POSTs to a subscription's URL,
    signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`)."""
    for event_type, model in EVENT_MODELS.items():

        def receive(body: Any) -> None:
            """Answer 2xx once stored; anything else is retried on the schedule."""

        receive.__annotations__ = {"body": model, "return": None}
        app.webhooks.post(
            event_type, summary=describe(event_type), operation_id=f"webhook_{event_type}"
        )(receive)
