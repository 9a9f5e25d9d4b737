"""The structured empirical NTK against explicit torch.func Jacobian products (float64)."""

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

import grokwidgets as gw
from grokwidgets.diagnostics.kernel import NTKEngine, NTKFallbackWarning, empirical_ntk, layer_ntks

TOL = dict(rtol=0, atol=1e-10)


def jacobians(model, x, names=None):
    """Per-sample Jacobians {name: (N, O, P)} of the chosen parameters (all by default)."""
    params = {
        k: v.detach()
        for k, v in model.named_parameters()
        if v.requires_grad and (names is None or k in names)
    }

    def single(p, xn):
        return functional_call(model, p, (xn.unsqueeze(0),)).reshape(-1)

    was = model.training
    model.eval()
    try:
        jac = vmap(jacrev(single), (None, 0))(params, x)
    finally:
        model.train(was)
    return {k: v.flatten(2) for k, v in jac.items()}


def reference_ntk(model, x, blocks, x2=None, names=None):
    """The explicit Jacobian product of the PyTorch NTK tutorial."""
    j1 = jacobians(model, x, names)
    j2 = j1 if x2 is None else jacobians(model, x2, names)
    eq = "naf,mbf->nmab" if blocks == "full" else "naf,maf->nm"
    return sum(torch.einsum(eq, j1[k], j2[k]) for k in j1)


@pytest.fixture
def f64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("blocks", ["trace", "full"])
@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh"])
@pytest.mark.parametrize("bias", [True, False])
def test_mlp_matches_jacobian_product(f64, blocks, activation, bias):
    model = gw.models.MLP(5, 3, width=7, depth=2, activation=activation, bias=bias, seed=1)
    x = torch.randn(9, 5)
    got = empirical_ntk(model, x, blocks)
    want = reference_ntk(model, x, blocks)
    assert got.shape == ((9, 9) if blocks == "trace" else (9, 9, 3, 3))
    assert want.abs().max() > 1e-2  # a non-trivial kernel
    torch.testing.assert_close(got, want, **TOL)


def test_centred_scaled_mlp_and_cross_kernel(f64):
    model = gw.models.MLP(4, 2, width=6, depth=1, activation="poly:0.5", centred=True, alpha=3.0)
    x, x2 = torch.randn(6, 4), torch.randn(3, 4)
    for blocks in ("trace", "full"):
        got = empirical_ntk(model, x, blocks, x2=x2)
        torch.testing.assert_close(got, reference_ntk(model, x, blocks, x2=x2), **TOL)


def token_models(task):
    return {
        "mlp": gw.models.MLP.for_task(task, width=12, depth=2, embed_dim=6, seed=0),
        "transformer": gw.models.Transformer.for_task(task, d_model=8, n_heads=2, d_mlp=16),
        "transformer_ln": gw.models.Transformer.for_task(
            task, d_model=8, n_heads=2, d_mlp=16, layer_norm=True, seed=3
        ),
    }


@pytest.mark.parametrize("blocks", ["trace", "full"])
@pytest.mark.parametrize("name", ["mlp", "transformer", "transformer_ln"])
def test_token_models_match_jacobian_product(f64, mod_task, blocks, name):
    model = token_models(mod_task)[name].double()
    x = mod_task.x_train[:10]
    got = empirical_ntk(model, x, blocks)
    torch.testing.assert_close(got, reference_ntk(model, x, blocks), **TOL)
    # the cross kernel to other samples too
    x2 = mod_task.x_test[:4]
    got2 = empirical_ntk(model, x, blocks, x2=x2)
    torch.testing.assert_close(got2, reference_ntk(model, x, blocks, x2=x2), **TOL)


def test_per_layer_kernels_are_each_modules_own_kernel(f64, mod_task):
    model = token_models(mod_task)["transformer_ln"].double()
    x = mod_task.x_train[:7]
    layers = layer_ntks(model, x)
    params = dict(model.named_parameters())
    expected_layers = {name.rpartition(".")[0] for name in params}
    assert set(layers) == expected_layers
    for layer, k in layers.items():
        names = {n for n in params if n.rpartition(".")[0] == layer}
        torch.testing.assert_close(k, reference_ntk(model, x, "trace", names=names), **TOL)
    total = sum(layers.values())
    torch.testing.assert_close(total, empirical_ntk(model, x), **TOL)


def test_grads_untouched_and_mode_restored(mod_task):
    model = gw.models.MLP.for_task(mod_task, width=8, depth=1, embed_dim=4)
    model.train()
    empirical_ntk(model, mod_task.x_train[:5])
    assert model.training
    assert all(p.grad is None for p in model.parameters())


