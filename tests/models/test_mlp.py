import json

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from grokwidgets.models import MLP, from_config
from grokwidgets.models.mlp import Poly, make_activation
from grokwidgets.tasks.base import Task

EXACT = {"rtol": 0.0, "atol": 0.0}


def continuous_task(n=12, d=5, k=3, meta=None):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, d, generator=g)
    y = torch.randint(0, k, (n,), generator=g)
    return Task(
        name="toy",
        kind="classification",
        x_train=x,
        y_train=y,
        x_test=x[:4],
        y_test=y[:4],
        n_outputs=k,
        config={"family": "toy"},
        meta=meta or {},
    )


def token_task(n=10, p=7, n_tokens=2):
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, p, (n, n_tokens), generator=g)
    y = x.sum(1) % p
    return Task(
        name="tok",
        kind="classification",
        x_train=x,
        y_train=y,
        x_test=x[:3],
        y_test=y[:3],
        n_outputs=p,
        config={"family": "tok"},
        input_kind="tokens",
        vocab_size=p,
    )


def test_module_names_continuous():
    model = MLP(5, 3, width=8, depth=2)
    names = dict(model.named_modules())
    for path in ("encoder", "encoder.0", "encoder.1", "encoder.2", "encoder.3", "readout"):
        assert path in names
    assert isinstance(names["encoder.0"], nn.Linear)
    assert isinstance(names["encoder.2"], nn.Linear)
    assert isinstance(names["encoder.1"], nn.ReLU)
    assert "embed" not in names
    assert [n for n, _ in model.named_parameters()] == [
        "encoder.0.weight",
        "encoder.0.bias",
        "encoder.2.weight",
        "encoder.2.bias",
        "readout.weight",
        "readout.bias",
    ]


def test_module_names_tokens_and_shapes():
    task = token_task()
    model = MLP.for_task(task, width=16, depth=2, embed_dim=6)
    names = dict(model.named_modules())
    assert isinstance(names["embed"], nn.Embedding)
    assert names["embed"].weight.shape == (7, 6)
    assert names["encoder.0"].in_features == 2 * 6
    assert model(task.x_train).shape == (task.n_train, 7)


def test_token_embeddings_are_concatenated():
    model = MLP(2, 4, width=8, depth=1, vocab_size=5, embed_dim=3, activation="identity")
    x = torch.tensor([[1, 4], [0, 2]])
    expected_h = torch.cat([model.embed.weight[x[:, 0]], model.embed.weight[x[:, 1]]], dim=1)
    captured = {}
    model.encoder.register_forward_pre_hook(lambda m, args: captured.update(h=args[0]))
    model(x)
    assert_close(captured["h"], expected_h, **EXACT)


def test_forward_shape_continuous_and_depth_zero():
    task = continuous_task()
    model = MLP.for_task(task, width=16, depth=3)
    assert model(task.x_train).shape == (12, 3)
    assert len(model.encoder) == 6
    flat = MLP.for_task(task, depth=0)
    assert len(flat.encoder) == 0
    assert flat.readout.in_features == 5
    w, b = flat.readout.weight, flat.readout.bias
    assert_close(flat(task.x_train), task.x_train @ w.T + b)


def test_bias_false_everywhere():
    model = MLP(4, 2, width=8, depth=2, bias=False)
    assert all(not n.endswith("bias") for n, _ in model.named_parameters())


def test_default_init_bounds():
    model = MLP(50, 3, width=40, depth=1, seed=3)
    w = model.encoder[0].weight.detach()
    bound = 1 / 50**0.5
    assert float(w.abs().max()) <= bound
    # U(-b, b) has standard deviation b / sqrt(3)
    assert_close(w.std().item(), bound / 3**0.5, rtol=0.05, atol=0.0)


