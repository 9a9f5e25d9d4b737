import numpy as np
import pytest

from grokwidgets.views.downsample import downsample_groups, minmax_indices


def brute_force(x, y, buckets, log_x=True):
    ok = np.flatnonzero(np.isfinite(y))
    if ok.size <= 4 * buckets:
        return ok
    pos = np.log10(x[ok]) if log_x else x[ok].astype(float)
    lo, hi = pos[0], pos[-1]
    width = (hi - lo) / buckets or 1.0
    keep = set()
    for b in range(buckets):
        members = [
            int(i)
            for i, p in zip(ok, pos, strict=True)
            if min(int((p - lo) / width), buckets - 1) == b
        ]
        if not members:
            continue
        vals = [y[i] for i in members]
        keep |= {members[0], members[-1]}
        keep.add(members[int(np.argmin(vals))])
        keep.add(members[int(np.argmax(vals))])
    return np.array(sorted(keep))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("log_x", [True, False])
def test_minmax_matches_brute_force(seed, log_x):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 800))
    x = np.sort(rng.choice(np.arange(1, 10 * n), n, replace=False)).astype(float)
    y = rng.normal(size=n)
    y[rng.random(n) < 0.05] = np.nan
    buckets = int(rng.integers(3, 40))
    got = minmax_indices(x, y, buckets, log_x=log_x)
    np.testing.assert_array_equal(got, brute_force(x, y, buckets, log_x))
    assert got.size <= 4 * buckets


def test_keeps_extremes_and_ends():
    x = np.arange(1, 100_001, dtype=float)
    y = np.sin(x / 300.0)
    y[54_321] = 10.0
    idx = minmax_indices(x, y, 100)
    assert 54_321 in idx and 0 in idx and x.size - 1 in idx
    assert idx.size <= 400


def test_small_input_kept_whole():
    x = np.arange(1, 11, dtype=float)
    np.testing.assert_array_equal(minmax_indices(x, x, 10), np.arange(10))


def test_groups_downsampled_separately():
    x = np.tile(np.arange(1, 1001, dtype=float), 2)
    g = np.repeat(np.array(["a", "b"], dtype=object), 1000)
    y = np.r_[np.zeros(1000), np.ones(1000)]
    idx = downsample_groups(x, y, g, 10)
    assert set(g[idx]) == {"a", "b"} and idx.size <= 80


def test_bad_bucket_count():
    with pytest.raises(ValueError, match="buckets must be >= 1"):
        minmax_indices(np.ones(3), np.ones(3), 0)
