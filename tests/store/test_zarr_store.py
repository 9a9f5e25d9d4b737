import numpy as np
import pytest
import xarray as xr

from grokwidgets.store.records import Index, Record, dense_block, to_dataset
from grokwidgets.store.zarr_store import (
    StoreError,
    ZarrRecordWriter,
    declared_names,
    read_rows,
    read_store,
)


def rec(step, **values):
    r = Record(step=step)
    for key, v in values.items():
        layer, metric = key.split("__")
        r.values[(layer, metric)] = v
    return r


def memory_dataset(records):
    index = Index()
    for r in records:
        index.add(r)
    return to_dataset(*dense_block(records, index), index)


def test_round_trip_equals_in_memory_dataset(tmp_path):
    records = [rec(s, model__loss=1.0 / (s + 1), readout__norm=float(s)) for s in range(300)]
    records.append(rec(300, model__loss=0.5, embed__norm=2.0, model__new=7.0))  # new names late
    w = ZarrRecordWriter(tmp_path / "m.zarr", flush_every=17)
    for r in records:
        w.append(r)
    w.close()
    got = read_store(tmp_path / "m.zarr")
    want = memory_dataset(records)
    np.testing.assert_array_equal(got["step"].values, np.arange(301))
    assert list(got["layer"].values) == ["model", "readout", "embed"]
    assert list(got["metric"].values) == ["loss", "norm", "new"]
    np.testing.assert_array_equal(got["metrics"].values, want["metrics"].values)
    assert got["metrics"].sel(layer="readout", metric="norm").values[10] == 10.0
    assert np.isnan(got["metrics"].sel(layer="embed", metric="norm").values[:300]).all()


def test_arrays_are_nan_padded(tmp_path):
    w = ZarrRecordWriter(tmp_path / "m.zarr")
    for s in range(5):
        r = rec(s, model__x=1.0)
        r.arrays["spectrum"] = {"encoder.0": np.arange(s + 1.0), "readout": np.ones(2)}
        w.append(r)
    w.close()
    ds = read_store(tmp_path / "m.zarr")
    assert ds["spectrum"].dims == ("step", "layer", "eig")
    assert ds.sizes["eig"] == 5
    np.testing.assert_array_equal(ds["spectrum"].sel(layer="encoder.0").values[2, :3], [0, 1, 2])
    assert np.isnan(ds["spectrum"].sel(layer="encoder.0").values[2, 3:]).all()
    assert np.isnan(ds["spectrum"].sel(layer="model").values).all()


def test_same_step_merges_even_after_flush(tmp_path):
    w = ZarrRecordWriter(tmp_path / "m.zarr", flush_every=1)
    w.append(rec(0, model__a=1.0))
    w.append(rec(1, model__a=2.0))
    w.append(rec(1, model__b=3.0))  # the row for step 1 was already written
    w.close()
    ds = read_store(tmp_path / "m.zarr")
    np.testing.assert_array_equal(ds["step"].values, [0, 1])
    assert ds["metrics"].sel(layer="model", metric="b").values.tolist()[1] == 3.0
    assert ds["metrics"].sel(layer="model", metric="a").values.tolist() == [1.0, 2.0]


def test_decreasing_step_is_refused(tmp_path):
    w = ZarrRecordWriter(tmp_path / "m.zarr")
    w.append(rec(5, model__a=1.0))
    with pytest.raises(ValueError, match="must not decrease"):
        w.append(rec(4, model__a=1.0))


def test_truncate_and_reopen(tmp_path):
    w = ZarrRecordWriter(tmp_path / "m.zarr", flush_every=4)
    for s in range(0, 40, 2):
        w.append(rec(s, model__a=float(s)))
    assert w.truncate(21) == 11  # steps 0..20
    w2 = ZarrRecordWriter(tmp_path / "m.zarr", mode="a")
    assert w2.n == 11 and w2.last_step == 20
    w2.append(rec(21, model__a=-1.0))
    w2.close()
    ds = read_store(tmp_path / "m.zarr")
    assert ds["step"].values.tolist() == [*range(0, 21, 2), 21]


def test_buffered_records_are_not_visible_until_flushed(tmp_path):
    w = ZarrRecordWriter(tmp_path / "m.zarr", flush_every=100, flush_seconds=1e9)
    for s in range(10):
        w.append(rec(s, model__a=1.0))
    assert read_store(tmp_path / "m.zarr").sizes["step"] == 0
    w.flush()
    assert read_store(tmp_path / "m.zarr").sizes["step"] == 10


def test_refuses_existing_store_and_non_store(tmp_path):
    ZarrRecordWriter(tmp_path / "m.zarr").close()
    with pytest.raises(StoreError, match="already exists"):
        ZarrRecordWriter(tmp_path / "m.zarr", mode="w")
    (tmp_path / "other").mkdir()
    with pytest.raises(StoreError, match="not a grokwidgets metrics store"):
        read_store(tmp_path / "other")


def test_read_rows_from_an_offset_equals_the_tail_of_the_whole(tmp_path):
    records = [rec(s, model__loss=1.0 / (s + 1), readout__norm=float(s)) for s in range(40)]
    records[-1].arrays["spectrum"] = {"readout": np.arange(5.0)}
    w = ZarrRecordWriter(tmp_path / "m.zarr", flush_every=7)
    for r in records:
        w.append(r)
    w.flush()
    whole = read_store(tmp_path / "m.zarr")
    for start in (0, 1, 13, 39):
        part, n = read_rows(tmp_path / "m.zarr", start)
        assert n == 40
        xr.testing.assert_identical(part, whole.isel(step=slice(start, None)))
        xr.testing.assert_identical(read_store(tmp_path / "m.zarr", start=start), part)
    past, n = read_rows(tmp_path / "m.zarr", 50)
    assert n == 40
    assert past.sizes["step"] == 0
    assert set(past["metric"].values) == set(whole["metric"].values)
    with pytest.raises(ValueError, match="start must be >= 0"):
        read_rows(tmp_path / "m.zarr", -1)
    assert declared_names(tmp_path / "m.zarr") == {"loss", "norm", "spectrum"}
    assert declared_names(tmp_path / "nothing.zarr") == set()
