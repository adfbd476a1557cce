"""Pseudonymisation of personal data before it reaches the warehouse."""

from __future__ import annotations

import hashlib
import hmac
import re

#: What card_pseudonym_sql removes: RE2's \s (ASCII spaces but the vertical tab) and dashes.
_NOT_DIGIT = re.compile(r"[\t\n\f\r -]")
_LONG_DIGITS = re.compile(r"\d{12,19}")
MASK = "***"


def card_pseudonym(card_number: str, key: bytes) -> str:
    """Keyed hash (HMAC-SHA256, 128 bits in hex) of a card number without spaces or dashes."""
    normalised = _NOT_DIGIT.sub("", card_number)
    return hmac.new(key, normalised.encode(), hashlib.sha256).hexdigest()[:32]


def mask_card_like_digits(text: str) -> str:
    """Text with every run of 12-19 digits (anything that may be a card number) masked."""
    return _LONG_DIGITS.sub(MASK, text)


def card_pseudonym_sql(column: str) -> str:
    """SQL computing :func:`card_pseudonym` of a column; bind ``$ipad`` and ``$opad``."""
    normalised = f"regexp_replace({column}, '[\\s-]', '', 'g')"
    return f"left(sha256($opad || unhex(sha256($ipad || encode({normalised})))), 32)"


def hmac_pads(key: bytes) -> dict[str, bytes]:
    """HMAC-SHA256's inner and outer padded keys, the parameters of card_pseudonym_sql."""
    block = key if len(key) <= 64 else hashlib.sha256(key).digest()
    block = block.ljust(64, b"\0")
    return {
        "ipad": bytes(b ^ 0x36 for b in block),
        "opad": bytes(b ^ 0x5C for b in block),
    }
