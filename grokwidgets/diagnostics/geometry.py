r"""Representation geometry per layer: dimension, class separation, CKA and RSA (paper 1).

The diagnostic ``geometry`` reads every layer's representation (layers and names as in
:mod:`grokwidgets.diagnostics._features`) of the first ``n_rows`` (default 1,024) rows of the
fixed *test* row subset, so it measures how held-out inputs are represented, on the same rows at
every record. :math:`X \in \mathbb R^{n \times d}` is that representation, :math:`X_c` its
column-centred version, :math:`\sigma_i` the singular values of :math:`X_c` and
:math:`\lambda_i = \sigma_i^2 / (n - 1)` the eigenvalues of its covariance.

.. math::

    \text{effective\_rank} = \exp\Big(-\sum_i p_i \log p_i\Big),\;
    p_i = \frac{\sigma_i}{\sum_j \sigma_j}
    \qquad \text{(Roy \& Vetterli [1]_, of the centred features)}

    \text{participation\_ratio} = \frac{(\sum_i \lambda_i)^2}{\sum_i \lambda_i^2}
    \qquad \text{(Gao et al. [2]_)}

    \text{class\_separation} = \frac{\operatorname{tr} S_B}{\operatorname{tr} S_W}
    = \frac{\sum_c n_c \|\mu_c - \mu\|^2}{\sum_i \|x_i - \mu_{y_i}\|^2}
    \qquad \text{(Fisher's criterion in trace form [3]_)}

    \text{CKA}(X, Y) = \frac{\|Y_c^\top X_c\|_F^2}{\|X_c^\top X_c\|_F\,\|Y_c^\top Y_c\|_F}
    \qquad \text{(linear CKA, Kornblith et al. [4]_)}

``cka_init`` compares the layer with itself on the same rows when the monitor started (its
setup), ``cka_prev`` with the previous record of this diagnostic; both representations are
kept in ``probe.state`` (``geometry.init.<layer>``, ``geometry.prev.<layer>``, in the model's
dtype), so they are saved in checkpoints and a resumed run continues exactly.

``rsa`` is representational similarity analysis [5]_ against the *labels*: the Spearman
correlation between the upper triangles of the representation's dissimilarity matrix
:math:`D_{ij} = \|x_i - x_j\|_2` (Euclidean) and the label dissimilarity matrix
:math:`L_{ij} = \mathbb 1[y_i \ne y_j]` (classification) or :math:`\|y_i - y_j\|_2`
(regression), over the first ``n_rsa`` (default 512) rows; ties get average ranks. It is high
when same-label inputs lie closer together than different-label ones.

Variants with other sizes: :func:`register_geometry`.

References
----------
.. [1] Roy & Vetterli (2007), "The effective rank: a measure of effective dimensionality",
   EUSIPCO 2007.
.. [2] Gao, Trautmann, Yu, Santhanam, Ryu, Shenoy & Ganguli (2017), "A theory of multineuronal
   dimensionality, dynamics and measurement", bioRxiv doi:10.1101/214262.
.. [3] Fisher (1936), "The use of multiple measurements in taxonomic problems", Annals of
   Eugenics 7(2); trace form as in Chou et al. (2026), arXiv:2605.27078.
.. [4] Kornblith, Norouzi, Lee & Hinton (2019), "Similarity of neural network representations
   revisited", ICML 2019, arXiv:1905.00414.
.. [5] Kriegeskorte, Mur & Bandettini (2008), "Representational similarity analysis",
   Front. Syst. Neurosci., doi:10.3389/neuro.06.004.2008.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from grokwidgets.diagnostics._features import (
    Capture,
    RowSubsets,
    capture,
    fill_aliases,
    representation_points,
)
from grokwidgets.diagnostics._shared import sample_matrix
from grokwidgets.diagnostics.probe import Probe
from grokwidgets.diagnostics.registry import (
    MECHANISM_CADENCE,
    DiagnosticFn,
    MetricInfo,
    SetupFn,
    register,
)

__all__ = [
    "class_separation",
    "effective_rank",
    "linear_cka",
    "participation_ratio",
    "register_geometry",
    "rsa",
    "spearman",
]

ArrayLike = Tensor | np.ndarray

_ROY = "Roy & Vetterli (2007) The effective rank, EUSIPCO"
_GAO = "Gao et al. (2017) multineuronal dimensionality, bioRxiv doi:10.1101/214262"
_FISHER = "Fisher (1936); Chou et al. (2026) arXiv:2605.27078"
_KORNBLITH = "Kornblith et al. (2019) Similarity of representations revisited, arXiv:1905.00414"
_KRIEGESKORTE = "Kriegeskorte et al. (2008) RSA, doi:10.3389/neuro.06.004.2008"


def _centred_singular_values(x: Tensor) -> Tensor:
    xc = x - x.mean(dim=0)
    return _gram_singular_values(_small_gram(xc))


def _small_gram(xc: Tensor) -> Tensor:
    """``X_cᵀX_c`` or ``X_cX_cᵀ``, whichever is smaller."""
    n, d = xc.shape
    return xc.T @ xc if d <= n else xc @ xc.T


def _gram_singular_values(gram: Tensor) -> Tensor:
    r"""Singular values of :math:`X_c`, descending, from the eigenvalues of its smaller Gram.

    :math:`\sigma_i^2` are the eigenvalues of :math:`X_c^\top X_c`. In float64 a ``d × d``
    Gram and its eigenvalues cost 3.5× less than an SVD of the ``n × d`` matrix (2.6 ms
    against 9.2 ms at 1,024 × 256). The price is resolution: an eigenvalue carries an error of
    about :math:`\varepsilon\lambda_{\max}`, so singular values below
    :math:`\sqrt{\varepsilon}\,\sigma_{\max} \approx 1.5\cdot10^{-8}\sigma_{\max}` are not
    resolved; eigenvalues up to :math:`\varepsilon\lambda_{\max}` count as zero (an exact
    rank deficiency, which an SVD reports as :math:`\sigma \approx \varepsilon\sigma_{\max}`).
    Against an SVD this moves ``effective_rank`` by at most ~3e-7 relative where measured:
    1e-15 on exactly rank-deficient features, 3e-8 on the demo run's layers, 3e-7 on a
    spectrum graded down to :math:`10^{-9}\sigma_{\max}` (tested); the participation ratio,
    a ratio of sums of :math:`\sigma^4`, is unaffected.
    """
    ev = torch.linalg.eigvalsh(gram).flip(0)
    if ev.numel() == 0:
        return ev
    tol = float(ev[0]) * torch.finfo(ev.dtype).eps
    return torch.where(ev > tol, ev, torch.zeros_like(ev)).sqrt()


def effective_rank(x: ArrayLike) -> float:
    r"""Effective rank of the column-centred ``(n, d)`` matrix ``x`` (Roy & Vetterli 2007).

    .. math::

        \exp\Big(-\sum_i p_i \log p_i\Big), \qquad p_i = \sigma_i / \textstyle\sum_j \sigma_j,

    with :math:`\sigma_i` the singular values of the centred matrix; between 1 and
    :math:`\min(n - 1, d)`. NaN for a constant matrix (all singular values zero).

    References
    ----------
    .. [1] Roy & Vetterli (2007), "The effective rank: a measure of effective dimensionality",
       EUSIPCO 2007.
    """
    return _erank(_centred_singular_values(sample_matrix(x, "x")))


def _erank(s: Tensor) -> float:
    total = float(s.sum())
    if not total > 0:
        return math.nan
    p = s / total
    p = p[p > 0]
    return math.exp(float(-(p * p.log()).sum()))


def participation_ratio(x: ArrayLike) -> float:
    r"""Participation ratio of the covariance of the ``(n, d)`` samples ``x``.

    .. math:: \frac{(\sum_i \lambda_i)^2}{\sum_i \lambda_i^2},

    :math:`\lambda_i` the eigenvalues of the sample covariance; ``d`` for an isotropic
    covariance, 1 for rank one. NaN for a constant matrix.

    References
    ----------
    .. [1] Gao et al. (2017), bioRxiv doi:10.1101/214262.
    """
    return _pr(_centred_singular_values(sample_matrix(x, "x")))


def _pr(s: Tensor) -> float:
    lam = s.square()
    den = float(lam.square().sum())
    if not den > 0:
        return math.nan
    return float(lam.sum()) ** 2 / den


def class_separation(x: ArrayLike, y: ArrayLike) -> float:
    r"""Between- over within-class variance, in trace form.

    .. math::

        \frac{\operatorname{tr} S_B}{\operatorname{tr} S_W}
        = \frac{\sum_c n_c \|\mu_c - \mu\|^2}{\sum_i \|x_i - \mu_{y_i}\|^2}

    over the classes present in ``y``. NaN with fewer than two classes or no within-class
    variance.

    References
    ----------
    .. [1] Fisher (1936), Annals of Eugenics 7(2).
    """
    return _separation(sample_matrix(x, "x"), torch.as_tensor(y).detach().cpu().long())[0]


def _separation(x: Tensor, y: Tensor) -> tuple[float, str]:
    """(value, reason if NaN)."""
    classes, inverse, counts = torch.unique(y, return_inverse=True, return_counts=True)
    if len(classes) < 2:
        return math.nan, "fewer than two classes among the rows"
    sums = torch.zeros(len(classes), x.shape[1], dtype=x.dtype).index_add_(0, inverse, x)
    means = sums / counts.unsqueeze(1).to(x.dtype)
    grand = x.mean(dim=0)
    between = float((counts.to(x.dtype) * (means - grand).square().sum(dim=1)).sum())
    within = float((x - means[inverse]).square().sum())
    if not within > 0:
        return math.nan, "no within-class variance (every class collapsed to a point)"
    return between / within, ""


def linear_cka(x: ArrayLike, y: ArrayLike) -> float:
    r"""Linear centred kernel alignment between two representations of the same rows.

    .. math::

        \text{CKA}(X, Y) = \frac{\|Y_c^\top X_c\|_F^2}{\|X_c^\top X_c\|_F\,\|Y_c^\top Y_c\|_F}
        = \frac{\text{HSIC}(K, L)}{\sqrt{\text{HSIC}(K, K)\,\text{HSIC}(L, L)}},
        \quad K = XX^\top,\ L = YY^\top.

    Invariant to orthogonal transforms and isotropic scaling of either side; 1 for identical
    representations. NaN when either is constant.

    References
    ----------
    .. [1] Kornblith, Norouzi, Lee & Hinton (2019), arXiv:1905.00414.
    """
    a, b = sample_matrix(x, "x"), sample_matrix(y, "y")
    if a.shape[0] != b.shape[0]:
        msg = f"x and y must have the same rows, got {a.shape[0]} and {b.shape[0]}."
        raise ValueError(msg)
    return _cka(a - a.mean(dim=0), b - b.mean(dim=0))


def _self_norm(xc: Tensor) -> float:
    """Frobenius norm of the centred features' covariance Gram, via the smaller Gram."""
    return float(torch.linalg.matrix_norm(_small_gram(xc)))


