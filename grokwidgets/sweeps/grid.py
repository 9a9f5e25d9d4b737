"""A sweep's plan: the base config, the grid keys resolved and checked, one config per point.

Grid keys and overrides use the names of ``--set``: ``train.weight_decay``, ``model.alpha``,
``task.p``, or a short name (``weight_decay``) that names one field of the config. Each value
is checked against the field's type before anything runs.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grokwidgets.train.config import apply_overrides, config_fields, load_config

__all__ = ["Point", "SweepPlan", "plan_sweep", "resolve_key"]

_SAFE = re.compile(r"[^A-Za-z0-9._+\-]")


@dataclass(frozen=True)
class Point:
    """One run of a sweep.

    Attributes
    ----------
    name : str
        Its run directory's name under the sweep's: ``weight_decay=0.1,seed=0``.
    coords : dict
        Its value along each sweep dim (``{"weight_decay": 0.1, "seed": 0}``).
    config : dict
        The whole config of its run (base config, overrides, seed and grid values applied).
    """

    name: str
    coords: dict[str, Any]
    config: dict[str, Any]


@dataclass(frozen=True)
class SweepPlan:
    """What :func:`~grokwidgets.sweeps.sweep` runs.

    Attributes
    ----------
    source : str
        The preset name or config file, or ``"<config>"`` for a config given as a dict.
    base : dict
        The config every point starts from (overrides applied).
    keys : dict
        Sweep dim → the config field it sets (``"weight_decay"`` → ``"train.weight_decay"``;
        ``"seed"`` → ``"seed"``).
    grid : dict
        Config field → its values, in the order given.
    seeds : list of int or None
    overrides : dict
        Config field → value, applied to every point.
    points : list of Point
    """

    source: str
    base: dict[str, Any]
    keys: dict[str, str]
    grid: dict[str, list[Any]]
    seeds: list[int] | None
    overrides: dict[str, Any]
    points: list[Point] = field(default_factory=list)

    @property
    def dims(self) -> list[str]:
        """The sweep dims, in order (grid keys, then ``seed``)."""
        return list(self.keys)


def resolve_key(key: str, fields: Mapping[str, inspect.Parameter]) -> str:
    """The config field ``key`` names (dotted, or a short name matching exactly one field)."""
    if key in fields:
        return key
    if "." not in key:
        owners = [f for f in fields if f.rsplit(".", 1)[-1] == key]
        if len(owners) == 1:
            return owners[0]
        if owners:
            msg = f"{key!r} names several config fields ({owners}); write one of them in full."
            raise ValueError(msg)
    msg = f"{key!r} is not a field of this config. Valid fields: {sorted(fields)}."
    raise ValueError(msg)


def _value_of(config: dict[str, Any], key: str) -> Any:
    if "." not in key:
        return config.get(key, inspect.Parameter.empty)
    section, name = key.split(".", 1)
    return config.get(section, {}).get(name, inspect.Parameter.empty)


def _allowed(annotation: Any) -> set[str] | None:
    """Basic type names an annotation admits (``"int | None"`` → {"int", "None"})."""
    if annotation is inspect.Parameter.empty:
        return None
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    if not text or "Any" in text:
        return None
    names = set(re.findall(r"\b(int|float|str|bool|None|Literal|list|tuple|dict|Mapping)\b", text))
    if "Literal" in names:
        names |= {"str"}
    if "Mapping" in names:
        names |= {"dict"}
    return names or None


def check_value(key: str, value: Any, param: inspect.Parameter, current: Any) -> None:
    """Raise a ``ValueError`` if ``value`` is not of the type field ``key`` takes."""
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        msg = f"{key}={value!r}: a sweep's values are recorded in JSON (numbers, text, lists)."
        raise ValueError(msg) from None
    reference = current if current is not inspect.Parameter.empty else param.default
    if reference is not inspect.Parameter.empty and reference is not None:
        if isinstance(reference, bool):
            ok = isinstance(value, bool)
        elif isinstance(reference, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
            ok = ok or (isinstance(value, float) and _allowed(param.annotation) == {"float"})
        elif isinstance(reference, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif isinstance(reference, str):
            ok = isinstance(value, str)
        elif isinstance(reference, (list, tuple)):
            ok = isinstance(value, (list, tuple))
        elif isinstance(reference, dict):
            ok = isinstance(value, dict)
        else:
            ok = True
        if not ok:
            msg = (
                f"{key}={value!r}: this field takes a {type(reference).__name__} "
                f"(it is {reference!r} in the config), not a {type(value).__name__}."
            )
            raise ValueError(msg)
        return
    allowed = _allowed(param.annotation)
    if allowed is None or value is None and "None" in allowed:
        return
    kinds = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "str": isinstance(value, str),
        "list": isinstance(value, (list, tuple)),
        "tuple": isinstance(value, (list, tuple)),
        "dict": isinstance(value, dict),
    }
    if not any(kinds.get(a, False) for a in allowed):
        msg = f"{key}={value!r}: this field takes {param.annotation}, not a {type(value).__name__}."
        raise ValueError(msg)


def _set(config: dict[str, Any], key: str, value: Any) -> None:
    if "." not in key:
        config[key] = value
        return
    section, name = key.split(".", 1)
    config.setdefault(section, {})[name] = copy.deepcopy(value)


def _name_part(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, float) and math.isfinite(value):
        text = repr(value)
    else:
        text = json.dumps(value, separators=(",", ":"))
    return _SAFE.sub("_", text) or "_"


def _load(preset_or_config: str | os.PathLike[str] | Mapping[str, Any]) -> tuple[str, dict]:
    if isinstance(preset_or_config, Mapping):
        cfg = copy.deepcopy(dict(preset_or_config))
        missing = [s for s in ("task", "model", "train") if s not in cfg]
        if missing:
            msg = f"The config lacks the section(s) {missing}; a config has task, model and train."
            raise ValueError(msg)
        return "<config>", cfg
    text = os.fspath(preset_or_config)
    return (str(Path(text).resolve()) if Path(text).is_file() else text), load_config(text)


def plan_sweep(
    preset_or_config: str | os.PathLike[str] | Mapping[str, Any],
    grid: Mapping[str, Sequence[Any]] | None = None,
    seeds: Sequence[int] | None = None,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
) -> SweepPlan:
    """Resolve and check a sweep's grid; one :class:`Point` per grid point × seed.

    ``seeds`` sets each run's ``seed`` (batch order) and the ``seed`` of the task (its
    train/test split) and of the model (its init), except where ``overrides`` or the grid
    set those themselves (``overrides={"task.seed": 0}`` keeps one split for every seed).

    Raises
    ------
    ValueError
        An empty grid (no values and no seeds), a key that is not a config field (the
        message lists the valid ones), a value of the wrong type, values repeated.
    """
    source, cfg = _load(preset_or_config)
    fields = config_fields(cfg)
    grid = dict(grid or {})
    if not any(grid.values()) and not seeds:
        msg = "The grid is empty: give grid={'train.weight_decay': [...], ...} and/or seeds=[...]."
        raise ValueError(msg)
    # overrides: --set strings or a mapping
    if isinstance(overrides, Mapping):
        items = list(overrides.items())
    else:
        items = []
        for text in overrides or []:
            if "=" not in text:
                msg = f"An override is key=value (as --set), got {text!r}."
                raise ValueError(msg)
            key, raw = text.split("=", 1)
            items.append((key, apply_overrides({}, [f"seed={raw}"])["seed"]))
    fixed: dict[str, Any] = {}
    for key, value in items:
        full = resolve_key(str(key), fields)
        check_value(full, value, fields[full], _value_of(cfg, full))
        _set(cfg, full, value)
        fixed[full] = value
    # the grid
    resolved: dict[str, list[Any]] = {}
    for key, values in grid.items():
        full = resolve_key(str(key), fields)
        if full == "seed":
            msg = "Sweep seeds with seeds=[...], not as a grid key."
            raise ValueError(msg)
        if full in resolved:
            msg = f"{key!r} and another grid key both name {full}."
            raise ValueError(msg)
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            msg = f"grid[{key!r}] must be a list of values, got {values!r}."
            raise ValueError(msg)
        if not values:
            msg = f"grid[{key!r}] is empty: give at least one value."
            raise ValueError(msg)
        for v in values:
            check_value(full, v, fields[full], _value_of(cfg, full))
        texts = [json.dumps(v, sort_keys=True) for v in values]
        if len(set(texts)) != len(texts):
            msg = f"grid[{key!r}] repeats a value: {list(values)}."
            raise ValueError(msg)
        resolved[full] = list(values)
    seed_list = None
    if seeds is not None:
        seed_list = list(seeds)
        if not seed_list or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in seed_list
        ):
            msg = f"seeds must be a non-empty list of ints, got {seeds!r}."
            raise ValueError(msg)
        if len(set(seed_list)) != len(seed_list):
            msg = f"seeds repeats a value: {seed_list}."
            raise ValueError(msg)
    # dim names: the short name unless two keys share it
    shorts = [k.rsplit(".", 1)[-1] for k in resolved]
    keys = {
        (s if shorts.count(s) == 1 and s != "seed" else k): k
        for s, k in zip(shorts, resolved, strict=True)
    }
    if seed_list is not None:
        keys["seed"] = "seed"
    axes = [resolved[k] for k in keys.values() if k != "seed"]
    if seed_list is not None:
        axes.append(seed_list)
    points = []
    names: dict[str, dict[str, Any]] = {}
    for values in itertools.product(*axes):
        coords = dict(zip(keys, values, strict=True))
        point_cfg = copy.deepcopy(cfg)
        for dim, key in keys.items():
            if key == "seed":
                _seed_all(point_cfg, coords[dim], fields, set(fixed) | set(resolved))
            else:
                _set(point_cfg, key, coords[dim])
        name = ",".join(f"{d}={_name_part(v)}" for d, v in coords.items())
        if name in names:
            msg = f"The points {names[name]} and {coords} would share the directory {name!r}."
            raise ValueError(msg)
        names[name] = coords
        points.append(Point(name=name, coords=coords, config=point_cfg))
    return SweepPlan(
        source=source,
        base=cfg,
        keys=keys,
        grid=resolved,
        seeds=seed_list,
        overrides=fixed,
        points=points,
    )


def _seed_all(
    config: dict[str, Any], seed: int, fields: Mapping[str, Any], fixed: set[str]
) -> None:
    config["seed"] = seed
    for section in ("task", "model"):
        key = f"{section}.seed"
        if key in fields and key not in fixed:
            config.setdefault(section, {})["seed"] = seed
