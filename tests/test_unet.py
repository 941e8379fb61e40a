"""Diffuser's temporal U-Net and value function J (Diffuser appendix C; official jannerm/diffuser temporal.py).

Shapes, horizon rules, parameter counts against the official architecture in closed form, the building blocks
against NumPy definitions with PyTorch semantics, and the conditioning / batching properties the samplers rely on.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffrl.nets import (
    Conv1dBlock,
    Downsample1d,
    ResidualTemporalBlock,
    TemporalUNet,
    Upsample1d,
    ValueUNet,
    official_value_fc_dim,
    value_fc_dim,
)
from diffrl.nets.activations import mish
from diffrl.nets.convolution import (
    conv_forward_form_grads,
    native_conv,
    winograd_conv,
    winograd_conv_forward_form_grads,
    winograd_tile,
    winograd_transforms,
)
from diffrl.nets.unet import Conv1d

KEY = jax.random.PRNGKey(0)


def _n_params(tree):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def _random_params(model, *args, seed=0):
    """Variables with the model's structure, filled by NumPy (compiling ``init`` takes tens of seconds on CPU)."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name == "kernel":  # fan-in scaled, as a default initialiser would be
            return (rng.standard_normal(leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))).astype(leaf.dtype)
        base = 1.0 if name == "scale" else 0.0
        return (base + 0.1 * rng.standard_normal(leaf.shape)).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, jax.eval_shape(model.init, KEY, *args))


def _shapes(model, batch, horizon, transition_dim):
    x = jax.ShapeDtypeStruct((batch, horizon, transition_dim), jnp.float32)
    t = jax.ShapeDtypeStruct((batch,), jnp.int32)
    return jax.eval_shape(lambda x, t: model.init_with_output(KEY, x, t), x, t)  # (out, variables)


# ---------------------------------------------------------------------------------------------------------------
# Official parameter counts, layer by layer from the official __init__s (PyTorch Conv1d: in*out*k + out; GroupNorm:
# 2*C; Linear: in*out + out; ConvTranspose1d: in*out*k + out)
# ---------------------------------------------------------------------------------------------------------------


def _conv(cin, cout, k):
    return cin * cout * k + cout


def _linear(cin, cout):
    return cin * cout + cout


def _conv1d_block(cin, cout, k=5):
    return _conv(cin, cout, k) + 2 * cout


def _res_block(cin, cout, embed):
    residual = _conv(cin, cout, 1) if cin != cout else 0
    return _conv1d_block(cin, cout) + _conv1d_block(cout, cout) + _linear(embed, cout) + residual


def _time_mlp(dim):
    return _linear(dim, 4 * dim) + _linear(4 * dim, dim)


def official_unet_params(transition_dim, dim, dim_mults):
    dims = [transition_dim] + [dim * m for m in dim_mults]
    in_out = list(zip(dims[:-1], dims[1:]))
    n = _time_mlp(dim)
    for i, (cin, cout) in enumerate(in_out):
        n += _res_block(cin, cout, dim) + _res_block(cout, cout, dim)
        n += _conv(cout, cout, 3) if i < len(in_out) - 1 else 0  # Downsample1d except at the last level
    n += 2 * _res_block(dims[-1], dims[-1], dim)
    for cin, cout in reversed(in_out[1:]):  # every up level has an Upsample1d
        n += _res_block(2 * cout, cin, dim) + _res_block(cin, cin, dim) + _conv(cin, cin, 4)
    return n + _conv1d_block(dim, dim) + _conv(dim, transition_dim, 1)