def _cka(xc: Tensor, yc: Tensor, x_norm: float | None = None, y_norm: float | None = None) -> float:
    """Linear CKA of centred features; ``x_norm``/``y_norm``: their :func:`_self_norm` if known."""
    n = xc.shape[0]
    if xc.shape[1] * yc.shape[1] <= n * n:
        cross = float(torch.linalg.matrix_norm(yc.T @ xc)) ** 2
    else:
        cross = float(((xc @ xc.T) * (yc @ yc.T)).sum())
    den = (x_norm if x_norm is not None else _self_norm(xc)) * (
        y_norm if y_norm is not None else _self_norm(yc)
    )
    if not den > 0:
        return math.nan
    return cross / den


def _rankdata(v: Tensor) -> Tensor:
    """Ranks 1..n of a 1-D tensor, ties sharing their average rank.

    Sorted with NumPy: its vectorized sort is ~6x faster than ``torch.argsort`` on the
    130,816 dissimilarities of ``rsa`` (0.4-1.3 ms against 8-9 ms on 2 cores); the ranks are
    the same numbers.
    """
    a = v.detach().cpu().numpy()
    order = np.argsort(a)  # tie order is irrelevant: ties share their average rank
    sorted_a = a[order]
    # Tie groups: the start of each run of equal values in the sorted order.
    starts = np.flatnonzero(np.r_[True, sorted_a[1:] != sorted_a[:-1]])
    counts = np.diff(np.r_[starts, a.size])
    avg = starts + (counts + 1) / 2.0  # average of the 1-based ranks in each tie group
    ranks = np.empty(a.size, dtype=np.float64)
    ranks[order] = np.repeat(avg, counts)
    return torch.from_numpy(ranks)


