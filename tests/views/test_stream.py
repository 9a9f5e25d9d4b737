import numpy as np

from grokwidgets.views.frame import decode_frame
from grokwidgets.views.stream import Stream
from grokwidgets.views.tables import concat


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


def rows(table):
    """(step, series, value) of each row, as a sorted list (duplicates kept)."""
    cols = (table["step"].tolist(), table["series"].tolist(), table["value"].tolist())
    return sorted(zip(*cols, strict=True))


class FrontEnd:
    """What the browser holds, applying frames as static/_core.js does.

    A snapshot replaces every dataset (those it lacks become empty); a delta inserts rows
    (``insert``) or replaces a dataset (``replace``).
    """

    def __init__(self):
        self.data = {}

    def apply(self, kind, frame):
        if kind == "empty":
            return
        _, tables = decode_frame(frame)
        if kind == "snapshot":
            self.data = {}
        for name, (mode, t) in tables.items():
            if mode == "replace" or name not in self.data:
                self.data[name] = {k: v.copy() for k, v in t.items()}
            else:
                self.data[name] = {k: np.concatenate([self.data[name][k], t[k]]) for k in t}


def test_rows_given_again_are_not_sent_again():
    s, fe = Stream(), FrontEnd()
    fe.apply(*s.extend({"loss": chunk(1, 3)}))
    kind, frame = s.extend({"loss": chunk(3, 1)})  # step 3 re-read, same values
    assert (kind, frame) == ("empty", b"")
    assert s.total_rows("loss") == 6


def test_new_series_at_the_held_step_are_inserted():
    s, fe = Stream(), FrontEnd()
    fe.apply(*s.extend({"loss": chunk(1, 3)}))
    late = chunk(3, 1, series=("train", "test", "probe"))  # step 3 again, one series more
    kind, frame = s.extend({"loss": late})
    fe.apply(kind, frame)
    mode, t = decode_frame(frame)[1]["loss"]
    assert (kind, mode) == ("delta", "insert") and t["series"].tolist() == ["probe"]
    assert rows(fe.data["loss"]) == rows(concat([chunk(1, 3), chunk(3, 1, ("probe",))]))


def test_a_held_row_with_a_new_value_is_replaced_not_duplicated():
    s, fe = Stream(), FrontEnd()
    fe.apply(*s.extend({"loss": chunk(1, 3), "accuracy": chunk(1, 3)}))
    fe.apply(*s.extend({"loss": chunk(4, 2), "accuracy": chunk(4, 2)}))
    fixed = chunk(5, 2)  # step 5 rewritten (new values), step 6 new
    fixed["value"][:2] = [7.0, 8.0]
    kind, frame = s.extend({"loss": fixed})
    fe.apply(kind, frame)
    tables = decode_frame(frame)[1]
    assert kind == "delta" and tables["loss"][0] == "replace" and "accuracy" not in tables
    want = concat([chunk(1, 4), fixed])
    assert rows(fe.data["loss"]) == rows(want)
    assert rows(concat(s.history["loss"])) == rows(want)
    assert rows(fe.data["accuracy"]) == rows(chunk(1, 5))
    # later rows are plain inserts again
    kind, frame = s.extend({"loss": chunk(7, 1)})
    fe.apply(kind, frame)
    assert decode_frame(frame)[1]["loss"][0] == "insert"
    assert rows(fe.data["loss"]) == rows(concat([want, chunk(7, 1)]))


def test_front_end_matches_history_through_rewrites_and_snapshots():
    """Random late rewrites of the newest step, across budget snapshots: the browser's
    copy is always the history (small budget: downsampled, but never a duplicate)."""
    rng = np.random.default_rng(1)
    s, fe = Stream(budget=64, buckets=4), FrontEnd()
    truth = {}
    step = 1
    for _ in range(200):
        if truth and rng.random() < 0.4:  # rewrite the newest step, maybe with new values
            at = max(k[0] for k in truth)
            t = chunk(at, 1)
            t["value"] = np.where(rng.random(2) < 0.5, t["value"], rng.random(2))
        else:
            t = chunk(step, int(rng.integers(1, 4)))
            step = int(t["step"].max()) + 1
        for st, se, v in zip(t["step"], t["series"], t["value"], strict=True):
            truth[(st, se)] = v
        fe.apply(*s.extend({"loss": t}))
        held = fe.data["loss"]
        keys = list(zip(held["step"].tolist(), held["series"].tolist(), strict=True))
        assert len(keys) == len(set(keys))  # no point twice
        for k, v in zip(keys, held["value"].tolist(), strict=True):
            assert truth[k] == v  # every point shown has its latest value
    assert rows(concat(s.history["loss"])) == sorted((k[0], k[1], v) for k, v in truth.items())


def test_reset_starts_over_with_a_snapshot():
    s = Stream()
    s.extend({"loss": chunk(1, 5)})
    s.extend({"loss": chunk(6, 1)})
    s.reset()
    kind, frame = s.extend({"loss": chunk(1, 2)})
    header, tables = decode_frame(frame)
    assert kind == "snapshot" and header["seq"] == 3  # numbering goes on
    assert rows(tables["loss"][1]) == rows(chunk(1, 2))
