import copy
import json

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from grokwidgets.models import MLP, Transformer
from grokwidgets.train.optimizers import OPTIMIZERS, Muon, make_optimizer, newton_schulz

EXACT = {"rtol": 0.0, "atol": 0.0}
A, B, C = 3.4445, -4.7750, 2.0315


def orthonormal(rows, cols, seed):
    q, _ = torch.linalg.qr(torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)))
    return q


def gradient_with_spectrum(rows, cols, s):
    k = len(s)
    u, v = orthonormal(rows, k, 0), orthonormal(cols, k, 1)
    return u @ torch.diag(s) @ v.T, u, v


def ns_on_singular_values(s, steps=5):
    """Independent reference: NS5 acts on each normalised singular value as a scalar quintic."""
    x = (s / s.norm()).double()
    for _ in range(steps):
        x = A * x + B * x**3 + C * x**5
    return x


@pytest.mark.parametrize(("rows", "cols"), [(24, 16), (16, 24)])
def test_muon_update_is_orthogonalised(rows, cols):
    k = min(rows, cols)
    s = torch.logspace(0, -2, k)  # singular values spanning two orders of magnitude
    g, u, v = gradient_with_spectrum(rows, cols, s)
    lr = 0.1
    scale = max(1.0, rows / cols) ** 0.5
    w = nn.Parameter(torch.zeros(rows, cols))
    opt = Muon([w], lr=lr, momentum=0.0, weight_decay=0.0)
    w.grad = g.clone()
    opt.step()
    d = -w.detach() / (lr * scale)  # the orthogonalised update

    core = u.T @ d @ v  # diagonal iff d shares g's singular vectors
    off = core - torch.diag(torch.diagonal(core))
    assert_close(off, torch.zeros(k, k), rtol=0.0, atol=2e-5)
    sv = torch.diagonal(core)
    assert float(sv.min()) >= 0.5 and float(sv.max()) <= 1.3
    assert float(s.max() / s.min()) > 50 and float(sv.max() / sv.min()) < 2
    assert_close(sv.double(), ns_on_singular_values(s), rtol=1e-4, atol=1e-5)
    polar = u @ v.T
    cos = (d * polar).sum() / (d.norm() * polar.norm())
    assert float(cos) > 0.9
    assert_close(w.detach(), newton_schulz(g) * (-lr * scale))