def _pearson(a: Tensor, b: Tensor) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = float(torch.linalg.vector_norm(a) * torch.linalg.vector_norm(b))
    if not den > 0:
        return math.nan
    return float((a * b).sum()) / den


def spearman(a: ArrayLike, b: ArrayLike) -> float:
    """Spearman rank correlation of two 1-D arrays (average ranks for ties); NaN if constant."""
    ta = torch.as_tensor(a).detach().to("cpu", torch.float64).reshape(-1)
    tb = torch.as_tensor(b).detach().to("cpu", torch.float64).reshape(-1)
    if ta.shape != tb.shape:
        msg = f"a and b must have the same length, got {ta.numel()} and {tb.numel()}."
        raise ValueError(msg)
    return _pearson(_rankdata(ta), _rankdata(tb))


def _label_rdm(y: Tensor) -> Tensor:
    if y.is_floating_point():
        t = y.to(torch.float64).reshape(len(y), -1)
        return torch.cdist(t, t)
    return (y.reshape(-1, 1) != y.reshape(1, -1)).to(torch.float64)


def rsa(x: ArrayLike, y: ArrayLike) -> float:
    r"""Spearman correlation between the representation's and the labels' dissimilarities.

    .. math::

        \rho_S\big(\{\|x_i - x_j\|_2\}_{i<j},\ \{L_{ij}\}_{i<j}\big), \qquad
        L_{ij} = \mathbb 1[y_i \ne y_j] \text{ (class ids) or } \|y_i - y_j\|_2 \text{ (floats)}.

    NaN when either dissimilarity matrix is constant (one class, identical rows).

    References
    ----------
    .. [1] Kriegeskorte, Mur & Bandettini (2008), doi:10.3389/neuro.06.004.2008.
    """
    t = sample_matrix(x, "x")
    labels = torch.as_tensor(y).detach().cpu()
    if labels.shape[0] != t.shape[0]:
        msg = f"x has {t.shape[0]} rows but y has {labels.shape[0]}."
        raise ValueError(msg)
    return _rsa(t, labels)


