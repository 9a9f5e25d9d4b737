"""When to record: linear early, log-spaced later, or any union of rules.

Grokking spans 10² to 10⁷ steps. The default records every step up to 100, then about 50
records per decade, so a 10⁷-step run holds about 350 records and still shows every phase.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class Cadence:
    """A set of steps at which something is due.

    Subclasses implement :meth:`next_due`; :meth:`due` and unions (``a | b``) follow from it.
    """

    def next_due(self, step: int) -> int | None:
        """Smallest due step ``>= step``, or ``None`` when nothing is due any more."""
        raise NotImplementedError

    def due(self, step: int) -> bool:
        """Whether ``step`` is due."""
        return self.next_due(step) == step

    def steps(self, stop: int) -> list[int]:
        """All due steps in ``[0, stop]``."""
        out: list[int] = []
        s = self.next_due(0)
        while s is not None and s <= stop:
            out.append(s)
            s = self.next_due(s + 1)
        return out

    def __or__(self, other: Cadence) -> Cadence:
        return Union((self, other))

    def to_json(self) -> dict[str, Any]:
        """JSON-able description (stored in ``run.json``)."""
        raise NotImplementedError

    @staticmethod
    def default() -> Cadence:
        """Every step up to 100, then 50 records per decade."""
        return LogSpaced(per_decade=50, linear_until=100)


@dataclass(frozen=True)
class Every(Cadence):
    """Every ``n`` steps, starting at ``start``."""

    n: int
    start: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            msg = f"Every(n) needs n >= 1, got {self.n}."
            raise ValueError(msg)

    def next_due(self, step: int) -> int | None:  # noqa: D102
        if step <= self.start:
            return self.start
        return self.start + -(-(step - self.start) // self.n) * self.n

    def to_json(self) -> dict[str, Any]:  # noqa: D102
        return {"every": self.n, "start": self.start}


@dataclass(frozen=True)
class LogSpaced(Cadence):
    r"""Every step up to ``linear_until``, then ``per_decade`` log-spaced steps per decade.

    The due steps above ``linear_until`` are :math:`\lceil 10^{k/\text{per\_decade}} \rceil`
    for integer :math:`k`, so there are ``per_decade`` of them in each decade once the decade
    is wide enough to hold that many distinct integers.
    """

    per_decade: int = 50
    linear_until: int = 100

    def __post_init__(self) -> None:
        if self.per_decade < 1:
            msg = f"LogSpaced needs per_decade >= 1, got {self.per_decade}."
            raise ValueError(msg)

    def _threshold(self, k: int) -> int:
        return math.ceil(10 ** (k / self.per_decade) - 1e-9)

    def next_due(self, step: int) -> int | None:  # noqa: D102
        step = max(step, 0)
        if step <= self.linear_until:
            return step
        k = max(math.floor(self.per_decade * math.log10(step)) - 1, 0)
        while self._threshold(k) < step:
            k += 1
        return self._threshold(k)

    def to_json(self) -> dict[str, Any]:  # noqa: D102
        return {"log_per_decade": self.per_decade, "linear_until": self.linear_until}


@dataclass(frozen=True)
class At(Cadence):
    """Exactly the given steps."""

    at: tuple[int, ...]

    def next_due(self, step: int) -> int | None:  # noqa: D102
        later = [s for s in self.at if s >= step]
        return min(later) if later else None

    def to_json(self) -> dict[str, Any]:  # noqa: D102
        return {"at": sorted(self.at)}


@dataclass(frozen=True)
class Union(Cadence):
    """Due when any of ``parts`` is due."""

    parts: tuple[Cadence, ...]

    def next_due(self, step: int) -> int | None:  # noqa: D102
        nexts = [n for n in (p.next_due(step) for p in self.parts) if n is not None]
        return min(nexts) if nexts else None

    def to_json(self) -> dict[str, Any]:  # noqa: D102
        return {"union": [p.to_json() for p in self.parts]}


def cadence_from_json(obj: dict[str, Any]) -> Cadence:
    """Inverse of :meth:`Cadence.to_json`."""
    if "every" in obj:
        return Every(int(obj["every"]), int(obj.get("start", 0)))
    if "log_per_decade" in obj:
        return LogSpaced(int(obj["log_per_decade"]), int(obj["linear_until"]))
    if "at" in obj:
        return At(tuple(int(s) for s in obj["at"]))
    if "union" in obj:
        return Union(tuple(cadence_from_json(p) for p in obj["union"]))
    msg = f"Not a cadence description: {obj!r}."
    raise ValueError(msg)


def as_cadence(
    value: Cadence | int | Mapping[str, Any] | None, default: Cadence | None = None
) -> Cadence:
    """Accept a :class:`Cadence`, an int, ``None`` or a cadence's JSON form.

    An int means every ``n`` steps, ``None`` the ``default``; the JSON form is what
    :meth:`Cadence.to_json` writes (``{"log_per_decade": 20, "linear_until": 10}``), which is
    how a config file or a sweep's overrides give a cadence.
    """
    if value is None:
        return default if default is not None else Cadence.default()
    if isinstance(value, Cadence):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Every(value)
    if isinstance(value, Mapping):
        return cadence_from_json(dict(value))
    msg = (
        "A cadence must be a Cadence, an int (every n steps), its JSON form "
        "({'log_per_decade': 20, 'linear_until': 10}, {'every': 100}, ...) or None, "
        f"got {value!r}."
    )
    raise TypeError(msg)
