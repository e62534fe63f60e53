"""Normalization layers: batch norm (training and inference), layer norm, RMS norm, group norm, instance norm.

All share one core: over a set of reduction axes,

    mu = mean(x),  var = mean((x - mu)^2)  (biased),  inv = 1 / sqrt(var + eps),
    xhat = (x - mu) inv,  y = gamma xhat + beta,

and its gradient, the classic compact formula (gh = g gamma, means over the
reduction axes):

    gx = inv (gh - mean(gh) - xhat mean(gh xhat)).

It is exact with eps > 0 (eps sits inside inv, and so inside xhat). When every
value in a reduction is equal, var = 0 and xhat = 0 exactly: the output is
beta, gx = inv (gh - mean(gh)), and g gamma = 0. Smooth everywhere for eps > 0.
Any finite eps is taken, and eps <= 0 is the same formula in IEEE arithmetic
(what both frameworks compute, measured): where var + eps = 0, inv = +Inf and a
constant reduction gives xhat = 0 * Inf = NaN (RMS norm: x * Inf, NaN at x = 0);
where var + eps < 0, inv, y and the gradients are NaN.
Channels are on axis 1 (N, C, *spatial), PyTorch's layout; gamma and beta are
per channel for batch, group and instance norm, per normalized element for layer norm.
"""

import numpy as np

from .catalogue import NONFINITE, SUBNORMAL, S, attr_is, batch_of, holds, of_dim, registrar, without
from .spec import Array, Choice, Drawn, Edge, Float, Int, Layer, Real, Shape, require


def _check_eps(eps):
    """Any finite eps (see the module docstring for eps <= 0)."""
    require(bool(np.isfinite(eps)), "eps", f"must be a finite number, got {eps}")