class _LabelRDM:
    r"""The label side of RSA, prepared once per record and shared by the layers.

    Class ids give a two-valued dissimilarity (0 same class, 1 otherwise); Spearman's ρ
    with it is the point-biserial correlation of the distances' average ranks :math:`R`
    with that 0/1 variable,

    .. math::

        \rho = \frac{\sum_{\text{diff}} (R_i - \bar R)}
            {\sqrt{n_{\text{same}}\, n_{\text{diff}} / N}\;\lVert R - \bar R\rVert},
        \qquad \bar R = \frac{N + 1}{2},

    which needs the ranks of the same-class pairs only (a sort and a binary search) instead
    of ranking all :math:`N` dissimilarities and correlating two :math:`N`-vectors.
    Float targets keep the general rank correlation.
    """

    def __init__(self, labels: Tensor) -> None:
        n = labels.shape[0]
        iu = torch.triu_indices(n, n, offset=1)
        self.iu = iu
        self.same: np.ndarray | None = None
        self.ranks: Tensor | None = None
        if labels.is_floating_point():
            self.ranks = _rankdata(_label_rdm(labels)[iu[0], iu[1]])
        else:
            flat = labels.detach().cpu().reshape(-1)
            self.same = (flat[iu[0]] == flat[iu[1]]).numpy()

    def rsa(self, x: Tensor) -> float:
        """Spearman's ρ between the Euclidean RDM of ``x``'s rows and the labels' RDM."""
        d = torch.cdist(x, x)[self.iu[0], self.iu[1]]
        if self.ranks is not None:
            return _pearson(_rankdata(d), self.ranks)
        assert self.same is not None
        return _point_biserial_rank(d.detach().cpu().numpy(), self.same)


