"""Argument checks the task families share."""

from __future__ import annotations

import operator

__all__ = ["check_int"]


def check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]`` (no upper bound by default), else a ValueError.

    Accepts anything with ``__index__`` (ints, NumPy integers) but not ``bool``; the message
    names the argument and its range: ``"n must be an integer >= 1, got 0."``.
    """
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        number = None
    above = high is not None and number is not None and number > high
    if isinstance(value, bool) or number is None or number < low or above:
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        msg = f"{name} must be an integer {bound}, got {value!r}."
        raise ValueError(msg)
    return int(number)
