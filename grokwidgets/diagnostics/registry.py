"""The registry of diagnostics: name -> function(Probe) -> values per layer and metric.

A diagnostic is a function that takes a :class:`~grokwidgets.diagnostics.probe.Probe` and returns
a mapping ``metric -> value`` (a whole-model value, layer ``"model"``) or
``metric -> {layer: value}``; array variables declared with ``arrays=`` map
``variable -> {layer: 1-D array}``. Every metric it may return is declared with its
description, unit and source, so the stored Dataset can label itself.

Users add their own::

    @gw.diagnostics.register("my_margin", metrics=[MetricInfo("margin", "logit margin")])
    def my_margin(probe):
        out = probe.outputs("test")
        ...
        return {"margin": value}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from grokwidgets.diagnostics.probe import Probe

Values = Mapping[str, Any]
DiagnosticFn = Callable[["Probe"], Values]
SetupFn = Callable[["Probe"], None]


@dataclass(frozen=True)
class MetricInfo:
    """What a metric means: stored with the data so plots label themselves."""

    name: str
    description: str
    unit: str = ""
    source: str = ""

    def to_json(self) -> dict[str, str]:
        """The description/unit/source triple as stored in the Dataset."""
        return {"description": self.description, "unit": self.unit, "source": self.source}


@dataclass(frozen=True)
class Diagnostic:
    """A registered diagnostic."""

    name: str
    fn: DiagnosticFn
    metrics: tuple[MetricInfo, ...]
    arrays: Mapping[str, str] = field(default_factory=dict)  # variable -> its extra dim
    setup: SetupFn | None = None  # run once per run to keep state (e.g. initial weights)
    #: Its own default cadence, as ``Cadence.to_json()`` describes one (``None``: the
    #: monitor's default); used when the monitor is given no cadence for it.
    cadence: Mapping[str, Any] | None = None
    #: Names it declares on purpose with the same meaning (and value) as another diagnostic.
    shares: frozenset[str] = frozenset()

    def names(self) -> set[str]:
        """Every metric and array name it records."""
        return {m.name for m in self.metrics} | set(self.arrays)


#: The default cadence of the expensive mechanism families (probes, kernel, spectra, ...):
#: every step up to 10, then 10 records per decade (steps 10, 13, 16, 20, 26, 32, 40, 51,
#: 64, 80, 100, ...), a sparser log grid than the loss's (every step up to 100, then 50 per
#: decade): 38 records of each family in a 6,000-step run against 190. Override per family with
#: ``Monitor(cadence={"probes": ..., ...})`` or for all with one cadence.
MECHANISM_CADENCE: Mapping[str, Any] = {"log_per_decade": 10, "linear_until": 10}

_REGISTRY: dict[str, Diagnostic] = {}
_GROUPS: dict[str, tuple[str, ...]] = {}


def register(
    name: str,
    *,
    metrics: Iterable[MetricInfo],
    arrays: Mapping[str, str] | None = None,
    setup: SetupFn | None = None,
    cadence: Mapping[str, Any] | None = None,
    replace: bool = False,
    prefix: str = "",
    shares: Iterable[str] = (),
) -> Callable[[DiagnosticFn], DiagnosticFn]:
    """Register a diagnostic function under ``name`` (a decorator).

    Parameters
    ----------
    name : str
        The name used in ``Monitor(diagnostics=[...])``.
    metrics : iterable of MetricInfo
        Every metric the function may return.
    arrays : mapping, optional
        Array variables it may return, each with the name of its extra dimension
        (e.g. ``{"spectrum": "eig"}``).
    setup : callable, optional
        Called with the first probe of a run, before the first record, to keep state in
        ``probe.state`` (saved in checkpoints, restored on resume).
    cadence : mapping, optional
        The diagnostic's own default cadence as ``Cadence.to_json()`` describes one (e.g.
        :data:`MECHANISM_CADENCE`), for families too costly to run at every loss record.
    replace : bool
        Allow replacing an existing registration.
    prefix : str
        Prepended to every metric and array name the function returns (and to its NaN
        reasons), so a variant of a family (other options) records beside the family itself:
        ``register_infogeo("infogeo_gn", options, prefix="gn_")`` records
        ``gn_fisher_straightness`` next to ``infogeo``'s ``fisher_straightness``.
    shares : iterable of str
        Names (after ``prefix``) this diagnostic declares on purpose with the same meaning
        and value as another one (``comparative``'s ``weight_norm``, as ``weights`` records
        it). Any other name two diagnostics of one monitor both declare is refused.
    """
    infos = tuple(dataclasses.replace(m, name=prefix + m.name) for m in metrics)
    arrs = {prefix + k: v for k, v in (arrays or {}).items()}

    def deco(fn: DiagnosticFn) -> DiagnosticFn:
        if (name in _REGISTRY or name in _GROUPS) and not replace:
            msg = f"A diagnostic named {name!r} is already registered; pass replace=True."
            raise ValueError(msg)
        run = _prefixed(fn, prefix) if prefix else fn
        _REGISTRY[name] = Diagnostic(name, run, infos, arrs, setup, cadence, frozenset(shares))
        return fn

    return deco


def _prefixed(fn: DiagnosticFn, prefix: str) -> DiagnosticFn:
    """``fn`` with ``prefix`` on the names of its values and of the NaN reasons it gives."""

    def run(probe: Probe) -> Values:
        outer = probe.nan_reasons
        probe.nan_reasons = {}
        try:
            out = fn(probe)
        finally:
            mine, probe.nan_reasons = probe.nan_reasons, outer
        for metric, layers in mine.items():
            outer.setdefault(prefix + metric, {}).update(layers)
        return {prefix + k: v for k, v in out.items()}

    run.__doc__ = fn.__doc__
    return run


def register_group(name: str, members: Iterable[str]) -> None:
    """Register ``name`` as shorthand for several diagnostics (e.g. ``"basic"``)."""
    _GROUPS[name] = tuple(members)


def available() -> list[str]:
    """Names of registered diagnostics and groups."""
    return sorted([*_REGISTRY, *_GROUPS])


def resolve(names: Iterable[str]) -> list[Diagnostic]:
    """Expand groups and look up diagnostics, in order, without duplicates."""
    out: list[Diagnostic] = []
    seen: set[str] = set()
    for name in names:
        members = _GROUPS.get(name, (name,))
        for member in members:
            if member not in _REGISTRY:
                msg = f"Unknown diagnostic {member!r}. Available: {available()}."
                raise ValueError(msg)
            if member not in seen:
                seen.add(member)
                out.append(_REGISTRY[member])
    return out


def check_names(diagnostics: Iterable[Diagnostic]) -> None:
    """Refuse two diagnostics of one run that would write the same metric or array.

    Raises
    ------
    ValueError
        Naming both and the metric, unless one of them declares it in ``shares``.
    """
    owner: dict[str, Diagnostic] = {}
    for d in diagnostics:
        for n in sorted(d.names()):
            first = owner.setdefault(n, d)
            if first is not d and n not in d.shares and n not in first.shares:
                msg = (
                    f"Diagnostics {first.name!r} and {d.name!r} both record {n!r}: one would "
                    f"overwrite the other. Register the variant with a prefix (e.g. "
                    f"register_...({d.name!r}, ..., prefix='{d.name}_')) to record both."
                )
                raise ValueError(msg)


def metric_info(diagnostics: Iterable[Diagnostic]) -> dict[str, dict[str, str]]:
    """Description/unit/source of every metric the diagnostics declare."""
    return {m.name: m.to_json() for d in diagnostics for m in d.metrics}


def all_metric_names() -> list[str]:
    """Every metric name any registered diagnostic declares."""
    return sorted({m.name for d in _REGISTRY.values() for m in d.metrics})