def _point_biserial_rank(d: np.ndarray, same: np.ndarray) -> float:
    """Spearman's ρ of ``d`` with the 0/1 variable ``~same`` (average ranks for ties)."""
    n_all = d.size
    n_same = int(same.sum())
    n_diff = n_all - n_same
    if n_same == 0 or n_diff == 0:
        return math.nan  # a constant label dissimilarity
    ordered = np.sort(d)
    mean = (n_all + 1) / 2.0
    tied = ordered[1:] == ordered[:-1]
    if tied.any():
        # Σ R² over tie groups (each group shares its average rank), for ‖R − R̄‖.
        starts = np.flatnonzero(np.r_[True, ~tied])
        counts = np.diff(np.r_[starts, n_all])
        avg = starts + (counts + 1) / 2.0
        spread = float(np.sum(counts * avg * avg)) - n_all * mean * mean
    else:  # ranks 1..N: Σ (R - R̄)² = N (N² - 1) / 12
        spread = n_all * (n_all * n_all - 1) / 12.0
    if not spread > 0:
        return math.nan  # every dissimilarity equal
    v = d[same]
    ranks = (np.searchsorted(ordered, v, "left") + np.searchsorted(ordered, v, "right") + 1) / 2
    diff_sum = -(float(ranks.sum()) - n_same * mean)  # Σ_diff (R - R̄) = -Σ_same (R - R̄)
    return diff_sum / (math.sqrt(n_same * n_diff / n_all) * math.sqrt(spread))


def _rsa(x: Tensor, labels: Tensor) -> float:
    return _LabelRDM(labels).rsa(x)


# -- the registered diagnostic -------------------------------------------------------------

_METRICS = (
    "effective_rank",
    "participation_ratio",
    "class_separation",
    "cka_init",
    "cka_prev",
    "rsa",
)


def _metric_infos() -> list[MetricInfo]:
    return [
        MetricInfo(
            "effective_rank",
            "exp of the entropy of the normalized singular values of the layer's centred "
            "representation of the fixed test rows",
            "dimensions",
            _ROY,
        ),
        MetricInfo(
            "participation_ratio",
            "(sum λ)^2 / sum λ^2 of the covariance eigenvalues of the layer's representation "
            "of the fixed test rows",
            "dimensions",
            _GAO,
        ),
        MetricInfo(
            "class_separation",
            "between- over within-class variance, tr(S_B) / tr(S_W), of the layer's "
            "representation of the fixed test rows (classification)",
            "1",
            _FISHER,
        ),
        MetricInfo(
            "cka_init",
            "linear CKA between the layer's representation now and when the monitor started "
            "(same fixed test rows); 1 = same up to rotation and scale",
            "1",
            _KORNBLITH,
        ),
        MetricInfo(
            "cka_prev",
            "linear CKA between the layer's representation now and at the previous record "
            "of this diagnostic (same fixed test rows)",
            "1",
            _KORNBLITH,
        ),
        MetricInfo(
            "rsa",
            "Spearman correlation of the Euclidean representational dissimilarity matrix with "
            "the label dissimilarity matrix (1[y_i != y_j]; regression: |y_i - y_j|)",
            "1",
            _KRIEGESKORTE,
        ),
    ]


def _rows(cap: Capture, layer: str, n_rows: int) -> Tensor:
    return cap.features[layer][:n_rows]


def _setup_fn(name: str, sets: RowSubsets, n_rows: int) -> SetupFn:
    def setup(probe: Probe) -> None:
        representation_points(probe.model)  # a clear error without an nn.Linear readout
        if probe.task is None:
            return
        cap = capture(probe, "test", sets)
        for layer in cap.features:
            probe.state[f"{name}.init.{layer}"] = _rows(cap, layer, n_rows).clone()

    return setup


