"""Phase labels and time to grok: planted transitions, a real run that groks, bad input."""

import math

import numpy as np
import pytest
import xarray as xr

import grokwidgets as gw
from grokwidgets.diagnostics.phases import (
    PHASE_CODES,
    PHASES,
    GrokTimes,
    PhaseRules,
    grok_times,
    label_phases,
    label_run,
    loss_grok_times,
    loss_time_to_grok,
    time_to_grok,
)
from grokwidgets.monitor.cadence import Every
from grokwidgets.store.records import Index, Record, dense_block, to_dataset

STEPS = np.arange(0, 4000, 10)


def sigmoid(t):
    return 1.0 / (1.0 + np.exp(-t))


def logit(p):
    return math.log(p / (1 - p))


def first_step_at_or_after(t):
    """The first grid step >= t (closed-form crossing -> recorded step)."""
    return int(STEPS[np.searchsorted(STEPS, t)])


def first_index(labels, label):
    hits = np.flatnonzero(labels == label)
    return int(hits[0]) if hits.size else None


def planted(t_mem=300.0, t_grok=1500.0, t_col=None, w=40.0, chance=0.01, gain=0.95, fall=0.5):
    train = chance + (1 - chance) * sigmoid((STEPS - t_mem) / 15.0)
    test = chance + gain * sigmoid((STEPS - t_grok) / w)
    if t_col is not None:
        test = test - fall * gain * sigmoid((STEPS - t_col) / w)
    return train, test


# -- planted transitions -------------------------------------------------------------------


def test_planted_memorization_grokking_generalization_and_collapse():
    t_mem, t_grok, t_col, w, chance = 300.0, 1500.0, 3000.0, 40.0, 0.01
    train, test = planted(t_mem, t_grok, t_col, w, chance)
    labels = label_phases(train_acc=train, test_acc=test, steps=STEPS)
    assert labels.shape == STEPS.shape
    rules = PhaseRules()
    # closed-form crossings of the planted curves, mapped to the first recorded step after
    fit = t_mem + 15.0 * logit((rules.train_threshold - chance) / (1 - chance))
    onset = t_grok + w * logit(rules.onset)
    gen = t_grok + w * logit(rules.generalized)
    collapse = t_col + w * logit(rules.drop / 0.5)  # u falls by fall·σ; fall = 0.5
    expected = {
        "memorization": fit,
        "grokking": onset,
        "generalized": gen,
        "anti-grokking": collapse,
    }
    for label, t in expected.items():
        got = STEPS[first_index(labels, label)]
        assert abs(got - first_step_at_or_after(t)) <= 10, (label, got, t)
    # and the order: each phase holds until the next one starts
    order = [PHASE_CODES[x] for x in labels]
    assert order == sorted(order)
    assert labels[0] == "undetermined"
    assert labels[-1] == "anti-grokking"


def test_planted_boundaries_match_a_brute_force_reading_of_the_rules():
    train, test = planted()
    labels = label_phases(train_acc=train, test_acc=test, steps=STEPS)
    k = int(np.argmax(test))
    base = test[: k + 1].min()
    u = (test - base) / (test[k] - base)
    fit = np.flatnonzero(train >= 0.99)[0]
    assert first_index(labels, "memorization") == fit
    assert first_index(labels, "grokking") == np.flatnonzero((u >= 0.1) & (train >= 0.99))[0]
    assert first_index(labels, "generalized") == np.flatnonzero(u >= 0.9)[0]
    assert "anti-grokking" not in labels


def test_chance_sets_the_baseline():
    train, test = planted(chance=0.2, gain=0.6)
    default = label_phases(train_acc=train, test_acc=test)
    with_chance = label_phases(train_acc=train, test_acc=test, chance=0.0)
    # a baseline below the curve makes the same accuracies count as more progress
    assert first_index(with_chance, "grokking") < first_index(default, "grokking")
    u0 = (test - 0.0) / (test.max() - 0.0)
    assert first_index(with_chance, "generalized") == np.flatnonzero(u0 >= 0.9)[0]


