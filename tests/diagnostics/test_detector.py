"""The online phase detector: its rules on planted streams, and as a recorded metric."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import grokwidgets as gw
from grokwidgets.diagnostics import MetricInfo, register
from grokwidgets.diagnostics.detector import (
    RECORD_VALUES,
    DetectorRules,
    PhaseDetector,
    replay,
)
from grokwidgets.diagnostics.registry import _REGISTRY
from grokwidgets.monitor import monitor as monitor_module
from grokwidgets.monitor.cadence import Every
from grokwidgets.store import open_run
from tests._loops import sgd_loop

M = "model"


def feed(det, rows):
    return [det.update(step, values) for step, values in rows]


def test_train_fit_and_too_few_records():
    det = PhaseDetector(DetectorRules(min_records=3))
    outs = feed(det, [(0, {(M, "train_acc"): 1.0}), (1, {(M, "train_acc"): 1.0})])
    assert [o.train_fit for o in outs] == [1.0, 1.0]
    assert [o.phase for o in outs] == ["undetermined", "undetermined"]  # never a guess
    out = det.update(2, {(M, "train_acc"): 1.0})
    assert out.phase == "memorization" and out.phase_code == 1
    out = det.update(3, {(M, "train_acc"): 0.5})
    assert out.train_fit == 0.0 and out.phase_code == 0


def test_regression_fit_uses_the_loss_ratio():
    det = PhaseDetector(DetectorRules(min_records=1, loss_ratio=0.01))
    losses = [2.0, 0.5, 0.021, 0.019]
    outs = feed(det, [(s, {(M, "train_loss"): v}) for s, v in enumerate(losses)])
    assert [o.train_fit for o in outs] == [float(v <= 0.01 * 2.0) for v in losses]


def kernel_rows(velocities, steps, acc):
    return [
        (s, {(M, "train_acc"): a, (M, "ntk_velocity"): v, (M, "ntk_trace"): 1.0})
        for s, v, a in zip(steps, velocities, acc, strict=True)
    ]


def test_kernel_speed_frozen_and_onset():
    steps = [0, 10, 20, 40, 80, 120, 160, 200]
    v = [math.nan, 0.02, 0.005, 0.002, 0.0005, 0.0004, 0.003, 0.0001]
    acc = [0.1, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    outs = feed(PhaseDetector(), kernel_rows(v, steps, acc))
    speed = [o.kernel_speed for o in outs]
    # closed form: the angle between consecutive kernels per step
    expected = [math.nan] + [
        math.acos(1 - v[i]) / (steps[i] - steps[i - 1]) for i in range(1, len(steps))
    ]
    np.testing.assert_allclose(speed, expected, rtol=1e-12)
    peak = np.maximum.accumulate(np.nan_to_num(expected, nan=0.0))
    frozen = [o.frozen for o in outs]
    assert math.isnan(frozen[0])
    assert frozen[1:] == [float(s < 0.1 * p) for s, p in zip(expected[1:], peak[1:], strict=True)]
    # onset: after the fit (step 20), speed >= 2 × its minimum since the fit
    fit_speeds = expected[2:]
    first = next(i for i in range(3, len(steps)) if expected[i] >= 2 * min(fit_speeds[: i - 2]))
    assert [o.onset for o in outs[:first]] == [0.0] * first
    assert all(o.onset == 1.0 for o in outs[first:])  # latched
    assert outs[first].phase == "grokking" and steps[first] == 160


def test_probe_gain_onset():
    det = PhaseDetector(DetectorRules(min_records=1, probe_gain=0.05))
    rows = []
    for s, (acc, probe) in enumerate([(0.5, 0.0), (1.0, 0.02), (1.0, 0.05), (1.0, 0.071)]):
        rows.append((s, {(M, "train_acc"): acc, ("readout", "probe_test_acc"): probe,
                         ("encoder.0", "probe_test_acc"): probe / 2}))  # fmt: skip
    outs = feed(det, rows)
    # the probe's value at the fit is 0.02: onset at >= 0.07
    assert [o.onset for o in outs] == [0.0, 0.0, 0.0, 1.0]
    assert outs[-1].phase == "grokking"


def test_collapse_warning_from_alpha_and_traps():
    det = PhaseDetector(DetectorRules(min_records=1, trap_rise=2))
    rows = [
        (0, {(M, "train_acc"): 0.3, ("a", "htsr_alpha"): 1.5, (M, "htsr_num_traps"): 0.0}),
        (1, {(M, "train_acc"): 0.5, ("a", "htsr_alpha"): 3.0, (M, "htsr_num_traps"): 2.0}),
        (2, {(M, "train_acc"): 1.0, ("a", "htsr_alpha"): 3.0, ("b", "htsr_alpha"): 2.5,
             (M, "htsr_num_traps"): 3.0, (M, "htsr_alpha"): 1.0}),  # model mean: ignored
        (3, {(M, "train_acc"): 1.0, ("a", "htsr_alpha"): 3.0, ("b", "htsr_alpha"): 1.9,
             (M, "htsr_num_traps"): 4.0}),
        (4, {(M, "train_acc"): 1.0, ("a", "htsr_alpha"): 3.0, (M, "htsr_num_traps"): 5.0}),
    ]  # fmt: skip
    outs = feed(det, rows)
    assert [o.alpha_low for o in outs] == [1.0, 0.0, 0.0, 1.0, 0.0]
    # before the fit the baseline is the first count (0); from the fit on, the count then (3)
    assert [o.traps for o in outs] == [0.0, 1.0, 0.0, 0.0, 1.0]
    assert [o.collapse_warning for o in outs] == [0.0, 0.0, 0.0, 1.0, 1.0]  # only once fit
    # per-layer traps are summed when the model total is missing
    det2 = PhaseDetector(DetectorRules(trap_rise=1))
    det2.update(0, {("a", "htsr_num_traps"): 1.0, ("b", "htsr_num_traps"): 0.0})
    assert det2.update(1, {("a", "htsr_num_traps"): 1.0, ("b", "htsr_num_traps"): 1.0}).traps == 1


def test_traps_of_layers_without_an_alpha_fit_do_not_raise_the_warning():
    # a readout with too few eigenvalues for alpha flickers; a fitted layer's rise counts
    det = PhaseDetector(DetectorRules(min_records=1, trap_rise=2))

    def row(fc1, readout):
        return {(M, "train_acc"): 1.0, ("fc1", "htsr_alpha"): 4.0, ("fc1", "htsr_num_traps"): fc1,
                ("readout", "htsr_alpha"): float("nan"), ("readout", "htsr_num_traps"): readout,
                (M, "htsr_num_traps"): fc1 + readout}  # fmt: skip

    outs = feed(
        det, [(0, row(1.0, 0.0)), (1, row(1.0, 5.0)), (2, row(2.0, 0.0)), (3, row(3.0, 4.0))]
    )
    assert [o.traps for o in outs] == [0.0, 0.0, 0.0, 1.0]
    assert [o.collapse_warning for o in outs] == [0.0, 0.0, 0.0, 1.0]


def test_train_fit_has_hysteresis():
    det = PhaseDetector(DetectorRules(min_records=1, train_threshold=0.99, train_slack=0.05))
    accs = [0.98, 1.0, 0.96, 0.93, 0.98, 0.995]
    outs = feed(det, [(s, {(M, "train_acc"): a}) for s, a in enumerate(accs)])
    assert [o.train_fit for o in outs] == [0.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    det = PhaseDetector(DetectorRules(min_records=1, loss_ratio=0.01, loss_slack=3.0))
    losses = [1.0, 0.009, 0.025, 0.031, 0.011, 0.01]
    outs = feed(det, [(s, {(M, "train_loss"): v}) for s, v in enumerate(losses)])
    assert [o.train_fit for o in outs] == [0.0, 1.0, 1.0, 0.0, 0.0, 1.0]


def test_missing_signals_are_nan_with_reasons():
    out = PhaseDetector().update(0, {})
    assert out.phase_code == 0
    for name in ("train_fit", "frozen", "onset", "alpha_low", "traps", "collapse_warning"):
        assert math.isnan(getattr(out, name))
    assert set(out.reasons) == {
        "phase_train_fit", "phase_frozen", "phase_onset", "phase_alpha_low", "phase_traps",
        "phase_collapse_warning", "phase_kernel_speed",
    }  # fmt: skip
    # weights alone: frozen from the speed of rel_change
    det = PhaseDetector()
    outs = feed(det, [(0, {(M, "rel_change"): 0.0}), (10, {(M, "rel_change"): 1.0}),
                      (20, {(M, "rel_change"): 1.05})])  # fmt: skip
    assert [o.frozen for o in outs][1:] == [0.0, 1.0]  # 0.005/step < 0.1 × 0.1/step
    assert math.isnan(outs[-1].onset)


def test_state_round_trip_continues_exactly():
    steps = [0, 10, 20, 40, 80, 120, 160, 200]
    rows = kernel_rows(
        [math.nan, 0.02, 0.005, 0.002, 0.0005, 0.0004, 0.003, 0.0001], steps, [0.1] + [1.0] * 7
    )
    whole = feed(PhaseDetector(), rows)
    first = PhaseDetector()
    feed(first, rows[:4])
    second = PhaseDetector()
    second.load_state_tensor(first.state_tensor())
    assert second.state() == pytest.approx(first.state(), nan_ok=True)
    assert feed(second, rows[4:]) == whole[4:]
    with pytest.raises(ValueError, match="expected"):
        second.load_state_tensor(torch.zeros(3))


# -- as a metric -----------------------------------------------------------------------------


@pytest.fixture
def planted_signals():
    """A diagnostic that plants kernel velocities and HTSR values at known steps."""

    @register(
        "planted",
        metrics=[
            MetricInfo("ntk_velocity", "planted"),
            MetricInfo("ntk_trace", "planted"),
            MetricInfo("htsr_alpha", "planted"),
        ],
    )
    def planted(probe):
        s = probe.step
        return {
            "ntk_velocity": math.nan if s == 0 else (0.01 if s < 20 else 1e-5 if s < 60 else 1e-3),
            "ntk_trace": 1.0,
            "htsr_alpha": {"encoder.0": 3.0 if s < 70 else 1.8},
        }

    yield "planted"
    del _REGISTRY["planted"]


def test_recorded_in_the_store_after_the_families_it_reads(tmp_path, mod_task, planted_signals):
    assert RECORD_VALUES == monitor_module.RECORD_VALUES
    model = gw.models.MLP.for_task(mod_task, width=32, depth=1, embed_dim=8, seed=0)
    # listed first, run last: it sees the planted values and the loss of the same record
    diags = ["phase_detector", "loss", planted_signals]
    mon = gw.Monitor(model, mod_task, dir=tmp_path, diagnostics=diags, cadence=Every(10))
    assert [d.name for d in mon.diagnostics] == ["loss", "planted", "phase_detector"]
    sgd_loop(model, mod_task, mon, 100)
    mon.close()
    ds = open_run(tmp_path)
    got = {m: ds["metrics"].sel(metric=m, layer="model").values for m in replay(ds).data_vars}
    ref = replay(ds)  # the same records read back, replayed offline
    for name, values in got.items():
        np.testing.assert_array_equal(values, ref[name].values, err_msg=name)
    steps = ds["step"].values
    train_acc = ds["metrics"].sel(metric="train_acc", layer="model").values
    np.testing.assert_array_equal(got["phase_train_fit"], (train_acc >= 0.99).astype(float))
    np.testing.assert_array_equal(got["phase_alpha_low"], (steps >= 70).astype(float))
    speed = got["phase_kernel_speed"]
    np.testing.assert_allclose(speed[1:], [math.acos(1 - v) / 10 for v in
                               [0.01] + [1e-5] * 4 + [1e-3] * 4], rtol=1e-9)  # fmt: skip
    assert ds.attrs["metric_info"]["phase_code"]["unit"] == "code"
    assert "htsr_num_traps" in ds.attrs["nan_reasons"]["phase_traps"]["model"]


def test_fallback_computes_train_metrics_itself(mod_task):
    model = gw.models.MLP.for_task(mod_task, width=32, depth=1, embed_dim=8, seed=0)
    mon = gw.Monitor(model, mod_task, diagnostics=["phase_detector"], cadence=Every(10))
    sgd_loop(model, mod_task, mon, 60)
    ds = mon.dataset()
    assert "train_acc" not in ds["metric"].values
    fit = ds["metrics"].sel(metric="phase_train_fit", layer="model").values
    assert np.isfinite(fit).all() and fit[-1] == float(
        gw.tasks.losses.accuracy(model(mod_task.x_train), mod_task.y_train) >= 0.99
    )


def test_resume_continues_the_detector_state(tmp_path, mod_task):
    def run(dir_, start, stop, resume=False):
        model = gw.models.MLP.for_task(mod_task, width=16, depth=1, embed_dim=8, seed=0)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        mon = gw.Monitor(
            model, mod_task, dir=dir_, diagnostics=["weights", "phase_detector"],
            cadence=Every(3), checkpoint_cadence=Every(9), optimizer=opt, resume=resume,
        )  # fmt: skip
        for step in range(start, stop):
            loss = F.cross_entropy(model(mod_task.x_train), mod_task.y_train)
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.step(step)
        mon.close()
        return mon

    run(tmp_path / "full", 0, 31)
    run(tmp_path / "cut", 0, 21)  # interrupted after step 20; last checkpoint at 18
    assert run(tmp_path / "cut", 19, 31, resume=True).resume_step == 18
    full, resumed = open_run(tmp_path / "full"), open_run(tmp_path / "cut")
    for name in ("phase_frozen", "phase_code", "phase_train_fit"):
        np.testing.assert_array_equal(
            resumed["metrics"].sel(metric=name, layer="model").values,
            full["metrics"].sel(metric=name, layer="model").values,
            err_msg=name,
        )
    frozen = full["metrics"].sel(metric="phase_frozen", layer="model").values
    assert np.isfinite(frozen[1:]).all() and np.isnan(frozen[0])
