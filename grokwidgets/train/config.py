"""Runs described as JSON: build task, model and loop from a preset or a config file."""

from __future__ import annotations

import copy
import inspect
import json
import os
import tomllib
from pathlib import Path
from typing import Any

from grokwidgets import models, tasks
from grokwidgets.presets import PRESETS, get_preset
from grokwidgets.tasks.base import check_kwargs
from grokwidgets.train.loop import Run, train

_SECTIONS = ("task", "model", "train")
_TOP = ("seed", "description")


def load_config(preset_or_path: str) -> dict[str, Any]:
    """A preset by name, or a ``.json``/``.toml`` file of the same shape."""
    if preset_or_path in PRESETS:
        return get_preset(preset_or_path)
    path = Path(preset_or_path)
    if path.suffix in (".json", ".toml") and path.is_file():
        text = path.read_text()
        cfg: dict[str, Any] = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        missing = [s for s in _SECTIONS if s not in cfg]
        if missing:
            msg = f"{path} lacks the section(s) {missing}; a config has task, model and train."
            raise ValueError(msg)
        return cfg
    msg = (
        f"Unknown preset {preset_or_path!r} and no such .json/.toml config file. "
        f"Presets: {sorted(PRESETS)}."
    )
    raise ValueError(msg)


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides (``task.p=113``, ``train.lr=3e-3``, ``seed=1``, ``steps=500``).

    A key without a section is looked up among the sections' keys and must be unambiguous.
    Values are parsed as JSON when they can be (numbers, booleans, null), else kept as text.
    """
    cfg = copy.deepcopy(config)
    for item in overrides:
        if "=" not in item:
            msg = f"--set takes key=value, got {item!r}."
            raise ValueError(msg)
        key, text = item.split("=", 1)
        value = _parse_value(text)
        if "." in key:
            section, name = key.split(".", 1)
            if section not in _SECTIONS:
                msg = f"Unknown section {section!r} in {key!r}; sections: {list(_SECTIONS)}."
                raise ValueError(msg)
            cfg.setdefault(section, {})[name] = value
        elif key in _TOP:
            cfg[key] = value
        else:
            owners = [s for s in _SECTIONS if key in cfg.get(s, {})]
            if len(owners) != 1:
                where = "several sections" if owners else "no section of this config"
                msg = (
                    f"{key!r} is in {where}; write it as section.key "
                    f"(e.g. train.{key} or task.{key})."
                )
                raise ValueError(msg)
            cfg[owners[0]][key] = value
    return cfg


def _build_model(task: tasks.Task, spec: dict[str, Any]) -> Any:
    spec = dict(spec)
    cls_name = spec.pop("class", "MLP")
    cls = getattr(models, cls_name, None)
    if cls is None or cls_name not in models.__all__:
        known = [n for n in models.__all__ if n != "from_config"]
        msg = f"Unknown model class {cls_name!r}. Models: {known}."
        raise ValueError(msg)
    check_kwargs(cls.for_task, {"task": task, **spec}, what=f"model {cls_name}")
    return cls.for_task(task, **spec)


def run_config(
    config: dict[str, Any],
    dir: str | os.PathLike[str],  # noqa: A002
    *,
    overwrite: bool = False,
    progress: bool = True,
    extra_config: dict[str, Any] | None = None,
) -> Run:
    """Start the run ``config`` describes in ``dir`` (``extra_config``: see :func:`train`)."""
    task = tasks.from_config(config["task"])
    model = _build_model(task, config["model"])
    recipe = dict(config["train"])
    check_kwargs(train, recipe, what="train")
    return train(
        task,
        model,
        dir=dir,
        seed=int(config.get("seed", 0)),
        overwrite=overwrite,
        progress=progress,
        extra_config=extra_config,
        **recipe,
    )


#: ``train()`` parameters a config does not set: the run's place and how it is shown.
_NOT_RECIPE = {"task", "model", "dir", "seed", "resume", "overwrite", "progress", "live"}
_NOT_RECIPE |= {"on_event", "extra_config"}


def config_fields(config: dict[str, Any]) -> dict[str, inspect.Parameter]:
    """Every field ``config`` can set, dotted as ``--set`` writes them, with its parameter.

    ``task.*`` are the task family's parameters, ``model.*`` the model class's
    (``for_task``), ``train.*`` :func:`~grokwidgets.train.train`'s recipe, plus ``seed``. A
    parameter's ``default`` is ``inspect.Parameter.empty`` where it has none.

    Raises
    ------
    ValueError
        If the config names an unknown task family or model class.
    """
    family = config.get("task", {}).get("family")
    fns = tasks.families()
    if family not in fns:
        msg = f"Unknown task family {family!r}. Known families: {sorted(fns)}."
        raise ValueError(msg)
    cls_name = config.get("model", {}).get("class", "MLP")
    cls = getattr(models, cls_name, None)
    if cls is None or cls_name not in models.__all__:
        known = [n for n in models.__all__ if n != "from_config"]
        msg = f"Unknown model class {cls_name!r}. Models: {known}."
        raise ValueError(msg)
    out: dict[str, inspect.Parameter] = {
        "seed": inspect.Parameter("seed", inspect.Parameter.KEYWORD_ONLY, default=0)
    }
    for section, fn, skip in (
        ("task", fns[family], set()),
        ("model", cls.for_task, {"task"}),
        ("train", train, _NOT_RECIPE),
    ):
        for name, param in inspect.signature(fn).parameters.items():
            if name in skip or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                continue
            out[f"{section}.{name}"] = param
    return out