def test_loss_version_on_planted_regression_curves():
    t_mem, t_grok, w = 200.0, 2000.0, 60.0
    train_loss = np.exp(np.log(2.0) - math.log(1e4) * sigmoid((STEPS - t_mem) / 20.0))
    test_loss = np.exp(np.log(3.0) - math.log(100.0) * sigmoid((STEPS - t_grok) / w))
    labels = label_phases(train_loss=train_loss, test_loss=test_loss, steps=STEPS)
    fit = np.flatnonzero(train_loss <= 0.01 * train_loss[0])[0]
    assert first_index(labels, "memorization") == fit
    score = -np.log(test_loss)
    k = int(np.argmax(score))
    u = (score - score[: k + 1].min()) / (score[k] - score[: k + 1].min())
    assert first_index(labels, "grokking") == np.flatnonzero(u >= 0.1)[0]
    assert first_index(labels, "generalized") == np.flatnonzero(u >= 0.9)[0]
    # the closed form: u = σ((t - t_grok)/w) up to the tiny tails
    assert abs(STEPS[first_index(labels, "generalized")] - (t_grok + w * logit(0.9))) <= 10


def test_steady_learning_is_never_grokking():
    train = 1 - 0.99 * np.exp(-STEPS / 200.0)
    test = 0.01 + 0.97 * (1 - np.exp(-STEPS / 200.0))
    labels = label_phases(train_acc=train, test_acc=test)
    assert "grokking" not in labels and "memorization" not in labels
    assert labels[-1] == "generalized"


def test_a_run_that_never_generalizes_is_only_memorization():
    train, _ = planted()
    test = np.full_like(train, 0.02) + 0.01 * np.sin(STEPS)  # noise well below min_gain
    labels = label_phases(train_acc=train, test_acc=test)
    assert set(labels) == {"undetermined", "memorization"}


def test_optimizer_failure_is_not_anti_grokking():
    train, test = planted(t_col=None)
    late = STEPS > 3000
    train = np.where(late, 0.3, train)  # train and test fall together: divergence
    test = np.where(late, 0.3, test)
    labels = label_phases(train_acc=train, test_acc=test)
    assert "anti-grokking" not in labels
    assert set(labels[late]) == {"undetermined"}


# -- never a guess -------------------------------------------------------------------------


def test_too_few_records_are_undetermined():
    rules = PhaseRules(min_records=5)
    four = label_phases(train_acc=[0.1, 1, 1, 1], test_acc=[0.0, 0.0, 0.5, 1.0], rules=rules)
    assert list(four) == ["undetermined"] * 4
    five = label_phases(
        train_acc=[0.1, 1, 1, 1, 1], test_acc=[0.0, 0.0, 0.5, 1.0, 1.0], rules=rules
    )
    assert list(five) == ["undetermined", "memorization", "grokking", "generalized", "generalized"]
    # NaN records do not count towards min_records and are undetermined themselves
    nan = label_phases(
        train_acc=[0.1, 1, np.nan, 1, 1, 1], test_acc=[0.0, 0.0, 0.2, 0.5, 1.0, 1.0], rules=rules
    )
    assert nan[2] == "undetermined"
    assert list(label_phases(train_acc=[], test_acc=[])) == []


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="loss versions"):
        label_phases(train_acc=[1.0, 1.0])
    with pytest.raises(ValueError, match="mode 'accuracy' lacks"):
        label_phases(train_loss=[1.0], test_loss=[1.0], mode="accuracy")
    with pytest.raises(ValueError, match="has 2 values but the other curves have 3"):
        label_phases(train_acc=[1, 1, 1], test_acc=[1, 1])
    with pytest.raises(ValueError, match="strictly increasing"):
        label_phases(train_acc=[1, 1, 1], test_acc=[1, 1, 1], steps=[0, 2, 2])
    with pytest.raises(ValueError, match="one entry per record"):
        label_phases(train_acc=[1, 1, 1], test_acc=[1, 1, 1], steps=[0, 1])
    with pytest.raises(ValueError, match="onset < generalized"):
        PhaseRules(onset=0.95)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        loss_grok_times([1.0], [1.0], train_ratio=1.5)
    with pytest.raises(ValueError, match="positive loss"):
        loss_grok_times([0.0, 0.0], [1.0, 0.1])


