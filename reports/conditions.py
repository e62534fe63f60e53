"""The conditions of known divergences: where, over a case's data, a framework is known to differ;
and their outcomes: what the framework returns there, position by position.

Each condition is a named predicate ``(case, evaluation) -> bool``: the case, and
the oracle's answer for it (``reference.Evaluation``: its outputs and the forward
pass's residuals), so a condition that needs a layer's intermediate values reads
them from the answer the check already has instead of running the layer again.
``divergences.py`` says which layers, frameworks and dtypes each condition
speaks for; ``divergences.toml`` says what happens there and what was measured.

Each outcome is a named function ``(exact, got, case, row) -> bool array`` over one
compared tensor (the oracle's answer, the framework's, the case and the row that
compared them): the positions that hold what the divergence explains, "NaN where
the exact value is finite". Its docstring's first line says it in words (the
report shows it). Most read the two values alone; an outcome that marks finite
values by where they are rather than by what they are (the elements a kink
reaches) says so with ``finite = True``, and the canary leaves its cases alone.
"""

from __future__ import annotations

import numpy as np

from ..reference.activations import SELU_ALPHA, SELU_SCALE
from ..reference.attention import mha_row_without_keys
from ..reference.models import exact_kinks
from .tolerances import DEFAULT, EPS, at_step, tolerance_for


# ---- outcomes: what a framework returns inside a divergence, position by position

def nan_where_finite(exact, got, *_):
    """NaN where the exact value is finite"""
    return np.isnan(got) & np.isfinite(exact)


def nan_where_inf(exact, got, *_):
    """NaN where the exact value is +-Inf"""
    return np.isnan(got) & np.isinf(exact)


def nan_where_not_nan(exact, got, *_):
    """NaN where the exact value is finite or +-Inf"""
    return np.isnan(got) & ~np.isnan(exact)


def inf_where_finite(exact, got, *_):
    """+-Inf where the exact value is finite"""
    return np.isinf(got) & np.isfinite(exact)


def nonfinite_where_finite(exact, got, *_):
    """NaN or +-Inf where the exact value is finite"""
    return ~np.isfinite(got) & np.isfinite(exact)


def zero_where_nan(exact, got, *_):
    """0 where the exact value is NaN"""
    return (got == 0) & np.isnan(exact)


def finite_where_nan(exact, got, *_):
    """a finite value where the exact value is NaN"""
    return np.isfinite(got) & np.isnan(exact)


def nonfinite_where_other(exact, got, *_):
    """NaN or +-Inf where the exact value is another value (finite, or the other non-finite one)"""
    same = (np.isnan(exact) & np.isnan(got)) | (np.isinf(exact) & (exact == got))
    return ~np.isfinite(got) & ~same


def lowest_where_minus_inf(exact, got, *_):
    """the lowest finite float where the exact value is -Inf"""
    return np.isneginf(exact) & np.isfinite(got) & (got <= -np.finfo(np.float32).max)


def unclipped(exact, got, case, row):
    """the tensor unclipped where the exact value is clipped to 0"""
    given = case.arrays.get(row["name"])
    if given is None or np.shape(given) != np.shape(exact):
        return np.zeros(np.shape(exact), dtype=bool)
    return (exact == 0) & (np.abs(got - given.astype(np.float64)) <= row["atol"])


def either(*outcomes):
    """An outcome: the positions any of ``outcomes`` marks."""
    def outcome(exact, got, *rest):
        marked = np.zeros(np.shape(exact), dtype=bool)
        for o in outcomes:
            marked = marked | o(exact, got, *rest)
        return marked

    outcome.__name__ = " | ".join(o.__name__ for o in outcomes)
    outcome.__doc__ = " or ".join(o.__doc__.strip().splitlines()[0] for o in outcomes)
    outcome.finite = any(getattr(o, "finite", False) for o in outcomes)
    return outcome


def empty_where_scalar(exact, got, *_):
    """an empty tensor, shape (0,), where the exact value is a scalar"""
    return np.bool_(exact.ndim == 0 and got.shape == (0,))


def empty_in_another_shape(exact, got, *_):
    """an empty tensor of another shape where the exact value is empty"""
    return np.bool_(exact.size == 0 and got.size == 0)


