import numpy as np
import pytest
import torch

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


def test_two_diagnostics_writing_one_metric_are_refused(mod_task, cleanup):
    """A variant of a family registered without a prefix would overwrite the family's values."""
    from grokwidgets.diagnostics.infogeo import register_infogeo

    register_infogeo("infogeo_copy")
    model = gw.models.MLP.for_task(mod_task, width=8, depth=1, embed_dim=4)
    with pytest.raises(ValueError, match="both record 'fisher_path_length'.*prefix"):
        gw.Monitor(model, mod_task, diagnostics=["infogeo", "infogeo_copy"])
    # declared on purpose with the same meaning and value: allowed
    mon = gw.Monitor(model, mod_task, diagnostics=["weights", "comparative"])
    assert [d.name for d in mon.diagnostics] == ["weights", "comparative"]


def test_prefixed_variant_records_beside_the_family(mod_task, cleanup):
    """Same family, other Fisher: both values kept, each NaN reason under its own name."""
    from grokwidgets.diagnostics._fisher import FisherOptions
    from grokwidgets.diagnostics.infogeo import InfoGeoOptions, register_infogeo

    gn = FisherOptions(likelihood="gaussian", exact=True, split="test", n_rows=64)
    register_infogeo("infogeo_gn", InfoGeoOptions(fisher=gn), prefix="gn_")
    model = gw.models.MLP.for_task(mod_task, width=8, depth=1, embed_dim=4)
    mon = gw.Monitor(model, mod_task, diagnostics=["infogeo", "infogeo_gn"], cadence=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(3):
        mon.record(step, force=True)
        loss = torch.nn.functional.cross_entropy(model(mod_task.x_train), mod_task.y_train)
        opt.zero_grad()
        loss.backward()
        opt.step()
    ds = mon.dataset()
    m = ds["metrics"].sel(layer="model")
    ours = m.sel(metric="fisher_step_length").values
    theirs = m.sel(metric="gn_fisher_step_length").values
    assert np.isnan(ours[0]) and np.isnan(theirs[0])
    assert np.isfinite(ours[1:]).all() and np.isfinite(theirs[1:]).all()
    assert not np.allclose(ours[1:], theirs[1:])  # two Fishers, two lengths
    # the Euclidean step does not depend on the Fisher: equal under both names
    np.testing.assert_allclose(
        m.sel(metric="param_step_length").values[1:],
        m.sel(metric="gn_param_step_length").values[1:],
    )
    reasons = ds.attrs["nan_reasons"]
    want = reasons["fisher_straightness"]["model"]
    assert "records" in want and reasons["gn_fisher_straightness"]["model"] == want
    assert ds.attrs["metric_info"]["gn_fisher_straightness"]["description"].startswith("s'ᵀF s")
