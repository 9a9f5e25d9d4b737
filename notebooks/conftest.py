"""The notebooks' smoke runs (``make test``): a notebook whose data is missing is skipped.

A notebook names the data it needs in its metadata, ``"grokwidgets": {"needs": ["mnist"]}``.
MNIST is looked for offline, where :func:`grokwidgets.tasks.mnist.fetch_mnist` looks (``path``
aside: ``GROKWIDGETS_DATA``, the user cache, ``../shared/data``). When it is nowhere, the
notebook's cells are skipped with the reason and the one command that fetches the file, as
the MNIST unit tests skip: a clone without the shared data and without network still tests
everything else, and never reports a data problem as a broken notebook.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest


@functools.cache
def _needs(notebook: Path) -> tuple[str, ...]:
    meta = json.loads(notebook.read_text()).get("metadata", {}).get("grokwidgets", {})
    return tuple(meta.get("needs", ()))


@functools.cache
def _missing(data: str) -> str:
    """Why ``data`` cannot be had offline, or ``""`` when it can."""
    if data != "mnist":
        return f"unknown data {data!r} in the notebook's metadata"
    from grokwidgets.tasks.mnist import ChecksumError, fetch_mnist

    try:
        fetch_mnist(download=False)
    except (FileNotFoundError, ChecksumError) as err:
        first = str(err).split(". ")[0]
        return (
            f"MNIST is not on this machine ({first}); fetch it once with "
            "`python -c 'from grokwidgets.tasks.mnist import fetch_mnist; fetch_mnist()'`"
        )
    return ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every cell of a notebook whose data is missing as skipped, with the reason."""
    for item in items:
        path = Path(str(item.path))
        if path.suffix != ".ipynb":
            continue
        reasons = [r for r in (_missing(d) for d in _needs(path)) if r]
        if reasons:
            item.add_marker(pytest.mark.skip(reason="; ".join(reasons)))
