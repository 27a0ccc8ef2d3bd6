"""Seeds for the book's experiments, shifted by ``BNLIB_SEED_OFFSET``.

Every chapter takes its seeds from :func:`seeds`, so that its claims can be checked on seeds its
author never saw: ``BNLIB_SEED_OFFSET=100`` runs the same chapter with seeds 100, 101, ... instead
of 0, 1, ... (``scripts/check-claims.sh`` does this). The default offset, 0, is the published book.
"""

from __future__ import annotations

import os

from bnlib._checks import require_int

__all__ = ["SEED_OFFSET_VARIABLE", "seed_offset", "seeds"]

SEED_OFFSET_VARIABLE = "BNLIB_SEED_OFFSET"


def seed_offset() -> int:
    """The offset read from ``BNLIB_SEED_OFFSET``: a non-negative integer, 0 when unset or empty.

    Raises:
        ValueError: the variable is set to something other than a non-negative integer.
    """
    text = os.environ.get(SEED_OFFSET_VARIABLE, "").strip()
    if not text:
        return 0
    try:
        offset = int(text)
    except ValueError:
        offset = -1
    if offset < 0:
        raise ValueError(f"{SEED_OFFSET_VARIABLE} must be a non-negative integer, got {text!r}; "
                         f"unset it (or set it to 0) for the published seeds")
    return offset


def seeds(count: int, start: int = 0) -> tuple[int, ...]:
    """``count`` consecutive seeds from ``start``, shifted by :func:`seed_offset`.

    With no offset, ``seeds(3)`` is ``(0, 1, 2)`` and ``seeds(2, start=3)`` is ``(3, 4)``; with
    ``BNLIB_SEED_OFFSET=100`` they are ``(100, 101, 102)`` and ``(103, 104)``. A single seed is
    ``seeds(1)[0]``.

    Args:
        count: how many seeds, at least 1.
        start: the first seed before the offset, at least 0. Default: ``0``.

    Raises:
        ValueError: ``count`` below 1, ``start`` below 0, or a bad ``BNLIB_SEED_OFFSET``.
    """
    for name, value, least in (("count", count, 1), ("start", start, 0)):
        require_int(name, value, least,
                    message=f"{name} must be an integer >= {least}, got {value!r}")
    first = seed_offset() + start
    return tuple(range(first, first + count))