def in_a_window_holding_nan(exact, got, case, row):
    """the gradient of a cell in a max-pool window holding NaN (sent to another of its cells)"""
    from ..reference.conv import pad_spatial, windows
    from ..reference.pooling import pool_pads

    a = case.attrs
    x = case.arrays["x"].astype(np.float64)
    if row["kind"] != "grad" or np.shape(exact) != x.shape or x.size == 0:
        return np.zeros(np.shape(exact), dtype=bool)
    xb = x if a.get("batched", True) else x[np.newaxis]
    kernel, stride = (a["kernel_h"], a["kernel_w"]), (a["stride_h"], a["stride_w"])
    dilation = (a["dilation_h"], a["dilation_w"])
    pads, _ = pool_pads(xb, kernel, stride, dilation, a["padding"], a["pad_h"], a["pad_w"], a["ceil_mode"])
    held = np.isnan(windows(pad_spatial(xb, pads, value=-np.inf), kernel, stride, dilation)).any(axis=(-2, -1))
    marked = np.zeros(pad_spatial(xb, pads).shape, dtype=bool)
    rows, cols = (stride[0] * np.arange(held.shape[2]), stride[1] * np.arange(held.shape[3]))
    for i, j in np.ndindex(*kernel):  # every cell of every window that holds a NaN
        marked[:, :, (i * dilation[0] + rows)[:, None], (j * dilation[1] + cols)[None, :]] |= held
    (top, _), (left, _) = pads
    marked = marked[:, :, top:top + xb.shape[2], left:left + xb.shape[3]]
    return marked if a.get("batched", True) else marked[0]


in_a_window_holding_nan.finite = True


def missing_target_mass(exact, got, case, row):
    """the logits' gradient off by at most |1 - sum t| softmax(z) times the cotangent and weight (softmax(z) - t)"""
    a = case.arrays
    if row["name"] != "logits" or "probs" not in a or np.shape(exact) != a["logits"].shape:
        return np.zeros(np.shape(exact), dtype=bool)
    z = a["logits"].astype(np.float64)
    with np.errstate(all="ignore"):
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p = p / p.sum(axis=1, keepdims=True)
    mass = np.abs(1.0 - a["probs"].astype(np.float64).sum(axis=1, keepdims=True))
    g = max(float(np.abs(v).max(initial=0.0)) for v in case.cotangents.values())
    w = float(np.abs(a["weight"]).max(initial=0.0)) if "weight" in a else 1.0
    return np.abs(got - exact) <= mass * p * g * w * (1 + 1e-6) + row["atol"]


def always(case, ev) -> bool:
    return True


def _x(case):
    """x with its NaN and Inf (the non-finite cases' own business) read as 0."""
    x = case.arrays["x"]
    return np.where(np.isfinite(x), x, np.zeros((), x.dtype))


def holds(*names, what=lambda a: ~np.isfinite(a)):
    """A condition: one of the arrays ``names`` holds a value ``what`` picks (default: NaN or Inf)."""
    def condition(case, ev) -> bool:
        return any(n in case.arrays and bool(np.any(what(case.arrays[n]))) for n in names)

    condition.__name__ = f"holds({', '.join(names)})"
    return condition


NONFINITE_X = holds("x")
NAN_X = holds("x", what=np.isnan)


def _subnormal(a) -> np.ndarray:
    """Where ``a`` holds a nonzero subnormal of its own dtype."""
    with np.errstate(invalid="ignore"):
        return (a != 0) & (np.abs(a) < np.finfo(a.dtype).tiny)


def float32_rounds(value: float) -> bool:
    return float(np.float32(value)) != value


# ---- flush to zero at a kink (TensorFlow reads a subnormal as 0)

def subnormal_x(case, ev) -> bool:
    """x holds a subnormal (at ReLU's kink; for max pooling, a subnormal maximum that ties with 0)."""
    return bool(np.any(_subnormal(case.arrays["x"])))


def subnormal_l1_difference(case, ev) -> bool:
    """pred, target or pred - target (computed in the case dtype, as the framework does) is subnormal."""
    a = case.arrays
    return bool(np.any(_subnormal(a["pred"]) | _subnormal(a["target"]) | _subnormal(a["pred"] - a["target"])))


