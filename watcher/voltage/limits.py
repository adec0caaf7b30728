"""What Voltage refuses in a create-receive (shared/voltage-api.md, the OpenAPI document),
so a create can be refused here first, naming the field, before anything is sent."""

from __future__ import annotations

# 21 million bitcoin in millisatoshis: no Lightning amount can be larger.
MAX_AMOUNT_MSATS = 2_100_000_000_000_000_000
MAX_EXPIRATION = 86_400  # seconds
MAX_METADATA_ENTRIES = 50
MAX_METADATA_LENGTH = 256  # characters, keys and values alike
# A BOLT11 tagged field holds at most 1023 5-bit groups: 639 bytes of UTF-8 description.
MAX_DESCRIPTION_BYTES = 639