def _geometry_fn(name: str, sets: RowSubsets, n_rows: int, n_rsa: int) -> DiagnosticFn:
    # The CKA normalizer of each stored reference, keyed by its state entry and valid only
    # for that very tensor (a restored or replaced state entry is recomputed).
    _norms: dict[str, tuple[Tensor, float]] = {}

    def geometry(probe: Probe) -> dict[str, dict[str, float]]:
        task = probe.task
        if task is None:
            msg = f"The {name!r} diagnostic needs a task: pass one to Monitor(model, task)."
            raise ValueError(msg)
        cap = capture(probe, "test", sets)
        classification = task.kind == "classification"
        out: dict[str, dict[str, float]] = {m: {} for m in _METRICS}
        targets = cap.targets[:n_rows]
        label_rdm: _LabelRDM | None = None
        for layer in cap.layers:
            if layer in cap.aliases:
                continue
            reason = cap.skipped.get(layer)
            if reason is None and len(targets) < 3:
                reason = f"only {len(targets)} fixed test rows (geometry needs at least 3)"
            if reason is not None:
                for metric in _METRICS:
                    out[metric][layer] = probe.nan(metric, reason, layer=layer)
                continue
            raw = _rows(cap, layer, n_rows)
            x = raw.to(torch.float64)
            xc = x - x.mean(dim=0)
            gram = _small_gram(xc)  # its eigenvalues are σ², its norm CKA's normalizer
            s = _gram_singular_values(gram)
            norm = float(torch.linalg.matrix_norm(gram))
            constant = "the representation is constant over the fixed rows"
            erank, pr = _erank(s), _pr(s)
            out["effective_rank"][layer] = (
                erank if not math.isnan(erank) else probe.nan("effective_rank", constant, layer)
            )
            out["participation_ratio"][layer] = (
                pr if not math.isnan(pr) else probe.nan("participation_ratio", constant, layer)
            )
            if classification:
                sep, why = _separation(x, targets)
                out["class_separation"][layer] = (
                    sep if not math.isnan(sep) else probe.nan("class_separation", why, layer)
                )
            else:
                out["class_separation"][layer] = probe.nan(
                    "class_separation", "regression task: no classes", layer
                )
            for metric, key, missing in (
                (
                    "cka_init",
                    f"{name}.init.{layer}",
                    "no representation stored at init (the run started without this "
                    "diagnostic, or the layer was not finite then)",
                ),
                ("cka_prev", f"{name}.prev.{layer}", "no previous record of this layer"),
            ):
                ref = probe.state.get(key)
                if ref is None or ref.shape != raw.shape:
                    out[metric][layer] = probe.nan(metric, missing, layer)
                    continue
                r = ref.to(torch.float64)
                rc = r - r.mean(dim=0)
                known = _norms.get(key)  # the reference's normalizer, if computed before
                if known is None or known[0] is not ref:
                    # the same formula as at its own record, so a resumed run is identical
                    known = (ref, _self_norm(rc))
                    _norms[key] = known
                value = _cka(xc, rc, norm, known[1])
                out[metric][layer] = (
                    value if not math.isnan(value) else probe.nan(metric, constant, layer)
                )
            kept = raw.clone()
            probe.state[f"{name}.prev.{layer}"] = kept
            _norms[f"{name}.prev.{layer}"] = (kept, norm)
            if label_rdm is None:
                label_rdm = _LabelRDM(targets[:n_rsa])
            value = label_rdm.rsa(x[:n_rsa])
            out["rsa"][layer] = (
                value
                if not math.isnan(value)
                else probe.nan(
                    "rsa",
                    "a dissimilarity matrix is constant (a single label, or identical rows)",
                    layer,
                )
            )
        fill_aliases(probe, cap, out)
        return out

    geometry.__doc__ = f"Representation geometry per layer ({name!r})."
    return geometry


def register_geometry(
    name: str = "geometry",
    *,
    sets: RowSubsets | None = None,
    n_rows: int = 1024,
    n_rsa: int = 512,
    replace: bool = False,
) -> None:
    """Register the geometry family under ``name`` with its own rows.

    ``"geometry"`` is registered with the defaults. Its state (``"{name}.init.<layer>"`` and
    ``"{name}.prev.<layer>"``, ``n_rows × width`` each) is saved in every checkpoint.

    Parameters
    ----------
    name : str
        The diagnostic's name in ``Monitor(diagnostics=[...])``.
    sets : RowSubsets, optional
        The fixed rows (the test ones are used); default ``RowSubsets()``, shared with
        ``probes`` so one forward pass serves both.
    n_rows : int
        Rows used (the first ``n_rows`` of the fixed test rows).
    n_rsa : int
        Rows used by ``rsa`` (the first ``n_rsa`` of those); its cost grows as ``n_rsa²``.
    replace : bool
        Replace an existing registration of ``name``.
    """
    for label, value in (("n_rows", n_rows), ("n_rsa", n_rsa)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 3:
            msg = f"{label} must be an integer >= 3, got {value!r}."
            raise ValueError(msg)
    sets = sets or RowSubsets()
    register(
        name,
        metrics=_metric_infos(),
        setup=_setup_fn(name, sets, n_rows),
        cadence=MECHANISM_CADENCE,
        replace=replace,
    )(_geometry_fn(name, sets, n_rows, n_rsa))


register_geometry("geometry")
