"""graphnn.nn layers: forward values and gradients against torch (float64), shapes,
errors, scopes and parameter names, seeds and initializer statistics."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import graphnn as gn
from graphnn.nn import layers as L

F64 = {"dtype": torch.float64}  # torch modules in float64 (no global default changed)


# -- harness --------------------------------------------------------------------------------

def randomize(g, layer, rng, scale=0.5):
    """Random values for every parameter (so biases, gammas, slopes all matter)."""
    for p in layer.params:
        g.values[p.name] = rng.normal(0.0, scale, p.shape)


def compare(layer, shape, X, torch_fn, rng, feed_shape=None, randomize_params=True):
    """Build layer(x), a loss mse(y, t), its gradients wrt x and every parameter;
    check values and gradients against torch_fn(tx, {param name: tensor})."""
    g = gn.Graph("t")
    x = g.input("x", shape)
    y = layer(x)
    if randomize_params:
        randomize(g, layer, rng)
    t = g.input("t", y.shape)
    loss = gn.mse(y, t)
    grads = gn.grad(loss, [x] + layer.params)
    prog = gn.compile([y, loss] + grads)
    out_shape = tuple(X.shape[0] if d is None else d for d in y.shape)
    T = rng.normal(size=out_shape)
    y_v, loss_v, *grad_v = prog(x=X, t=T)

    tx = torch.tensor(X, requires_grad=True)
    tp = {p.name: torch.tensor(g.values[p.name], requires_grad=True) for p in layer.params}
    ty = torch_fn(tx, tp)
    assert ty.dtype == torch.float64
    tl = F.mse_loss(ty, torch.tensor(T))
    tl.backward()
    np.testing.assert_allclose(y_v, ty.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(loss_v, tl.item(), rtol=1e-10)
    np.testing.assert_allclose(grad_v[0], tx.grad.numpy(), rtol=1e-8, atol=1e-10)
    for p, gv in zip(layer.params, grad_v[1:]):
        ref = tp[p.name].grad
        assert ref is not None, p.name
        np.testing.assert_allclose(gv, ref.numpy(), rtol=1e-8, atol=1e-10, err_msg=p.name)
    return g, y


# -- dense layers -------------------------------------------------------------------------------

def test_linear_matches_torch_linear_on_3d_input(rng):
    layer = gn.nn.Linear(4)
    g, y = compare(layer, (None, 5, 3), rng.normal(size=(2, 5, 3)),
                   lambda tx, P: functional_call(torch.nn.Linear(3, 4, **F64), {
                       "weight": P["fc1/W"].T, "bias": P["fc1/b"]}, (tx,)), rng)
    assert y.shape == (None, 5, 4)
    assert [p.name for p in layer.params] == ["fc1/W", "fc1/b"]


def test_linear_without_bias(rng):
    layer = gn.nn.Linear(2, bias=False)
    compare(layer, (None, 3), rng.normal(size=(4, 3)),
            lambda tx, P: tx @ P["fc1/W"], rng)
    assert [p.name for p in layer.params] == ["fc1/W"]


def test_mlp_matches_torch_sequential(rng):
    layer = gn.nn.MLP([5, 4, 2], activation="tanh", final_activation="sigmoid")

    def ref(tx, P):
        h = torch.tanh(tx @ P["mlp/fc1/W"] + P["mlp/fc1/b"])
        h = torch.tanh(h @ P["mlp/fc2/W"] + P["mlp/fc2/b"])
        return torch.sigmoid(h @ P["mlp/fc3/W"] + P["mlp/fc3/b"])

    g, y = compare(layer, (None, 3), rng.normal(size=(6, 3)), ref, rng)
    assert y.shape == (None, 2)
    assert [p.name for p in layer.params] == [f"mlp/fc{i}/{w}" for i in (1, 2, 3) for w in "Wb"]


TORCH_ACT = {
    "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
    "leaky_relu": lambda v: F.leaky_relu(v, 0.01), "elu": F.elu, "gelu": F.gelu,
    "silu": F.silu, "softplus": F.softplus,
}


@pytest.mark.parametrize("act", sorted(TORCH_ACT))
def test_mlp_hidden_activation_matches_torch(act, rng):
    layer = gn.nn.MLP([4, 2], activation=act)

    def ref(tx, P):
        h = TORCH_ACT[act](tx @ P["mlp/fc1/W"] + P["mlp/fc1/b"])
        return h @ P["mlp/fc2/W"] + P["mlp/fc2/b"]

    compare(layer, (None, 3), rng.normal(size=(5, 3)), ref, rng)


def test_mlp_sign_activation_forward():
    g = gn.Graph("t")
    x = g.input("x", (None, 2))
    y = gn.nn.MLP([3, 1], activation="sign")(x)
    X = np.array([[1.0, -2.0], [0.5, 0.25]])
    W1, b1 = g.values["mlp/fc1/W"], g.values["mlp/fc1/b"]
    W2, b2 = g.values["mlp/fc2/W"], g.values["mlp/fc2/b"]
    np.testing.assert_allclose(gn.compile(y)(x=X), np.sign(X @ W1 + b1) @ W2 + b2)


def test_mlp_prelu_matches_torch_prelu_per_unit(rng):
    layer = gn.nn.MLP([4, 2], activation="prelu")
    assert layer.layers[0].activation == "prelu"

    def ref(tx, P):
        h = functional_call(torch.nn.PReLU(4, **F64), {"weight": P["mlp/fc1/act_a"]},
                            (tx @ P["mlp/fc1/W"] + P["mlp/fc1/b"],))
        return h @ P["mlp/fc2/W"] + P["mlp/fc2/b"]

    g, _ = compare(layer, (None, 3), rng.normal(size=(6, 3)), ref, rng)
    assert g["mlp/fc1/act_a"].shape == (4,)


def test_prelu_starts_at_torch_default_slope():
    g = gn.Graph("t")
    gn.nn.MLP([3, 1], activation="prelu")(g.input("x", (None, 2)))
    np.testing.assert_array_equal(g.values["mlp/fc1/act_a"], np.full(3, 0.25))


def test_trainable_swish_has_four_params_per_unit_and_starts_as_silu(rng):
    layer = gn.nn.Linear(3, activation="trainable_swish")
    g = gn.Graph("t")
    x = g.input("x", (None, 2))
    y = layer(x)
    assert [p.name for p in layer.params] == ["fc1/W", "fc1/b"] + [f"fc1/act_{c}" for c in "abcd"]
    X = rng.normal(size=(4, 2))
    pre = X @ g.values["fc1/W"] + g.values["fc1/b"]
    np.testing.assert_allclose(gn.compile(y)(x=X), pre / (1 + np.exp(-pre)), rtol=1e-12)

    def ref(tx, P):
        z = tx @ P["fc1/W"] + P["fc1/b"]
        return (P["fc1/act_c"] * z + P["fc1/act_d"]) * torch.sigmoid(P["fc1/act_a"] * z + P["fc1/act_b"])

    compare(gn.nn.Linear(3, activation="trainable_swish"), (None, 2), X, ref, rng)


def test_callable_activation(rng):
    layer = gn.nn.MLP([3, 1], activation=lambda v: gn.tanh(v) * 2.0)

    def ref(tx, P):
        return (2 * torch.tanh(tx @ P["mlp/fc1/W"] + P["mlp/fc1/b"])) @ P["mlp/fc2/W"] + P["mlp/fc2/b"]

    compare(layer, (None, 2), rng.normal(size=(4, 2)), ref, rng)


def test_glu_matches_torch_glu(rng):
    layer = gn.nn.GLU(3)

    def ref(tx, P):
        gate = tx @ P["glu1/W1"] + P["glu1/b1"]
        value = tx @ P["glu1/W2"] + P["glu1/b2"]
        return F.glu(torch.cat([value, gate], dim=-1), dim=-1)  # value * sigmoid(gate)

    compare(layer, (None, 4), rng.normal(size=(5, 4)), ref, rng)
    assert [p.name for p in layer.params] == ["glu1/W1", "glu1/W2", "glu1/b1", "glu1/b2"]


def test_kan_matches_hand_formula(rng):
    layer = gn.nn.KAN(2, grid_size=5, grid_range=(-1.5, 1.5))
    centers = torch.linspace(-1.5, 1.5, 5, **F64)
    width = 3.0 / 4

    def ref(tx, P):
        psi = torch.exp(-(((tx[..., None] - centers) / width) ** 2))       # (N, in, K)
        spline = torch.einsum("njk,jko->no", psi, P["kan1/alpha"])
        return F.silu(tx) @ P["kan1/W"] + spline

    g, y = compare(layer, (None, 3), rng.normal(size=(6, 3)), ref, rng)
    assert g["kan1/alpha"].shape == (3, 5, 2) and g["kan1/W"].shape == (3, 2)
    assert y.shape == (None, 2)


def test_kan_edge_function_is_sum_of_per_edge_activations(rng):
    """h_i = sum_j phi_ij(x_j): with one input feature, h is phi_i1 evaluated on a grid."""
    g = gn.Graph("t")
    x = g.input("x", (None, 1))
    layer = gn.nn.KAN(1, grid_size=3, grid_range=(-1, 1))
    y = layer(x)
    g.values["kan1/W"] = np.array([[0.0]])
    g.values["kan1/alpha"] = np.array([[[0.0], [1.0], [0.0]]])  # only the bump at 0
    t = np.linspace(-2, 2, 9)[:, None]
    np.testing.assert_allclose(gn.compile(y)(x=t), np.exp(-t ** 2), rtol=1e-12)


# -- convolution -------------------------------------------------------------------------------

def test_conv1d_matches_torch_with_stride_and_padding(rng):
    layer = gn.nn.Conv1d(4, 3, stride=2, padding=1)
    g, y = compare(layer, (None, 2, 9), rng.normal(size=(3, 2, 9)),
                   lambda tx, P: F.conv1d(tx, P["conv1/W"], P["conv1/b"], stride=2, padding=1), rng)
    assert y.shape == (None, 4, 5)
    assert g["conv1/W"].shape == (4, 2, 3)


def test_conv2d_matches_torch_with_pairs(rng):
    layer = gn.nn.Conv2d(3, (3, 2), stride=(2, 1), padding=(1, 2))
    module = torch.nn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 2), **F64)
    g, y = compare(layer, (None, 2, 6, 5), rng.normal(size=(2, 2, 6, 5)),
                   lambda tx, P: functional_call(module, {"weight": P["conv1/W"],
                                                          "bias": P["conv1/b"]}, (tx,)), rng)
    assert y.shape == (None, 3, 3, 8)


def test_conv2d_prelu_is_per_channel(rng):
    layer = gn.nn.Conv2d(3, 2, activation="prelu")

    def ref(tx, P):
        z = F.conv2d(tx, P["conv1/W"], P["conv1/b"])
        return F.prelu(z, P["conv1/act_a"].reshape(3))

    g, _ = compare(layer, (None, 2, 4, 4), rng.normal(size=(2, 2, 4, 4)), ref, rng)
    assert g["conv1/act_a"].shape == (3, 1, 1)


# -- attention -----------------------------------------------------------------------------------

@pytest.mark.parametrize("causal", [False, True])
def test_self_attention_matches_scaled_dot_product(causal, rng):
    layer = gn.nn.SelfAttention(6, d_k=4, causal=causal)

    def ref(tx, P):
        q, k, v = tx @ P["attn1/Wq"], tx @ P["attn1/Wk"], tx @ P["attn1/Wv"]
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    g, y = compare(layer, (None, 4, 5), rng.normal(size=(2, 4, 5)), ref, rng)
    assert y.shape == (None, 4, 6)
    assert layer.attention.shape == (None, 4, 4)


def test_self_attention_is_the_lecture_formula(rng):
    g = gn.Graph("t")
    x = g.input("x", (2, 3, 4))
    y = gn.nn.SelfAttention(4, causal=True)(x)
    X = rng.normal(size=(2, 3, 4))
    Q, K, V = (X @ g.values[f"attn1/W{c}"] for c in "qkv")
    S = Q @ K.transpose(0, 2, 1) / math.sqrt(4)
    S = np.where(np.triu(np.ones((3, 3)), 1) > 0, -np.inf, S)
    A = np.exp(S - S.max(-1, keepdims=True))
    A /= A.sum(-1, keepdims=True)
    np.testing.assert_allclose(gn.compile(y)(x=X), A @ V, rtol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
def test_multi_head_attention_matches_torch(causal, rng):
    layer = gn.nn.MultiHeadAttention(6, heads=3, causal=causal)
    module = torch.nn.MultiheadAttention(6, 3, batch_first=True, **F64)
    mask = torch.triu(torch.ones(4, 4, dtype=torch.bool), 1) if causal else None

    def ref(tx, P):
        w = {"in_proj_weight": torch.cat([P[f"mha1/W{c}"].T for c in "qkv"]),
             "in_proj_bias": torch.cat([P[f"mha1/b{c}"] for c in "qkv"]),
             "out_proj.weight": P["mha1/Wo"].T, "out_proj.bias": P["mha1/bo"]}
        out, _ = functional_call(module, w, (tx, tx, tx), {"attn_mask": mask, "need_weights": False})
        return out

    g, y = compare(layer, (None, 4, 6), rng.normal(size=(2, 4, 6)), ref, rng)
    assert y.shape == (None, 4, 6)
    assert [p.name for p in layer.params] == [f"mha1/{w}{c}" for c in "qkvo" for w in "Wb"]

    # the attention weights, per head
    X = rng.normal(size=(2, 4, 6))
    A = gn.compile(layer.attention)(x=X)
    with torch.no_grad():
        module.in_proj_weight.copy_(torch.cat([torch.tensor(g.values[f"mha1/W{c}"]).T for c in "qkv"]))
        module.in_proj_bias.copy_(torch.cat([torch.tensor(g.values[f"mha1/b{c}"]) for c in "qkv"]))
        _, ref_a = module(*(torch.tensor(X),) * 3, attn_mask=mask, average_attn_weights=False)
    np.testing.assert_allclose(A, ref_a.numpy(), rtol=1e-10, atol=1e-12)


# -- normalization ---------------------------------------------------------------------------------

def test_layer_norm_matches_torch(rng):
    layer = gn.nn.LayerNorm()
    module = torch.nn.LayerNorm(5, **F64)
    compare(layer, (None, 3, 5), rng.normal(size=(2, 3, 5)),
            lambda tx, P: functional_call(module, {"weight": P["ln1/gamma"],
                                                   "bias": P["ln1/beta"]}, (tx,)), rng)


def test_layer_norm_without_affine_has_no_params(rng):
    layer = gn.nn.LayerNorm(eps=1e-3, affine=False)
    compare(layer, (None, 4), rng.normal(size=(3, 4)),
            lambda tx, P: F.layer_norm(tx, (4,), eps=1e-3), rng)
    assert layer.params == []


@pytest.mark.parametrize("shape, cls", [((6, 3), torch.nn.BatchNorm1d),
                                        ((5, 3, 4), torch.nn.BatchNorm1d),
                                        ((4, 3, 3, 2), torch.nn.BatchNorm2d)])
def test_batch_norm_matches_torch_training_mode(shape, cls, rng):
    layer = gn.nn.BatchNorm()
    module = cls(3, **F64).train()

    def ref(tx, P):
        return functional_call(module, {"weight": P["bn1/gamma"].reshape(3),
                                        "bias": P["bn1/beta"].reshape(3)}, (tx,))

    X = rng.normal(size=shape) * 2 + 1
    g, y = compare(layer, (None,) + shape[1:], X, ref, rng)
    assert g["bn1/gamma"].shape == (3,) + (1,) * (len(shape) - 2)


def test_batch_norm_normalizes_each_feature_over_the_batch(rng):
    g = gn.Graph("t")
    x = g.input("x", (None, 2))
    y = gn.nn.BatchNorm(eps=0.0)(x)
    out = gn.compile(y)(x=rng.normal(size=(50, 2)) * [3.0, 0.1] + [5.0, -2.0])
    np.testing.assert_allclose(out.mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(out.var(0), 1.0, rtol=1e-12)


# -- composition -------------------------------------------------------------------------------------

def test_residual_and_sequential(rng):
    block = gn.nn.Residual(gn.nn.Sequential(gn.nn.Linear(3), L.Activation("tanh"),
                                            gn.nn.Linear(4)))

    def ref(tx, P):
        h = torch.tanh(tx @ P["res1/seq/fc1/W"] + P["res1/seq/fc1/b"])
        return tx + h @ P["res1/seq/fc2/W"] + P["res1/seq/fc2/b"]

    g, y = compare(block, (None, 4), rng.normal(size=(5, 4)), ref, rng)
    assert y.scope == "res1"
    assert [p.name for p in block.params] == ["res1/seq/fc1/W", "res1/seq/fc1/b",
                                              "res1/seq/fc2/W", "res1/seq/fc2/b"]


def test_residual_with_plain_callable(rng):
    compare(gn.nn.Residual(lambda v: gn.tanh(v)), (None, 3), rng.normal(size=(2, 3)),
            lambda tx, P: tx + torch.tanh(tx), rng)


def test_residual_refuses_a_shape_change():
    g = gn.Graph("t")
    x = g.input("x", (None, 4))
    with pytest.raises(gn.ShapeError, match=r"Residual 'res1'.*'x'.*\(None, 4\).*\(None, 3\)"):
        gn.nn.Residual(gn.nn.Linear(3))(x)


def test_activation_layer_prelu_on_channel_axis():
    g = gn.Graph("t")
    x = g.input("x", (None, 3, 5))
    act = L.Activation("prelu", axis=1)
    act(x)
    assert [p.name for p in act.params] == ["act1/act_a"] and act.params[0].shape == (3, 1)
    with pytest.raises(gn.ShapeError, match="act1.*4 units on axis 1; the layer expects 3"):
        act(g.input("z", (None, 4, 5)))


def test_transformer_block_runs_and_differentiates(rng):
    """The lecture-002 transformer block: residual(MHA(LN x)) then residual(MLP(LN h))."""
    g = gn.Graph("t")
    x = g.input("x", (None, 5, 8))
    h = gn.nn.Residual(gn.nn.Sequential(gn.nn.LayerNorm(), gn.nn.MultiHeadAttention(8, 2, causal=True)))(x)
    out = gn.nn.Residual(gn.nn.Sequential(gn.nn.LayerNorm(), gn.nn.MLP([16, 8], activation="gelu")))(h)
    loss = gn.mean(out * out)
    params = g.params
    grads = gn.grad(loss, params)
    vals = gn.compile([out] + grads)(x=rng.normal(size=(3, 5, 8)))
    assert vals[0].shape == (3, 5, 8)
    assert all(np.all(np.isfinite(v)) for v in vals)
    assert {p.name.split("/")[0] for p in params} == {"res1", "res2"}
    assert "res1/seq/mha1/Wq" in g and "res2/seq/mlp/fc2/b" in g


# -- shapes with a None batch -------------------------------------------------------------------

def test_none_batch_runs_with_any_batch_size(rng):
    g = gn.Graph("t")
    x = g.input("x", (None, 3))
    y = gn.nn.MLP([4, 2])(x)
    assert y.shape == (None, 2)
    prog = gn.compile(y)
    assert prog(x=rng.normal(size=(1, 3))).shape == (1, 2)
    assert prog(x=rng.normal(size=(7, 3))).shape == (7, 2)


def test_attention_with_unknown_length_but_fixed_batch(rng):
    g = gn.Graph("t")
    x = g.input("x", (2, None, 4))
    y = gn.nn.MultiHeadAttention(4, 2)(x)
    assert y.shape == (2, None, 4)
    assert gn.compile(y)(x=rng.normal(size=(2, 5, 4))).shape == (2, 5, 4)


# -- errors -----------------------------------------------------------------------------------------

def test_wrong_feature_count_names_node_and_layer():
    g = gn.Graph("t")
    x = g.input("x", (None, 4))
    with pytest.raises(gn.ShapeError, match=r"Linear 'fc1': input 'x' has shape \(None, 4\) "
                                            r"with 4 features.*expects 3"):
        gn.nn.Linear(2, in_features=3)(x)


def test_reused_layer_checks_its_input_width():
    g = gn.Graph("t")
    layer = gn.nn.Linear(2)
    layer(g.input("a", (None, 3)))
    with pytest.raises(gn.ShapeError, match=r"'fc1': input 'b' has shape \(None, 5\)"):
        layer(g.input("b", (None, 5)))


def test_conv_wrong_channels_and_rank():
    g = gn.Graph("t")
    conv = gn.nn.Conv2d(2, 3)
    conv(g.input("a", (None, 3, 5, 5)))
    with pytest.raises(gn.ShapeError, match=r"'conv1': input 'b'.*4 channels on axis 1; the layer expects 3"):
        conv(g.input("b", (None, 4, 5, 5)))
    with pytest.raises(gn.ShapeError, match=r"Conv1d 'conv2': input 'c' has shape \(None, 3\); "
                                            r"expected \(N, C, L\)"):
        gn.nn.Conv1d(2, 3)(g.input("c", (None, 3)))


def test_unknown_feature_width_is_refused():
    g = gn.Graph("t")
    with pytest.raises(gn.ShapeError, match=r"input 'z' \(5, None\) needs a fixed number of features"):
        gn.nn.Linear(2)(g.input("z", (5, None)))


def test_attention_errors():
    g = gn.Graph("t")
    with pytest.raises(gn.ShapeError, match=r"SelfAttention 'attn1': input 'x'.*expected \(N, T, d\)"):
        gn.nn.SelfAttention(4)(g.input("x", (None, 4)))
    with pytest.raises(gn.ShapeError, match="causal mask needs a fixed sequence length"):
        gn.nn.MultiHeadAttention(4, 2, causal=True)(g.input("s", (2, None, 4)))
    with pytest.raises(gn.ShapeError, match="d_model=6 is not divisible by heads=4"):
        gn.nn.MultiHeadAttention(6, 4)


def test_batch_norm_rank_error():
    g = gn.Graph("t")
    with pytest.raises(gn.ShapeError, match=r"BatchNorm 'bn1': input 'x' has shape \(None,\)"):
        gn.nn.BatchNorm()(g.input("x", (None,)))


@pytest.mark.parametrize("make, err, msg", [
    (lambda: gn.nn.Linear(0), gn.ShapeError, "out_features must be a positive integer"),
    (lambda: gn.nn.Linear(2.5), gn.ShapeError, "out_features must be a positive integer"),
    (lambda: gn.nn.Linear(2, init="bogus"), gn.GraphError, "unknown initializer 'bogus'"),
    (lambda: gn.nn.Linear(2, activation="bogus"), gn.GraphError, "unknown activation 'bogus'"),
    (lambda: gn.nn.Linear(2, name="a/b"), gn.GraphError, "without '/'"),
    (lambda: gn.nn.Linear(2, seed=1.5), gn.GraphError, "seed must be an integer"),
    (lambda: gn.nn.MLP([]), gn.ShapeError, "non-empty list"),
    (lambda: gn.nn.MLP([3, -1]), gn.ShapeError, "size -1"),
    (lambda: gn.nn.MLP([3], final_activation="nope"), gn.GraphError, "unknown final_activation"),
    (lambda: gn.nn.Conv2d(2, (3, 0)), gn.ShapeError, "kernel_size"),
    (lambda: gn.nn.Conv2d(2, 3, padding=-1), gn.ShapeError, "padding"),
    (lambda: gn.nn.Conv1d(2, 3, padding=-1), gn.ShapeError, "padding"),
    (lambda: gn.nn.KAN(2, grid_size=1), gn.ShapeError, "at least 2"),
    (lambda: gn.nn.KAN(2, grid_range=(1, 1)), gn.GraphError, "low < high"),
    (lambda: gn.nn.KAN(2, grid_range="ab"), gn.GraphError, "pair of numbers"),
    (lambda: gn.nn.LayerNorm(eps=-1), gn.GraphError, "eps"),
    (lambda: gn.nn.BatchNorm(eps="x"), gn.GraphError, "eps"),
    (lambda: gn.nn.Residual(3), gn.GraphError, "callable"),
    (lambda: gn.nn.Sequential(), gn.GraphError, "at least one layer"),
    (lambda: gn.nn.Sequential(gn.nn.Linear(2), 5), gn.GraphError, "item 1"),
    (lambda: L.Activation(None), gn.GraphError, "activation name"),
])
def test_bad_constructor_arguments(make, err, msg):
    with pytest.raises(err, match=msg):
        make()


def test_layer_input_must_be_a_node_of_one_graph():
    with pytest.raises(gn.GraphError, match="input must be a Node"):
        gn.nn.Linear(2)(np.ones((2, 3)))
    layer = gn.nn.Linear(2)
    layer(gn.Graph("a").input("x", (None, 3)))
    with pytest.raises(gn.GraphError, match="built in graph 'a'.*graph 'b'"):
        layer(gn.Graph("b").input("x", (None, 3)))


def test_callable_that_returns_no_node():
    g = gn.Graph("t")
    x = g.input("x", (None, 2))
    with pytest.raises(gn.GraphError, match="must return a Node"):
        gn.nn.Linear(2, activation=lambda v: 3.0)(x)
    with pytest.raises(gn.GraphError, match="returned 3.0, not a Node"):
        gn.nn.Sequential(lambda v: 3.0)(x)


# -- scopes and names ---------------------------------------------------------------------------------

def test_scopes_and_parameter_names():
    g = gn.Graph("t")
    x = g.input("x", (None, 2))
    out = gn.nn.MLP([16, 16, 1], activation="relu")(x)
    assert out.scope == "mlp/fc3"
    assert [p.name for p in g.params] == [f"mlp/fc{i}/{w}" for i in (1, 2, 3) for w in "Wb"]
    assert g["mlp/fc1/W"].scope == "mlp/fc1"
    assert {n.scope for n in g.nodes if n.op == "matmul"} == {"mlp/fc1", "mlp/fc2", "mlp/fc3"}
    out2 = gn.nn.MLP([2])(out)
    a = gn.nn.Linear(3)(out2)
    b = gn.nn.Linear(3, name="head")(a)
    c = gn.nn.Linear(3)(b)
    assert (out2.scope, a.scope, b.scope, c.scope) == ("mlp2/fc1", "fc1", "head", "fc2")
    with pytest.raises(gn.GraphError, match="scope 'head' is already used"):
        gn.nn.Linear(3, name="head")(c)


def test_scope_names_skip_hand_made_scopes_and_nest():
    g = gn.Graph("t")
    x = g.input("x", (None, 2))
    with g.scope("fc1"):
        h = x * 2.0
    y = gn.nn.Linear(2)(h)
    assert y.scope == "fc2"
    with g.scope("block"):
        z = gn.nn.Linear(2)(y)
    assert "block/fc1/W" in g and z.scope == "block/fc1"


def test_calling_a_layer_twice_shares_its_parameters(rng):
    g = gn.Graph("t")
    layer = gn.nn.MLP([3, 2])
    a, b = g.input("a", (None, 4)), g.input("b", (None, 4))
    ya, yb = layer(a), layer(b)
    assert len(g.params) == 4 and len(layer.params) == 4
    assert yb.scope == "mlp/fc2"
    X = rng.normal(size=(3, 4))
    ra, rb = gn.compile([ya, yb])(a=X, b=X)
    np.testing.assert_array_equal(ra, rb)
    # the gradient of a shared weight sums both uses
    dW, = gn.grad(gn.sum(ya) + gn.sum(yb), [g["mlp/fc1/W"]])
    dW1, = gn.grad(gn.sum(ya), [g["mlp/fc1/W"]])
    v, v1 = gn.compile([dW, dW1])(a=X, b=X)
    np.testing.assert_allclose(v, 2 * v1)


def test_params_follow_the_graph_dtype():
    g = gn.Graph("t", dtype="float32")
    y = gn.nn.MLP([3, 1], activation="prelu")(g.input("x", (None, 2)))
    assert y.dtype == np.float32
    assert all(g.values[p.name].dtype == np.float32 for p in g.params)


# -- seeds and initialization -----------------------------------------------------------------------

def _values(make, seed=0):
    g = gn.Graph("t", seed=seed)
    layer = make()
    layer(g.input("x", (None, 5)))
    return [g.values[p.name] for p in layer.params]


def test_explicit_seed_is_reproducible_across_graphs():
    a = _values(lambda: gn.nn.MLP([4, 3], seed=7), seed=0)
    b = _values(lambda: gn.nn.MLP([4, 3], seed=7), seed=99)
    c = _values(lambda: gn.nn.MLP([4, 3], seed=8), seed=0)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0], c[0])


def test_default_seed_comes_from_the_graph():
    a = _values(lambda: gn.nn.KAN(3), seed=1)
    b = _values(lambda: gn.nn.KAN(3), seed=1)
    c = _values(lambda: gn.nn.KAN(3), seed=2)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0], c[0])
    g = gn.Graph("t")
    x = g.input("x", (None, 5))
    gn.nn.Linear(4)(x), gn.nn.Linear(4)(x)
    assert not np.array_equal(g.values["fc1/W"], g.values["fc2/W"])


def test_child_without_seed_follows_parent_seed_but_own_seed_wins():
    a = _values(lambda: gn.nn.Sequential(gn.nn.Linear(3), gn.nn.Linear(2, seed=5), name="s"))
    g = gn.Graph("other", seed=123)
    gn.nn.Linear(2, seed=5)(g.input("x", (None, 3)))
    np.testing.assert_array_equal(a[2], g.values["fc1/W"])


@pytest.mark.parametrize("make, var, zero_bias", [
    # PyTorch's nn.Linear default (issue 17 #13): U(+-1/sqrt(fan_in)) for W and b
    (lambda: gn.nn.Linear(300), 1.0 / (3 * 400), False),
    (lambda: gn.nn.Linear(300, activation="relu"), 1.0 / (3 * 400), False),
    (lambda: gn.nn.Linear(300, activation="tanh"), 1.0 / (3 * 400), False),
    (lambda: gn.nn.Linear(300, init="he_uniform"), 2.0 / 400, True),         # U(-a, a): a^2/3
    (lambda: gn.nn.Linear(300, init="he_normal"), 2.0 / 400, True),
    (lambda: gn.nn.Linear(300, init="xavier_uniform"), 2.0 / 700, True),
    (lambda: gn.nn.Linear(300, init="glorot_normal"), 2.0 / 700, True),
    (lambda: gn.nn.Linear(300, init="lecun_normal"), 1.0 / 400, True),
    (lambda: gn.nn.Linear(300, init="lecun_uniform"), 1.0 / 400, True),
])
def test_initializer_variance(make, var, zero_bias):
    g = gn.Graph("t", seed=3)
    layer = make()
    layer(g.input("x", (None, 400)))
    W = g.values["fc1/W"]
    assert W.shape == (400, 300)
    assert abs(W.mean()) < 0.02 * math.sqrt(var)
    assert W.var() == pytest.approx(var, rel=0.03)
    b = g.values["fc1/b"]
    if zero_bias:
        np.testing.assert_array_equal(b, 0.0)
    else:
        assert np.all(np.abs(b) <= 1 / math.sqrt(400)) and np.std(b) > 0.5 / math.sqrt(3 * 400)


def test_conv_initializer_uses_receptive_field_fan_in():
    g = gn.Graph("t", seed=4)
    gn.nn.Conv2d(64, 5, activation="relu")(g.input("x", (None, 16, 8, 8)))
    W = g.values["conv1/W"]
    assert W.var() == pytest.approx(2.0 / (16 * 25), rel=0.05)


def test_mlp_layers_use_torch_default_with_their_own_fan_in():
    g = gn.Graph("t", seed=5)
    gn.nn.MLP([300, 100], activation="relu")(g.input("x", (None, 500)))
    assert g.values["mlp/fc1/W"].var() == pytest.approx(1.0 / (3 * 500), rel=0.03)
    assert g.values["mlp/fc2/W"].var() == pytest.approx(1.0 / (3 * 300), rel=0.03)
    g2 = gn.Graph("t", seed=5)
    gn.nn.MLP([300, 100], activation="tanh", init="he_normal")(g2.input("x", (None, 500)))
    assert g2.values["mlp/fc1/W"].var() == pytest.approx(2.0 / 500, rel=0.03)
    assert g2.values["mlp/fc2/W"].var() == pytest.approx(2.0 / 300, rel=0.03)


# -- the three ways to differentiate agree through layers ----------------------------------------

@pytest.mark.parametrize("make, shape", [
    (lambda: gn.nn.MultiHeadAttention(4, 2, causal=True), (2, 3, 4)),
    (lambda: gn.nn.Conv2d(2, 2, stride=2, padding=1), (2, 2, 4, 4)),
    (lambda: gn.nn.BatchNorm(), (3, 2, 2, 2)),
    (lambda: gn.nn.KAN(2, grid_size=3), (3, 2)),
    (lambda: gn.nn.LayerNorm(), (3, 4)),
    (lambda: gn.nn.MLP([3, 2], activation="trainable_swish"), (3, 2)),
])
def test_forward_mode_and_finite_differences_agree_with_reverse(make, shape, rng):
    g = gn.Graph("t")
    x = g.input("x", shape)
    layer = make()
    y = layer(x)
    randomize(g, layer, rng)
    loss = gn.mean(gn.tanh(y))
    wrt = [x] + layer.params
    rev = gn.grad(loss, wrt)
    fwd = gn.grad(loss, wrt, mode="forward")
    X = rng.normal(size=shape)
    prog = gn.compile([loss] + rev + fwd)
    _, *vals = prog(x=X)
    for a, b in zip(vals[:len(wrt)], vals[len(wrt):]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    # central differences on a few entries of x and of the first parameter
    f = gn.compile(loss)
    P = layer.params[0].name
    for which, base in (("x", X), (P, g.values[P])):
        for flat in rng.choice(base.size, size=min(3, base.size), replace=False):
            idx = np.unravel_index(flat, base.shape)
            h = 1e-6
            hi, lo = base.copy(), base.copy()
            hi[idx] += h
            lo[idx] -= h
            feeds = (lambda v: {"x": v}) if which == "x" else (lambda v: {"x": X, P: v})
            fd = (f(**feeds(hi)) - f(**feeds(lo))) / (2 * h)
            got = vals[0][idx] if which == "x" else vals[1][idx]
            assert got == pytest.approx(fd, rel=1e-5, abs=1e-8), (which, idx)


def test_user_defined_layer_and_a_long_chain_of_default_names():
    class Scale(gn.nn.Layer):
        kind = "scale"

        def forward(self, x):
            return x * self.param("s", (x.shape[-1],), fill=2.0)

    g = gn.Graph("t")
    x = g.input("x", (None, 2))
    h = x
    for _ in range(60):
        h = gn.nn.Linear(2, init="zeros")(h)
    y = Scale()(h + x)
    assert y.scope == "scale1" and g.values["scale1/s"].tolist() == [2.0, 2.0]
    assert h.scope == "fc60"
    np.testing.assert_allclose(gn.compile(y)(x=np.ones((1, 2))), [[2.0, 2.0]])