def _per_channel(v, ndim):
    """A (C,) vector shaped to broadcast along axis 1 of a rank-``ndim`` array."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _mean(a, axes):
    """The mean over ``axes`` (kept), as ``a.mean`` computes it; over nothing (a batch
    of 0) it is 0/0 = NaN, quietly: such a statistic reaches no element of x or y."""
    with np.errstate(invalid="ignore"):
        return a.sum(axis=axes, keepdims=True) / int(np.prod([a.shape[i] for i in axes]))


def _normalize(x, axes, eps):
    """xhat = (x - mean) / sqrt(var + eps) over ``axes`` (biased variance); returns (xhat, inv)."""
    mu = _mean(x, axes)
    d = x - mu
    inv = 1.0 / np.sqrt(_mean(d * d, axes) + eps)
    return d * inv, inv


def _normalize_vjp(xhat, inv, gh, axes):
    """gx = inv (gh - mean(gh) - xhat mean(gh xhat)), means over ``axes``."""
    return inv * (gh - _mean(gh, axes) - xhat * _mean(gh * xhat, axes))


def _check_channels(x, gamma, beta, names=("gamma", "beta")):
    require(x.ndim >= 2, "x", f"expected (N, C, *spatial), got shape {x.shape}")
    for name, v in zip(names, (gamma, beta)):
        if v is not None:
            require(v.shape == (x.shape[1],), name, f"expected ({x.shape[1]},) for x {x.shape}, got {v.shape}")


def batch_norm(x, gamma=None, beta=None, *, eps):
    """Batch normalization in training mode: batch statistics per channel.

    y = gamma xhat + beta,  xhat = (x - mu_c) / sqrt(var_c + eps), with mu_c and
    the biased var_c over every axis but the channel axis 1 (N and spatial);
    gamma and beta each optional (PyTorch's affine=False, bias=False).

    Gradients (means over N and spatial, per channel):
      gx     = gamma / sqrt(var + eps) * (g - mean(g) - xhat mean(g xhat)),
      ggamma = sum g xhat,  gbeta = sum g.
    Shapes: x (N, C, *spatial) (any number of spatial axes: (N, C) too), gamma (C,),
    beta (C,) -> y like x.
    With one value per channel (N * prod(spatial) == 1) var = 0: y = beta and
    gx = 0 (PyTorch refuses that input in training mode). A batch of 0: the
    statistics are NaN (a mean over nothing) and reach no element; y and gx are
    empty and ggamma = gbeta = 0, sums over nothing (PyTorch too; Keras: NaN).
    """
    _check_eps(eps)
    _check_channels(x, gamma, beta)
    axes = (0,) + tuple(range(2, x.ndim))
    xhat, inv = _normalize(x, axes, eps)
    return _affine(xhat, gamma, beta), (xhat, inv, gamma, beta is not None, axes)


def _affine(xhat, gamma, beta):
    """gamma_c xhat + beta_c, each optional, per channel (axis 1)."""
    y = xhat if gamma is None else _per_channel(gamma, xhat.ndim) * xhat
    return y if beta is None else y + _per_channel(beta, xhat.ndim)


def _affine_vjp(g, xhat, gamma, has_beta, axes):
    """The gradients of gamma and beta (those given), sums over ``axes``."""
    grads = {}
    if gamma is not None:
        grads["gamma"] = (g * xhat).sum(axis=axes)
    if has_beta:
        grads["beta"] = g.sum(axis=axes)
    return grads


def batch_norm_vjp(res, g):
    xhat, inv, gamma, has_beta, axes = res
    gh = g if gamma is None else g * _per_channel(gamma, g.ndim)
    return {"x": _normalize_vjp(xhat, inv, gh, axes), **_affine_vjp(g, xhat, gamma, has_beta, axes)}


def batch_norm_inference(x, running_mean, running_var, gamma=None, beta=None, *, eps):
    """Batch normalization in inference mode: given running statistics per channel.

    y = gamma (x - running_mean) / sqrt(running_var + eps) + beta.

    Gradients (sums over N and spatial, per channel), with inv = 1 / sqrt(running_var + eps):
      gx = g gamma inv,  ggamma = sum g xhat,  gbeta = sum g.
    The running statistics are data, not differentiated; gamma and beta each optional.
    Shapes: x (N, C, *spatial), gamma, beta, running_mean, running_var (C,) -> y like x.
    """
    _check_eps(eps)
    _check_channels(x, gamma, beta)
    _check_channels(x, running_mean, running_var, ("running_mean", "running_var"))
    require(bool(np.all(running_var >= 0)), "running_var", "must be >= 0")
    axes = (0,) + tuple(range(2, x.ndim))
    inv = 1.0 / np.sqrt(_per_channel(running_var, x.ndim) + eps)
    xhat = (x - _per_channel(running_mean, x.ndim)) * inv
    return _affine(xhat, gamma, beta), (xhat, inv, gamma, beta is not None, axes)


def batch_norm_inference_vjp(res, g):
    xhat, inv, gamma, has_beta, axes = res
    gh = g if gamma is None else g * _per_channel(gamma, g.ndim)
    return {"x": gh * inv, **_affine_vjp(g, xhat, gamma, has_beta, axes)}


def layer_norm(x, gamma=None, beta=None, *, axes, eps):
    """Layer normalization over the last ``axes`` axes of x, per leading index.

    y = gamma xhat + beta,  xhat = (x - mu) / sqrt(var + eps), mu and the biased
    var over the last ``axes`` axes; gamma and beta (each optional) have the
    shape of those axes.

    Gradients (means over the normalized axes; gh = g gamma, or g without gamma):
      gx     = (gh - mean(gh) - xhat mean(gh xhat)) / sqrt(var + eps),
      ggamma = sum over the leading axes of g xhat,  gbeta = that sum of g.
    Shapes: x (*lead, *norm) with len(norm) == axes -> y like x.
    """
    _check_eps(eps)
    require(1 <= axes <= x.ndim, "axes", f"expected 1..{x.ndim} trailing axes of x {x.shape}, got {axes}")
    norm_shape = x.shape[x.ndim - axes:]
    for name, v in (("gamma", gamma), ("beta", beta)):
        if v is not None:
            require(v.shape == norm_shape, name, f"expected {norm_shape} (the last {axes} axes of x), got {v.shape}")
    red = tuple(range(x.ndim - axes, x.ndim))
    xhat, inv = _normalize(x, red, eps)
    y = xhat if gamma is None else gamma * xhat
    if beta is not None:
        y = y + beta
    return y, (xhat, inv, gamma, beta is not None, red)


def layer_norm_vjp(res, g):
    xhat, inv, gamma, has_beta, red = res
    lead = tuple(range(xhat.ndim - len(red)))
    grads = {"x": _normalize_vjp(xhat, inv, g if gamma is None else g * gamma, red)}
    if gamma is not None:
        grads["gamma"] = (g * xhat).sum(axis=lead)
    if has_beta:
        grads["beta"] = g.sum(axis=lead)
    return grads


def rms_norm(x, gamma=None, *, axes, eps, route="rms_normalization"):
    """Root-mean-square normalization over the last ``axes`` axes of x (Zhang and
    Sennrich 2019): no mean is subtracted.

    y = gamma x r,  r = 1 / sqrt(mean(x^2) + eps), the mean over the last ``axes``
    axes, per leading index; gamma (optional) has the shape of those axes.

    Gradients (means over the normalized axes; gh = g gamma, or g without gamma):
      gx     = r (gh - xhat mean(gh xhat)),  xhat = x r,
      ggamma = sum over the leading axes of g xhat.
    Smooth everywhere for eps > 0 (at x = 0: y = 0, gx = gh / sqrt(eps)).
    ``route`` names the framework API a case asks for; RMS normalization is the
    answer on every route (a route that computes something else diverges).
    Shapes: x (*lead, *norm) with len(norm) == axes -> y like x.
    """
    _check_eps(eps)
    require(1 <= axes <= x.ndim, "axes", f"expected 1..{x.ndim} trailing axes of x {x.shape}, got {axes}")
    norm_shape = x.shape[x.ndim - axes:]
    if gamma is not None:
        require(gamma.shape == norm_shape, "gamma",
                f"expected {norm_shape} (the last {axes} axes of x), got {gamma.shape}")
    red = tuple(range(x.ndim - axes, x.ndim))
    inv = 1.0 / np.sqrt(_mean(x * x, red) + eps)
    xhat = x * inv
    return (xhat if gamma is None else gamma * xhat), (xhat, inv, gamma, red)


def rms_norm_vjp(res, g):
    xhat, inv, gamma, red = res
    gh = g if gamma is None else g * gamma
    grads = {"x": inv * (gh - xhat * _mean(gh * xhat, red))}
    if gamma is not None:
        grads["gamma"] = (g * xhat).sum(axis=tuple(range(xhat.ndim - len(red))))
    return grads


def group_norm(x, gamma=None, beta=None, *, groups, eps):
    """Group normalization: channels split into ``groups`` contiguous groups,
    each normalized per sample over its channels and all spatial positions.

    With x viewed as (N, G, C/G, *spatial): xhat = (x - mu) / sqrt(var + eps),
    mu and the biased var over axes 2.. of that view; y = gamma_c xhat + beta_c
    (gamma, beta per channel, each optional).

    Gradients (gh = g gamma_c; means over one (sample, group)):
      gx     = (gh - mean(gh) - xhat mean(gh xhat)) / sqrt(var + eps),
      ggamma = sum over N and spatial of g xhat,  gbeta = that sum of g.
    Shapes: x (N, C, *spatial), C divisible by groups, gamma, beta (C,) -> y like x.
    """
    _check_eps(eps)
    _check_channels(x, gamma, beta)
    c = x.shape[1]
    require(isinstance(groups, int) and groups >= 1 and c % groups == 0, "groups",
            f"must divide the {c} channels of x {x.shape}, got {groups}")
    grouped = x.reshape((x.shape[0], groups, c // groups) + x.shape[2:])
    red = tuple(range(2, grouped.ndim))
    xhat_g, inv = _normalize(grouped, red, eps)
    xhat = xhat_g.reshape(x.shape)
    y = xhat if gamma is None else _per_channel(gamma, x.ndim) * xhat
    if beta is not None:
        y = y + _per_channel(beta, x.ndim)
    return y, (xhat_g, inv, gamma, beta is not None)


def group_norm_vjp(res, g):
    xhat_g, inv, gamma, has_beta = res
    xhat = xhat_g.reshape(g.shape)
    gh = g if gamma is None else g * _per_channel(gamma, g.ndim)
    red = tuple(range(2, xhat_g.ndim))
    grads = {"x": _normalize_vjp(xhat_g, inv, gh.reshape(xhat_g.shape), red).reshape(g.shape)}
    chan = (0,) + tuple(range(2, g.ndim))
    if gamma is not None:
        grads["gamma"] = (g * xhat).sum(axis=chan)
    if has_beta:
        grads["beta"] = g.sum(axis=chan)
    return grads


def instance_norm(x, gamma=None, beta=None, *, eps):
    """Instance normalization: each channel of each sample normalized over its spatial
    positions (group norm with one channel per group).

    xhat = (x - mu_nc) / sqrt(var_nc + eps), mu_nc and the biased var_nc over the
    spatial axes of x[n, c]; y = gamma_c xhat + beta_c (gamma, beta per channel, each
    optional).

    Gradients (gh = g gamma_c; means over the spatial axes of one (n, c)):
      gx     = (gh - mean(gh) - xhat mean(gh xhat)) / sqrt(var + eps),
      ggamma = sum over N and spatial of g xhat,  gbeta = that sum of g.
    Shapes: x (N, C, *spatial) with at least one spatial axis, gamma, beta (C,) -> y
    like x. One spatial position: var = 0, y = beta, gx = 0 (PyTorch refuses it).
    """
    require(x.ndim >= 3, "x", f"expected (N, C, *spatial) with a spatial axis, got shape {x.shape}")
    return group_norm(x, gamma, beta, groups=x.shape[1], eps=eps)


def instance_norm_vjp(res, g):
    return group_norm_vjp(res, g)


def kappa(residuals, **arrays_and_attrs):
    """kappa = max(1, max|x|, max|gamma|) * max 1/sqrt(var + eps): how far one
    rounding moves the output or a gradient, relative to the sizes they are
    judged against (the inputs for y, the cotangent for gx).

    A normalization of nearly equal values (var << eps, or var = 0) is
    ill-conditioned: rounding the mean, or computing x inv - mu inv, moves xhat
    by about max|x| inv eps, and the backward pass multiplies g by gamma inv
    (for one value, gx = 0 exactly, computed as a difference of such terms).
    ``residuals`` are a normalization forward's, which carry
    inv = 1/sqrt(var + eps) second. Non-finite values (a NaN or Inf input, and
    the groups it makes NaN) are left out: they are compared by position.
    """
    gamma = arrays_and_attrs.get("gamma")
    size = max(1.0, _finite_max(np.abs(arrays_and_attrs["x"])),
               _finite_max(np.abs(gamma)) if gamma is not None else 1.0)
    return size * _finite_max(residuals[1])


def _finite_max(a) -> float:
    a = np.asarray(a, dtype=np.float64)
    return float(a[np.isfinite(a)].max(initial=0.0))


# ---- catalogue entries --------------------------------------------------------

register = registrar("normalization")

# Inputs to a normalization: ties, and now and then a (nearly) constant array, so
# a reduction sees a zero or tiny variance and eps decides the result.
NORM_X = Real(-3.0, 3.0, edges=(0.0,), ties=True, spread=(0.0, 1e-4, 1e-2))
# eps 0 and below 0 (the edges, drawn on purpose): the same formula, NaN or Inf where
# var + eps <= 0 (module docstring).
NORM_EPS = Float(1e-5, 1e-1, edges=(1e-5, 1e-3))
EPS_EDGES = (Edge("eps_zero", lambda c: c.attrs["eps"] == 0, {"eps": 0.0}),
             Edge("eps_negative", lambda c: c.attrs["eps"] < 0, {"eps": -1e-4}))
# (N, C, *spatial): no spatial axes (N, C), one (N, C, L), two (N, C, H, W) or three (N, C, D, H, W).
CHANNELS = {"N": Int(1, 4, edges=(0,)), "C": Int(1, 4),
            "spatial": Shape(min_dims=0, max_dims=3, min_side=1, max_side=3)}
AFFINE = {"gamma": Array(S("C"), param=True, optional=True), "beta": Array(S("C"), param=True, optional=True)}
NO_AFFINE = Edge("no_affine", lambda c: "gamma" not in c.arrays and "beta" not in c.arrays)


def _constant_over(axes_of):
    """Some normalized slice holds one value only (variance 0: eps alone decides)."""
    def reached(case):
        x = case.arrays["x"].astype(float)
        axes = axes_of(case)
        if x.size == 0 or all(x.shape[a] == 1 for a in axes):
            return False
        return bool(np.any(np.ptp(np.where(np.isfinite(x), x, 0.0), axis=axes) == 0))
    return reached


def _per_channel_axes(case):
    return tuple(a for a in range(case.arrays["x"].ndim) if a != 1)


def _trailing_axes(case):
    return tuple(range(case.arrays["x"].ndim - case.attrs["axes"], case.arrays["x"].ndim))


ONE_VALUE = Edge("one_value_per_channel", lambda c: c.arrays["x"].size == c.arrays["x"].shape[1],
                 {"N": 1, "spatial": ()})
# One example with a spatial extent: statistics over the spatial cells alone.
BATCH_1_SPATIAL = Edge("batch_1_spatial", lambda c: c.arrays["x"].shape[0] == 1 and c.arrays["x"][0, 0].size > 1,
                       {"N": 1})
RANKS = tuple(Edge(f"rank_{n}", lambda c, n=n: c.arrays["x"].ndim == n, {"spatial": (2,) * (n - 2)})
              for n in (2, 3, 4, 5))

register(Layer(
    "batch_norm", batch_norm, batch_norm_vjp, condition=kappa, empty=True, nonfinite=("x",),
    edges=(BATCH_1_SPATIAL, ONE_VALUE, batch_of(0), Edge("constant_channel", _constant_over(_per_channel_axes)),
           *RANKS, NO_AFFINE, *EPS_EDGES, NONFINITE, SUBNORMAL),
    dims=CHANNELS, attrs={"eps": NORM_EPS},
    arrays={"x": Array(S("N", "C", "spatial"), NORM_X), **AFFINE},
))

register(Layer(
    "batch_norm_inference", batch_norm_inference, batch_norm_inference_vjp,
    condition=kappa, empty=True, nonfinite=("x",),
    edges=(batch_of(1), batch_of(0), holds("tiny_running_var", "running_var", lambda v: v <= 1e-4), *RANKS,
           NO_AFFINE, *EPS_EDGES, NONFINITE, SUBNORMAL),
    dims=CHANNELS, attrs={"eps": NORM_EPS},
    arrays={
        "x": Array(S("N", "C", "spatial"), NORM_X), **AFFINE,
        "running_mean": Array(S("C"), grad=False),
        "running_var": Array(S("C"), Real(1e-4, 4.0, edges=(1e-4, 1.0)), grad=False),
    },
))


def _trailing(d, attrs):
    """The shape of the last ``attrs["axes"]`` axes of x: layer norm's gamma and beta."""
    return d.shape[len(d.shape) - attrs["axes"]:]


register(Layer(
    "layer_norm", layer_norm, layer_norm_vjp, condition=kappa, empty=True, nonfinite=("x",),
    edges=(Edge("all_axes", lambda c: c.attrs["axes"] == c.arrays["x"].ndim), NO_AFFINE,
           Edge("empty", lambda c: c.arrays["x"].size == 0), Edge("constant_row", _constant_over(_trailing_axes)),
           *EPS_EDGES, NONFINITE, SUBNORMAL),
    dims={"shape": Shape(min_dims=1, max_dims=3, min_side=0, max_side=4)},  # a side of 0 now and then
    attrs={"axes": Drawn(int, lambda d: Int(1, len(d.shape))), "eps": NORM_EPS},
    arrays={
        "x": Array(S("shape"), NORM_X),
        "gamma": Array(_trailing, param=True, optional=True),
        "beta": Array(_trailing, param=True, optional=True),
    },
))

# Keras reaches RMS normalization two ways; `route` names which one a framework
# runs (PyTorch has only nn.RMSNorm; see the adapters).
register(Layer(
    "rms_norm", rms_norm, rms_norm_vjp, condition=kappa, empty=True, nonfinite=("x",),
    edges=(attr_is("route", "layer_normalization_rms_scaling", "keras_rms_scaling"), without("gamma"),
           Edge("empty", lambda c: c.arrays["x"].size == 0), Edge("zero_row", lambda c: c.arrays["x"].size > 0 and bool(
               np.any(np.all(c.arrays["x"] == 0, axis=_trailing_axes(c))))), *EPS_EDGES, NONFINITE, SUBNORMAL),
    dims={"shape": Shape(min_dims=1, max_dims=3, min_side=0, max_side=4)},  # a side of 0 now and then
    attrs={"axes": Drawn(int, lambda d: Int(1, len(d.shape))), "eps": NORM_EPS,
           "route": Choice("rms_normalization", "layer_normalization_rms_scaling")},
    arrays={"x": Array(S("shape"), NORM_X), "gamma": Array(_trailing, param=True, optional=True)},
))

# Groups and channels per group are drawn, so groups always divides the channels.
GROUPED = {"N": Int(1, 3, edges=(0,)), "G": Int(1, 3), "Cg": Int(1, 3),
           "spatial": Shape(min_dims=0, max_dims=3, min_side=1, max_side=3)}


def _grouped_x(d, attrs):
    return (d.N, d.G * d.Cg, *d.spatial)


def _grouped_c(d, attrs):
    return (d.G * d.Cg,)


register(Layer(
    "group_norm", group_norm, group_norm_vjp, condition=kappa, empty=True, nonfinite=("x",),
    edges=(Edge("one_group", lambda c: c.attrs["groups"] == 1, {"G": 1}),
           Edge("group_per_channel", lambda c: c.attrs["groups"] == c.arrays["x"].shape[1] > 1,
                {"Cg": 1, "G": Choice(2, 3)}),
           batch_of(0), batch_of(1), NO_AFFINE, *RANKS, *EPS_EDGES, NONFINITE, SUBNORMAL),
    dims=GROUPED,
    attrs={"groups": of_dim("G"), "eps": NORM_EPS},
    arrays={
        "x": Array(_grouped_x, NORM_X),
        "gamma": Array(_grouped_c, param=True, optional=True),
        "beta": Array(_grouped_c, param=True, optional=True),
    },
))


# Instance norm: one to three spatial axes (PyTorch's InstanceNorm1d/2d/3d).
SPATIAL = {"N": Int(1, 3, edges=(0,)), "C": Int(1, 3), "spatial": Shape(min_dims=1, max_dims=3, min_side=1, max_side=3)}

register(Layer(
    "instance_norm", instance_norm, instance_norm_vjp, condition=kappa, empty=True, nonfinite=("x",),
    edges=(batch_of(0), batch_of(1), NO_AFFINE, *RANKS[1:],
           Edge("one_position", lambda c: int(np.prod(c.arrays["x"].shape[2:])) == 1, {"spatial": (1,)}),
           Edge("constant_instance", _constant_over(lambda c: tuple(range(2, c.arrays["x"].ndim)))),
           *EPS_EDGES, NONFINITE, SUBNORMAL),
    dims=SPATIAL, attrs={"eps": NORM_EPS},
    arrays={"x": Array(S("N", "C", "spatial"), NORM_X), **AFFINE},
))
