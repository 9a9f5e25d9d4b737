import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grokwidgets.monitor.cadence import (
    At,
    Cadence,
    Every,
    LogSpaced,
    as_cadence,
    cadence_from_json,
)


def brute_next(cadence, step, horizon=10**6):
    for s in range(step, horizon):
        if cadence.due(s):
            return s
    return None


def test_default_is_linear_then_fifty_per_decade():
    c = Cadence.default()
    assert c.steps(100) == list(range(101))
    for lo in (10**3, 10**4, 10**6):
        due = [s for s in c.steps(10 * lo) if s > lo]
        assert len(due) == 50
        ratios = [b / a for a, b in zip(due, due[1:], strict=False)]
        assert all(abs(r - 10 ** (1 / 50)) < 0.01 for r in ratios)


def test_ten_million_steps_stay_small():
    n = len(Cadence.default().steps(10**7))
    # 101 linear records, then 50 per decade over log10(1e7 / 100) = 5 decades.
    assert n == 101 + 5 * 50


@given(st.integers(0, 20_000), st.sampled_from([1, 7, 50]), st.sampled_from([0, 10, 100]))
def test_log_next_due_matches_brute_force(step, per_decade, linear):
    c = LogSpaced(per_decade=per_decade, linear_until=linear)
    assert c.next_due(step) == brute_next(c, step, horizon=10**6)


def test_due_steps_are_the_ceilings_of_powers():
    c = LogSpaced(per_decade=5, linear_until=0)
    expected = sorted({0} | {math.ceil(10 ** (k / 5) - 1e-9) for k in range(0, 16)})
    assert c.steps(1000) == [s for s in expected if s <= 1000]


def test_every_at_union_and_json():
    c = Every(10, start=5) | At((3, 7))
    assert c.steps(40) == [3, 5, 7, 15, 25, 35]
    assert cadence_from_json(c.to_json()).steps(40) == c.steps(40)
    assert as_cadence(4).steps(12) == [0, 4, 8, 12]
    assert At(()).next_due(0) is None


def test_a_cadence_in_its_json_form_as_a_config_gives_it():
    c = LogSpaced(per_decade=20, linear_until=10)
    assert as_cadence({"log_per_decade": 20, "linear_until": 10}).steps(5000) == c.steps(5000)
    assert as_cadence({"every": 7}).steps(20) == [0, 7, 14]
    with pytest.raises(ValueError, match="Not a cadence description"):
        as_cadence({"per_decade": 20})
    with pytest.raises(TypeError, match="JSON form"):
        as_cadence(2.5)
