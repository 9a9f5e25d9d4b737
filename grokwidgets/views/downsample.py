"""Min/max downsampling per pixel bucket, so long runs stay smooth in the browser."""

from __future__ import annotations

import numpy as np


def minmax_indices(x: np.ndarray, y: np.ndarray, buckets: int, *, log_x: bool = True) -> np.ndarray:
    """Indices of the points kept by min/max downsampling into ``buckets`` x-buckets.

    The x range is cut into ``buckets`` equal intervals (of ``log10 x`` when ``log_x``, as on
    a log-step axis); in each, the first and last point and the points of smallest and
    largest ``y`` are kept, so a line drawn through the kept points covers every pixel column
    the full line covers. Non-finite ``y`` are dropped.

    Parameters
    ----------
    x, y : ndarray, shape (n,)
        Positions (sorted ascending; positive when ``log_x``) and values.
    buckets : int
        Number of buckets (about the plot's width in pixels).
    log_x : bool
        Bucket in ``log10 x``.

    Returns
    -------
    ndarray of int, shape (m,)
        Sorted, unique indices into ``x``; at most ``4 * buckets``.
    """
    if buckets < 1:
        msg = f"buckets must be >= 1, got {buckets}."
        raise ValueError(msg)
    keep = np.flatnonzero(np.isfinite(y))
    if keep.size <= 4 * buckets:
        return keep
    pos = np.log10(x[keep]) if log_x else np.asarray(x[keep], dtype=np.float64)
    lo, hi = float(pos[0]), float(pos[-1])
    width = (hi - lo) / buckets or 1.0
    bucket = np.minimum(((pos - lo) / width).astype(np.int64), buckets - 1)
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    ends = np.r_[starts[1:], bucket.size] - 1
    vals = y[keep]
    mins = np.array(
        [s + int(np.argmin(vals[s : e + 1])) for s, e in zip(starts, ends, strict=True)]
    )
    maxs = np.array(
        [s + int(np.argmax(vals[s : e + 1])) for s, e in zip(starts, ends, strict=True)]
    )
    chosen = np.unique(np.concatenate([starts, ends, mins, maxs]))
    return keep[chosen]


def downsample_groups(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, buckets: int, *, log_x: bool = True
) -> np.ndarray:
    """:func:`minmax_indices` applied to each group (series) separately; sorted indices."""
    out = []
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        out.append(idx[minmax_indices(x[idx], y[idx], buckets, log_x=log_x)])
    return np.sort(np.concatenate(out)) if out else np.zeros(0, np.int64)
