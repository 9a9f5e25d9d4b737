import numpy as np

from grokwidgets.widgets._frame import decode_frame
from grokwidgets.widgets._stream import Stream


def chunk(start, n, series=("train", "test")):
    steps = np.arange(start, start + n, dtype=float)
    return {
        "step": np.repeat(steps, len(series)),
        "series": np.tile(np.array(series, dtype=object), n),
        "value": np.repeat(1.0 / steps, len(series)),
    }


def test_first_is_snapshot_then_deltas_carry_only_new_rows():
    s = Stream(budget=1000)
    kind, frame = s.extend({"loss": chunk(1, 10)})
    assert kind == "snapshot"
    kind, frame = s.extend({"loss": chunk(11, 5)})
    assert kind == "delta"
    header, tables = decode_frame(frame)
    mode, t = tables["loss"]
    assert mode == "insert" and len(t["step"]) == 10
    np.testing.assert_array_equal(np.unique(t["step"]), np.arange(11, 16))
    assert header["base"] == 1 and header["seq"] == 2


def test_budget_triggers_downsampled_snapshot_and_bytes_stay_proportional():
    s = Stream(budget=2000, buckets=100)
    sizes = []
    start = 1
    for _ in range(500):
        kind, frame = s.extend({"loss": chunk(start, 50)})
        sizes.append((kind, len(frame)))
        start += 50
    header, tables = decode_frame(s.snapshot())
    assert len(tables["loss"][1]["step"]) <= 1000
    deltas = [n for k, n in sizes[1:] if k == "delta"]
    assert max(deltas) - min(deltas) < 64  # constant per delta: rows, not history
    total = sum(n for _, n in sizes)
    assert total < 3 * 20 * 2 * 50 * 500  # within 3x of the raw rows' bytes
    assert s.total_rows("loss") == 2 * 50 * 500


def test_current_tables_are_replaced():
    s = Stream()
    s.extend({"loss": chunk(1, 2)})
    esd = {"layer": np.array(["a"], dtype=object), "lam": np.ones(1), "density": np.ones(1)}
    _, frame = s.extend({}, {"esd": esd})
    _, tables = decode_frame(frame)
    assert tables["esd"][0] == "replace" and "loss" not in tables