class Scale(nn.Module):
    """A module with its own parameter and no structured rule."""

    def __init__(self, d):
        super().__init__()
        self.s = nn.Parameter(torch.linspace(0.5, 1.5, d))

    def forward(self, h):
        return torch.tanh(h * self.s)


def test_unsupported_module_falls_back_exactly_with_a_warning(f64):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), Scale(6), nn.Linear(6, 3))
    x = torch.randn(5, 4)
    with pytest.warns(NTKFallbackWarning, match="1: no structured rule for Scale"):
        layers = layer_ntks(model, x, "full")
    assert set(layers) == {"0", "1", "2"}
    torch.testing.assert_close(layers["1"], reference_ntk(model, x, "full", names={"1.s"}), **TOL)
    with pytest.warns(NTKFallbackWarning):
        got = empirical_ntk(model, x, "full")
    torch.testing.assert_close(got, reference_ntk(model, x, "full"), **TOL)


def test_model_without_any_linear_layer(f64):
    model = nn.Sequential(Scale(4))
    x = torch.randn(6, 4)
    with pytest.warns(NTKFallbackWarning):
        got = empirical_ntk(model, x)
    torch.testing.assert_close(got, reference_ntk(model, x, "trace"), **TOL)


def test_shared_parameter_falls_back(f64):
    torch.manual_seed(0)
    a, b = nn.Linear(4, 4), nn.Linear(4, 4)
    b.weight = a.weight  # tied: each module's own kernel would miss the cross terms
    model = nn.Sequential(a, nn.Tanh(), b)
    x = torch.randn(5, 4)
    with pytest.warns(NTKFallbackWarning, match="shares a parameter"):
        got = empirical_ntk(model, x)
    torch.testing.assert_close(got, reference_ntk(model, x, "trace"), **TOL)


class ConstQuery(nn.Module):
    """A Linear applied to a constant (unbatched) input, used in a way that cannot broadcast."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(3, 4)
        self.q = nn.Linear(3, 4)
        self.register_buffer("const", torch.randn(5, 3))

    def forward(self, x):
        return self.enc(x) @ self.q(self.const).transpose(-1, -2)  # (N, 5)


class ConstAdd(nn.Module):
    """An unbatched Linear output broadcast over the batch (like a position embedding)."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(3, 4)
        self.bias_net = nn.Linear(2, 4)
        self.register_buffer("const", torch.randn(2))

    def forward(self, x):
        return torch.tanh(self.enc(x) + self.bias_net(self.const))


def test_unbatched_modules(f64):
    torch.manual_seed(0)
    x = torch.randn(6, 3)
    model = ConstQuery()
    with pytest.warns(NTKFallbackWarning, match="q: used without a batch dimension"):
        got = empirical_ntk(model, x, "full")
    torch.testing.assert_close(got, reference_ntk(model, x, "full"), **TOL)
    model = ConstAdd()  # handled exactly by broadcasting, without a warning
    got = empirical_ntk(model, x, "full")
    torch.testing.assert_close(got, reference_ntk(model, x, "full"), **TOL)


def test_bad_input():
    frozen = nn.Linear(3, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        empirical_ntk(frozen, torch.randn(4, 3))
    with pytest.raises(ValueError, match="blocks must be one of"):
        empirical_ntk(nn.Linear(3, 2), torch.randn(4, 3), "diag")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one sample"):
        empirical_ntk(nn.Linear(3, 2), torch.randn(0, 3))
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight[0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match="not finite"):
        empirical_ntk(model, torch.ones(4, 3))


def test_partially_frozen_layers(f64):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.GELU(), nn.LayerNorm(5), nn.Linear(5, 2))
    model[0].weight.requires_grad_(False)
    model[2].bias.requires_grad_(False)
    x = torch.randn(6, 4)
    got = empirical_ntk(model, x, "full")
    torch.testing.assert_close(got, reference_ntk(model, x, "full"), **TOL)