def test_xavier_normal_init_std_zero_biases_and_scale():
    model = MLP(200, 60, width=300, depth=1, init="xavier_normal", seed=3)
    for layer, (fan_out, fan_in) in ((model.encoder[0], (300, 200)), (model.readout, (60, 300))):
        w = layer.weight.detach().double()
        assert w.mean().abs() < 0.04 * w.std()  # 5 standard errors of the mean
        assert_close(w.std().item(), (2 / (fan_in + fan_out)) ** 0.5, rtol=0.03, atol=0.0)
        assert not layer.bias.detach().any()
    scaled = MLP(200, 60, width=300, depth=1, init="xavier_normal", init_scale=10.0, seed=3)
    for (name, p), q in zip(model.named_parameters(), scaled.parameters(), strict=True):
        assert_close(q, p * 10.0, **EXACT), name
    again = MLP(200, 60, width=300, depth=1, init="xavier_normal", seed=3)
    assert_close(again.readout.weight, model.readout.weight, **EXACT)
    rebuilt = from_config(json.loads(json.dumps(scaled.config)))
    assert rebuilt.config["init"] == "xavier_normal"
    assert_close(rebuilt.encoder[0].weight, scaled.encoder[0].weight, **EXACT)
    with pytest.raises(ValueError, match="Valid inits"):
        MLP(3, 2, init="orthogonal")


def test_init_scale_multiplies_every_parameter():
    task = token_task()
    base = MLP.for_task(task, width=8, depth=2, embed_dim=4, seed=5)
    scaled = MLP.for_task(task, width=8, depth=2, embed_dim=4, seed=5, init_scale=8.0)
    base_params = dict(base.named_parameters())
    scaled_params = dict(scaled.named_parameters())
    assert base_params.keys() == scaled_params.keys()
    assert "embed.weight" in base_params
    for name, p in base_params.items():
        assert_close(scaled_params[name], p * 8.0, **EXACT)


def test_alpha_scales_output_exactly():
    x = continuous_task().x_train
    plain = MLP(5, 3, width=8, alpha=1.0, seed=2)
    scaled = MLP(5, 3, width=8, alpha=0.25, seed=2)
    assert_close(scaled(x), plain(x) * 0.25, **EXACT)
    assert not torch.equal(scaled(x), plain(x))


def test_centred_is_zero_at_init_and_alpha_times_difference_after():
    x = continuous_task().x_train
    alpha = 3.0
    model = MLP(5, 3, width=8, alpha=alpha, centred=True, seed=4)
    assert_close(model(x), torch.zeros(12, 3), **EXACT)

    sd = model.state_dict()
    param_names = {n for n, _ in model.named_parameters()}
    g0_keys = {k for k in sd if k.startswith("g0__")}
    assert g0_keys == {"g0__" + n.replace(".", "__") for n in param_names}
    assert not any(n.startswith("g0") for n in param_names)
    assert len(list(model.parameters())) == len(param_names) == 6

    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(9)))
    g = MLP(5, 3, width=8, seed=4)
    g.load_state_dict({n: p.detach() for n, p in model.named_parameters()})
    g0 = MLP(5, 3, width=8, seed=4)
    out = model(x)
    assert_close(out, alpha * (g(x) - g0(x)))
    assert float(out.detach().abs().max()) > 1e-3
    # g0 buffers are unchanged by the parameter update
    assert_close(model.initial_parameters()["readout.weight"], g0.readout.weight, **EXACT)


def test_centred_gradients_flow_only_to_parameters():
    model = MLP(5, 2, width=8, centred=True, seed=0)
    with torch.no_grad():
        model.readout.weight.add_(1.0)
    model(continuous_task().x_train).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert all(not b.requires_grad for b in model.buffers())


def test_centred_state_dict_round_trip_carries_g0():
    x = continuous_task().x_train
    model = MLP(5, 3, width=8, centred=True, seed=1)
    with torch.no_grad():
        model.encoder[0].weight.mul_(1.5)
    clone = MLP(5, 3, width=8, centred=True, seed=99)  # different g0 before loading
    clone.load_state_dict(model.state_dict())
    assert_close(clone(x), model(x), **EXACT)