def subnormal_logits_with_pos_weight(case, ev) -> bool:
    """Binary cross-entropy with pos_weight (TensorFlow's formula has kinks at 0) on a subnormal logit."""
    return "pos_weight" in case.arrays and bool(np.any(_subnormal(case.arrays["logits"])))


FLUSHED = {"l1": ("pred", "target"), "binary_cross_entropy_with_logits": ("logits",)}  # else x


def at_flushed_inputs(exact, got, case, row):
    """any value at the elements of a subnormal input (and of a max-pool window's 0 it ties with)"""
    a = case.arrays
    inputs = [a[n] for n in FLUSHED.get(case.layer, ("x",))]
    if case.layer == "l1":
        inputs.append(a["pred"] - a["target"])  # the difference, flushed where it is subnormal
    marked = np.zeros(np.shape(exact), dtype=bool)
    for v in inputs:
        if v.shape == marked.shape:
            marked |= _subnormal(v) | ((v == 0) if case.layer == "max_pool2d" else False)
    return marked


at_flushed_inputs.finite = True


# ---- activations

def exp_minus_one_loses(case, ev) -> bool:
    """TensorFlow's Elu kernel computes exp(x) - 1, not expm1(x): for x near 0 the
    difference cancels. True when, in the case's dtype, that error exceeds the
    output tolerance (scale: the larger of max|x| and max|out|, as for every output)."""
    x = _x(case)
    lossy = np.where(x < 0, np.exp(x) - np.ones((), x.dtype), 0).astype(np.float64)
    exact = np.where(x < 0, np.expm1(x.astype(np.float64)), 0)
    scale = float(np.abs(x).max(initial=0.0))
    amplitude = case.attrs.get("alpha", SELU_ALPHA * SELU_SCALE)  # elu's alpha, or selu's constants
    return float(np.abs(lossy - exact).max(initial=0.0)) * amplitude > (
        tolerance_for(case.layer, "tensorflow", case.dtype).rtol * scale)


def selu_exp_minus_one(case, ev) -> bool:
    """As exp_minus_one_loses, or a negative x whose exp(x) - 1 is exactly 0 (the positive branch)."""
    x = _x(case)
    return exp_minus_one_loses(case, ev) or bool(np.any((x < 0) & (np.exp(x) - 1 == 0)))


def slope_rounds_to_float32(case, ev) -> bool:
    return float32_rounds(case.attrs["negative_slope"])


def softplus_threshold_shows(case, ev) -> bool:
    """Some beta x passes the threshold, and there the curve and the line differ
    by more than the tolerance: log1p(e^-t)/beta in y (against max|x|), sigmoid(-t) in gx."""
    beta, t = case.attrs["beta"], case.attrs["threshold"]
    x = _x(case).astype(np.float64)
    past = beta * x[beta * x > t]
    if not past.size:
        return False
    z = float(past.min())  # the gap shrinks like e^-z: the input closest to the threshold shows it most
    gap = max(np.log1p(np.exp(-z)) / beta / max(float(np.abs(x).max()), 1e-300), 1.0 / (1.0 + np.exp(z)))
    return gap > tolerance_for("softplus", "tensorflow", case.dtype).rtol


def on_the_softplus_curve(exact, got, case, row):
    """the curve, log(1 + e^(beta x)) / beta (gradient g sigmoid(beta x)), where the exact value is the line"""
    beta, x = case.attrs["beta"], case.arrays["x"].astype(np.float64)
    with np.errstate(all="ignore"):
        z = beta * x
        if row["kind"] == "out":
            curve = np.logaddexp(0.0, z) / beta
        else:
            curve = case.cotangents["y"].astype(np.float64) / (1.0 + np.exp(-z))
        # the framework rounds beta x, the curve and the quotient in the case dtype: a few eps of each
        close = np.abs(got - curve) <= row["atol"] + 8 * EPS[case.dtype] * (1.0 + np.abs(z)) * np.abs(curve)
    return (z > case.attrs["threshold"]) & close


