"""Real, signed BOLT11 invoices for simulated receives.

The watcher decodes every invoice it is given (expiry, payment hash), so the simulator hands out
invoices any BOLT11 decoder accepts instead of placeholder strings. They are signet invoices
(`lntbs...`) signed by a fixed, public simulator node key: nobody can pay them on a real network.

The encoding is done here with plain integers rather than through `bolt11.encode`, whose
bit-string handling costs about 2 ms an invoice (100,000 seeded payments would take minutes);
this path takes tens of microseconds and yields byte-for-byte the string `bolt11.encode` gives
for the same fields (tests/test_simulator_list_faults.py checks that), except for amounts of
whole thousands of BTC, which `bolt11.encode` shortens one unit too far (1000 BTC -> "1").
"""

from __future__ import annotations

import base64
import hashlib
import random
from dataclasses import dataclass
from functools import reduce as _reduce
from operator import xor

from coincurve import PrivateKey

# The simulated node's identity. Public on purpose: it signs test invoices, never real ones.
SIMULATOR_NODE_PRIVATE_KEY = "8e7046b43bddc32ba0eb209b637bd3eb8c920355d2da3c3bd60ebdbfa823208e"
SIMULATOR_NODE_PUBKEY = "02ad96c864dbd0841e9bde128726f5a7e02120d105f93c6f780a6e460c6550f6a5"

# BOLT11 currency prefix for signet, the network Voltage's test environments use.
INVOICE_CURRENCY = "tbs"
# LND's default final CLTV delta; decoders expect the tag on modern invoices.
MIN_FINAL_CLTV_EXPIRY = 80
# A BOLT11 tagged field holds at most 1023 5-bit groups, so a description fits in 639 bytes.
MAX_DESCRIPTION_BYTES = 639

# What current LND invoices advertise (BOLT 9 bit numbers): TLV onions (8) and payment secrets
# (14) required, basic MPP (17) supported.
_FEATURE_BITS = (1 << 8) | (1 << 14) | (1 << 17)

# BOLT11 tag types, as 5-bit values of their bech32 characters.
_TAG_PAYMENT_HASH = 1  # p
_TAG_PAYMENT_SECRET = 16  # s
_TAG_DESCRIPTION = 13  # d
_TAG_EXPIRY = 6  # x
_TAG_MIN_FINAL_CLTV = 24  # c
_TAG_FEATURES = 5  # 9

_BECH32_CHARSET = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BASE32_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_VALUES = bytes(range(32))
_BASE32_TO_VALUE = bytes.maketrans(_BASE32_ALPHABET, _VALUES)
_VALUE_TO_BASE32 = bytes.maketrans(_VALUES, _BASE32_ALPHABET)
_VALUE_TO_BECH32 = bytes.maketrans(_VALUES, _BECH32_CHARSET)
_BECH32_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
# The checksum's per-step XOR for each value of its top five bits, computed once.
_BECH32_STEP = tuple(
    _reduce(xor, (g for i, g in enumerate(_BECH32_GENERATOR) if top >> i & 1), 0)
    for top in range(32)
)


def _two_steps(top: int) -> int:
    chk = top << 20
    for _ in range(2):
        chk = ((chk & 0x1FFFFFF) << 5) ^ _BECH32_STEP[chk >> 25]
    return chk


# The same for two steps at once, by the top ten bits: the checksum is linear over GF(2), and
# the two 5-bit inputs of a pair never reach the top bits within those two steps.
_BECH32_STEP2 = tuple(_two_steps(top) for top in range(1024))
_SIGNING_KEY = PrivateKey.from_hex(SIMULATOR_NODE_PRIVATE_KEY)


@dataclass(frozen=True, slots=True)
class SimInvoice:
    """An encoded invoice plus the secrets only the receiving node knows (for the receipt)."""

    payment_request: str
    payment_hash: str
    preimage: str
    payment_secret: str
    timestamp: int
    expiry: int
    amount_msat: int | None
    description: str

    @property
    def expires_at(self) -> int:
        """Unix second after which a payer must refuse the invoice."""
        return self.timestamp + self.expiry


