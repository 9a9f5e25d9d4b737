import numpy as np
import pytest

from grokwidgets.views.frame import decode_frame, encode_frame


def test_roundtrip():
    table = {
        "step": np.array([1.0, 2.0, 3.0]),
        "series": np.array(["train", "test", "train"], dtype=object),
        "value": np.array([0.5, np.nan, 1e-9]),
    }
    empty = {"step": np.zeros(0), "series": np.zeros(0, dtype=object)}
    frame = encode_frame({"loss": ("insert", table), "esd": ("replace", empty)}, seq=4, base=2)
    header, tables = decode_frame(frame)
    assert header["seq"] == 4 and header["base"] == 2
    mode, got = tables["loss"]
    assert mode == "insert"
    np.testing.assert_array_equal(got["step"], table["step"])
    np.testing.assert_array_equal(got["series"], table["series"])
    np.testing.assert_array_equal(got["value"], table["value"])
    assert tables["esd"][0] == "replace" and len(tables["esd"][1]["step"]) == 0


def test_size_grows_with_rows_only():
    def size(n):
        t = {
            "step": np.arange(n, dtype=float),
            "series": np.array(["train"] * n, dtype=object),
            "value": np.ones(n),
        }
        return len(encode_frame({"loss": ("insert", t)}, seq=1, base=1))

    per_row = (size(200) - size(100)) / 100
    assert per_row == pytest.approx(20, abs=1)  # two float64 + one int32 code


def test_rejects_foreign_bytes():
    with pytest.raises(ValueError, match="Not a grokwidgets frame"):
        decode_frame(b"nope" + b"\0" * 8)
