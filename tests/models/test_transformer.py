import json

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from grokwidgets.models import Transformer, from_config
from grokwidgets.tasks.base import Task

EXACT = {"rtol": 0.0, "atol": 0.0}


def mod_task(p=11, n=30):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, p, (n, 2), generator=g)
    y = (x[:, 0] + x[:, 1]) % p
    return Task(
        name="mod",
        kind="classification",
        x_train=x,
        y_train=y,
        x_test=x[:5],
        y_test=y[:5],
        n_outputs=p,
        config={"family": "mod"},
        input_kind="tokens",
        vocab_size=p,
    )


def small(**kw):
    return Transformer(11, d_model=16, n_heads=4, d_mlp=32, **kw)


def test_module_names():
    names = dict(small().named_modules())
    for path in ("embed", "pos_embed", "encoder", "encoder.attn", "readout"):
        assert path in names
    for proj in "qkvo":
        layer = names[f"encoder.attn.{proj}"]
        assert isinstance(layer, nn.Linear)
        assert layer.bias is None
        assert layer.weight.shape == (16, 16)
    assert isinstance(names["encoder.mlp.0"], nn.Linear)
    assert isinstance(names["encoder.mlp.1"], nn.ReLU)
    assert isinstance(names["encoder.mlp.2"], nn.Linear)
    assert names["encoder.mlp.0"].weight.shape == (32, 16)
    assert names["readout"].bias is None
    assert names["embed"].weight.shape == (12, 16)  # 11 tokens and "="
    assert names["pos_embed"].weight.shape == (3, 16)
    assert not any(isinstance(m, nn.LayerNorm) for m in names.values())


def test_layer_norm_option():
    model = small(layer_norm=True)
    lns = [n for n, m in model.named_modules() if isinstance(m, nn.LayerNorm)]
    assert lns == ["encoder.ln_attn", "encoder.ln_mlp", "encoder.ln_final"]
    assert model(mod_task().x_train).shape == (30, 11)


def test_shapes_and_for_task():
    task = mod_task()
    model = Transformer.for_task(task, d_model=16, n_heads=2, d_mlp=24)
    assert model.vocab_size == 11 and model.n_tokens == 2 and model.out_dim == 11
    assert model(task.x_train).shape == (30, 11)
    assert model.equals_token == 11


def test_forward_matches_explicit_computation():
    model = small(alpha=0.5)
    x = mod_task().x_train[:4]
    tokens = torch.cat([x, torch.full((4, 1), 11)], dim=1)
    h = model.embed.weight[tokens] + model.pos_embed.weight[:3]
    attn = model.encoder.attn
    q = (h @ attn.q.weight.T).view(4, 3, 4, 4).transpose(1, 2)
    k = (h @ attn.k.weight.T).view(4, 3, 4, 4).transpose(1, 2)
    v = (h @ attn.v.weight.T).view(4, 3, 4, 4).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / 2.0
    scores = scores + torch.triu(torch.full((3, 3), float("-inf")), diagonal=1)
    z = (scores.softmax(-1) @ v).transpose(1, 2).reshape(4, 3, 16)
    h = h + z @ attn.o.weight.T
    mlp = model.encoder.mlp
    h = h + mlp[2](torch.relu(mlp[0](h)))
    expected = 0.5 * (h[:, -1] @ model.readout.weight.T)
    assert_close(model(x), expected)


def test_alpha_scales_output_exactly():
    x = mod_task().x_train
    assert_close(small(alpha=4.0)(x), small()(x) * 4.0, **EXACT)


def test_init_scale_multiplies_every_parameter():
    a, b = small(seed=2), small(seed=2, init_scale=3.0)
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert na == nb
        assert_close(pb, pa * 3.0, **EXACT)


def test_causal_attention_pattern():
    model = small()
    captured = {}
    model.encoder.attn.pattern.register_forward_hook(lambda m, a, o: captured.update(p=o.detach()))
    model(mod_task().x_train)
    pattern = captured["p"]
    assert pattern.shape == (30, 4, 3, 3)
    upper = torch.triu(torch.ones(3, 3, dtype=torch.bool), diagonal=1)
    assert_close(pattern[..., upper], torch.zeros(30, 4, 3), **EXACT)
    assert_close(pattern.sum(-1), torch.ones(30, 4, 3))
    assert float(pattern[..., 2, :].min()) > 0  # "=" attends to every position


def test_later_token_does_not_change_earlier_positions():
    model = small()
    outs = []
    model.encoder.register_forward_hook(lambda m, a, o: outs.append(o))
    x = mod_task().x_train[:6]
    x2 = x.clone()
    x2[:, 1] = (x2[:, 1] + 3) % 11
    model(x)
    model(x2)
    assert_close(outs[1][:, 0], outs[0][:, 0], **EXACT)
    assert not torch.allclose(outs[1][:, 1], outs[0][:, 1])
    assert not torch.allclose(outs[1][:, 2], outs[0][:, 2])


def test_determinism_and_global_rng_untouched():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a, b, c = small(seed=5), small(seed=5), small(seed=6)
    assert torch.equal(torch.get_rng_state(), before)
    for (_, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert_close(pa, pb, **EXACT)
    assert not torch.equal(a.embed.weight, c.embed.weight)


def test_config_round_trip():
    model = small(layer_norm=True, alpha=2.0, init_scale=0.5, seed=4)
    cfg = json.loads(json.dumps(model.config))
    assert cfg["class"] == "Transformer"
    rebuilt = from_config(cfg)
    assert isinstance(rebuilt, Transformer)
    sd, sd2 = model.state_dict(), rebuilt.state_dict()
    assert sd.keys() == sd2.keys()
    for k in sd:
        assert_close(sd2[k], sd[k], **EXACT)


def test_errors():
    with pytest.raises(ValueError, match="divisible"):
        Transformer(11, d_model=10, n_heads=4)
    with pytest.raises(ValueError, match="int64 token ids"):
        small()(torch.zeros(3, 3, dtype=torch.long))
    continuous = Task(
        name="c",
        kind="regression",
        x_train=torch.randn(4, 2),
        y_train=torch.randn(4, 1),
        x_test=torch.randn(2, 2),
        y_test=torch.randn(2, 1),
        n_outputs=1,
        config={},
    )
    with pytest.raises(ValueError, match="token task"):
        Transformer.for_task(continuous)