def test_embedding_padding_idx(f64):
    torch.manual_seed(0)

    class Bag(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(6, 3, padding_idx=0)
            self.out = nn.Linear(3, 2)

        def forward(self, ids):
            return self.out(torch.tanh(self.embed(ids)).sum(1))

    model = Bag()
    x = torch.tensor([[0, 1, 2], [0, 0, 3], [2, 2, 5], [4, 0, 1]])
    torch.testing.assert_close(empirical_ntk(model, x), reference_ntk(model, x, "trace"), **TOL)


def test_embedding_trace_kernel_with_repeated_and_unshared_tokens(f64):
    """The per-token embedding path: repeats within a sample, cross batches, tokens one side."""
    torch.manual_seed(1)

    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(9, 4)
            self.hidden = nn.Linear(8, 5)
            self.out = nn.Linear(5, 3)

        def forward(self, ids):
            return self.out(torch.relu(self.hidden(self.embed(ids).flatten(1))))

    model = Pair()
    x = torch.tensor([[3, 3], [3, 5], [5, 5], [0, 1], [7, 3]])
    x2 = torch.tensor([[5, 3], [8, 8], [1, 0]])  # token 8 only here, 7 only in x
    per_layer = layer_ntks(model, x)
    names = {"embed.weight"}
    torch.testing.assert_close(per_layer["embed"], reference_ntk(model, x, "trace", names=names))
    cross = layer_ntks(model, x, x2=x2)["embed"]
    torch.testing.assert_close(cross, reference_ntk(model, x, "trace", x2=x2, names=names))
    assert float(cross[3, 2]) != 0.0 and float(cross[1, 1]) == 0.0  # shared / no shared token
    torch.testing.assert_close(empirical_ntk(model, x), reference_ntk(model, x, "trace"), **TOL)


# --- The closed form of a one-hidden-layer MLP (closed_form.py) ---------------------------


def _closed_form_models(task):
    """One-hidden-layer MLPs the closed form covers: every option that changes its algebra."""
    frozen = gw.models.MLP.for_task(task, width=7, depth=1, embed_dim=3, seed=4)
    frozen.embed.weight.requires_grad_(False)
    frozen.readout.bias.requires_grad_(False)
    padded = gw.models.MLP.for_task(task, width=6, depth=1, embed_dim=4, seed=5)
    padded.embed.padding_idx = 2  # the forward is unchanged; id 2 carries no gradient
    return {
        "tokens_relu": gw.models.MLP.for_task(task, width=8, depth=1, embed_dim=5, seed=1),
        "tokens_gelu_nobias": gw.models.MLP.for_task(
            task, width=8, depth=1, embed_dim=5, activation="gelu", bias=False, seed=2
        ),
        "tokens_centred_poly": gw.models.MLP.for_task(
            task, width=6, depth=1, embed_dim=4, activation="poly:0.4", centred=True, alpha=2.5
        ),
        "tokens_frozen": frozen,
        "tokens_padding": padded,
        "dense_tanh": gw.models.MLP(5, 3, width=7, depth=1, activation="tanh", seed=3),
        "dense_fixed_readout": gw.models.MLP(5, 1, width=7, depth=1, readout="fixed", seed=3),
        "dense_square": gw.models.MLP(5, 2, width=6, depth=1, activation="square", alpha=0.3),
    }


@pytest.mark.parametrize(
    "name",
    [
        "tokens_relu",
        "tokens_gelu_nobias",
        "tokens_centred_poly",
        "tokens_frozen",
        "tokens_padding",
        "dense_tanh",
        "dense_fixed_readout",
        "dense_square",
    ],
)
def test_one_hidden_layer_closed_form_matches_jacobian_product(f64, mod_task, name):
    model = _closed_form_models(mod_task)[name].double()
    if name.startswith("tokens"):
        # repeats within a sample, and the same token at different positions across samples
        x = torch.cat([mod_task.x_train[:9], torch.tensor([[2, 2], [3, 2], [2, 5]])])
        x2 = torch.cat([mod_task.x_test[:4], torch.tensor([[5, 3]])])
    else:
        x, x2 = torch.randn(9, 5), torch.randn(4, 5)
    engine = NTKEngine(model, x)
    assert engine.rule is not None  # the closed form is what is checked here
    params = {n for n, p in model.named_parameters() if p.requires_grad}
    for other in (None, x2):
        per_layer = layer_ntks(model, x, x2=other)
        assert list(per_layer) == engine.layers
        assert {n.rpartition(".")[0] for n in params} == set(per_layer)
        for layer, k in per_layer.items():
            names = {n for n in params if n.rpartition(".")[0] == layer}
            want = reference_ntk(model, x, "trace", x2=other, names=names)
            assert want.abs().max() > 1e-3
            torch.testing.assert_close(k, want, **TOL)


def test_closed_form_only_where_its_algebra_holds(f64, mod_task):
    """Deeper models, subclasses, hooks, full blocks, other activations: the general engine."""

    class Sub(gw.models.MLP):
        def forward(self, x):
            return super().forward(x) * 2.0

    x = mod_task.x_train[:6]
    base = gw.models.MLP.for_task(mod_task, width=6, depth=1, embed_dim=3).double()
    assert NTKEngine(base, x).rule is not None
    assert NTKEngine(base, x, "full").rule is None
    deep = gw.models.MLP.for_task(mod_task, width=6, depth=2, embed_dim=3).double()
    sub = Sub.for_task(mod_task, width=6, depth=1, embed_dim=3).double()
    odd = gw.models.MLP.for_task(mod_task, width=6, depth=1, embed_dim=3).double()
    odd.encoder[1] = nn.Softmax(dim=-1)  # not elementwise
    hooked = gw.models.MLP.for_task(mod_task, width=6, depth=1, embed_dim=3).double()
    hooked.encoder[0].register_forward_hook(lambda _m, _a, out: out * 1.5)

    def dense():
        return gw.models.MLP(6, 6, width=6, depth=1, seed=2).double()

    tied = dense()
    tied.readout.weight = tied.encoder[0].weight  # one tensor in two layers
    longer = dense()
    longer.encoder.append(nn.Linear(6, 6).double())
    longer.encoder.append(nn.Tanh())
    normed = dense()
    normed.encoder.append(nn.LayerNorm(6).double())
    own_forward = dense()
    plain_forward = own_forward.forward
    own_forward.forward = lambda z: plain_forward(z) ** 2
    xd = torch.randn(5, 6)
    for model, inputs in (
        *((m, x) for m in (deep, sub, odd, hooked)),
        *((m, xd) for m in (longer, normed, own_forward)),
    ):
        assert NTKEngine(model, inputs).rule is None
        want = reference_ntk(model, inputs, "trace")
        torch.testing.assert_close(empirical_ntk(model, inputs), want, **TOL)
    with pytest.warns(NTKFallbackWarning, match="shares a parameter"):  # torch.func for these
        assert NTKEngine(tied, xd).rule is None
        got = empirical_ntk(tied, xd)
    torch.testing.assert_close(got, reference_ntk(tied, xd, "trace"), **TOL)


def test_closed_form_gives_way_to_a_hook_set_after_the_engine(f64, mod_task):
    model = gw.models.MLP.for_task(mod_task, width=6, depth=1, embed_dim=3).double()
    x = mod_task.x_train[:6]
    engine = NTKEngine(model, x)
    before = engine.factors(x)
    assert engine.rule is not None
    model.encoder[0].register_forward_hook(lambda _m, _a, out: out * 1.5)
    after = engine.factors(x)
    assert engine.rule is None  # the layer factors from now on, which see the hook
    got = sum(engine.kernels(after, after).values())
    torch.testing.assert_close(got, reference_ntk(model, x, "trace"), **TOL)
    with pytest.raises(ValueError, match="take them again"):
        engine.kernels(before, after)


def test_closed_form_with_an_in_place_activation(f64):
    model = gw.models.MLP(5, 3, width=7, depth=1, seed=3).double()
    model.encoder[1] = nn.ReLU(inplace=True)
    x = torch.randn(8, 5)
    assert NTKEngine(model, x).rule is not None
    torch.testing.assert_close(empirical_ntk(model, x), reference_ntk(model, x, "trace"), **TOL)


def test_closed_form_rejects_non_finite_and_wrong_inputs(mod_task):
    model = gw.models.MLP.for_task(mod_task, width=6, depth=1, embed_dim=3)
    with pytest.raises(ValueError, match="int64 token ids"):
        empirical_ntk(model, mod_task.x_train[:4].float())
    dense = gw.models.MLP(5, 3, width=4, depth=1)
    assert NTKEngine(dense, torch.randn(3, 5)).rule is not None
    with pytest.raises(ValueError, match="inputs of shape"):
        empirical_ntk(dense, torch.randn(3, 2, 5))
    with torch.no_grad():
        model.encoder[0].weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="not finite"):
        empirical_ntk(model, mod_task.x_train[:4])


def test_finite_check_does_not_mistake_an_overflowing_sum_for_a_nan():
    from grokwidgets.diagnostics.kernel.plan import check_finite

    check_finite(torch.tensor([3e38, 3e38]), "entries")  # the sum overflows; the entries are fine
    for bad in (float("nan"), float("inf")):
        with pytest.raises(FloatingPointError, match="entries on the NTK batch are not finite"):
            check_finite(torch.tensor([1.0, bad]), "entries")
