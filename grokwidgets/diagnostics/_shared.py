"""Small helpers the diagnostic families share: eval mode, input checks, seeded row subsets."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["all_finite", "eval_mode", "finite_float64", "sample_matrix", "seeded_subset"]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block; restore its train/eval mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def sample_matrix(
    x: Tensor | np.ndarray, name: str, *, min_rows: int = 0, why_finite: str = ""
) -> Tensor:
    """``x`` as a finite float64 CPU ``(samples, features)`` matrix, or a ValueError saying why.

    Parameters
    ----------
    x : Tensor or ndarray
    name : str
        What ``x`` is, for the error messages.
    min_rows : int
        Fewest rows accepted (the message says so when above 1).
    why_finite : str
        Appended to the message about NaN or infinite values (e.g. "; a probe needs ...").
    """
    t = torch.as_tensor(x)
    if t.ndim != 2 or t.shape[0] < min_rows:
        rows = f" with at least {min_rows} rows" if min_rows > 1 else ""
        msg = f"{name} must be 2-D (samples, features){rows}, got shape {tuple(t.shape)}."
        raise ValueError(msg)
    return finite_float64(t, name, why_finite)


def all_finite(t: Tensor) -> bool:
    """Whether every entry of ``t`` is finite (no NaN, no inf).

    A finite sum means every entry is finite (a NaN or inf would propagate), and one reduction
    is ~15x cheaper than ``isfinite().all()``; only an overflowing sum needs the latter.
    """
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def finite_float64(x: Tensor | np.ndarray, name: str, why_finite: str = "") -> Tensor:
    """``x`` as a float64 CPU tensor, or a ValueError if it holds NaN or infinite values."""
    t = torch.as_tensor(x).detach().to("cpu", torch.float64)
    if not all_finite(t):
        msg = f"{name} holds NaN or infinite values{why_finite}."
        raise ValueError(msg)
    return t


def seeded_subset(n: int, k: int, seed: int) -> Tensor:
    """The first ``k`` indices (all ``n`` when ``k >= n``) of a seeded permutation of ``range(n)``.

    ``torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k]``, int64, in permuted
    order: any prefix is itself a uniform random subset, and the same ``(n, k, seed)`` always
    gives the same indices (at every record, after a resume).
    """
    return _permutation(int(n), int(seed))[: min(int(k), int(n))].clone()


@functools.lru_cache(maxsize=32)
def _permutation(n: int, seed: int) -> Tensor:
    # Families ask for the same rows at every record: one randperm per (n, seed), not per
    # call (~0.2 ms each at n = 10,000). Callers get clones, so this one is never changed.
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randperm(n, generator=gen)
