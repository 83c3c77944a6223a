"""Arm and holdout assignment restated from the text of campaigns/arms.py's docstring (not by calling it)."""

from __future__ import annotations

import hashlib


def _bucket(customer_id: str, *, salt: str, campaign_id: str) -> float:
    digest = hashlib.blake2b(f"{salt}\x1f{campaign_id}\x1f{customer_id}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 11) / 2**53


def oracle_arm(customer_id: str, *, salt: str, campaign_id: str, arms: list[tuple[str, float]]) -> str:
    """Arms own consecutive intervals of [0, 1) in their listed order, each as wide as its share."""
    u = _bucket(customer_id, salt=salt, campaign_id=campaign_id)
    edge = 0.0
    for name, share in arms:
        edge += share
        if u < edge:
            return name
    return arms[-1][0]


def oracle_held_out(customer_id: str, *, salt: str, campaign_id: str, share: float) -> bool:
    """Held out when the bucket under the salt ``salt + "\\x1fholdout"`` is below the holdout share."""
    return share > 0 and _bucket(customer_id, salt=f"{salt}\x1fholdout", campaign_id=campaign_id) < share