def official_value_params(horizon, transition_dim, dim, dim_mults, out_dim=1):
    dims = [transition_dim] + [dim * m for m in dim_mults]
    n = _time_mlp(dim)
    for cin, cout in zip(dims[:-1], dims[1:]):  # a Downsample1d at every level
        n += _res_block(cin, cout, dim) + _res_block(cout, cout, dim) + _conv(cout, cout, 3)
    mid = dims[-1]
    n += _res_block(mid, mid // 2, dim) + _conv(mid // 2, mid // 2, 3)
    n += _res_block(mid // 2, mid // 4, dim) + _conv(mid // 4, mid // 4, 3)
    fc_dim = official_value_fc_dim(horizon, dim, dim_mults)
    return n + _linear(fc_dim + dim, fc_dim // 2) + _linear(fc_dim // 2, out_dim)


@pytest.mark.parametrize(
    "transition_dim, horizon, dim_mults, official",
    [
        (6, 128, (1, 4, 8), 3_682_118),  # Maze2D U-Maze (state 4 + action 2)
        (17 + 6, 32, (1, 2, 4, 8), 3_958_327),  # locomotion (Walker2d state 17 + action 6)
    ],
)
def test_unet_parameter_count_matches_official(transition_dim, horizon, dim_mults, official):
    # `official` is sum(p.numel()) of the official TemporalUnet built with these arguments
    assert official_unet_params(transition_dim, 32, dim_mults) == official
    _, variables = _shapes(TemporalUNet(transition_dim, 32, dim_mults), 1, horizon, transition_dim)
    assert _n_params(variables) == official
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(variables))


def test_value_parameter_count_matches_official():
    official = 2_296_545  # sum(p.numel()) of the official ValueFunction(horizon=32, transition_dim=23)
    assert official_value_params(32, 23, 32, (1, 2, 4, 8)) == official
    _, variables = _shapes(ValueUNet(32, (1, 2, 4, 8)), 1, 32, 23)
    assert _n_params(variables) == official
    # HalfCheetah's value function (horizon 4, dim_mults (1, 4, 8)), and a head with several outputs
    _, variables = _shapes(ValueUNet(32, (1, 4, 8)), 1, 4, 23)
    assert _n_params(variables) == official_value_params(4, 23, 32, (1, 4, 8)) == 2_180_833
    _, variables = _shapes(ValueUNet(16, (1, 2, 4, 8), out_dim=3), 1, 70, 11)
    assert _n_params(variables) == official_value_params(70, 11, 16, (1, 2, 4, 8), 3) == 578_387


def test_layers_start_from_pytorchs_default_initialisation():
    """The official modules' reset_parameters: every weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in the
    input features of a Linear, in_channels x k of a Conv1d, out_channels x k of a ConvTranspose1d (= the kernel's
    axes but the last here); GroupNorm starts at scale 1, offset 0."""
    t, cond = jnp.zeros(1, jnp.int32), {"state": jnp.zeros((1, 3)), "keep": jnp.ones(1)}
    variables = {**TemporalUNet(6, 32, (1, 4, 8), condition_dim=3).init(KEY, jnp.zeros((1, 16, 6)), t, cond)["params"],
                 "value": ValueUNet(32, (1, 2, 4, 8)).init(KEY, jnp.zeros((1, 32, 23)), t)["params"]}
    layers = 0
    for path, module in jax.tree_util.tree_flatten_with_path(variables, is_leaf=lambda n: "bias" in n)[0]:
        if "kernel" not in module:  # GroupNorm
            np.testing.assert_array_equal(module["scale"], 1.0)
            np.testing.assert_array_equal(module["bias"], 0.0)
            continue
        kernel, bias = np.asarray(module["kernel"]), np.asarray(module["bias"])
        bound = 1.0 / np.sqrt(np.prod(kernel.shape[:-1]))
        assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound, path
        if kernel.size >= 4096:  # a uniform's variance bound^2 / 3, and its range filled
            assert abs(kernel.var() / (bound**2 / 3) - 1) < 0.1 and np.abs(kernel).max() > 0.95 * bound, path
        if bias.size >= 128:
            assert abs(bias.var() / (bound**2 / 3) - 1) < 0.35, path
        layers += 1
    # U-Net: 12 blocks x (2 convs, time_proj) + 5 1x1 skips + 4 resamplings + 2 final + 2 time + 2 condition = 51;
    # J: 10 blocks x 3 + 6 skips + 6 downsamplings + 2 time + 2 head = 46
    assert layers == 51 + 46
    # initialization="flax": flax's defaults (LeCun normal kernels, zero biases), the parameters of the same shapes
    flax_init = ValueUNet(32, (1, 2, 4, 8), initialization="flax").init(KEY, jnp.zeros((1, 32, 23)), t)["params"]
    assert jax.tree.map(jnp.shape, flax_init) == jax.tree.map(jnp.shape, variables["value"])
    kernel = np.asarray(flax_init["down_1_res_0"]["block_0"]["conv"]["kernel"])  # [5, 32, 64]
    assert not np.any(flax_init["down_1_res_0"]["block_0"]["conv"]["bias"])
    assert abs(kernel.std() * np.sqrt(5 * 32) - 1) < 0.1  # LeCun: variance 1 / fan_in
    with pytest.raises(ValueError, match="initialization must be one of"):
        ValueUNet(32, (1, 2, 4, 8), initialization="torch").init(KEY, jnp.zeros((1, 32, 23)), t)


def test_value_fc_dim_agrees_with_official_where_the_official_code_runs():
    for dim_mults in [(1,), (1, 4, 8), (1, 2, 4, 8)]:
        d = 2 ** (len(dim_mults) + 1)
        for horizon in range(1, 4 * d):
            official_runs = horizon < 3 * d and horizon != 2 * d
            agree = value_fc_dim(horizon, 32, dim_mults) == official_value_fc_dim(horizon, 32, dim_mults)
            assert agree == official_runs, (dim_mults, horizon)
    # the paper's locomotion horizon 100 is one the official ValueFunction's bookkeeping gets wrong: 2 vs 3 steps
    assert value_fc_dim(100, 32, (1, 2, 4, 8)) == 64 * 2 and official_value_fc_dim(100, 32, (1, 2, 4, 8)) == 64 * 3


# ---------------------------------------------------------------------------------------------------------------
# Shapes and horizon rules
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "horizon, dim_mults, transition_dim",
    [(32, (1, 2, 4, 8), 5), (8, (1, 2, 4, 8), 3), (12, (1, 2, 3), 4), (7, (1,), 2)],
)
def test_unet_output_shape(horizon, dim_mults, transition_dim):
    out, _ = _shapes(TemporalUNet(transition_dim, dim=8, dim_mults=dim_mults), 2, horizon, transition_dim)
    assert out.shape == (2, horizon, transition_dim) and out.dtype == jnp.float32


@pytest.mark.parametrize("horizon, dim_mults", [(32, (1, 2, 4, 8)), (100, (1, 2, 4, 8)), (5, (1, 2)), (1, (1, 4, 8))])
def test_value_output_shape(horizon, dim_mults):
    out, variables = _shapes(ValueUNet(dim=16, dim_mults=dim_mults), 3, horizon, 4)
    assert out.shape == (3,)
    fc_in = variables["params"]["fc_0"]["kernel"].shape[0]
    assert fc_in == value_fc_dim(horizon, 16, dim_mults) + 16  # flattened features + time embedding


def test_value_output_shape_several_outputs_and_unbatched():
    net = ValueUNet(dim=16, dim_mults=(1, 2), out_dim=3)
    out, variables = _shapes(net, 2, 9, 4)
    assert out.shape == (2, 3)
    assert jax.eval_shape(net.apply, variables, jnp.zeros((9, 4)), 0).shape == (3,)
    scalar = ValueUNet(dim=16, dim_mults=(1, 2))
    _, variables = _shapes(scalar, 2, 9, 4)
    assert jax.eval_shape(scalar.apply, variables, jnp.zeros((9, 4)), 0).shape == ()


@pytest.mark.parametrize("length", [1, 2, 3, 5, 8])
def test_resampling_lengths(length):
    x = jax.ShapeDtypeStruct((2, length, 8), jnp.float32)
    down, _ = jax.eval_shape(lambda x: Downsample1d().init_with_output(KEY, x), x)
    up, _ = jax.eval_shape(lambda x: Upsample1d().init_with_output(KEY, x), x)
    assert down.shape == (2, (length + 1) // 2, 8)  # PyTorch: floor((L + 2 - 3) / 2) + 1 = ceil(L / 2)
    assert up.shape == (2, 2 * length, 8)  # PyTorch: (L - 1) * 2 - 2 + 4 = 2 L


def test_unet_horizon_error_is_clear():
    net = TemporalUNet(3, dim=8, dim_mults=(1, 2, 4, 8))
    msg = r"horizon 30 is not a positive multiple of 8 .*dim_mults=\(1, 2, 4, 8\).*nearest valid horizons: 24 or 32"
    with pytest.raises(ValueError, match=msg):
        _shapes(net, 1, 30, 3)
    # parameters do not depend on the horizon (Diffuser section 4, variable-length plans): the ones made at horizon 16
    # run at 48 and refuse 20 with the same message
    _, params = _shapes(net, 1, 16, 3)
    assert jax.eval_shape(net.apply, params, jnp.zeros((1, 48, 3)), jnp.zeros((1,))).shape == (1, 48, 3)
    with pytest.raises(ValueError, match=r"horizon 20 is not a positive multiple of 8"):
        jax.eval_shape(net.apply, params, jnp.zeros((1, 20, 3)), jnp.zeros((1,)))


def test_configuration_errors_are_clear():
    with pytest.raises(ValueError, match="built for transition_dim=3"):
        _shapes(TemporalUNet(3, dim=8, dim_mults=(1, 2)), 1, 8, 4)
    with pytest.raises(ValueError, match=r"GroupNorm\(8 groups\).*\[4\]"):
        _shapes(TemporalUNet(3, dim=4, dim_mults=(2, 4)), 1, 8, 3)  # final Conv1dBlock(dim) has 4 channels
    with pytest.raises(ValueError, match=r"GroupNorm\(8 groups\).*dim_mults=\(1, 2\) give \[4\]"):
        _shapes(ValueUNet(dim=8, dim_mults=(1, 2)), 1, 8, 3)  # mid // 4 = 4 channels
    with pytest.raises(ValueError, match=r"t must be a scalar or of shape \[2\]"):
        jax.eval_shape(TemporalUNet(3, dim=8, dim_mults=(1,)).init, KEY, jnp.zeros((2, 4, 3)), jnp.zeros((3,)))


# ---------------------------------------------------------------------------------------------------------------
# Building blocks against NumPy, PyTorch semantics (cross-correlation, GroupNorm eps 1e-5, Mish)
# ---------------------------------------------------------------------------------------------------------------


def _np_conv(x, kernel, bias, pad, stride=1):
    xp = np.pad(x, ((pad, pad), (0, 0)))
    k = kernel.shape[0]
    n_out = (xp.shape[0] - k) // stride + 1
    return np.stack([sum(xp[stride * i + j] @ kernel[j] for j in range(k)) for i in range(n_out)]) + bias


def _np_block(x, p, groups=8):
    h = _np_conv(x, p["conv"]["kernel"], p["conv"]["bias"], p["conv"]["kernel"].shape[0] // 2)
    length, channels = h.shape
    hg = h.reshape(length, groups, channels // groups)
    mean, var = hg.mean(axis=(0, 2), keepdims=True), hg.var(axis=(0, 2), keepdims=True)
    h = ((hg - mean) / np.sqrt(var + 1e-5)).reshape(length, channels) * p["norm"]["scale"] + p["norm"]["bias"]
    return h * np.tanh(np.logaddexp(0.0, h))


def _np_params(variables):
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), variables["params"])


def test_residual_block_matches_numpy_definition():
    rng = np.random.default_rng(0)
    x, t_emb = rng.standard_normal((2, 9, 5)).astype(np.float32), rng.standard_normal((2, 6)).astype(np.float32)
    block = ResidualTemporalBlock(16)
    variables = _random_params(block, x, t_emb)
    out = np.asarray(jax.jit(block.apply)(variables, x, t_emb))
    p = _np_params(variables)
    for b in range(2):
        mish_t = t_emb[b] * np.tanh(np.logaddexp(0.0, t_emb[b]))
        h = _np_block(x[b], p["block_0"]) + mish_t @ p["time_proj"]["kernel"] + p["time_proj"]["bias"]
        h = _np_block(h, p["block_1"])
        ref = h + x[b] @ p["residual_conv"]["kernel"][0] + p["residual_conv"]["bias"]
        np.testing.assert_allclose(out[b], ref, rtol=2e-4, atol=2e-4)
    conv_block = Conv1dBlock(8)
    variables = _random_params(conv_block, x, seed=1)
    out = jax.jit(conv_block.apply)(variables, x)
    np.testing.assert_allclose(out[1], _np_block(x[1], _np_params(variables)), rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("length", [4, 5])
def test_resampling_matches_pytorch_definition(length):
    x = np.random.default_rng(1).standard_normal((1, length, 8)).astype(np.float32)
    down, up = Downsample1d(), Upsample1d()
    dv, uv = _random_params(down, x), _random_params(up, x, seed=1)
    pd, pu = _np_params(dv)["conv"], _np_params(uv)["conv"]
    np.testing.assert_allclose(jax.jit(down.apply)(dv, x)[0], _np_conv(x[0], pd["kernel"], pd["bias"], 1, 2), atol=1e-5)
    # ConvTranspose1d(k=4, stride=2, padding=1): scatter x[i] * w[..., k] to 2i + k, crop 1 each side; the flax kernel
    # is the PyTorch one flipped along k (see Upsample1d)
    full = np.zeros((2 * length + 2, 8))
    for i in range(length):
        for k in range(4):
            full[2 * i + k] += x[0, i] @ pu["kernel"][3 - k]
    np.testing.assert_allclose(jax.jit(up.apply)(uv, x)[0], full[1:-1] + pu["bias"], atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Conditioning, mixing along the horizon, batching, jit / vmap / grad
# ---------------------------------------------------------------------------------------------------------------


def test_unet_uses_time_and_mixes_the_whole_horizon():
    net = TemporalUNet(3, dim=8, dim_mults=(1, 2))
    x = np.random.default_rng(0).standard_normal((1, 16, 3)).astype(np.float32)
    params = _random_params(net, x, jnp.zeros((1,), jnp.int32))
    xs = np.concatenate([x, x, x])
    xs[1, -1] += 1.0
    ts = jnp.array([5, 5, 6])

    run = jax.jit(net.apply)
    out = run(params, xs, ts, None)
    assert out.shape == (3, 16, 3)
    assert np.abs(out[2] - out[0]).max() > 1e-3  # the diffusion step conditions the output
    # the last step of the plan reaches its first step (through the down/up path; GroupNorm's horizon-wide statistics
    # alone would couple them too, which is why the structure is pinned by the parameter counts and NumPy tests)
    assert np.abs(out[1, 0] - out[0, 0]).max() > 1e-3
    # examples do not interact (GroupNorm statistics are per example): new rows 1, 2 leave row 0 as it was
    xs[1:] = np.random.default_rng(1).standard_normal(xs[1:].shape)
    np.testing.assert_allclose(run(params, xs, ts, None)[0], out[0], rtol=1e-6, atol=1e-6)
    # so the model also maps over unbatched examples (x [H, C], scalar t)
    per_example = jax.eval_shape(jax.vmap(net.apply, in_axes=(None, 0, 0, None)), params, xs, ts, None)
    assert per_example.shape == out.shape


def test_value_function_ensemble_and_guide_gradient():
    net = ValueUNet(dim=32, dim_mults=(1,))  # channels 32 -> 16 -> 8 in the mid blocks
    x = np.random.default_rng(0).standard_normal((3, 12, 5)).astype(np.float32)
    t = jnp.arange(3)
    members = [_random_params(net, x, t, seed=s) for s in (0, 1)]
    ensemble = jax.tree_util.tree_map(lambda *a: np.stack(a), *members)

    def value_and_guide(params, x, t):  # Diffuser's guide is grad_tau J; vjp shares the forward pass
        values, pullback = jax.vjp(lambda x: net.apply(params, x, t), x)
        return values, pullback(jnp.ones_like(values))[0]

    run = jax.jit(jax.vmap(value_and_guide, in_axes=(0, None, None)))  # an ensemble of J's through vmap
    values, guide = run(ensemble, x, t)
    assert values.shape == (2, 3) and guide.shape == (2, *x.shape) and np.all(np.isfinite(guide))
    assert np.abs(values[0] - values[1]).max() > 1e-4 and np.abs(values[0, 0] - values[0, 1]).max() > 1e-6
    assert np.abs(guide).max() > 0
    # examples do not interact: new plans in rows 1, 2 leave row 0's value and gradient as they were
    x2 = x.copy()
    x2[1:] = np.random.default_rng(1).standard_normal(x2[1:].shape)
    values2, guide2 = run(ensemble, x2, t)
    np.testing.assert_allclose(values2[:, 0], values[:, 0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(guide2[:, 0], guide[:, 0], rtol=1e-6, atol=1e-7)
    assert np.abs(guide2[:, 1] - guide[:, 1]).max() > 0


def test_mish_is_x_tanh_softplus_with_its_gradient():
    """The one-exponential Mish against the definition in float64 NumPy, across the identity switch at 20 and at
    inputs where e^{2x} would overflow; its gradient against d/dx [x tanh(softplus(x))]."""
    x = np.concatenate([np.linspace(-60.0, 60.0, 4001), [-1e4, -100.0, 19.999, 20.0, 20.001, 100.0, 1e4]])
    softplus = np.logaddexp(0.0, x)
    expected = x * np.tanh(softplus)
    got = np.asarray(mish(jnp.asarray(x, jnp.float32)), np.float64)
    np.testing.assert_allclose(got, expected, rtol=2e-6, atol=3e-6)
    sigmoid = np.exp(-np.logaddexp(0.0, -x))
    slope = np.tanh(softplus) + x * sigmoid * (1.0 - np.tanh(softplus) ** 2)
    grad = np.asarray(jax.vmap(jax.grad(mish))(jnp.asarray(x, jnp.float32)), np.float64)
    np.testing.assert_allclose(grad, slope, rtol=1e-5, atol=1e-5)


def _gradients_in_scan(conv, x, kernel, padding, target):
    """Both gradients of ``sum(sin(conv(x, kernel)) * target)``, taken inside a 2-step scan as a train chunk does."""
    def loss(x, kernel):
        return jnp.sum(jnp.sin(conv(x, kernel, padding)) * target)

    def step(carry, _):
        return carry, jax.grad(loss, argnums=(0, 1))(*carry)

    return jax.jit(lambda x, kernel: jax.lax.scan(step, (x, kernel), None, length=2)[1])(x, kernel)


@pytest.mark.parametrize("batch,length,channels,features,kernel_size,padding",
                         [(3, 16, 6, 8, 5, 2), (2, 7, 4, 4, 3, 0), (1, 8, 5, 3, 5, 4)])
def test_conv_gradients_in_forward_form_equal_autodiff(batch, length, channels, features, kernel_size, padding):
    """The CPU convolution's hand-written VJP (input and kernel gradients as forward convolutions) against JAX's
    autodiff of the same convolution, inside a scan as a train chunk runs it."""
    kx, kw, ky = jax.random.split(KEY, 3)
    x = jax.random.normal(kx, (batch, length, channels))
    kernel = jax.random.normal(kw, (kernel_size, channels, features))
    target = jax.random.normal(ky, (batch, length + 2 * padding - kernel_size + 1, features))

    grads = functools.partial(_gradients_in_scan, x=x, kernel=kernel, padding=padding, target=target)
    for got, expected in zip(grads(conv_forward_form_grads), grads(native_conv)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("m,r", [(2, 3), (4, 3), (2, 5), (4, 5), (6, 5)])
def test_winograd_transforms_give_the_correlation_with_n_multiplications(m, r):
    """F(m, r): ``A^T [(G g) * (B^T d)]`` is NumPy's correlation of the tile with the filter, in float64, from
    ``n = m + r - 1`` products where the direct form takes ``m r``."""
    kernel_t, input_t, output_t = winograd_transforms(m, r)
    n = m + r - 1
    assert kernel_t.shape == (n, r) and input_t.shape == (n, n) and output_t.shape == (m, n)
    rng = np.random.default_rng(m * 10 + r)
    for _ in range(5):
        tile, taps = rng.standard_normal(n), rng.standard_normal(r)
        expected = np.correlate(tile, taps, mode="valid")  # y[i] = sum_j d[i + j] g[j]
        np.testing.assert_allclose(output_t @ ((kernel_t @ taps) * (input_t @ tile)), expected, atol=1e-11)
    # F(2, 3) by hand (points 0, 1, -1, infinity): Lavin & Gray's matrices up to moving the 1/2 from G into B^T
    kernel_t, input_t, output_t = winograd_transforms(2, 3)
    np.testing.assert_array_equal(kernel_t, [[1, 0, 0], [1, 1, 1], [1, -1, 1], [0, 0, 1]])
    np.testing.assert_array_equal(input_t, [[1, 0, -1, 0], [0, 0.5, 0.5, 0], [0, -0.5, 0.5, 0], [0, -1, 0, 1]])
    np.testing.assert_array_equal(output_t, [[1, 1, 1, 0], [0, 1, -1, 1]])
    with pytest.raises(ValueError, match="finite points"):
        winograd_transforms(10, 5)


@pytest.mark.parametrize("m", [4, 2])
def test_winograd_conv_and_its_gradients_equal_xla_convolution(m):
    """Winograd F(m, 5) over channels against XLA's convolution in float32 (rounding: ~1e-5 of the output's scale)
    and its custom VJP against JAX's autodiff of XLA's convolution, inside a scan as a train chunk runs it; a shape it
    cannot tile is refused."""
    kx, kw, ky = jax.random.split(KEY, 3)
    x = jax.random.normal(kx, (3, 16, 12))
    kernel = jax.random.normal(kw, (5, 12, 10)) / np.sqrt(60)
    target = jax.random.normal(ky, (3, 16, 10))
    expected = np.asarray(native_conv(x, kernel, 2))
    got = np.asarray(jax.jit(winograd_conv, static_argnums=(2, 3))(x, kernel, 2, m))
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5 * np.abs(expected).max())
    assert np.abs(got - expected).max() > 0  # a different algorithm, not XLA's convolution under another name

    def conv(x, kernel, padding):
        return winograd_conv_forward_form_grads(x, kernel, padding, m)

    grads = functools.partial(_gradients_in_scan, x=x, kernel=kernel, padding=2, target=target)
    for got, expected in zip(grads(conv), grads(native_conv)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=0,
                                   atol=2e-5 * np.abs(np.asarray(expected)).max())
    with pytest.raises(ValueError, match=f"divisible by {m}"):
        winograd_conv(x[:, :15], kernel, 2, m)


def test_conv1d_takes_winograd_for_large_float32_layers_on_a_cpu():
    """``Conv1d`` computes a stride-1 same-length layer by Winograd where ``winograd_tile`` picks a tile (float32,
    >= 128 x 128 channels, F(4, 5) where that gives >= 128 tiles in the batch, else F(2, 5) where that does): no XLA
    convolution in its program, the output of the direct form; small batches, small layers, bfloat16 and other
    paddings keep XLA's convolution."""
    assert winograd_tile(64, 32, 256, 256, 5, 2, jnp.float32) == 4  # the maze U-Net's inner level at batch 64
    assert winograd_tile(16, 64, 128, 128, 5, 2, jnp.float32) == 4
    assert winograd_tile(8, 32, 256, 256, 5, 2, jnp.float32) == 2  # 64 tiles of 4, 128 of 2
    assert winograd_tile(8, 30, 256, 256, 5, 2, jnp.float32) == 0  # 120 tiles of 2
    assert winograd_tile(1, 32, 256, 256, 5, 2, jnp.float32) == 0  # 8 rows per product: slower
    assert winograd_tile(64, 128, 32, 128, 5, 2, jnp.float32) == 0  # the transforms outweigh the saving
    assert winograd_tile(64, 32, 256, 256, 5, 2, jnp.bfloat16) == 0
    assert winograd_tile(64, 32, 256, 256, 5, 0, jnp.float32) == 0
    layer = Conv1d(128, 5, padding=2)
    x = jax.random.normal(KEY, (8, 128, 128))
    params = _random_params(layer, x)
    direct = native_conv(x, params["params"]["kernel"], 2) + params["params"]["bias"]
    for batch in (8, 2):  # F(4, 5), F(2, 5)
        compiled = jax.jit(layer.apply).lower(params, x[:batch]).compile()
        assert " convolution(" not in compiled.as_text()
        got = compiled(params, x[:batch])
        np.testing.assert_allclose(np.asarray(got), np.asarray(direct[:batch]), rtol=0,
                                   atol=2e-5 * np.abs(direct).max())
    small = jax.jit(Conv1d(128, 5, padding=2).apply).lower(params, x[:1]).compile().as_text()
    assert " convolution(" in small


def test_bfloat16_compute_dtype_runs_the_networks_in_bfloat16_with_float32_parameters():
    """``dtype=jnp.bfloat16`` (``config.compute_dtype``): every convolution and matrix product of the U-Net and of J
    takes bfloat16 operands, while the parameters, their gradients and the outputs stay float32 and agree with the
    float32 network's within bfloat16's rounding (8 significant bits: 2^-8 = 0.4% per operation)."""
    t = jnp.arange(4)
    # at least two channels per GroupNorm group and two steps per length: a group of one channel over two steps
    # normalises to +-1 whatever its input, and its gradient is rounding noise in any dtype
    for horizon, net in ((16, TemporalUNet(6, dim=16, dim_mults=(1, 2))), (32, ValueUNet(dim=32, dim_mults=(1, 2)))):
        x = np.random.default_rng(0).standard_normal((4, horizon, 6)).astype(np.float32)
        params = _random_params(net, x, t)
        half = net.clone(dtype=jnp.bfloat16)
        hlo = jax.jit(half.apply).lower(params, x, t).as_text()
        convs, dots = hlo.count("stablehlo.convolution"), hlo.count("stablehlo.dot_general")
        assert convs > 0 and dots > 0
        assert hlo.count("stablehlo.convolution") == len([ln for ln in hlo.splitlines()
                                                          if "stablehlo.convolution" in ln and "xbf16>" in ln])
        assert dots == len([ln for ln in hlo.splitlines() if "stablehlo.dot_general" in ln and "xbf16>" in ln])
        full_out, half_out = jax.jit(net.apply)(params, x, t), jax.jit(half.apply)(params, x, t)
        assert half_out.dtype == jnp.float32
        assert 1e-4 < np.linalg.norm(half_out - full_out) / np.linalg.norm(full_out) < 0.03

        def loss(p, model):
            return jnp.mean(jnp.square(model.apply(p, x, t)))

        grad = jax.jit(jax.grad(loss), static_argnums=1)
        full_grad, half_grad = grad(params, net), grad(params, half)
        assert all(g.dtype == jnp.float32 for g in jax.tree_util.tree_leaves(half_grad))
        flat_full = np.concatenate([np.ravel(g) for g in jax.tree_util.tree_leaves(full_grad)])
        flat_half = np.concatenate([np.ravel(g) for g in jax.tree_util.tree_leaves(half_grad)])
        assert np.linalg.norm(flat_half - flat_full) / np.linalg.norm(flat_full) < 0.05
