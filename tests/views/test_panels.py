from grokwidgets.views.panels import PANELS, dataset_names, inline_spec, panel_spec, panels_for
from grokwidgets.views.tables import series_tables
from tests.widgets._runs import dataset


def test_panels_by_name():
    assert [p.id for p in panels_for({"train_loss", "htsr_alpha"})] == ["loss", "spectral"]
    assert [p.id for p in panels_for({"ntk_velocity"})] == ["kernel"]
    assert panels_for({"unrelated"}) == []


def test_specs_reference_named_data_and_inline():
    for panel in PANELS:
        spec = panel_spec(panel, cursor=True)
        assert set(panel.datasets) | {"cursor"} == dataset_names(spec)
        assert spec["usermeta"]["panel"] == panel.id
    spec = panel_spec(PANELS[0])
    tables = series_tables(dataset(range(1, 4), spectrum=False))
    inlined = inline_spec(spec, tables)
    assert len(inlined["datasets"]["loss"]) == 6