def test_centred_g0_pass_does_not_fire_hooks():
    model = MLP(5, 3, width=8, centred=True)
    calls = []
    model.encoder[0].register_forward_hook(lambda m, a, o: calls.append(o.shape))
    model(continuous_task().x_train)
    assert calls == [(12, 8)]


def test_centred_follows_dtype_change():
    model = MLP(5, 3, width=8, centred=True).double()
    x = continuous_task().x_train.double()
    out = model(x)
    assert out.dtype == torch.float64
    assert_close(out, torch.zeros(12, 3, dtype=torch.float64), **EXACT)


def test_seed_determinism_and_global_rng_untouched():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = MLP(5, 3, width=8, vocab_size=None, seed=7, centred=True)
    assert torch.equal(torch.get_rng_state(), before)
    b = MLP(5, 3, width=8, seed=7, centred=True)
    c = MLP(5, 3, width=8, seed=8, centred=True)
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert na == nb
        assert_close(pa, pb, **EXACT)
    assert not torch.equal(a.readout.weight, c.readout.weight)


def test_config_round_trip():
    task = token_task()
    model = MLP.for_task(task, width=8, depth=2, embed_dim=4, alpha=2.0, centred=True, seed=3)
    cfg = json.loads(json.dumps(model.config))
    assert cfg["class"] == "MLP"
    rebuilt = from_config(cfg)
    assert isinstance(rebuilt, MLP)
    assert rebuilt.config == model.config
    sd, sd2 = model.state_dict(), rebuilt.state_dict()
    assert sd.keys() == sd2.keys()
    for k in sd:
        assert_close(sd2[k], sd[k], **EXACT)


def test_from_config_errors_name_valid_options():
    with pytest.raises(ValueError, match="Known classes"):
        from_config({"class": "ResNet"})
    cfg = MLP(3, 2).config | {"wdith": 4}
    with pytest.raises(ValueError, match="Valid parameters"):
        from_config(cfg)


def test_poly_activation_formula():
    z = torch.linspace(-3, 3, 13)
    assert_close(make_activation("poly:0.5")(z), z + 0.25 * z**2)
    assert_close(make_activation("poly")(z), z + 0.01 * z**2)
    assert_close(make_activation("square")(z), z**2)
    model = MLP(4, 1, width=6, depth=1, activation="poly:0.3")
    act = model.encoder[1]
    assert isinstance(act, Poly)
    assert act.epsilon == pytest.approx(0.3, abs=0)


@pytest.mark.parametrize(
    ("name", "fn"),
    [
        ("relu", torch.relu),
        ("gelu", nn.functional.gelu),
        ("tanh", torch.tanh),
        ("silu", nn.functional.silu),
        ("identity", lambda z: z),
    ],
)
def test_named_activations(name, fn):
    z = torch.linspace(-2, 2, 9)
    act = make_activation(name)
    assert isinstance(act, nn.Module)
    assert_close(act(z), fn(z))


def test_for_task_uses_poly_when_task_has_epsilon():
    task = continuous_task(meta={"epsilon": 0.04})
    model = MLP.for_task(task, width=8, depth=1)
    assert isinstance(model.encoder[1], Poly)
    assert model.encoder[1].epsilon == 0.04
    assert model.config["activation"] == "poly:0.04"
    explicit = MLP.for_task(task, width=8, depth=1, activation="tanh")
    assert isinstance(explicit.encoder[1], nn.Tanh)
    assert isinstance(MLP.for_task(continuous_task(), depth=1).encoder[1], nn.ReLU)


@pytest.mark.parametrize("bad", ["softplus", "poly:abc", "relu:2", "poly:nan"])
def test_bad_activation_names_raise(bad):
    with pytest.raises(ValueError, match="activation|ε"):
        MLP(3, 2, activation=bad)


