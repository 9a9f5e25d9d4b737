"""Diagnostics computed afterwards at a checkpoint: gw.diagnostics.compute_at, computable_at.

The reference for every computed value is a second run, identical but for the diagnostics
it records: a Monitor that did record them at that step.
"""

import numpy as np
import pytest
import torch

import grokwidgets as gw
from grokwidgets.diagnostics import registry
from grokwidgets.diagnostics.registry import MetricInfo
from grokwidgets.replay import compute as at_checkpoint
from grokwidgets.replay.compute import compute_at
from grokwidgets.store.checkpoints import checkpoint_path
from grokwidgets.store.computed import COMPUTED_DIR
from tests.replay._checkpointed import CHEAP, STEPS, task, train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_compute_at_matches_a_monitor_recording_there(runs, sparse):
    ref = runs["ref"].sel(step=10)
    commit = (sparse / "metrics.zarr" / "commit.json").read_bytes()
    seen = []
    out = compute_at(sparse, 10, CHEAP, progress=lambda i, n, name: seen.append((i, n, name)))
    assert seen == [(i, len(CHEAP), name) for i, name in enumerate(CHEAP)]
    assert (sparse / "metrics.zarr" / "commit.json").read_bytes() == commit  # never written
    assert out.attrs["computed"] == {name: [10] for name in CHEAP}
    got = out["metrics"].reindex(layer=ref["layer"], metric=ref["metric"])
    checked = 0
    for metric in ref["metric"].values:
        want = ref["metrics"].sel(metric=metric).values
        have = got.sel(metric=metric).values
        if metric == "cka_prev":
            # The reference compares with its record at step 0; the sparse run has none.
            assert np.isnan(have).all() and np.isfinite(want).any()
            continue
        np.testing.assert_allclose(have, want, rtol=1e-9, atol=0, err_msg=str(metric))
        checked += int(np.isfinite(want).sum())
    assert checked > 40
    # ntk's state came from the checkpoint: its velocity is against the record at step 0
    assert np.isfinite(out["metrics"].sel(layer="model", metric="ntk_velocity").item())
    assert "no earlier record of 'geometry'" in out.attrs["nan_reasons"]["cka_prev"]["encoder.0"]
    for var in ("spectrum", "kernel_spectrum"):
        np.testing.assert_allclose(
            out[var].reindex(layer=ref["layer"]).values, ref[var].values, rtol=1e-9
        )


def test_without_a_step0_checkpoint_init_metrics_are_nan(runs, sparse):
    checkpoint_path(sparse, 0).unlink()
    ref = runs["ref"]["metrics"].sel(step=10)
    out = compute_at(sparse, 10, ["geometry", "ntk"])
    m = out["metrics"]
    for layer in ("encoder.0", "readout"):
        assert np.isnan(m.sel(layer=layer, metric="cka_init").item())
        assert np.isfinite(ref.sel(layer=layer, metric="cka_init").item())
        why = out.attrs["nan_reasons"]["cka_init"][layer]
        assert "no step-0 checkpoint" in why
        np.testing.assert_allclose(
            m.sel(layer=layer, metric="effective_rank").item(),
            ref.sel(layer=layer, metric="effective_rank").item(),
            rtol=1e-9,
        )
    # ntk was recorded by the run: its state (init kernel) comes from the step-10 checkpoint
    np.testing.assert_allclose(
        m.sel(layer="model", metric="ntk_cka_init").item(),
        ref.sel(layer="model", metric="ntk_cka_init").item(),
        rtol=1e-9,
    )


def test_gradient_of_a_minibatch_run_and_of_a_custom_loop(tmp_path):
    # gw.train with minibatches: the gradient at step 10 is replayed on the same batch
    ref = gw.open_run(train(tmp_path / "ref", ["basic"], 10, batch_size=16))
    sparse = train(tmp_path / "sparse", ["basic"], {"default": 20}, batch_size=16)
    out = compute_at(sparse, 10, ["grad_norm"])
    want = ref["metrics"].sel(step=10, metric="grad_norm")
    assert np.isfinite(want.values).sum() >= 3
    np.testing.assert_allclose(
        out["metrics"].sel(metric="grad_norm").reindex(layer=want["layer"]).values,
        want.values,
        rtol=1e-9,
    )
    # around the user's own loop: no known gradient (NaN and why); the loss is the model's
    model = gw.models.MLP.for_task(task(), width=32, depth=1, seed=1)
    mon = gw.Monitor(model, task(), dir=tmp_path / "own", cadence=20, checkpoint_cadence=10)
    with torch.no_grad():
        model.readout.weight.mul_(3.0)  # a state no config rebuilds
    for s in range(STEPS + 1):
        mon.step(s)
    mon.close()
    out = compute_at(tmp_path / "own", 10, ["loss", "grad_norm"])
    t = task()
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(t.x_test), t.y_test).item()
    np.testing.assert_allclose(
        out["metrics"].sel(layer="model", metric="test_loss").item(), loss, rtol=1e-6
    )
    assert np.isnan(out["metrics"].sel(layer="model", metric="grad_norm").item())
    assert "no training gradient" in out.attrs["nan_reasons"]["grad_norm"]["model"]


def test_a_record_reader_sees_the_step_values(sparse, monkeypatch):
    # Like the phase detector: runs after the others and reads this step's values so far.
    def reader(probe):
        values = probe.cache["record.values"]
        return {
            "seen_loss": values[("model", "train_loss")],
            "seen_alpha": values[("encoder.0", "htsr_alpha")],
        }

    reader.reads_record = True
    infos = (MetricInfo("seen_loss", "test"), MetricInfo("seen_alpha", "test"))
    monkeypatch.setitem(registry._REGISTRY, "reader", registry.Diagnostic("reader", reader, infos))
    out = compute_at(sparse, 20, ["reader", "htsr"])
    m = out["metrics"]
    assert m.sel(layer="model", metric="seen_loss").item() == (
        gw.open_run(sparse)["metrics"].sel(step=20, layer="model", metric="train_loss").item()
    )
    alpha = m.sel(layer="encoder.0", metric="htsr_alpha").item()
    assert np.isfinite(alpha) and m.sel(layer="model", metric="seen_alpha").item() == alpha


def test_the_cache_is_reused(runs, sparse, monkeypatch):
    first = compute_at(sparse, 10, ["htsr"])
    entry = sparse / COMPUTED_DIR / "step_00000010-htsr.zarr"
    mtime = entry.stat().st_mtime_ns

    def no_recompute(*args, **kwargs):
        raise AssertionError("computed again")

    monkeypatch.setattr(at_checkpoint, "_compute", no_recompute)
    again = compute_at(sparse, 10, ["htsr"])
    np.testing.assert_array_equal(again["spectrum"].values, first["spectrum"].values)
    assert entry.stat().st_mtime_ns == mtime
    with pytest.raises(AssertionError, match="computed again"):
        compute_at(sparse, 10, ["geometry"])


def test_compute_at_bad_input(sparse):
    with pytest.raises(
        ValueError,
        match="No checkpoint at step 7: .*step_00000007.safetensors does not exist.*nearest is 10",
    ):
        compute_at(sparse, 7, ["htsr"])
    with pytest.raises(ValueError, match="Unknown diagnostic 'nope'"):
        compute_at(sparse, 10, ["nope"])
    with pytest.raises(ValueError, match="names is empty"):
        compute_at(sparse, 10, [])
