"""Fast, vectorised CSV text: fields, fixed-point numbers, ids and whole lines as Arrow strings.

Lines are assembled with Arrow's string kernels from pre-quoted dictionary text, so quoting is
standard CSV (double quotes only where a field needs them, ``""`` escapes a quote) at C speed.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_NEEDS_QUOTES = (",", '"', "\n", "\r")
_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
#: The two lowercase hex characters of every byte value, shape (256, 2).
_HEX_PAIRS = np.stack([_HEX_DIGITS[np.arange(256) >> 4], _HEX_DIGITS[np.arange(256) & 15]], 1)

_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def csv_field(value: str) -> str:
    """``value`` as one CSV field: quoted (quotes doubled) only when it must be."""
    if any(ch in value for ch in _NEEDS_QUOTES):
        return '"' + value.replace('"', '""') + '"'
    return value


def decimal_text(unscaled: np.ndarray, scale: int) -> pa.StringArray:
    """Fixed-point text of ``unscaled / 10**scale`` with exactly ``scale`` decimals.

    ``unscaled`` is int64, e.g. cents for ``scale=2``: 1250 -> "12.50", -5 -> "-0.05".
    """
    unscaled = np.ascontiguousarray(unscaled, dtype=np.int64)
    # Decimal128 values are 16-byte little-endian two's complement integers.
    words = np.stack([unscaled, unscaled >> 63], axis=1).ravel()
    decimals = pa.Array.from_buffers(
        pa.decimal128(18, scale), len(unscaled), [None, pa.py_buffer(words)]
    )
    return pc.cast(decimals, pa.string())


def timestamp_text(epoch_seconds: np.ndarray) -> pa.StringArray:
    """``YYYY-MM-DD HH:MM:SS`` text of seconds since 1970-01-01 00:00:00 (no time zone)."""
    stamps = pa.array(np.asarray(epoch_seconds, dtype=np.int64), type=pa.timestamp("s"))
    return pc.cast(stamps, pa.string())


def mix64(x: np.ndarray) -> np.ndarray:
    """A bijection of uint64 (the splitmix64 finaliser): distinct inputs stay distinct."""
    x = np.asarray(x, dtype=np.uint64)
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    return x ^ (x >> np.uint64(31))


def transaction_ids(
    day_index: int, rows: np.ndarray, key: np.uint64, high: np.ndarray
) -> pa.StringArray:
    """32-char lowercase hex ids of the given row numbers of a day.

    The low 64 bits are a bijection of ``(day_index, row)`` keyed by ``key``, so ids are unique
    over the whole simulation; ``high`` (one random uint64 per row) makes them look random.
    """
    n = len(rows)
    rows = np.asarray(rows, dtype=np.uint64)
    low = mix64(((np.uint64(day_index) << np.uint64(32)) | rows) ^ np.uint64(key))
    words = np.stack([np.asarray(high, dtype=np.uint64), low], axis=1).astype(">u8")
    chars = _HEX_PAIRS[words.view(np.uint8).reshape(n, 16)].reshape(-1)
    offsets = np.arange(0, 32 * (n + 1), 32, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))


def join_fields(columns: list[pa.Array], separator: str = ",") -> pa.StringArray:
    """Row-wise join of equally long string arrays (fields already CSV-quoted)."""
    return pc.binary_join_element_wise(*columns, separator)


def line_bytes(lines: pa.StringArray) -> tuple[memoryview, np.ndarray]:
    """The text of ``lines`` (each already ending in a newline) and each line's byte offset.

    Returns the concatenated UTF-8 bytes (no copy) and ``len(lines) + 1`` offsets into it.
    """
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[
        lines.offset : lines.offset + len(lines) + 1
    ].astype(np.int64)
    buffer = lines.buffers()[2]
    data = memoryview(buffer) if buffer is not None else memoryview(b"")
    return data, offsets