def make_invoice(
    *,
    amount_msat: int | None,
    description: str,
    expiry: int,
    timestamp: int,
    rng: random.Random,
) -> SimInvoice:
    """Sign a fresh invoice; `amount_msat` None (or 0) makes an any-amount invoice.

    `rng` supplies the preimage and payment secret so a seeded simulator is reproducible.
    """
    if len(description.encode("utf-8")) > MAX_DESCRIPTION_BYTES:
        raise ValueError(f"description longer than {MAX_DESCRIPTION_BYTES} bytes")
    if not 0 < expiry < 2**35:
        raise ValueError("expiry must be a positive number of seconds")
    preimage = rng.randbytes(32)
    payment_hash = hashlib.sha256(preimage).hexdigest()
    payment_secret = rng.randbytes(32).hex()

    payment_request = encode_invoice(
        amount_msat=amount_msat or None,
        payment_hash=bytes.fromhex(payment_hash),
        payment_secret=bytes.fromhex(payment_secret),
        description=description,
        expiry=expiry,
        timestamp=timestamp,
    )
    return SimInvoice(
        payment_request=payment_request,
        payment_hash=payment_hash,
        preimage=preimage.hex(),
        payment_secret=payment_secret,
        timestamp=timestamp,
        expiry=expiry,
        amount_msat=amount_msat or None,
        description=description,
    )


def encode_invoice(
    *,
    amount_msat: int | None,
    payment_hash: bytes,
    payment_secret: bytes,
    description: str,
    expiry: int,
    timestamp: int,
) -> str:
    """The signed BOLT11 string, tags in the order `make_invoice` has always written them.

    The data part is kept as bytes holding one 5-bit value each; base32 (same bit order as
    bech32, another alphabet) does the regrouping in C.
    """
    hrp = "ln" + INVOICE_CURRENCY + (_amount_text(amount_msat) if amount_msat else "")
    data = b"".join(
        (
            _int_groups(timestamp, 7),
            _tagged(_TAG_PAYMENT_HASH, _bytes_to_groups(payment_hash)),
            _tagged(_TAG_PAYMENT_SECRET, _bytes_to_groups(payment_secret)),
            _tagged(_TAG_DESCRIPTION, _bytes_to_groups(description.encode("utf-8"))),
            _tagged(_TAG_EXPIRY, _minimal_groups(expiry)),
            _tagged(_TAG_MIN_FINAL_CLTV, _minimal_groups(MIN_FINAL_CLTV_EXPIRY)),
            _tagged(_TAG_FEATURES, _minimal_groups(_FEATURE_BITS)),
        )
    )
    # The signature covers the hrp's bytes and the data part zero-padded to whole bytes.
    signature = _SIGNING_KEY.sign_recoverable(hrp.encode() + _groups_to_bytes(data))
    data += _bytes_to_groups(signature)
    encoded = (data + _checksum(hrp, data)).translate(_VALUE_TO_BECH32)
    return hrp + "1" + encoded.decode("ascii")


def _amount_text(msat: int) -> str:
    """BOLT11's shortest amount: tenths of a millisatoshi (pico-BTC) scaled up by 1000s."""
    value = msat * 10
    for unit in ("p", "n", "u", "m"):
        if value % 1000:
            return f"{value}{unit}"
        value //= 1000
    return str(value)


def _int_groups(value: int, count: int) -> bytes:
    return bytes((value >> (5 * (count - 1 - i))) & 31 for i in range(count))


def _minimal_groups(value: int) -> bytes:
    """An integer field in as few big-endian 5-bit groups as it needs."""
    return _int_groups(value, max(1, (value.bit_length() + 4) // 5))


def _bytes_to_groups(data: bytes) -> bytes:
    """8-bit bytes to 5-bit groups, zero-padded at the end (BIP 173 convertbits)."""
    return base64.b32encode(data).rstrip(b"=").translate(_BASE32_TO_VALUE)


def _groups_to_bytes(groups: bytes) -> bytes:
    """5-bit groups to bytes, the last byte zero-padded."""
    size = (len(groups) * 5 + 7) // 8
    padded = groups + bytes(-len(groups) % 8)  # zero groups up to whole base32 blocks
    return base64.b32decode(padded.translate(_VALUE_TO_BASE32))[:size]


def _tagged(tag: int, groups: bytes) -> bytes:
    return bytes((tag, len(groups) >> 5, len(groups) & 31)) + groups


def _checksum(hrp: str, data: bytes) -> bytes:
    """BIP 173's polymod checksum, one table lookup per two 5-bit groups."""
    prefix = bytes([ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp])
    values = prefix + data + bytes(6)
    chk = 1
    if len(values) % 2:
        chk = ((chk & 0x1FFFFFF) << 5 ^ values[0]) ^ _BECH32_STEP[chk >> 25]
        values = values[1:]
    pairs = iter(values)
    step = _BECH32_STEP2
    for first, second in zip(pairs, pairs, strict=True):
        chk = ((chk & 0xFFFFF) << 10) ^ (first << 5) ^ second ^ step[chk >> 20]
    polymod = chk ^ 1
    return bytes((polymod >> 5 * (5 - i)) & 31 for i in range(6))
