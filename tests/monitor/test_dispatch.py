"""One record path: a diagnostic's return value as a Record, readers of the record last."""

import numpy as np
import pytest

from grokwidgets.diagnostics.registry import Diagnostic, MetricInfo
from grokwidgets.monitor.dispatch import readers_last, record_of


def diag(name="d", metrics=("a", "b"), arrays=None, reads=False):
    def fn(probe):
        return {}

    if reads:
        fn.reads_record = True
    return Diagnostic(name, fn, tuple(MetricInfo(m, m) for m in metrics), dict(arrays or {}))


def test_record_of_lays_out_model_layer_and_array_values():
    values = {
        "a": 1.5,
        "b": {"encoder.0": np.float32(2.0), 3: 4},
        "spectrum": {"readout": [3.0, 1.0]},
    }
    rec = record_of(7, diag(arrays={"spectrum": "eig"}), values)
    assert rec.step == 7
    assert rec.values == {("model", "a"): 1.5, ("encoder.0", "b"): 2.0, ("3", "b"): 4.0}
    assert all(type(v) is float for v in rec.values.values())
    assert list(rec.arrays) == ["spectrum"]
    np.testing.assert_array_equal(rec.arrays["spectrum"]["readout"], [3.0, 1.0])
    assert rec.arrays["spectrum"]["readout"].dtype == np.float64


def test_an_undeclared_metric_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"returned metric 'c'.*Add it to metrics=\[\.\.\.\]"):
        record_of(0, diag(), {"c": 1.0})


def test_readers_of_the_record_go_last_in_stable_order():
    a, r1, b, r2 = diag("a"), diag("r1", reads=True), diag("b"), diag("r2", reads=True)
    assert [d.name for d in readers_last([r1, a, r2, b])] == ["a", "b", "r1", "r2"]