def test_newton_schulz_scale_invariant_and_float64():
    g = torch.randn(8, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    out = newton_schulz(g)
    assert out.dtype == torch.float64
    assert_close(newton_schulz(1000 * g), out, rtol=1e-6, atol=1e-9)
    assert newton_schulz(g.float()).dtype == torch.float32
    assert newton_schulz(g.to(torch.bfloat16)).dtype == torch.float32


@pytest.mark.parametrize("nesterov", [False, True])
def test_muon_momentum_matches_classic_momentum(nesterov):
    beta, lr = 0.9, 0.05
    gen = torch.Generator().manual_seed(4)
    g1, g2 = torch.randn(6, 4, generator=gen), torch.randn(6, 4, generator=gen)
    w = nn.Parameter(torch.zeros(6, 4))
    opt = Muon([w], lr=lr, momentum=beta, nesterov=nesterov)
    w.grad = g1
    opt.step()
    before = w.detach().clone()
    w.grad = g2
    opt.step()
    buf = beta * g1 + g2  # classic (PyTorch SGD) momentum buffer
    direction = g2 + beta * buf if nesterov else buf
    scale = max(1.0, 6 / 4) ** 0.5
    assert_close(w.detach() - before, -lr * scale * newton_schulz(direction), rtol=1e-5, atol=1e-7)


def test_muon_weight_decay_is_decoupled():
    w = nn.Parameter(torch.randn(5, 3, generator=torch.Generator().manual_seed(0)))
    w0 = w.detach().clone()
    opt = Muon([w], lr=0.5, weight_decay=0.1)
    w.grad = torch.zeros(5, 3)  # a zero gradient orthogonalises to a zero update
    opt.step()
    assert_close(w.detach(), w0 * (1 - 0.5 * 0.1), **EXACT)


def test_adamw_group_matches_torch_adamw_exactly():
    gen = torch.Generator().manual_seed(1)
    init = torch.randn(7, generator=gen)
    mat = nn.Parameter(torch.randn(4, 3, generator=gen))
    ours = nn.Parameter(init.clone())
    ref = nn.Parameter(init.clone())
    opt = Muon(
        [{"params": [mat]}, {"params": [ours], "use_muon": False, "lr": 3e-3}],
        lr=0.02,
        weight_decay=0.05,
        betas=(0.8, 0.99),
        eps=1e-6,
    )
    ref_opt = torch.optim.AdamW([ref], lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)
    for _ in range(5):
        g = torch.randn(7, generator=gen)
        ours.grad, ref.grad = g.clone(), g.clone()
        mat.grad = torch.randn(4, 3, generator=gen)
        opt.step()
        ref_opt.step()
        assert_close(ours.detach(), ref.detach(), **EXACT)
    ref_state = ref_opt.state[ref]
    for key in ("step", "exp_avg", "exp_avg_sq"):
        assert_close(opt.state[ours][key], ref_state[key], **EXACT)
    assert not torch.equal(ours.detach(), init)


def _loss(model, x, y):
    return nn.functional.cross_entropy(model(x), y)


def test_state_dict_round_trip_continues_identically():
    gen = torch.Generator().manual_seed(2)
    x, y = torch.randn(16, 5, generator=gen), torch.randint(0, 3, (16,), generator=gen)
    model = MLP(5, 3, width=8, depth=2, seed=0)
    opt = make_optimizer("muon", model, lr=0.02, weight_decay=0.01)
    for _ in range(2):
        opt.zero_grad()
        _loss(model, x, y).backward()
        opt.step()

    sd = opt.state_dict()
    for per_param in sd["state"].values():
        assert per_param and all(isinstance(t, torch.Tensor) for t in per_param.values())
    # as a checkpoint would store it: tensors apart, param groups through JSON
    saved = {
        "state": {i: {k: t.clone() for k, t in st.items()} for i, st in sd["state"].items()},
        "param_groups": json.loads(json.dumps(sd["param_groups"])),
    }
    model2 = copy.deepcopy(model)
    opt2 = make_optimizer("muon", model2, lr=0.5, weight_decay=0.0)  # overwritten by the load
    opt2.load_state_dict(saved)
    for _ in range(3):
        for m, o in ((model, opt), (model2, opt2)):
            o.zero_grad()
            _loss(m, x, y).backward()
            o.step()
    for (n1, p1), (n2, p2) in zip(model.named_parameters(), model2.named_parameters(), strict=True):
        assert n1 == n2
        assert_close(p2, p1, **EXACT)


def test_make_optimizer_muon_groups_mlp():
    task_model = MLP(5, 3, width=8, depth=2, vocab_size=None)
    opt = make_optimizer("muon", task_model, lr=0.01, weight_decay=0.1, momentum=0.9)
    assert isinstance(opt, Muon)
    muon_group, adam_group = opt.param_groups
    assert muon_group["use_muon"] and not adam_group["use_muon"]
    names = {id(p): n for n, p in task_model.named_parameters()}
    assert [names[id(p)] for p in muon_group["params"]] == ["encoder.0.weight", "encoder.2.weight"]
    assert sorted(names[id(p)] for p in adam_group["params"]) == [
        "encoder.0.bias",
        "encoder.2.bias",
        "readout.bias",
        "readout.weight",
    ]
    assert muon_group["lr"] == adam_group["lr"] == 0.01
    assert muon_group["weight_decay"] == adam_group["weight_decay"] == 0.1
    assert muon_group["momentum"] == 0.9
    opt2 = make_optimizer("muon", task_model, lr=0.02, adamw_lr=1e-3)
    assert [g["lr"] for g in opt2.param_groups] == [0.02, 1e-3]


def test_make_optimizer_muon_groups_transformer():
    model = Transformer(7, d_model=8, n_heads=2, d_mlp=16)
    opt = make_optimizer("muon", model, lr=0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    muon = sorted(names[id(p)] for p in opt.param_groups[0]["params"])
    assert muon == sorted(
        [f"encoder.attn.{k}.weight" for k in "qkvo"]
        + ["encoder.mlp.0.weight", "encoder.mlp.2.weight"]
    )
    rest = {names[id(p)] for p in opt.param_groups[1]["params"]}
    assert {"embed.weight", "pos_embed.weight", "readout.weight"} <= rest


@pytest.mark.parametrize(
    ("name", "cls"),
    [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)],
)
def test_make_optimizer_torch_classes(name, cls):
    model = MLP(4, 2, width=6)
    opt = make_optimizer(name, model, lr=0.003, weight_decay=0.2)
    assert type(opt) is cls
    (group,) = opt.param_groups
    assert group["lr"] == 0.003 and group["weight_decay"] == 0.2
    assert len(group["params"]) == len(list(model.parameters()))


def test_make_optimizer_passes_kwargs():
    opt = make_optimizer("SGD", MLP(4, 2, width=6), lr=0.1, momentum=0.9, nesterov=True)
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["nesterov"]


def test_optimizer_names():
    assert OPTIMIZERS == ("sgd", "adam", "adamw", "muon")


def test_unknown_optimizer_lists_valid_names():
    with pytest.raises(ValueError, match=r"sgd.*adam.*adamw.*muon"):
        make_optimizer("lion", MLP(4, 2), lr=0.1)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_unknown_kwarg_lists_valid_ones(name):
    with pytest.raises(ValueError, match="Valid arguments"):
        make_optimizer(name, MLP(4, 2, width=6), lr=0.1, momentom=0.9)


def test_muon_group_rejects_vectors_and_models_without_encoder():
    with pytest.raises(ValueError, match="use_muon=False"):
        Muon([nn.Parameter(torch.zeros(3))])
    with pytest.raises(ValueError, match="encoder"):
        make_optimizer("muon", nn.Linear(3, 2), lr=0.1)
    with pytest.raises(ValueError, match="adamw"):
        make_optimizer("muon", MLP(3, 2, depth=0), lr=0.1)


def test_tians_muon_convention_unscaled_update_and_adam_with_coupled_l2():
    """Li₂'s code: Muon on W without the shape factor, torch.optim.Adam (coupled L2) on V."""
    gen = torch.Generator().manual_seed(2)
    w = nn.Parameter(torch.randn(12, 4, generator=gen))  # tall: Jordan's factor would be √3
    v_init = torch.randn(5, 12, generator=gen)
    ours, ref = nn.Parameter(v_init.clone()), nn.Parameter(v_init.clone())
    opt = Muon(
        [{"params": [w]}, {"params": [ours], "use_muon": False}],
        lr=1e-2,
        momentum=0.99,
        nesterov=False,
        weight_decay=0.1,
        rms_scale=False,
        coupled_decay=True,
    )
    ref_opt = torch.optim.Adam([ref], lr=1e-2, weight_decay=0.1)
    buf = torch.zeros_like(w)
    for _ in range(4):
        gw_, gv = torch.randn(12, 4, generator=gen), torch.randn(5, 12, generator=gen)
        w.grad, ours.grad, ref.grad = gw_.clone(), gv.clone(), gv.clone()
        before = w.detach().clone()
        buf = 0.99 * buf + 0.01 * gw_
        opt.step()
        ref_opt.step()
        want = before * (1 - 1e-2 * 0.1) - 1e-2 * newton_schulz(buf)
        assert_close(w.detach(), want, rtol=1e-5, atol=1e-6)
        assert_close(ours.detach(), ref.detach(), **EXACT)
    # the same steps with Jordan's factor and AdamW's decay would differ
    assert opt.param_groups[0]["rms_scale"] is False


def test_make_optimizer_muon_takes_tians_options():
    model = MLP(46, 23, width=16, depth=1, activation="square", bias=False)
    opt = make_optimizer(
        "muon",
        model,
        lr=1e-3,
        weight_decay=5e-4,
        momentum=0.99,
        nesterov=False,
        rms_scale=False,
        coupled_decay=True,
    )
    muon, rest = opt.param_groups
    assert muon["params"] == [model.encoder[0].weight] and rest["params"] == [model.readout.weight]
    assert muon["rms_scale"] is False and rest["coupled_decay"] is True
