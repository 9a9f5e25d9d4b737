"""``run.json`` as a type: one reader, one writer, older files and damaged ones."""

import json

import pytest

import grokwidgets as gw
from grokwidgets.store.errors import RunDamagedError
from grokwidgets.store.run_info import (
    RUN_JSON,
    RunInfo,
    read_run_info,
    update_run_info,
    write_run_info,
)

#: run.json as grokwidgets 0.1.0 wrote it for a gw.train run before RunInfo existed
#: (keys and nesting copied from such a run; the config is shortened).
OLD_RUN_JSON = {
    "config": {
        "cadence": {"loss": {"linear_until": 100, "log_per_decade": 50}},
        "checkpoint_cadence": {"linear_until": 0, "log_per_decade": 5},
        "diagnostics": ["loss", "weights", "grad_norm", "htsr"],
        "model": {"class": "MLP", "width": 16},
        "seed": 0,
        "task": {"family": "modular_arithmetic", "op": "+", "p": 13, "seed": 0},
        "train": {"lr": 0.003, "optimizer": "adamw", "steps": 60},
    },
    "created": "2026-12-03T09:47:00+0000",
    "format": "grokwidgets-run",
    "seed": 0,
    "status": "finished",
    "updated": "2026-12-03T09:47:02+0000",
    "versions": {"grokwidgets": "0.1.0", "torch": "2.13.0+cpu"},
}


def test_an_older_run_json_reads_and_round_trips(tmp_path):
    (tmp_path / RUN_JSON).write_text(json.dumps(OLD_RUN_JSON))
    info = read_run_info(tmp_path)
    assert info.status == "finished"
    assert info.seed == 0
    assert info.created == "2026-12-03T09:47:00+0000"
    assert info.diagnostics == ["loss", "weights", "grad_norm", "htsr"]
    assert info.recipe == {"lr": 0.003, "optimizer": "adamw", "steps": 60}
    assert info.task_config == OLD_RUN_JSON["config"]["task"]
    assert info.model_config == {"class": "MLP", "width": 16}
    assert info.resumed_from == []
    assert info.stopped_at is None
    written = info.to_json()
    for key, value in OLD_RUN_JSON.items():
        assert written[key] == value


def test_user_loop_run_has_no_recipe_and_a_missing_status_is_unknown(tmp_path):
    write_run_info(tmp_path, RunInfo.from_json({"config": {"task": None, "model": "x"}}))
    info = read_run_info(tmp_path)
    assert info.recipe is None
    assert info.task_config is None
    assert info.model_config == {}
    assert info.status == "unknown"


def test_unknown_keys_survive_an_update(tmp_path):
    (tmp_path / RUN_JSON).write_text(json.dumps({**OLD_RUN_JSON, "from_the_future": [1, 2]}))
    update_run_info(tmp_path, status="running", resumed_from=[20], note="mine")
    obj = json.loads((tmp_path / RUN_JSON).read_text())
    assert obj["from_the_future"] == [1, 2]
    assert obj["note"] == "mine"
    assert obj["status"] == "running"
    assert obj["resumed_from"] == [20]
    assert obj["updated"] != OLD_RUN_JSON["updated"]
    assert read_run_info(tmp_path).resumed_from == [20]


def test_the_writer_leaves_no_temporary_file(tmp_path):
    write_run_info(tmp_path, RunInfo(status="running", seed=3))
    assert sorted(p.name for p in tmp_path.iterdir()) == [RUN_JSON]
    assert read_run_info(tmp_path).seed == 3


@pytest.mark.parametrize("text", ['{"config": {', "[1, 2]", ""])
def test_a_damaged_run_json_names_the_file(tmp_path, text):
    (tmp_path / RUN_JSON).write_text(text)
    with pytest.raises(RunDamagedError, match=r"is damaged: .*run\.json cannot be read") as err:
        gw.open_run(tmp_path)
    assert err.value.file == tmp_path / RUN_JSON
    assert err.value.run == tmp_path
    assert "restore it from a copy" in str(err.value)


def test_a_missing_run_json_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a grokwidgets run"):
        read_run_info(tmp_path)


def test_monitor_writes_what_the_reader_reads(tmp_path, mod_task):
    model = gw.models.MLP.for_task(mod_task, width=8, depth=1, embed_dim=4)
    with gw.Monitor(model, mod_task, dir=tmp_path / "run", config={"seed": 5}) as mon:
        mon.step(0)
    info = read_run_info(tmp_path / "run")
    assert info.status == "finished"
    assert info.seed == 5
    assert info.task_config == mod_task.config
    assert info.diagnostics == ["loss", "weights", "grad_norm"]
    assert info.versions["grokwidgets"] == gw.__version__
    assert info.created and info.updated
