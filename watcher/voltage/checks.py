"""Argument checks shared by every request the client builds: a bad argument is refused here,
naming it, before anything is sent (Voltage's own answer would name its field, not ours)."""

from __future__ import annotations

from collections.abc import Mapping

from watcher.voltage.limits import MAX_METADATA_ENTRIES, MAX_METADATA_LENGTH


def check_text(value: object, name: str) -> str:
    """`value` when it is a string with something besides whitespace in it."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string")
    return value


def check_metadata(metadata: Mapping[str, str] | None, name: str) -> dict[str, str] | None:
    """A copy of `metadata` within Voltage's limits; None stays None."""
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise ValueError(f"{name} must be a mapping of strings to strings")  # noqa: TRY004 - one error class for bad input
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise ValueError(f"{name} must have at most {MAX_METADATA_ENTRIES} entries")
    checked: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"{name} keys and values must be strings")  # noqa: TRY004 - one error class for bad input
        if len(key) > MAX_METADATA_LENGTH or len(value) > MAX_METADATA_LENGTH:
            raise ValueError(
                f"{name} keys and values must be at most {MAX_METADATA_LENGTH} characters"
            )
        checked[key] = value
    return checked
