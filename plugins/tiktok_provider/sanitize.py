"""THE sanitiser: the one rule for what text and numbers from TikTok may be stored.

Text: NUL characters are removed (Postgres text cannot hold them) and unpaired UTF-16 surrogates
(a JSON ``"\\ud83d"`` escape whose pair was cut off; no UTF-8 text can hold them) are rejoined
where split or replaced. Integers: every integer field is a whole number within
``0..INT_BOUNDS[field]`` (:mod:`tiktok_provider.fields`) -- the strictest bounds that hold every
real value: counts fit a signed 64-bit column, sizes and durations a 32-bit one, ``create_time``
the last second Postgres and Python share; none is negative. The provider's response parsing
drops and reports a value outside them; the warehouse refuses a batch that carries one.
"""

from __future__ import annotations

import re
from typing import Any

from tiktok_provider.fields import INT32_MAX, INT64_MAX, INT_BOUNDS, MAX_TIMESTAMP

__all__ = [
    "INT32_MAX",
    "INT64_MAX",
    "INT_BOUNDS",
    "MAX_TIMESTAMP",
    "clean_int",
    "clean_text",
    "has_unpaired_surrogates",
    "int_bounds",
    "is_int_in_bounds",
    "remove_nul",
    "replace_surrogates",
]

_SURROGATE = re.compile("[\ud800-\udfff]")


def has_unpaired_surrogates(text: str) -> bool:
    """Whether ``text`` holds a UTF-16 surrogate (which no UTF-8 text can hold)."""
    return not text.isascii() and _SURROGATE.search(text) is not None


def remove_nul(text: str) -> str:
    return text.replace("\x00", "") if "\x00" in text else text


def replace_surrogates(text: str) -> str:
    """Rejoin surrogate pairs that arrived split; replace the ones that cannot be paired."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def clean_text(value: Any) -> str | None:
    """Return ``value`` as text Postgres accepts: no NUL characters, no unpaired surrogates."""
    if value is None:
        return None
    text = remove_nul(value if type(value) is str else str(value))
    return replace_surrogates(text) if has_unpaired_surrogates(text) else text


def int_bounds(field: str) -> tuple[int, int]:
    """The inclusive range a value of integer ``field`` must be within."""
    return 0, INT_BOUNDS[field]


def is_int_in_bounds(field: str, value: Any) -> bool:
    """Whether ``value`` is an integer (not a boolean) within ``field``'s bounds."""
    return type(value) is int and 0 <= value <= INT_BOUNDS[field]


_ASCII_INT = re.compile(r"\s*[+-]?[0-9]+\s*")


def clean_int(value: Any, field: str, owner: str) -> int | None:
    """Return ``value`` (an int, or a whole number as float or text) within ``field``'s bounds.

    :raises ValueError: naming ``owner`` and the field, for anything else.
    """
    if value is None:
        return None
    if type(value) is not int:
        # a whole float, or ASCII digits as text; never a bool, bytes or another script's digits
        whole_float = type(value) is float and value.is_integer()
        ascii_digits = type(value) is str and _ASCII_INT.fullmatch(value) is not None
        if not (whole_float or ascii_digits):
            raise ValueError(f"{owner}: {field} is not an integer: {value!r}")
        value = int(value)
    low, high = int_bounds(field)
    if not low <= value <= high:
        raise ValueError(f"{owner}: {field} {value} is out of range for its column ({low}..{high})")
    return value
