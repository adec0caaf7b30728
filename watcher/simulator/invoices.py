"""Real, signed BOLT11 invoices for simulated receives.

The watcher decodes every invoice it is given (expiry, payment hash), so the simulator hands out
invoices any BOLT11 decoder accepts instead of placeholder strings. They are signet invoices
(`lntbs...`) signed by a fixed, public simulator node key: nobody can pay them on a real network.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import bolt11
from bolt11 import Bolt11, Feature, Features, FeatureState, MilliSatoshi, TagChar, Tags

# The simulated node's identity. Public on purpose: it signs test invoices, never real ones.
SIMULATOR_NODE_PRIVATE_KEY = "8e7046b43bddc32ba0eb209b637bd3eb8c920355d2da3c3bd60ebdbfa823208e"
SIMULATOR_NODE_PUBKEY = "02ad96c864dbd0841e9bde128726f5a7e02120d105f93c6f780a6e460c6550f6a5"

# BOLT11 currency prefix for signet, the network Voltage's test environments use.
INVOICE_CURRENCY = "tbs"
# LND's default final CLTV delta; decoders expect the tag on modern invoices.
MIN_FINAL_CLTV_EXPIRY = 80
# A BOLT11 tagged field holds at most 1023 5-bit groups, so a description fits in 639 bytes.
MAX_DESCRIPTION_BYTES = 639

# What current LND invoices advertise: TLV onions and payment secrets required, MPP supported.
_FEATURES = Features.from_feature_list(
    {
        Feature.var_onion_optin: FeatureState.required,
        Feature.payment_secret: FeatureState.required,
        Feature.basic_mpp: FeatureState.supported,
    }
)


@dataclass(frozen=True)
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

    tags = Tags()
    tags.add(TagChar.payment_hash, payment_hash)
    tags.add(TagChar.payment_secret, payment_secret)
    # Always a `d` tag: BOLT11 needs a description or its hash, and "" is a valid description.
    tags.add(TagChar.description, description)
    tags.add(TagChar.expire_time, expiry)
    tags.add(TagChar.min_final_cltv_expiry, MIN_FINAL_CLTV_EXPIRY)
    tags.add(TagChar.features, _FEATURES)
    invoice = Bolt11(
        currency=INVOICE_CURRENCY,
        date=timestamp,
        tags=tags,
        amount_msat=MilliSatoshi(amount_msat) if amount_msat else None,
    )
    payment_request = bolt11.encode(invoice, private_key=SIMULATOR_NODE_PRIVATE_KEY)
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