def dataset(rows: dict[str, np.ndarray], steps=STEPS) -> xr.Dataset:
    records = []
    for i, s in enumerate(steps):
        rec = Record(step=int(s))
        for name, v in rows.items():
            rec.values[("model", name)] = float(v[i])
        records.append(rec)
    index = Index()
    for rec in records:
        index.add(rec)
    return to_dataset(*dense_block(records, index), index)


def test_regression_run_uses_the_loss_versions():
    train_loss = np.exp(-STEPS / 100.0)
    test_loss = np.exp(-math.log(100.0) * sigmoid((STEPS - 2000) / 60.0))
    ds = dataset({"train_loss": train_loss, "test_loss": test_loss})
    labels = label_run(ds)
    assert labels.dims == ("step",) and labels.name == "phase"
    np.testing.assert_array_equal(
        labels.values, label_phases(train_loss=train_loss, test_loss=test_loss, steps=STEPS)
    )
    assert set(labels.values) <= set(PHASES) and "generalized" in labels.values
    with pytest.raises(KeyError, match="use mode='loss'"):
        label_run(ds, mode="accuracy")
    with pytest.raises(KeyError, match="use loss_time_to_grok"):
        time_to_grok(ds)


def test_rows_of_another_family_take_the_last_known_label():
    """A mechanism family on its own cadence adds rows without accuracies: no label flicker."""
    train = sigmoid((STEPS - 300) / 40.0)
    test = 0.05 + 0.95 * sigmoid((STEPS - 2500) / 60.0)
    plain = dataset({"train_acc": train, "test_acc": test})
    # the same run with extra rows half-way between records, holding only another metric
    mid = STEPS[:-1] + 5
    steps = np.sort(np.concatenate([STEPS, mid]))
    nan = np.full(len(steps), np.nan)
    at = np.searchsorted(steps, STEPS)
    tr, te, other = nan.copy(), nan.copy(), np.ones(len(steps))
    tr[at], te[at] = train, test
    mixed = dataset({"train_acc": tr, "test_acc": te, "li2_stage": other}, steps=steps)
    want = label_run(plain).values
    got = label_run(mixed)
    np.testing.assert_array_equal(got.sel(step=STEPS).values, want)
    # each extra row carries the label of the record just before it
    np.testing.assert_array_equal(got.sel(step=mid).values, want[:-1])
    assert "undetermined" not in set(got.values) - set(want)
    assert {"memorization", "grokking", "generalized"} <= set(want)


# -- times ---------------------------------------------------------------------------------


def test_grok_times_against_brute_force():
    train, test = planted()
    times = grok_times(train, test, STEPS, train_threshold=0.99, test_threshold=0.9)
    brute_mem = next(s for s, a in zip(STEPS, train, strict=True) if a >= 0.99)
    brute_gen = next(s for s, a in zip(STEPS, test, strict=True) if a >= 0.9)
    assert times == GrokTimes(int(brute_mem), int(brute_gen))
    assert times.delay == brute_gen - brute_mem
    assert grok_times([0.5], [0.5]) == GrokTimes(None, None)
    ds = dataset({"train_acc": train, "test_acc": test})
    assert time_to_grok(ds, 0.99, 0.9) == times