def test_unknown_activation_lists_valid_ones():
    with pytest.raises(ValueError, match=r"relu.*square.*poly"):
        make_activation("swish")


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="int64 token ids"):
        MLP(2, 3, vocab_size=5, embed_dim=4)(torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"shape \(n, 5\)"):
        MLP(5, 3)(torch.randn(4, 6))
    with pytest.raises(ValueError, match="vocab_size"):
        MLP(5, 3, embed_dim=4)


def test_normal_init_is_unit_variance_with_zero_biases():
    # Kumar et al. (2024): W ~ N(0, 1) whatever the fan-in, so w·x is of order |x|
    m = MLP(100, 1, width=2000, depth=1, init="normal", seed=3)
    w = m.encoder[0].weight.detach().double()
    assert w.mean().abs() < 0.01 and w.std().item() == pytest.approx(1.0, rel=0.01)
    assert not m.encoder[0].bias.detach().any() and not m.readout.bias.detach().any()
    again = MLP(100, 1, width=2000, depth=1, init="normal", seed=3, init_scale=2.0)
    assert_close(again.encoder[0].weight, 2 * m.encoder[0].weight, **EXACT)


def fixed_readout_model(**kw):
    args = {"width": 50, "depth": 1, "activation": "poly:0.1", "bias": False, "init": "normal"}
    args["readout"] = "fixed"
    return MLP(6, 1, **(args | kw))


def test_fixed_readout_is_the_mean_of_the_hidden_units_and_not_trained():
    m = fixed_readout_model(alpha=3.0)
    assert [n for n, _ in m.named_parameters()] == ["encoder.0.weight"]
    assert_close(m.readout.weight, torch.full((1, 50), 1 / 50), **EXACT)
    x = torch.randn(7, 6, generator=torch.Generator().manual_seed(0))
    z = x @ m.encoder[0].weight.detach().T
    brute = 3.0 * (z + 0.05 * z**2).mean(dim=1, keepdim=True)  # α (1/N) Σ φ(w_i·x)
    assert_close(m(x), brute, rtol=1e-6, atol=1e-6)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    m(x).square().mean().backward()
    opt.step()
    assert_close(m.readout.weight, torch.full((1, 50), 1 / 50), **EXACT)
    # the NTK over the parameters has the hidden weights' block only
    jac = torch.func.jacrev(lambda p: torch.func.functional_call(m, p, (x,)))(
        dict(m.named_parameters())
    )
    assert set(jac) == {"encoder.0.weight"}
    with pytest.raises(ValueError, match="one output"):
        MLP(6, 3, readout="fixed")
    with pytest.raises(ValueError, match="Valid readouts"):
        MLP(6, 1, readout="frozen")


def test_fixed_readout_centred_round_trips_through_config_and_state_dict():
    m = fixed_readout_model(centred=True, alpha=2.0)
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(1))
    assert_close(m(x), torch.zeros(5, 1), **EXACT)
    with torch.no_grad():
        m.encoder[0].weight.mul_(1.1)
    moved = m(x)
    assert moved.abs().max() > 0
    rebuilt = from_config(json.loads(json.dumps(m.config)))
    rebuilt.load_state_dict(m.state_dict())
    assert_close(rebuilt(x), moved, **EXACT)


def test_recentre_makes_the_current_parameters_g0():
    m = fixed_readout_model(centred=True)
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():  # a re-init by hand, as a user would
        m.encoder[0].weight.copy_(torch.randn(50, 6, generator=torch.Generator().manual_seed(9)))
    assert m(x).abs().max() > 0  # g0 is still the old init
    m.recentre()
    assert_close(m(x), torch.zeros(5, 1), **EXACT)
    assert_close(m.initial_parameters()["encoder.0.weight"], m.encoder[0].weight.detach())
    with pytest.raises(ValueError, match="centred"):
        fixed_readout_model().recentre()
