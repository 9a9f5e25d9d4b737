import numpy as np
import pytest

from grokwidgets.views.charts import accuracy_chart, metric_chart, metric_frame, step_axis
from tests.widgets._runs import LAYERS, dataset


def test_metric_frame_is_long_form_without_missing_values():
    ds = dataset(range(0, 10))
    frame = metric_frame(ds, "htsr_alpha")
    assert list(frame.columns) == ["step", "layer", "value"]
    assert set(frame["layer"]) == set(LAYERS)  # the whole-model row holds no alpha
    assert np.isfinite(frame["value"]).all()
    assert len(frame) == 10 * len(LAYERS)


def test_unknown_metric_is_a_clear_error():
    with pytest.raises(KeyError, match="not recorded in this run. Recorded metrics"):
        metric_frame(dataset(range(0, 5), spectrum=False), "htsr_alpha")


def test_charts_share_the_log_step_axis_from_step_one():
    ds = dataset(range(0, 10))
    axis = step_axis().to_dict()
    assert axis["scale"] == {"type": "log", "domainMin": 1}
    spec = metric_chart(ds, "train_loss").to_dict()
    assert spec["encoding"]["x"] == axis
    assert spec["encoding"]["y"]["scale"]["type"] == "log"  # a positive loss
    assert min(r["step"] for r in next(iter(spec["datasets"].values()))) > 0
    assert "color" in metric_chart(ds, "htsr_alpha").to_dict()["encoding"]  # one per layer
    acc = accuracy_chart(ds)
    assert acc is not None and acc.to_dict()["encoding"]["x"] == axis
    assert accuracy_chart(ds.sel(metric=["train_loss"])) is None
