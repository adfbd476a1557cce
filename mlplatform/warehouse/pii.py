"""Pseudonymisation of personal data before it reaches the warehouse."""

from __future__ import annotations

import hashlib
import hmac
import re

_NOT_DIGIT = re.compile(r"[\s-]")
_LONG_DIGITS = re.compile(r"\d{12,19}")
MASK = "***"


def card_pseudonym(card_number: str, key: bytes) -> str:
    """Keyed hash (HMAC-SHA256, 128 bits in hex) of a card number without spaces or dashes."""
    normalised = _NOT_DIGIT.sub("", card_number)
    return hmac.new(key, normalised.encode(), hashlib.sha256).hexdigest()[:32]


def mask_card_like_digits(text: str) -> str:
    """Text with every run of 12-19 digits (anything that may be a card number) masked."""
    return _LONG_DIGITS.sub(MASK, text)