def softplus_overflows_below_threshold(case, ev) -> bool:
    """float32 exp(beta x) overflows (beta x > log(max)) where beta x is still at or below the threshold."""
    bx = case.attrs["beta"] * _x(case).astype(np.float64)
    return bool(np.any((bx > np.log(np.finfo(np.float32).max)) & (bx <= case.attrs["threshold"])))


def gelu_plus_inf(case, ev) -> bool:
    return case.attrs["approximate"] == "none" and bool(np.any(np.isposinf(case.arrays["x"])))


def elu_nan_with_alpha(case, ev) -> bool:
    return case.attrs["alpha"] != 1.0 and NAN_X(case, ev)


def alpha_g_at_nan(exact, got, case, row):
    """alpha g (the gradient) where x is NaN"""
    if row["kind"] != "grad":
        return np.zeros(np.shape(exact), dtype=bool)
    alpha_g = case.attrs["alpha"] * case.cotangents["y"].astype(np.float64)
    return np.isnan(case.arrays["x"]) & (np.abs(got - alpha_g) <= row["atol"] + 4 * EPS[case.dtype] * np.abs(alpha_g))


# ---- the residual block

def _residual_subnormal(case):
    """(N, H): where x W1 + b1 of a residual block is subnormal in the case's dtype."""
    a = case.arrays
    h = a["x"].astype(np.float64) @ a["W1"].astype(np.float64) + a["b1"]
    return (h != 0) & (np.abs(h) < np.finfo(case.dtype).tiny)


def subnormal_pre_activation(case, ev) -> bool:
    """x W1 + b1 of a residual block is subnormal somewhere in the case's dtype."""
    return bool(np.any(_residual_subnormal(case)))


def _residual_near_kink(case):
    """(N, H): where the pre-activation h = x W1 + b1 lies where the rounding of its I + 1
    terms in the case dtype decides ReLU's side: |h| within (I + 1) eps sum|terms| of 0
    with some term nonzero (an exact 0 of cancelling terms included), or under (I + 1)
    tiny, where a product flushed or rounded in the subnormal range moves it."""
    a = {k: v.astype(np.float64) for k, v in case.arrays.items()}
    h = a["x"] @ a["W1"] + a["b1"]
    size = np.abs(a["x"]) @ np.abs(a["W1"]) + np.abs(a["b1"])
    terms = a["W1"].shape[0] + 1
    near = (np.abs(h) <= terms * EPS[case.dtype] * size) | (np.abs(h) < terms * np.finfo(case.dtype).tiny)
    return (size > 0) & near


def residual_relu_near_kink(case, ev) -> bool:
    """A residual block whose pre-activation h = x W1 + b1 lies, somewhere, where rounding
    decides ReLU's side (``_residual_near_kink``)."""
    return bool(np.any(_residual_near_kink(case)))


def _kink_reach(units):
    """An outcome: a residual block's elements that the ReLU units ``units(case)`` (N, H)
    reach, each off by at most what passing or blocking those units moves it: the
    cotangent arriving at a unit, c = g W2^T, in gb1, gW1 (x^T c) and gx (c W1^T); the
    unit's output, within rounding of 0, in y and gW2."""
    def reach(exact, got, case, row):
        a = {k: v.astype(np.float64) for k, v in case.arrays.items()}
        at = units(case).astype(np.float64)
        g = case.cotangents["y"].astype(np.float64)
        c = np.abs(g @ a["W2"].T) * at  # (N, H): what flipping each unit moves
        h = np.abs(a["x"] @ a["W1"] + a["b1"]) * at  # (N, H): the unit's output, either side
        moved = {"b1": c.sum(axis=0), "W1": np.abs(a["x"]).T @ c, "x": c @ np.abs(a["W1"]).T,
                 "W2": h.T @ np.abs(g), "y": h @ np.abs(a["W2"])}.get(row["name"])
        if moved is None or moved.shape != np.shape(exact):
            return np.zeros(np.shape(exact), dtype=bool)
        return (moved > 0) & (np.abs(got - exact) <= moved + row["atol"])

    reach.finite = True
    return reach


kink_reach = _kink_reach(_residual_near_kink)
kink_reach.__name__ = "kink_reach"
kink_reach.__doc__ = ("the elements a ReLU unit within rounding of its kink reaches, off by at most what passing or "
                      "blocking it moves them")
