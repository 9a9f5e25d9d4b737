import pytest

import grokwidgets as gw
from grokwidgets.diagnostics import MetricInfo, register
from grokwidgets.diagnostics.registry import _REGISTRY, resolve


@pytest.fixture
def cleanup():
    before = set(_REGISTRY)
    yield
    for name in set(_REGISTRY) - before:
        del _REGISTRY[name]


def test_user_diagnostic_is_recorded_per_layer(mod_task, cleanup):
    @register("row_count", metrics=[MetricInfo("rows", "rows of W", "1", "test")])
    def row_count(probe):
        return {"rows": {path: m.weight.shape[0] for path, m in probe.layers.items()}}

    model = gw.models.MLP.for_task(mod_task, width=8, depth=1, embed_dim=4)
    mon = gw.Monitor(model, mod_task, diagnostics=["row_count"], cadence=1)
    mon.step(0)
    ds = mon.dataset()
    assert ds["metrics"].sel(metric="rows", layer="encoder.0").item() == 8
    assert ds["metrics"].sel(metric="rows", layer="embed").item() == mod_task.vocab_size
    assert ds.attrs["metric_info"]["rows"]["description"] == "rows of W"
    assert ds["metric_unit"].sel(metric="rows").item() == "1"


def test_undeclared_metric_is_an_error(mod_task, cleanup):
    @register("sloppy", metrics=[MetricInfo("a", "declared")])
    def sloppy(probe):
        return {"b": 1.0}

    model = gw.models.MLP.for_task(mod_task, width=8, depth=1, embed_dim=4)
    mon = gw.Monitor(model, mod_task, diagnostics=["sloppy"], cadence=1)
    with pytest.raises(ValueError, match="does not declare"):
        mon.step(0)


def test_unknown_diagnostic_lists_available():
    with pytest.raises(ValueError, match=r"Unknown diagnostic 'nope'. Available: .*'basic'"):
        resolve(["nope"])


def test_duplicate_registration_refused(cleanup):
    with pytest.raises(ValueError, match="already registered"):
        register("loss", metrics=[])(lambda p: {})


def test_basic_group_expands():
    assert [d.name for d in resolve(["basic", "loss"])] == ["loss", "weights", "grad_norm"]
