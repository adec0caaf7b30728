"""A create Voltage would refuse is refused here first, naming the field, before any call:
through the API (a 422, and the OpenAPI document shows the limit), the CLI and the engine."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import requests

from tests.conftest import SimControl, Stack
from watcher.api import create_app
from watcher.api.request_models import PaymentCreate
from watcher.api.server import ApiServer
from watcher.engine.watching import InvalidCreate, create_and_watch

pytestmark = pytest.mark.timeout(120)

TOKEN = "token-for-limit-tests-0123456789"
DESCRIPTION_800_BYTES = "é" * 400  # 400 characters, 800 bytes of UTF-8: no invoice holds it

# Creates Voltage refuses (voltage-api.md: expiration <= 86400, metadata 50 x 256; a BOLT11
# description holds 639 bytes), as engine keyword arguments.
REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"description": DESCRIPTION_800_BYTES}, "description"),
    ({"description": "d" * 640}, "description"),
    ({"description": "bad \udcff byte"}, "description"),
    ({"expiration": 0}, "expiration"),
    ({"expiration": 86_401}, "expiration"),
    ({"amount_msats": -1}, "amount_msats"),
    ({"amount_msats": 2_100_000_000_000_000_001}, "amount_msats"),
    ({"metadata": {f"k{i}": "v" for i in range(51)}}, "metadata"),
    ({"metadata": {"k" * 257: "v"}}, "metadata"),
    ({"metadata": {"k": "v" * 257}}, "metadata.k"),
    ({"metadata": {"": "v"}}, "metadata"),
]


def create_count(sim_control: SimControl) -> int:
    return int(sim_control.stats()["by_route"].get("POST /payments", 0))


@pytest.mark.parametrize(("fields", "name"), REFUSED)
def test_engine_refuses_before_calling_voltage(
    make_stack: Callable[..., Stack], sim_control: SimControl, fields: dict[str, Any], name: str
) -> None:
    stack = make_stack()
    before = create_count(sim_control)
    args: dict[str, Any] = {"amount_msats": 1000, **fields}
    with pytest.raises(InvalidCreate) as info:
        create_and_watch(stack.runtime, **args)
    assert name in [field for field, _ in info.value.problems]
    assert str(info.value).startswith(name)
    assert create_count(sim_control) == before
    assert stack.runtime.payments.pending_count() == 0


def test_limits_at_the_edge_are_accepted(
    make_stack: Callable[..., Stack], sim_control: SimControl
) -> None:
    stack = make_stack()
    result = create_and_watch(
        stack.runtime,
        amount_msats=1000,
        description="é" * 319 + "d",  # 639 bytes
        expiration=86_400,
        metadata={f"k{i}": "v" * 256 for i in range(50)},
    )
    assert result.created


@pytest.mark.parametrize(("fields", "name"), REFUSED)
def test_the_api_model_refuses_whatever_the_engine_refuses(
    fields: dict[str, Any], name: str
) -> None:
    """The API answers these with its 422 naming the field, never the engine's error."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as info:
        PaymentCreate.model_validate({"amount_msats": 1000, **fields})
    locations = [".".join(str(p) for p in error["loc"]) for error in info.value.errors()]
    assert any(loc.startswith(name.split(".", maxsplit=1)[0]) for loc in locations), locations


def test_api_refuses_an_800_byte_description_without_calling_voltage(
    make_stack: Callable[..., Stack], sim_control: SimControl
) -> None:
    stack = make_stack(WATCHER_API_TOKENS=TOKEN)
    before = create_count(sim_control)
    with ApiServer(create_app(stack.runtime, invoice_wait=3.0)) as server:
        answer = requests.post(
            f"{server.base_url}/v1/payments",
            json={"amount_msats": 1000, "description": DESCRIPTION_800_BYTES},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        schema = requests.get(f"{server.base_url}/openapi.json", timeout=30).json()
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert [f["field"] for f in error["fields"]] == ["body.description"]
    assert "639 bytes" in error["fields"][0]["message"]
    assert "body.description" in error["detail"]
    assert create_count(sim_control) == before
    described = schema["components"]["schemas"]["PaymentCreate"]["properties"]["description"]
    assert "639 bytes" in str(described)


def test_cli_refuses_an_800_byte_description_without_calling_voltage(
    make_stack: Callable[..., Stack], sim_control: SimControl
) -> None:
    stack = make_stack()
    before = create_count(sim_control)
    for extra in (
        ["--description", DESCRIPTION_800_BYTES],
        [arg for i in range(51) for arg in ("--metadata", f"k{i}=v")],
        ["--metadata", "k=" + "v" * 257],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "watcher", "create", "--amount-msats", "1000", *extra],
            env=stack.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 1, result
        (line,) = result.stderr.splitlines()
        assert "description" in line or "metadata" in line
        assert "Traceback" not in result.stderr
    assert create_count(sim_control) == before


def test_api_and_engine_share_voltage_limits() -> None:
    from watcher.api import field_types as models
    from watcher.voltage import limits

    assert models.MAX_DESCRIPTION == limits.MAX_DESCRIPTION_BYTES
    assert models.MAX_EXPIRATION == limits.MAX_EXPIRATION
    assert models.MAX_METADATA_ENTRIES == limits.MAX_METADATA_ENTRIES
    assert models.MAX_METADATA_LENGTH == limits.MAX_METADATA_LENGTH
    assert models.MAX_MSATS == limits.MAX_AMOUNT_MSATS


@pytest.mark.parametrize("wallet_id", ["\t", "   "])
def test_a_blank_wallet_id_is_a_422_not_a_500(
    make_stack: Callable[..., Stack], sim_control: SimControl, wallet_id: str
) -> None:
    """Found by schemathesis: a wallet id of only whitespace passed the model and the client
    refused it mid-request (a 500)."""
    stack = make_stack(WATCHER_API_TOKENS=TOKEN)
    before = create_count(sim_control)
    with ApiServer(create_app(stack.runtime, invoice_wait=3.0)) as server:
        answer = requests.post(
            f"{server.base_url}/v1/payments",
            json={"amount_msats": 1000, "wallet_id": wallet_id},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
    assert answer.status_code == 422, answer.text
    fields = answer.json()["error"]["fields"]
    assert fields == [
        {"field": "body.wallet_id", "message": "must hold something besides whitespace"}
    ]
    assert create_count(sim_control) == before