flushed_unit_reach = _kink_reach(_residual_subnormal)
flushed_unit_reach.__name__ = "flushed_unit_reach"
flushed_unit_reach.__doc__ = ("the elements a ReLU unit with a subnormal pre-activation (flushed to 0) reaches, off "
                              "by at most what blocking it moves them")


# ---- losses

def ignored_row_nonfinite(case, ev) -> bool:
    """An ignored label's row of logits holds NaN or Inf."""
    a = case.arrays
    return "labels" in a and bool(np.any((~np.isfinite(a["logits"])).any(axis=1)
                                         & (a["labels"] == case.attrs["ignore_index"])))


def targets_off_the_simplex(case, ev) -> bool:
    """Probability targets of some sample sum to other than 1, beyond rounding."""
    probs = case.arrays.get("probs")
    if probs is None:
        return False
    total = probs.astype(np.float64).sum(axis=1)
    return bool(np.any(np.abs(total - 1.0) > 8 * probs.shape[1] * EPS[case.dtype]))


def pos_weight_at_zero_logit(case, ev) -> bool:
    return "pos_weight" in case.arrays and bool(np.any(case.arrays["logits"] == 0))


def at_zero_logits(exact, got, case, row):
    """the logits' gradient where the logit is exactly 0, short of at most (1 + (pw - 1) t) / 2 times its weight"""
    a = case.arrays
    if row["name"] != "logits" or np.shape(exact) != a["logits"].shape:
        return np.zeros(np.shape(exact), dtype=bool)
    weight = a["weight"] if "weight" in a else 1.0
    scale = 1.0 / a["logits"].size if case.attrs["reduction"] == "mean" else 1.0
    g = case.cotangents.get("loss", np.ones(()))
    missing = np.abs((1 + (a["pos_weight"] - 1) * a["targets"]) / 2 * weight * scale * g)
    return (a["logits"] == 0) & (np.abs(got - exact) <= missing * (1 + 1e-6) + row["atol"])


def empty_reduced_loss(case, ev) -> bool:
    """A batch of 0 reduced by 'sum' or 'mean' (not through tf.nn with pos_weight)."""
    return (next(iter(case.arrays.values())).size == 0 and case.attrs["reduction"] != "none"
            and "pos_weight" not in case.arrays)


def empty_mean_loss(case, ev) -> bool:
    """A batch of 0 reduced by 'mean'."""
    return next(iter(case.arrays.values())).size == 0 and case.attrs["reduction"] == "mean"


# ---- convolution and pooling

