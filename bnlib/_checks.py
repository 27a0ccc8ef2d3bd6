"""Argument checks shared by the library, so that each rule and its message is written once."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["is_int", "is_number", "require_choice", "require_int", "require_int_type",
           "require_number"]


def is_int(value: Any) -> bool:
    """Whether ``value`` is an ``int`` and not a ``bool`` (which Python counts as an int)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """Whether ``value`` is an ``int`` or a ``float``, and not a ``bool``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def require_int(name: str, value: Any, minimum: int, why: str = "", *,
                message: str | None = None) -> None:
    """Raise ``ValueError`` unless ``value`` is an ``int`` (not a ``bool``) >= ``minimum``.

    The message is ``"{name} must be an int >= {minimum}{why}, got {value!r}"``, or ``message``
    where a caller words it its own way.
    """
    if not is_int(value) or value < minimum:
        raise ValueError(message or f"{name} must be an int >= {minimum}{why}, got {value!r}")


def require_int_type(name: str, value: Any) -> None:
    """Raise ``TypeError`` unless ``value`` is an ``int`` (not a ``bool``)."""
    if not is_int(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")


def require_number(name: str, value: Any, low: float, high: float, *,
                   low_open: bool = False) -> None:
    """Raise unless ``value`` is a real number in ``[low, high]`` (``(low, high]``).

    Raises:
        TypeError: ``value`` is not an ``int`` or ``float`` (or is a ``bool``).
        ValueError: ``value`` is not finite or lies outside the interval.
    """
    if not is_number(value):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    too_low = value <= low if low_open else value < low
    if not math.isfinite(value) or too_low or value > high:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")


def require_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``: "x must be 'a' or 'b', ..."."""
    if value not in choices:
        quoted = [repr(choice) for choice in choices]
        options = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
        raise ValueError(f"{name} must be {options}, got {value!r}")
