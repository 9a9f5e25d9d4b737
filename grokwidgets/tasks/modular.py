"""Binary operations modulo a prime: the original grokking task of Power et al. (2022)."""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_int
from .base import Task, register_family

__all__ = ["ENCODINGS", "OPS", "modular_arithmetic"]

#: How a pair (a, b) is given to the model: token ids, or concatenated one-hot vectors.
ENCODINGS = ("tokens", "onehot")


def _add(a: Tensor, b: Tensor, p: int) -> Tensor:
    return (a + b) % p


def _sub(a: Tensor, b: Tensor, p: int) -> Tensor:
    return (a - b) % p


def _mul(a: Tensor, b: Tensor, p: int) -> Tensor:
    return (a * b) % p


def _div(a: Tensor, b: Tensor, p: int) -> Tensor:
    # b has no zeros here; Fermat's little theorem gives b^(p-2) = b^(-1) mod a prime p.
    inverse = torch.tensor([0] + [pow(v, p - 2, p) for v in range(1, p)], dtype=torch.int64)
    return (a * inverse[b]) % p


def _quad(a: Tensor, b: Tensor, p: int) -> Tensor:
    return (a * a + a * b + b * b) % p


OPS: dict[str, Callable[[Tensor, Tensor, int], Tensor]] = {
    "+": _add,
    "-": _sub,
    "*": _mul,
    "/": _div,
    "x2+xy+y2": _quad,
}
"""The supported operations by name: ``(a, b, p) -> c`` on int64 tensors."""


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


@register_family("modular_arithmetic")
def modular_arithmetic(
    p: int = 97,
    op: str = "+",
    train_fraction: float = 0.3,
    seed: int = 0,
    encoding: str = "tokens",
) -> Task:
    r"""All equations ``a op b = c (mod p)``, split at random into train and test.

    Every pair :math:`(a, b) \in \{0, \dots, p-1\}^2` is one sample (for ``"/"`` only
    :math:`b \neq 0`), with label

    .. math::

        c = a \circ b \bmod p, \qquad
        \circ \in \{+,\ -,\ \times,\ a b^{-1},\ a^2 + ab + b^2\},

    where :math:`b^{-1} = b^{p-2} \bmod p` (Fermat), so ``"/"`` needs a prime ``p``.
    A random ``round(train_fraction * n)`` of the ``n`` pairs form the training set and the
    rest the test set.

    Parameters
    ----------
    p : int
        Modulus, at least 2; prime for ``op="/"``. Also the vocabulary size and number of classes.
    op : {"+", "-", "*", "/", "x2+xy+y2"}
        The operation.
    train_fraction : float
        Fraction of all pairs used for training, strictly between 0 and 1 (both splits non-empty).
    seed : int
        Non-negative seed of the ``torch.Generator`` that draws the split.
    encoding : {"tokens", "onehot"}
        ``"tokens"``: ``x`` holds the int64 token pairs ``(a, b)``, for a model with an
        embedding. ``"onehot"``: ``x`` is ``concat(onehot(a), onehot(b))``, float32 of width
        ``2p``, the fixed input of Tian's Li₂ network σ(XW)V [2]_ (and of Gromov 2023), so the
        first layer's weights are the weights on the one-hot inputs themselves.

    Returns
    -------
    Task
        Classification task; ``y`` is the int64 class ``c``, ``n_outputs = p``. Tokens:
        ``x`` of shape ``(n, 2)``, ``input_kind="tokens"``, ``vocab_size = p``. One-hot:
        ``x`` of shape ``(n, 2p)``, ``input_kind="continuous"``, ``meta["encoding"] =
        "onehot"``.

    Raises
    ------
    ValueError
        For ``p < 2``, an unknown ``op`` (the message lists the valid ones), ``"/"`` with a
        composite ``p``, or a ``train_fraction`` that leaves a split empty.

    References
    ----------
    .. [1] Power, Burda, Edwards, Babuschkin & Misra (2022). Grokking: Generalization beyond
       overfitting on small algorithmic datasets. arXiv:2201.02177.
    .. [2] Tian (2025). Provable scaling laws of feature emergence from learning dynamics of
       grokking (Li₂). arXiv:2509.21519.
    """
    p = check_int("p", p, 2)
    seed = check_int("seed", seed, 0)
    if (
        isinstance(train_fraction, bool)
        or not isinstance(train_fraction, numbers.Real)
        or not 0.0 < train_fraction < 1.0
    ):
        msg = f"train_fraction must be a number strictly between 0 and 1, got {train_fraction!r}."
        raise ValueError(msg)
    if not isinstance(op, str) or op not in OPS:
        msg = f"Unknown op {op!r}. Valid ops: {list(OPS)}."
        raise ValueError(msg)
    if encoding not in ENCODINGS:
        msg = f"Unknown encoding {encoding!r}. Valid encodings: {list(ENCODINGS)}."
        raise ValueError(msg)
    if op == "/" and not _is_prime(p):
        msg = f"op='/' needs a prime modulus (b must have an inverse mod p), got p={p}."
        raise ValueError(msg)

    a = torch.arange(p, dtype=torch.int64).repeat_interleave(p)
    b = torch.arange(p, dtype=torch.int64).repeat(p)
    if op == "/":
        keep = b != 0
        a, b = a[keep], b[keep]
    n = int(a.numel())
    train_fraction = float(train_fraction)
    n_train = round(train_fraction * n)
    if not 0 < n_train < n:
        msg = (
            f"train_fraction={train_fraction} of the {n} pairs gives {n_train} training samples; "
            f"both splits must be non-empty, so choose a fraction in [{0.5 / n:.3g}, "
            f"{1 - 0.5 / n:.3g}] or a larger p."
        )
        raise ValueError(msg)

    y = OPS[op](a, b, p)
    onehot = encoding == "onehot"
    if onehot:
        x = torch.cat([F.one_hot(a, p), F.one_hot(b, p)], dim=1).to(torch.float32)
    else:
        x = torch.stack([a, b], dim=1)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    train, test = perm[:n_train], perm[n_train:]
    return Task(
        name=f"modular_arithmetic(p={p}, op={op!r}{', onehot' if onehot else ''})",
        kind="classification",
        x_train=x[train],
        y_train=y[train],
        x_test=x[test],
        y_test=y[test],
        n_outputs=p,
        config={
            "family": "modular_arithmetic",
            "p": p,
            "op": op,
            "train_fraction": train_fraction,
            "seed": seed,
            "encoding": encoding,
        },
        input_kind="continuous" if onehot else "tokens",
        vocab_size=None if onehot else p,
        meta={"p": p, "op": op, "encoding": encoding},
    )