def adaptive_big_window_exceeds(case, ev) -> bool:
    """Keras' adaptive pooling pools with windows ceil(in / out) and ceil(in / out) + 1 and gathers:
    along some axis the larger window is longer than the input (an output of 1 from 2 cells, any
    output from 1 cell)."""
    h, w = case.arrays["x"].shape[-2:]
    return any(-(-size // out) + 1 > size for size, out in ((h, case.attrs["output_h"]), (w, case.attrs["output_w"])))


def nonfinite_x_with_cropping(case, ev) -> bool:
    """x holds NaN or Inf, and conv_transpose2d's padding crops the full output."""
    return NONFINITE_X(case, ev) and (case.attrs["pad_h"] > 0 or case.attrs["pad_w"] > 0)


def empty_batch_changes_shape(case, ev) -> bool:
    """A batch of 0 whose output (cotangent) shape differs from the input's."""
    return case.arrays["x"].shape[0] == 0 and case.cotangents["y"].shape != case.arrays["x"].shape


def empty_batch(case, ev) -> bool:
    return case.arrays["x"].shape[0] == 0


def empty_x(case, ev) -> bool:
    return case.arrays["x"].size == 0


# ---- normalization

def one_value_per_channel(case, ev) -> bool:
    return case.arrays["x"].size == case.arrays["x"].shape[1]


def one_value_per_group(case, ev) -> bool:
    """PyTorch's own test (F.group_norm's _verify_batch_size on [N C / groups, groups,
    *spatial]): N * (C / groups) * prod(spatial) == 1, so one sample whose groups hold one
    value each; an empty x (0) or a second sample (2) is not refused."""
    x = case.arrays["x"]
    return x.shape[0] * (x.shape[1] // case.attrs["groups"]) * int(np.prod(x.shape[2:])) == 1


def one_position(case, ev) -> bool:
    """x (N, C, *spatial) has one spatial position (any N, 0 too)."""
    return int(np.prod(case.arrays["x"].shape[2:])) == 1


def affine_empty_batch_with_positions(case, ev) -> bool:
    """A batch of 0 with gamma or beta, and more than one spatial position."""
    a = case.arrays
    return a["x"].shape[0] == 0 and not one_position(case, ev) and ("gamma" in a or "beta" in a)


def _norm_reductions(case):
    """(var, mean of squares, values per reduction) of each reduction a normalization
    case takes, in float64 over its finite values (batch_norm_inference: the running
    variance, one value); None for an empty x."""
    layer = case.layer
    if layer == "batch_norm_inference":
        v = case.arrays["running_var"].astype(np.float64)
        return v, np.abs(v), 1
    x = _x(case).astype(np.float64)
    if x.size == 0:
        return None
    if layer == "batch_norm":
        axes = (0, *range(2, x.ndim))
    elif layer in ("layer_norm", "rms_norm"):
        axes = tuple(range(x.ndim - case.attrs["axes"], x.ndim))
    else:  # group_norm, instance_norm: (N, groups, values of a group)
        x = x.reshape(x.shape[0], case.attrs["groups"] if layer == "group_norm" else x.shape[1], -1)
        axes = (2,)
    n = int(np.prod([x.shape[a] for a in axes]))
    meansq = (x * x).mean(axis=axes)
    return (meansq if layer == "rms_norm" else x.var(axis=axes)), meansq, n


def variance_plus_eps_by_rounding(case, ev) -> bool:
    """eps <= 0, and some reduction's var + eps (mean of squares + eps for RMS norm) is 0,
    negative, or so close to 0 that rounding its computation (n values: n eps mean(x^2))
    decides its sign, or below the dtype's smallest normal (squares of subnormal
    differences underflow to 0): 1 / sqrt(var + eps) is Inf or NaN there in the oracle or
    the framework, not necessarily in both."""
    eps = case.attrs["eps"]
    if eps > 0:
        return False
    found = _norm_reductions(case)
    if found is None:
        return False
    var, meansq, n = found
    return bool(np.any(var + eps <= n * EPS[case.dtype] * meansq + float(np.finfo(case.dtype).tiny)))


def rms_scaling_route(case, ev) -> bool:
    return case.attrs["route"] == "layer_normalization_rms_scaling"


# ---- recurrent

def _rnn_relu_pre_activations(case, ev):
    """A ReLU RNN's pre-activations a_t = x_t W_ih + b_ih + h_{t-1} W_hh + b_hh (float64,
    from the oracle's states), the sum of their terms' magnitudes, and how many terms
    each sums (I + H + 2), over the valid steps; None for a tanh RNN."""
    if case.attrs["nonlinearity"] != "relu":
        return None
    res = ev.residuals if case.layer == "rnn" else ev.residuals[0]  # masked_rnn: (scan residuals, ...)
    a = {k: v.astype(np.float64) for k, v in case.arrays.items() if k != "lengths"}
    h_prev = res["hs"][:-1].transpose(1, 0, 2)  # (N, T, H): the state each step starts from
    pre = a["x"] @ a["W_ih"] + a["b_ih"] + h_prev @ a["W_hh"] + a["b_hh"]
    size = (np.abs(a["x"]) @ np.abs(a["W_ih"]) + np.abs(a["b_ih"]) + np.abs(h_prev) @ np.abs(a["W_hh"])
            + np.abs(a["b_hh"]))
    if "lengths" in case.arrays:  # padded steps run nothing: pre-activation 1, no terms
        valid = (np.arange(pre.shape[1])[None, :] < case.arrays["lengths"][:, None])[:, :, None]
        pre, size = np.where(valid, pre, 1.0), np.where(valid, size, 0.0)
    return pre, size, a["W_ih"].shape[0] + a["W_hh"].shape[0] + 2


def subnormal_rnn_pre_activation(case, ev) -> bool:
    """A ReLU RNN whose pre-activation is, somewhere, closer to 0 than its I + H + 2
    terms could move it if each were flushed from subnormal to zero (|a| < (I + H + 2)
    tiny): there TensorFlow's sign of a, and so ReLU'(a), may differ from the exact one."""
    found = _rnn_relu_pre_activations(case, ev)
    if found is None:
        return False
    pre, _, terms = found
    return bool(np.any((pre != 0) & (np.abs(pre) < terms * np.finfo(case.dtype).tiny)))


def rnn_relu_sign_by_rounding(case, ev) -> bool:
    """A ReLU RNN with a pre-activation whose sign rounding decides: |a| within the
    summation bound terms * eps * sum|terms| of 0 (terms = I + H + 2), where some term
    is nonzero (a sum of cancelling terms, such as b_ih = 3, b_hh = -3)."""
    found = _rnn_relu_pre_activations(case, ev)
    if found is None:
        return False
    pre, size, terms = found
    return bool(np.any((size > 0) & (np.abs(pre) <= terms * EPS[case.dtype] * size)))


def gradient_overflows_through_time(case, ev) -> bool:
    """The exact gradient leaves the dtype's finite range somewhere (an exploding
    gradient): the gradient carried back step by step overflowed on the way."""
    limit = float(np.finfo(case.dtype).max)
    return any(float(np.abs(g).max(initial=0.0)) > limit for g in ev.outputs["grad"].values())


def masking_layer_ignored(case, ev) -> bool:
    """A masked recurrent case given to Keras through a Masking layer (with initial_state),
    where some sequence is shorter than T."""
    return case.attrs["route"] == "masking_layer" and bool(np.any(case.arrays["lengths"] < case.arrays["x"].shape[1]))


# ---- attention

def attention_rows_without_keys(case, ev) -> bool:
    """Some query of a multi-head attention case may attend to no key at all: none of
    the given keys (reference.attention.mha_row_without_keys), and no key appended by
    add_bias_kv or add_zero_attn (those are never masked)."""
    extra = case.attrs.get("add_bias_kv", False) or case.attrs.get("add_zero_attn", False)
    return not extra and mha_row_without_keys(case)


def need_weights_rows_without_keys(case, ev) -> bool:
    return case.attrs["need_weights"] and attention_rows_without_keys(case, ev)


def keras_bias_add_as_nchw(case, ev) -> bool:
    """keras.ops.add (TensorFlow backend) takes x + b for a BiasAdd whenever b squeezes
    to one axis of length n equal to x.shape[1] or x.shape[-1], and for x.shape[-1] != n
    adds it along axis 1 (NCHW). MultiHeadAttention's projections add b (heads, D) to
    (N, L, heads, D): with D = 1 < heads and L = heads the bias lands on the positions.
    Even a bias equal for every head is hit: its gradient is summed over positions, not heads."""
    a, heads = case.arrays, case.attrs["num_heads"]
    return a["W_q"].shape[0] == heads > 1 and heads in (a["query"].shape[1], a["key"].shape[1])


def sdpa_scale_rounds(case, ev) -> bool:
    return float32_rounds(case.attrs["scale"])


def mha_scale_rounds(case, ev) -> bool:
    """MultiHeadAttention's 1 / sqrt(key_dim) changes when rounded to float32."""
    return float32_rounds(1.0 / np.sqrt(case.arrays["W_q"].shape[0] // case.attrs["num_heads"]))


# ---- training step

def optimizer_route_zero(attr: str):
    def condition(case, ev) -> bool:
        return case.attrs["route"] == "optimizer" and case.attrs[attr] == 0

    condition.__name__ = f"optimizer_route_zero({attr})"
    return condition


def clip_threshold_nan(case, ev) -> bool:
    """TensorFlow's norm clipping divides 0/0 or inf/inf: an infinite threshold, or a
    zero threshold with all-zero gradients."""
    c = case.attrs["max_norm"]
    zero = not any(np.any(case.arrays[n]) for n in ("g", "g1", "g2") if n in case.arrays)
    return bool(np.isinf(c) or (c == 0 and zero))


def eps_zero_on_underflowing_squares(case, ev) -> bool:
    """An optimizer with eps = 0 given a nonzero gradient element whose square underflows
    in the case dtype (|d| < sqrt(tiny)), for d the gradient itself or the gradient
    plus the L2 decay term (g + wd w0: a zero gradient of a weight under a tiny decay)."""
    g = case.arrays["grads"].astype(np.float64)
    w0 = case.arrays["w0"].astype(np.float64)
    small = np.sqrt(np.finfo(case.dtype).tiny)
    return case.attrs["eps"] == 0 and any(
        bool(np.any((np.abs(d) > 0) & (np.abs(d) < small))) for d in (g, g + case.attrs["weight_decay"] * w0))


def squares_underflow(case, ev) -> bool:
    """The largest gradient element's square is below tiny / eps in the case dtype: the
    sum of squares then loses relative accuracy to underflow (subnormal or flushed squares)."""
    gs = [case.arrays[n].astype(np.float64) for n in ("g", "g1", "g2") if n in case.arrays]
    biggest = max(float(np.abs(g).max(initial=0.0)) for g in gs)
    return 0 < biggest < np.sqrt(np.finfo(case.dtype).tiny / EPS[case.dtype])  # the square itself may underflow


def mlp_kink_by_rounding(case, ev) -> bool:
    """Some step's hidden pre-activation a = x_t W1 + b1 (on the oracle's parameters,
    from the residuals of train_step) is within the parameters' allowed error of 0:
    |a| <= rtol(t) (|x_t| (|W1| + S_W1) + |b1| + S_b1), with rtol(t) the step-t tolerance
    and S each parameter's scale (its largest element, or the case's largest input, the
    comparison's floor). The parameters of a framework may differ from the oracle's by
    that much and still pass, so which side of ReLU's kink a lands on, and with it the
    gradient of that unit from then on, is decided by rounding."""
    base = DEFAULT[case.dtype]
    floor = max(float(np.abs(v).max()) for v in case.arrays.values() if v.dtype.kind == "f")  # the outputs' error floor
    for t, (a, exact, size, xsum, _, _) in enumerate(ev.residuals, 1):
        # step 1 runs on the case's own numbers: only the sum's rounding; later steps on parameters
        # each framework may hold off by the tolerance of the step before
        band = at_step(base, "train_step", f"W1@{t}").rtol * (exact if t == 1 else size + floor * xsum)
        size = exact if t == 1 else size
        if np.any((size > 0) & (np.abs(a) <= band)):
            return True
    return False


def mlp_adam_gradient_at_rounding(case, ev) -> bool:
    """Adam, and some step's gradient element (on the oracle's trajectory) is within the
    step's tolerance of 0 relative to the terms it sums, |g_i| <= rtol(t) terms_i
    (terms_i > 0: the same backward pass on the terms' magnitudes). Its computed value
    is then rounding noise (a softmax probability within eps of its label), and Adam's
    m / (sqrt(v) + eps) turns noise of any size above eps into a step of about lr."""
    if case.attrs["optimizer"] != "adam":
        return False
    base = DEFAULT[case.dtype]
    for t, (_, _, _, _, g, terms) in enumerate(ev.residuals, 1):
        band = at_step(base, "train_step", f"W1@{t}").rtol * terms
        if np.any((terms > 0) & (np.abs(g) <= band)):
            return True
    return False


def mlp_subnormal_pre_activation(case, ev) -> bool:
    """Some step's hidden pre-activation (on the oracle's trajectory) is closer to 0 than
    its D + 1 terms could move it if each were flushed from subnormal to zero."""
    terms = case.arrays["W1"].shape[0] + 1
    return any(np.any((a != 0) & (np.abs(a) < terms * np.finfo(case.dtype).tiny)) for a, *_ in ev.residuals)


def kink_inside_model(case, ev) -> bool:
    """Some relu or max_pool2d inside the model sits exactly on its kink in the oracle's forward
    pass, with a cotangent arriving (``reference.models.exact_kinks``): a constant channel that
    batch norm maps to exactly beta = 0, a window of equal maxima."""
    return bool(exact_kinks(ev.residuals, ev.outputs["cot"]))
