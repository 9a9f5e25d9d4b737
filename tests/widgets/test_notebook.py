import grokwidgets as gw
from grokwidgets.widgets import LiveMonitor, _notebook


def test_live_outside_notebook_is_harmless(mod_task):
    model = gw.models.MLP.for_task(mod_task, width=16, depth=1)
    run = gw.train(mod_task, model, steps=3, live=True, progress=False)
    assert run.steps == 3 and not _notebook.in_notebook()


def test_live_in_notebook_displays_and_streams(mod_task, monkeypatch):
    shown = []
    monkeypatch.setattr(_notebook, "in_notebook", lambda: True)
    monkeypatch.setattr("IPython.display.display", lambda w: shown.append(w))
    model = gw.models.MLP.for_task(mod_task, width=16, depth=1)
    gw.train(mod_task, model, steps=5, live=True, progress=False, cadence=1)
    (view,) = shown
    assert isinstance(view, LiveMonitor)
    assert view.status == "finished"
    assert len(view.tables()["loss"]["step"]) == 10  # steps 1..5, train and test
    view.close()
