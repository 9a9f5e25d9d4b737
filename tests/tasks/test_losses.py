"""The losses by name, against their formulas written out by hand."""

import pytest
import torch
import torch.nn.functional as F

from grokwidgets.tasks import modular_arithmetic, polynomial_regression
from grokwidgets.tasks.losses import make_loss


def test_centred_mse_is_tians_loss_summed_over_classes():
    task = modular_arithmetic(p=7, train_fraction=0.5)
    gen = torch.Generator().manual_seed(0)
    out = torch.randn(12, 7, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 7, (12,), generator=gen)
    loss = make_loss("centred_mse", task)(out, y)
    # Tian's compute_loss(loss_type="mse"), written the way the paper's code writes it
    zm = out - out.mean(dim=1, keepdim=True)
    tian = zm.pow(2).sum(dim=1).mean() - 2 * zm.gather(1, y[:, None]).mean() + 1 - 1 / 7
    # and as a plain double loop over samples and classes
    loop = (
        sum(sum((zm[i, c] - (float(c == y[i]) - 1 / 7)) ** 2 for c in range(7)) for i in range(12))
        / 12
    )
    torch.testing.assert_close(loss, tian)
    torch.testing.assert_close(loss, loop)
    # a shift of every output by a constant does not change it; "mse" would
    torch.testing.assert_close(make_loss("centred_mse", task)(out + 3.0, y), loss)
    mse = make_loss("mse", task)
    assert not torch.isclose(mse(out + 3.0, y), mse(out, y))
    torch.testing.assert_close(mse(out, y), F.mse_loss(out, F.one_hot(y, 7).to(out.dtype)))


def test_centred_mse_needs_classes():
    with pytest.raises(ValueError, match="classification"):
        make_loss("centred_mse", polynomial_regression(n_train=8, n_test=8))
    with pytest.raises(ValueError, match="centred_mse"):
        make_loss("hinge", modular_arithmetic(p=5))