def test_loss_grok_times_against_brute_force():
    train_loss = 2.0 * np.exp(-STEPS / 300.0)
    test_loss = np.concatenate([[np.nan], 3.0 + 0 * STEPS[1:]])
    test_loss[200:] = 3.0 * np.exp(-(STEPS[200:] - STEPS[200]) / 100.0)
    times = loss_grok_times(train_loss, test_loss, STEPS, train_ratio=0.1, test_ratio=0.05)
    brute_mem = STEPS[np.flatnonzero(train_loss <= 0.1 * train_loss[0])[0]]
    brute_gen = STEPS[np.flatnonzero(test_loss <= 0.05 * 3.0)[0]]  # first finite value: 3
    assert times == GrokTimes(int(brute_mem), int(brute_gen))
    # closed forms: 300·ln 10 and STEPS[200] + 100·ln 20, to the 10-step grid
    assert abs(times.memorized - 300 * math.log(10)) <= 10
    assert abs(times.generalized - (STEPS[200] + 100 * math.log(20))) <= 10
    ds = dataset({"train_loss": train_loss, "test_loss": test_loss})
    assert loss_time_to_grok(ds, 0.1, 0.05) == times


# -- a real modular-addition run that groks ------------------------------------------------


@pytest.fixture(scope="module")
def grok_run():
    """The cheapest modular-addition run found that groks on CPU (about 2 s).

    a + b mod 29 from 60% of the pairs, embedding MLP (width 96, embed 24), AdamW lr 1e-2,
    weight decay 1, full batch: train accuracy 1 by step ~50, test accuracy ~0 until ~350,
    then > 0.95 by ~1200.
    """
    task = gw.tasks.modular_arithmetic(p=29, op="+", train_fraction=0.6, seed=0)
    model = gw.models.MLP.for_task(task, width=96, depth=1, embed_dim=24, seed=0)
    run = gw.train(
        task, model, steps=1500, lr=1e-2, weight_decay=1.0, progress=False,
        diagnostics=["loss"], cadence=Every(25), checkpoint_cadence=False,
    )  # fmt: skip
    return run.dataset()


def test_real_run_that_groks(grok_run):
    ds = grok_run
    train = ds["metrics"].sel(metric="train_acc", layer="model").values
    test = ds["metrics"].sel(metric="test_acc", layer="model").values
    steps = ds["step"].values
    times = time_to_grok(ds)
    assert times.memorized is not None and times.generalized is not None
    assert times.delay >= 500  # it really groks: a long gap between fit and generalization
    labels = label_run(ds, chance=1 / 29).values
    order = [PHASE_CODES[x] for x in labels]
    assert order == sorted(order)  # undetermined → memorization → grokking → generalized
    assert {"memorization", "grokking", "generalized"} <= set(labels)
    assert "anti-grokking" not in labels
    assert steps[first_index(labels, "memorization")] == times.memorized
    u = (test - 1 / 29) / (test.max() - 1 / 29)
    assert first_index(labels, "generalized") == np.flatnonzero(u >= 0.9)[0]
    assert first_index(labels, "grokking") == np.flatnonzero((u >= 0.1) & (train >= 0.99))[0]
    mem = labels == "memorization"
    assert test[mem].max() < 0.15 and train[mem].min() >= 0.99  # near chance (0.034)


def test_real_run_loss_version(grok_run):
    ds = grok_run
    loss_times = loss_time_to_grok(ds)
    acc_times = time_to_grok(ds)
    assert loss_times.memorized is not None and loss_times.generalized is not None
    assert loss_times.memorized < acc_times.generalized
    labels = label_run(ds)  # accuracies
    at_loss_grok = labels.sel(step=loss_times.generalized).item()
    assert at_loss_grok in {"grokking", "generalized"}
    loss_labels = label_run(ds, mode="loss").values
    order = [PHASE_CODES[x] for x in loss_labels]
    assert order == sorted(order)
    assert {"grokking", "generalized"} <= set(loss_labels)
