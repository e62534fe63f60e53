"""The one tolerance table, and the one table of known divergences.

A framework's gradient passes when, for every finite position,

    |framework - oracle| <= atol = rtol * condition * scale,    scale = max(max|oracle tensor|, floor)

where the oracle is the float64 answer on the case's own (rounded) numbers.
For a gradient the floor is max|g|, the cotangent fed into the backward pass:
the size of the signal every backward pass carries, so an error that is a few
eps of it is rounding even where the local derivative is tiny (sigmoid at 30).
For the forward output the floor is the largest input magnitude: rounding the
inputs alone moves the output by eps of them (a loss near 0 computed as
logsumexp(z) - z_y keeps only eps * |z| absolute accuracy). ``condition`` is 1
except for layers whose catalogue entry declares a data-dependent condition
number (a normalization of nearly equal values amplifies one rounding by
kappa = max(1, max|x|, max|gamma|) / sqrt(var + eps); a layer through time
measures its sensitivity by perturbation and scales it by T / 4, see
reference/sensitivity.py); the report shows it.
The scale never drops below tiny / (eps rtol condition): under tiny / eps a
result's own rounding error is subnormal, and TensorFlow flushes those to zero.

Tolerances are tightened from the report's measurements, never loosened to get
green: every override says why it exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..adapters.tf_adapter import masking_route, xla_conv1d_heap_corruption
from ..reference.activations import SELU_ALPHA, SELU_SCALE
from ..reference import LAYERS, evaluate
from ..reference.recurrent import rnn
from ..reference.training import train_step
from .rows import step_of

EPS = {"float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps)}


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    reason: str


DEFAULT = {
    "float32": Tolerance(32 * EPS["float32"], "float32 default: 32 eps of the gradient's scale (a short sum of rounded products)"),
    "float64": Tolerance(1e-10, "float64 default: far above float64 rounding, far below any formula error"),
}

# (layer, framework, dtype) -> Tolerance; "*" matches anything. Most specific wins.
# None yet: every layer holds the defaults (see the report's worst errors).
OVERRIDES: dict[tuple[str, str, str], Tolerance] = {}

# Element-wise precision (the ``max_ulp_err`` column, the report's Precision section):
# an element whose error exceeds this many ulps of the case dtype, measured against
# the precision oracle (reference/precise.py) at the element's own size, has lost
# digits. Informational by default; ``--strict-precision`` makes it fail.
@dataclass(frozen=True)
class UlpBound:
    ulps: float
    reason: str


PRECISION = UlpBound(
    64, "64 ulps of the element itself (6 bits): an element built on exp(x) is conditioned like |x| (one rounding "
        "of its argument moves it by |x| ulps), up to 40 for the inputs drawn, and the frameworks measured within "
        "40 there (softmax and cross-entropy's p at logits 37 apart: 34; softplus at x = -38: 28; silu at x = 30: "
        "23); more means digits were lost (a tail returned as 0, a difference that cancels, a constant rounded)")

# The oracle against its own central differences (h = 1e-5 in float64): the
# truncation error O(h^2 f''') is ~1e-10 of the gradient; the rounding error
# O(eps |f| / h) is added by the test from the case itself (numdiff.rounding_bound).
NUMERICAL = Tolerance(1e-6, "central differences in float64, h=1e-5: truncation h^2 f''' plus rounding eps |f| / h")


def tolerance_for(layer: str, framework: str, dtype: str, overrides: dict | None = None) -> Tolerance:
    """The tolerance for one layer x framework x dtype: the most specific override, else the default."""
    best, best_score = DEFAULT[dtype], -1
    for (lay, fw, dt), tol in (OVERRIDES if overrides is None else overrides).items():
        if all(k in ("*", v) for k, v in ((lay, layer), (fw, framework), (dt, dtype))):
            score = (lay != "*") * 4 + (fw != "*") * 2 + (dt != "*")
            if score > best_score:
                best, best_score = tol, score
    return best


@dataclass(frozen=True)
class StepGrowth:
    """How the tolerance of a trajectory's output grows with its step: the output
    ``name@t`` (the parameters or state after step t) is allowed ``factor(t)``
    times the tolerance of one step."""

    factor: Callable[[int], float]
    reason: str


LINEAR = StepGrowth(lambda t: float(t), "x t at step t: each update step rounds a few times, and its error stays in "
                                        "the parameters and state that every later step starts from (kept, not "
                                        "shrunk: w adds each update; moments decay by beta < 1), so t steps carry "
                                        "at most t steps' roundings; measured growth is about linear (float32 SGD "
                                        "and Adagrad: ~0.5 t eps)")

# The one table of per-step growth: layer -> how its tolerance grows with the step.
STEP_GROWTH: dict[str, StepGrowth] = {
    layer: LINEAR for layer in ("sgd_step", "momentum_step", "adam_step", "adamw_step", "rmsprop_step", "adagrad_step",
                                "train_step")
}


def at_step(tol: Tolerance, layer: str, name: str, growth: dict | None = None) -> Tolerance:
    """The tolerance of one output: ``tol``, grown for the step of a trajectory output (see STEP_GROWTH)."""
    g = (STEP_GROWTH if growth is None else growth).get(layer)
    t = step_of(name)
    if g is None or t is None:
        return tol
    return Tolerance(tol.rtol * g.factor(t), f"{tol.reason}; step {t}: {g.reason}")


@dataclass(frozen=True)
class Divergence:
    """A difference between a framework and the oracle that is known and explained.

    ``key`` names it in rows and reports, stably: a report merged long after
    a divergence was added or removed still means the same by it.
    A failing or erroring row whose case satisfies ``when`` becomes
    ``known_divergence``: still shown with its measured error, never hidden.
    ``bound``: the largest ``max_rel_err`` the divergence can explain; a larger
    error still fails (None: the divergence can change a result entirely, so
    ``when`` must be narrow). ``positions``: it explains only where NaN and Inf
    come out (a row whose finite positions all pass, and whose non-finite ones
    differ). ``measured`` says what each framework does here.
    """

    key: str
    layer: str
    framework: str
    dtype: str
    when: Callable
    reason: str
    measured: str
    bound: float | None = None
    positions: bool = False

    def explains(self, row: dict) -> bool:
        if self.positions:
            return row["status"] == "fail" and bool(row.get("nonfinite")) and row["max_abs_err"] <= row["atol"]
        return self.bound is None or row["status"] == "fail" and row["max_rel_err"] <= self.bound

    def matches(self, case, framework: str) -> bool:
        return (self.layer in ("*", case.layer) and self.framework in ("*", framework)
                and self.dtype in ("*", case.dtype) and bool(self.when(case)))


def _x(case):
    """x with its NaN and Inf (the non-finite cases' own business) read as 0."""
    x = case.arrays["x"]
    return np.where(np.isfinite(x), x, np.zeros((), x.dtype))


def _holds(*names, what=lambda a: ~np.isfinite(a)):
    """A case condition: one of the arrays ``names`` holds a value ``what`` picks (default: NaN or Inf)."""
    return lambda case: any(n in case.arrays and bool(np.any(what(case.arrays[n]))) for n in names)


_NAN = dict(what=np.isnan)


def _subnormal(a) -> np.ndarray:
    """Where ``a`` holds a nonzero subnormal of its own dtype."""
    with np.errstate(invalid="ignore"):
        return (a != 0) & (np.abs(a) < np.finfo(a.dtype).tiny)


def _flushed_at_kink(case) -> bool:
    """A layer with a kink at 0 whose argument there is subnormal: x itself (for max
    pooling, a subnormal maximum that ties with 0), pred - target for l1 (computed in
    the case dtype, as the framework does), the logits of binary cross-entropy with
    pos_weight (TensorFlow's formula has kinks)."""
    a = case.arrays
    if case.layer == "l1":
        return bool(np.any(_subnormal(a["pred"]) | _subnormal(a["target"]) | _subnormal(a["pred"] - a["target"])))
    if case.layer == "binary_cross_entropy_with_logits":  # the pos_weight route's max(-z, 0) and |z|
        return "pos_weight" in a and bool(np.any(_subnormal(a["logits"])))
    return case.layer in ("relu", "leaky_relu", "elu", "selu", "max_pool2d") and bool(np.any(_subnormal(a["x"])))


def _exp_minus_one_loses(case) -> bool:
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


def _subnormal_pre_activation(case) -> bool:
    """x W1 + b1 of a residual block is subnormal somewhere in the case's dtype."""
    a = case.arrays
    h = a["x"].astype(np.float64) @ a["W1"].astype(np.float64) + a["b1"]
    return bool(np.any((h != 0) & (np.abs(h) < np.finfo(case.dtype).tiny)))


def _residual_relu_near_kink(case) -> bool:
    """A residual block whose pre-activation h = x W1 + b1 lies, somewhere, where the
    rounding of its I + 1 terms in the case dtype decides ReLU's side: |h| within
    (I + 1) eps sum|terms| of 0 with some term nonzero (an exact 0 of cancelling terms
    included), or under (I + 1) tiny, where a product flushed or rounded in the
    subnormal range moves it."""
    a = {k: v.astype(np.float64) for k, v in case.arrays.items()}
    h = a["x"] @ a["W1"] + a["b1"]
    size = np.abs(a["x"]) @ np.abs(a["W1"]) + np.abs(a["b1"])
    terms = a["W1"].shape[0] + 1
    near = (np.abs(h) <= terms * EPS[case.dtype] * size) | (np.abs(h) < terms * np.finfo(case.dtype).tiny)
    return bool(np.any((size > 0) & near))


def _softplus_threshold_shows(case) -> bool:
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


def _rnn_relu_pre_activations(case):
    """A ReLU RNN's pre-activations a_t = x_t W_ih + b_ih + h_{t-1} W_hh + b_hh (float64,
    from the oracle's states), the sum of their terms' magnitudes, and how many terms
    each sums (I + H + 2); None for a tanh RNN."""
    if case.attrs["nonlinearity"] != "relu":
        return None
    # masked_rnn: the valid steps come first and match the unmasked run; the padded
    # ones are left out (pre-activation 1, no terms)
    a = {k: v.astype(np.float64) for k, v in case.arrays.items() if k != "lengths"}
    y = rnn(**a, nonlinearity="relu")[0]["y"]
    h_prev = np.concatenate([a["h0"][:, None], y[:, :-1]], axis=1)
    pre = a["x"] @ a["W_ih"] + a["b_ih"] + h_prev @ a["W_hh"] + a["b_hh"]
    size = (np.abs(a["x"]) @ np.abs(a["W_ih"]) + np.abs(a["b_ih"]) + np.abs(h_prev) @ np.abs(a["W_hh"])
            + np.abs(a["b_hh"]))
    if "lengths" in case.arrays:
        valid = (np.arange(pre.shape[1])[None, :] < case.arrays["lengths"][:, None])[:, :, None]
        pre, size = np.where(valid, pre, 1.0), np.where(valid, size, 0.0)
    return pre, size, a["W_ih"].shape[0] + a["W_hh"].shape[0] + 2


def _subnormal_rnn_pre_activation(case) -> bool:
    """A ReLU RNN whose pre-activation is, somewhere, closer to 0 than its I + H + 2
    terms could move it if each were flushed from subnormal to zero (|a| < (I + H + 2)
    tiny): there TensorFlow's sign of a, and so ReLU'(a), may differ from the exact one."""
    found = _rnn_relu_pre_activations(case)
    if found is None:
        return False
    pre, _, terms = found
    return bool(np.any((pre != 0) & (np.abs(pre) < terms * np.finfo(case.dtype).tiny)))


def _rnn_relu_sign_by_rounding(case) -> bool:
    """A ReLU RNN with a pre-activation whose sign rounding decides: |a| within the
    summation bound terms * eps * sum|terms| of 0 (terms = I + H + 2), where some term
    is nonzero (a sum of cancelling terms, such as b_ih = 3, b_hh = -3)."""
    found = _rnn_relu_pre_activations(case)
    if found is None:
        return False
    pre, size, terms = found
    return bool(np.any((size > 0) & (np.abs(pre) <= terms * EPS[case.dtype] * size)))


def _gradient_overflows_through_time(case) -> bool:
    """A layer through time whose exact gradient leaves the dtype's finite range
    somewhere (an exploding gradient): the gradient carried back step by step
    overflowed on the way."""
    if LAYERS[case.layer].flow is None:
        return False
    limit = float(np.finfo(case.dtype).max)
    return any(float(np.abs(g).max(initial=0.0)) > limit for g in evaluate(case).outputs["grad"].values())


def _masking_layer_ignored(case) -> bool:
    """A masked recurrent case the TensorFlow adapter runs through a Masking layer
    (with initial_state), where some sequence is shorter than T."""
    x = case.arrays["x"]
    return masking_route(x) and bool(np.any(case.arrays["lengths"] < x.shape[1]))


def _attention_rows_without_keys(case) -> bool:
    """Some query of a multi-head attention case may attend to no key at all (its
    key padding mask and attention mask rows, ANDed, are all 0)."""
    a = case.arrays
    keep = np.ones((a["query"].shape[0], a["query"].shape[1], a["key"].shape[1]), dtype=bool)
    if "key_padding_mask" in a:
        keep &= (a["key_padding_mask"] != 0)[:, None, :]
    if "attn_mask" in a:
        keep &= a["attn_mask"] != 0
    return bool((~keep.any(axis=-1)).any())


def _keras_bias_add_as_nchw(case) -> bool:
    """keras.ops.add (TensorFlow backend) takes x + b for a BiasAdd whenever b squeezes
    to one axis of length n equal to x.shape[1] or x.shape[-1], and for x.shape[-1] != n
    adds it along axis 1 (NCHW). MultiHeadAttention's projections add b (heads, D) to
    (N, L, heads, D): with D = 1 < heads and L = heads the bias lands on the positions."""
    a, heads = case.arrays, case.attrs["num_heads"]
    # Even a bias equal for every head is hit: its gradient is summed over positions, not heads.
    return a["W_q"].shape[0] == heads > 1 and heads in (a["query"].shape[1], a["key"].shape[1])


def _float32_rounds(value: float) -> bool:
    return float(np.float32(value)) != value


def _keras_mha_scale_rounds(case) -> bool:
    """MultiHeadAttention's 1 / sqrt(key_dim) changes when rounded to float32."""
    return _float32_rounds(1.0 / np.sqrt(case.arrays["W_q"].shape[0] // case.attrs["num_heads"]))


_KERAS_SCALE = (
    "the logits' scale is a Python float that Keras casts with tf.cast / ops.cast, which makes a float32 "
    "constant first: in float64 the scale carries float32 rounding (ops.dot_product_attention's "
    "tf.cast(scale, logits.dtype); MultiHeadAttention's 1 / sqrt(key_dim) the same way, and ops.cast on its "
    "Softmax path)",
    "tf.cast(0.1, tf.float64) = 0.10000000149011612; float64 outputs and gradients off by up to 1.7e-8 of their "
    "scale in the ci run (key_dim 2: 1/sqrt(2) becomes 0.70710677; keras 3.15.1, tensorflow-cpu 2.21.0)")
_TORCH_MHA_NAN = (
    "nn.MultiheadAttention(need_weights=True) computes the softmax itself on logits with -inf at masked keys: a "
    "query that may see no key (a fully masked attn_mask row, or a sequence whose key_padding_mask is all True) "
    "gives softmax(-inf, ..., -inf) = NaN in its output row and its weights, and the NaN reaches the projection "
    "weights' gradients through the sums over the batch; the fused path (need_weights=False) returns 0 there, Keras 0 or "
    "a uniform row (see the conventions)",
    "torch 2.13, float32 and float64: E = 4, 2 heads, x (2, 2, 4), key_padding_mask [[F, F], [T, T]]: "
    "need_weights=True gives y[1] = NaN, weights[1] = NaN, NaN in all 48 elements of in_proj_weight's gradient "
    "(W_q, W_k, W_v) and all 16 of W_o's, while b_o's gradient and the other sequence's input gradients stay finite; "
    "need_weights=False gives attention output 0 (y[1] = b_o)")
_KERAS_BIAS_ADD = (
    "keras.ops.add on the TensorFlow backend treats x + b as tf.nn.bias_add when b squeezes to one axis of length n "
    "that equals x.shape[1] or x.shape[-1], choosing NCHW when x.shape[-1] != n: b is then added along axis 1, "
    "against broadcasting. MultiHeadAttention's EinsumDense projections add b (heads, D) to (N, L, heads, D): with "
    "head dim D = 1, heads > 1 and a sequence length L equal to heads, that projection's bias is added per "
    "position instead of per head, and its gradient is summed over the heads at each position instead of over the "
    "positions",
    "keras 3.15.1 / tensorflow-cpu 2.21.0, float32 and float64: keras.ops.add(zeros((1, 2, 2, 1)), [[1], [0]]) "
    "gives [[1, 1], [0, 0]] on axes (1, 2) where broadcasting (and tf.add) gives [[1, 0], [1, 0]]; "
    "MultiHeadAttention(num_heads=2, key_dim=1) on query (1, 1, 2), key (1, 2, 2), all weights 0, b_q = 1, "
    "weights cotangent [0.64, 0.10]: d/db_k = [0.134, -0.134] where the exact gradient is [0, 0] (a key bias "
    "shifts every logit of a row equally), and b_k = [1, 0] changes the attention scores from [0.5, 0.5] to "
    "[0.731, 0.269]")

def _targets_off_the_simplex(case) -> bool:
    """Probability targets of some sample sum to other than 1, beyond rounding."""
    probs = case.arrays.get("probs")
    if probs is None:
        return False
    total = probs.astype(np.float64).sum(axis=1)
    return bool(np.any(np.abs(total - 1.0) > 8 * probs.shape[1] * EPS[case.dtype]))
def _clip_threshold_nan(case) -> bool:
    """TensorFlow's norm clipping divides 0/0 or inf/inf: an infinite threshold, or a
    zero threshold with all-zero gradients."""
    c = case.attrs["max_norm"]
    zero = not any(np.any(case.arrays[n]) for n in ("g", "g1", "g2") if n in case.arrays)
    return bool(np.isinf(c) or (c == 0 and zero))


def _eps_zero_on_underflowing_squares(case) -> bool:
    """An optimizer with eps = 0 given a nonzero gradient element whose square underflows
    in the case dtype (|d| < sqrt(tiny)), for d the gradient itself or the gradient
    plus the L2 decay term (g + wd w0: a zero gradient of a weight under a tiny decay)."""
    g = case.arrays["grads"].astype(np.float64)
    w0 = case.arrays["w0"].astype(np.float64)
    small = np.sqrt(np.finfo(case.dtype).tiny)
    return case.attrs["eps"] == 0 and any(
        bool(np.any((np.abs(d) > 0) & (np.abs(d) < small))) for d in (g, g + case.attrs["weight_decay"] * w0))


def _squares_underflow(case) -> bool:
    """The largest gradient element's square is below tiny / eps in the case dtype: the
    sum of squares then loses relative accuracy to underflow (subnormal or flushed squares)."""
    gs = [case.arrays[n].astype(np.float64) for n in ("g", "g1", "g2") if n in case.arrays]
    biggest = max(float(np.abs(g).max(initial=0.0)) for g in gs)
    return 0 < biggest < np.sqrt(np.finfo(case.dtype).tiny / EPS[case.dtype])  # the square itself may underflow


def _mlp_kink_by_rounding(case) -> bool:
    """Some step's hidden pre-activation a = x_t W1 + b1 (on the oracle's parameters) is
    within the parameters' allowed error of 0: |a| <= rtol(t) (|x_t| (|W1| + S_W1) + |b1| +
    S_b1), with rtol(t) the step-t tolerance and S each parameter's scale (its largest
    element, or the case's largest input, the comparison's floor). The parameters of a framework may differ from the
    oracle's by that much and still pass, so which side of ReLU's kink a lands on, and
    with it the gradient of that unit from then on, is decided by rounding."""
    arrays = {k: v if v.dtype.kind == "i" else v.astype(np.float64) for k, v in case.arrays.items()}
    seen = train_step(**arrays, **case.attrs)[1]
    base = tolerance_for("train_step", "*", case.dtype)
    floor = max(float(np.abs(v).max()) for v in arrays.values() if v.dtype.kind == "f")  # the outputs' error floor
    for t, (a, exact, size, xsum, _, _) in enumerate(seen, 1):
        # step 1 runs on the case's own numbers: only the sum's rounding; later steps on parameters
        # each framework may hold off by the tolerance of the step before
        band = at_step(base, "train_step", f"W1@{t}").rtol * (exact if t == 1 else size + floor * xsum)
        size = exact if t == 1 else size
        if np.any((size > 0) & (np.abs(a) <= band)):
            return True
    return False


def _mlp_adam_gradient_at_rounding(case) -> bool:
    """Adam, and some step's gradient element (on the oracle's trajectory) is within the
    step's tolerance of 0 relative to the terms it sums, |g_i| <= rtol(t) terms_i
    (terms_i > 0: the same backward pass on the terms' magnitudes). Its computed value
    is then rounding noise (a softmax probability within eps of its label), and Adam's
    m / (sqrt(v) + eps) turns noise of any size above eps into a step of about lr."""
    if case.attrs["optimizer"] != "adam":
        return False
    arrays = {k: v if v.dtype.kind == "i" else v.astype(np.float64) for k, v in case.arrays.items()}
    base = tolerance_for("train_step", "*", case.dtype)
    for t, (_, _, _, _, g, terms) in enumerate(train_step(**arrays, **case.attrs)[1], 1):
        band = at_step(base, "train_step", f"W1@{t}").rtol * terms
        if np.any((terms > 0) & (np.abs(g) <= band)):
            return True
    return False


def _mlp_subnormal_pre_activation(case) -> bool:
    """Some step's hidden pre-activation (on the oracle's trajectory) is closer to 0 than
    its D + 1 terms could move it if each were flushed from subnormal to zero."""
    arrays = {k: v if v.dtype.kind == "i" else v.astype(np.float64) for k, v in case.arrays.items()}
    terms = case.arrays["W1"].shape[0] + 1
    return any(np.any((a != 0) & (np.abs(a) < terms * np.finfo(case.dtype).tiny))
               for a, *_ in train_step(**arrays, **case.attrs)[1])


KNOWN_DIVERGENCES: list[Divergence] = [
    # ---- special values (NaN, +-Inf): where a framework's NaN and Inf land elsewhere than the
    # IEEE evaluation of the layer's formula puts them. ``positions=True``: only those positions
    # are explained; every finite position must still pass.
    Divergence(
        "torch-gelu-float32-inf",
        "gelu", "torch", "float32", lambda c: c.attrs["approximate"] == "none" and _holds("x", what=np.isposinf)(c),
        "PyTorch's float32 GELU kernel (erf form) returns NaN for x = +Inf, where x Phi(x) = Inf; its float64 kernel "
        "and its tanh form return Inf",
        "torch 2.13: F.gelu(torch.tensor([inf, inf, inf])) = [nan, nan, nan] in float32, [inf, inf, inf] in float64; "
        "TensorFlow gives inf (the gradient at +Inf is 1 + Inf * 0 = NaN everywhere)",
        positions=True),
    Divergence(
        "torch-elu-nan-gradient-vectorized",
        "*", "torch", "*", lambda c: c.layer in ("elu", "selu") and _holds("x", **_NAN)(c),
        "PyTorch's ELU/SELU backward takes a different branch for a NaN input in its vectorized loop than in its "
        "scalar tail: the vectorized body returns NaN, the tail the positive branch g (scale g for SELU), so the "
        "gradient at a NaN depends on where the element sits in the tensor",
        "torch 2.13, x all NaN, g all 1: float64 with 16 elements gives NaN everywhere; with 17, NaN for the first "
        "16 and 1.0 for the 17th; with 8 or fewer, 1.0 everywhere; float32 gives 1.0 up to 17 elements and NaN in "
        "longer tensors",
        positions=True),
    Divergence(
        "keras-elu-nan-gradient-alpha",
        "elu", "tensorflow", "*", lambda c: c.attrs["alpha"] != 1.0 and _holds("x", **_NAN)(c),
        "keras.layers.ELU(alpha) is where(x > 0, elu(x), alpha * elu(x)): a NaN fails x > 0, so its gradient goes "
        "through alpha * elu, whose EluGrad takes the positive branch for NaN: alpha g, neither branch's "
        "derivative (right: g; left: alpha e^NaN g = NaN)",
        "tensorflow-cpu 2.21, keras 3.15: alpha 0.897, x = NaN, g = -1.199: gradient -1.075 (alpha g); with "
        "alpha 1 the gradient is g (the convention at_nan = right)"),
    Divergence(
        "torch-l1-sign-nan-is-zero",
        "l1", "torch", "*", _holds("pred", "target", **_NAN),
        "l1_loss's backward multiplies by sign(pred - target), and torch.sign(NaN) is 0: a NaN difference gets "
        "gradient 0 where sign(NaN) (NumPy, TensorFlow) is NaN",
        "torch 2.13: l1_loss(pred=[nan], target=[0]) = nan, gradient of pred 0 and of target -0; TensorFlow NaN",
        positions=True),
    Divergence(
        "keras-huber-where-nan-gradient",
        "huber", "tensorflow", "*", _holds("pred", "target"),
        "keras.losses.Huber computes where(|d| <= delta, d^2 / 2, delta |d| - delta^2 / 2): the gradient of the "
        "branch not taken is multiplied by 0, and for an infinite d that is 0 * Inf = NaN, so the gradient is NaN "
        "where the exact one is +-delta g",
        "tensorflow-cpu 2.21, float32: pred = Inf, target 0, delta 616.3, reduction none: gradient NaN, exact "
        "-447.1; a NaN target gives NaN at its own position in both (that one agrees)",
        positions=True),
    Divergence(
        "tf-bce-infinite-logit",
        "binary_cross_entropy_with_logits", "tensorflow", "*", _holds("logits", what=np.isinf),
        "tf.nn.sigmoid_cross_entropy_with_logits computes max(z, 0) - z t + log1p(e^-|z|): for z = +Inf and "
        "0 < t that is Inf - Inf = NaN, and for t = 0, Inf * 0 = NaN, where the loss is Inf (or (1 - t) Inf)",
        "tensorflow-cpu 2.21: z = +Inf, t = 0.5: loss NaN (exact Inf); z = -Inf, t = 0.56, reduction sum: the "
        "gradient of t is NaN (exact Inf)",
        positions=True),
    Divergence(
        "torch-bce-infinite-logit",
        "binary_cross_entropy_with_logits", "torch", "*", _holds("logits", what=np.isinf),
        "binary_cross_entropy_with_logits computes (1 - t) z + log(1 + e^-z) in a max-shifted form: for z = -Inf "
        "and t = 1 that is 0 * -Inf = NaN, where the loss -log sigmoid(-Inf) is Inf",
        "torch 2.13, float64: logits [-Inf, Inf], targets [1, 7.4e-5], reduction sum: loss NaN (exact Inf)",
        positions=True),
    Divergence(
        "tf-conv-nonfinite-spreads",
        "*", "tensorflow", "*", lambda c: c.layer in ("conv1d", "conv2d", "conv_transpose2d") and _holds("x")(c),
        "TensorFlow's convolution kernels (Eigen/oneDNN: im2col and GEMM over padded, blocked tiles) multiply "
        "cells of x that the exact sum for an element never reads (padding and stride gaps, other tiles) by 0: "
        "a NaN or Inf there makes that element NaN. Positions where the exact answer is finite or +-Inf come out "
        "NaN, in the output and the filter's gradient",
        "tensorflow-cpu 2.21: conv2d float64, x with one NaN, groups 2, stride (3, 2): y[1, 0, 0, 0] = NaN where the "
        "exact answer is 1.023; conv1d float64 'same', dilation 2: y = NaN where the exact answer is -Inf; "
        "conv2d float32 stride (3, 2): NaN in 8 elements of the filter gradient whose exact value is 0",
        positions=True),
    Divergence(
        "torch-cross-entropy-ignored-row-nan",
        "cross_entropy", "torch", "*",
        lambda c: "labels" in c.arrays and bool(np.any((~np.isfinite(c.arrays["logits"])).any(axis=1)
                                                       & (c.arrays["labels"] == c.attrs["ignore_index"]))),
        "an ignored label's row gets gradient 0 from nll_loss, but log_softmax's backward, g - softmax(z) sum(g), "
        "multiplies that 0 by the row's softmax: NaN when the row's logits hold NaN or Inf, where the ignored row "
        "has no loss term and so gradient 0",
        "torch 2.13: logits [[nan, 0]], labels [0], ignore_index 0: gradient [[nan, nan]] (exact [[0, 0]]); "
        "TensorFlow gives 0",
        positions=True),
    Divergence(
        "tf-cross-entropy-nonfinite-logits",
        "cross_entropy", "tensorflow", "*", _holds("logits"),
        "Keras' cross-entropy computes the smoothed loss as -sum q log softmax(z) through its own log-softmax, "
        "which turns a -Inf logit into NaN where the loss (its smoothing term eps/K (-log 0)) is +Inf",
        "tensorflow-cpu 2.21, keras 3.15, float32: label smoothing 0.1, one logit -Inf, reduction sum: loss NaN "
        "(exact +Inf)",
        positions=True),
    Divergence(
        "tf-batch-norm-inference-folded-scale",
        "batch_norm_inference", "tensorflow", "*", _holds("x"),
        "Keras' inference batch norm folds gamma / sqrt(var + eps) into one scale first; a scale below tiny is "
        "flushed to 0 (denormals-are-zero), and an infinite x times that 0 is NaN where gamma (x - mean) / "
        "sqrt(var + eps) is +-Inf",
        "tensorflow-cpu 2.21, float64: gamma 2.2e-308, running_var 1, x = +Inf: y NaN (exact +Inf)",
        positions=True),
    Divergence(
        "torch-conv-transpose-weight-grad-reads-padding",
        "conv_transpose2d", "torch", "*",
        lambda c: _holds("x")(c) and (c.attrs["pad_h"] > 0 or c.attrs["pad_w"] > 0),
        "ConvTranspose2d's weight gradient is computed as a convolution of the cotangent, zero-padded where "
        "`padding` crops the full output, with x: a NaN or Inf in x meets those zeros, 0 * NaN = NaN, in filter "
        "elements whose every kept output is finite",
        "torch 2.13, found by the thorough profile: groups 2, pad_h 1, dilation_w 2, one NaN in x: 6 NaN in the "
        "filter gradient where the exact answer has 4 (2 are 0)",
        positions=True),
    Divergence(
        "tf-max-pool-skips-nan",
        "max_pool2d", "tensorflow", "*", _holds("x"),
        "TensorFlow's MaxPool starts from the lowest finite value and replaces it only on a strict '>': a NaN never "
        "wins, so a window holding NaN returns the largest other value (the lowest float if NaN is all it holds), "
        "while MaxPoolGrad sends the gradient to the first cell when that cell is NaN; the explicit and ceil_mode "
        "padding (-Inf, see the adapter) ties with a window whose cells are all -Inf",
        "tensorflow-cpu 2.21: a 1x1 window holding NaN gives -3.4028235e38 (float32) or -1.7976931e308 (float64); "
        "[[nan, 5], [1, 2]] gives 5 with the gradient on the NaN; PyTorch gives NaN, its gradient on the last NaN"),
    Divergence(
        "tf-softmax-float32-nan-in-place",
        "softmax", "tensorflow", "float32", _holds("x"),
        "TensorFlow's float32 softmax kernel keeps a NaN in its own position: the other elements of its row stay "
        "finite (0 when the NaN would have been the maximum), where exp(NaN) in the normalizing sum makes the "
        "whole row NaN (float64 and log_softmax do so); a +Inf becomes such a NaN first (Inf - max(x) = Inf - Inf)",
        "tensorflow-cpu 2.21: softmax([nan, 0, 0, 0]) = [nan, 0, 0, 0] in float32, all NaN in float64; "
        "softmax([inf, -11.4]) = [nan, 0] in float32",
        positions=True),
    Divergence(
        "gradient-overflow-through-time",
        "*", "*", "float32", _gradient_overflows_through_time,
        "an exploding gradient beyond float32's range (3.4e38): backpropagation through time carries dL/dh_t back "
        "step by step, so it overflows to Inf on the way, and Inf times a zero weight or input is NaN; the exact "
        "answer (the oracle, in float64) is finite there, or is a number float32 cannot hold",
        "tanh RNN, T = 50, W_hh of +-2 (H = 4), zero x, h0, W_ih and biases: the exact gh0 is 7.7e44, gb 1.1e44 "
        "and gx 0; PyTorch and TensorFlow both return Inf or NaN there (found by the thorough profile)"),
    Divergence(
        "tf-elu-exp-minus-one",
        "elu", "tensorflow", "*", _exp_minus_one_loses,
        "TensorFlow's Elu kernel computes alpha (exp(x) - 1) rather than expm1: for x near 0 "
        "the output cancels (keras.layers.ELU calls tf.nn.elu for every alpha)",
        "float32 elu(-1.66e-8) = 0 (exact -1.66e-8); float64 elu(-1.19e-7) carries 1e-9 relative error"),
    Divergence(
        "tf-gelu-float32-constants",
        "gelu", "tensorflow", "float64", lambda c: True,
        "tf.nn.gelu makes its constants with math_ops.cast(python_float, dtype), which rounds "
        "1/sqrt(2) and 0.044715 to float32 before widening them to float64",
        "float64 output and gradient off by up to ~2e-8 relative (0.044715 becomes 0.044715 - 1.5e-9)",
        bound=1e-7),
    Divergence(
        "tf-leaky-relu-float32-alpha",
        "leaky_relu", "tensorflow", "float64",
        lambda c: float(np.float32(c.attrs["negative_slope"])) != c.attrs["negative_slope"],
        "the LeakyRelu op's alpha is a float32 attribute, so a float64 slope is rounded to float32",
        "slope 0.01 acts as 0.009999999776; float64 results off by up to 6e-8 relative",
        bound=1e-7),
    Divergence(
        "tf-selu-exp-minus-one",
        "selu", "tensorflow", "*",
        lambda c: _exp_minus_one_loses(c) or bool(np.any((_x(c) < 0) & (np.exp(_x(c)) - 1 == 0))),
        "Selu computes alpha (exp(x) - 1) rather than expm1: near 0 the output cancels, and where "
        "it is exactly 0 for a negative x, SeluGrad takes the positive branch (out < 0 is false)",
        "d selu/dx at x = -1e-17 (float64) or -1e-8 (float32): TensorFlow scale = 1.0507, exact scale*alpha = 1.7581"),
    Divergence(
        "tf-softplus-no-threshold",
        "softplus", "tensorflow", "*",
        _softplus_threshold_shows,
        "TensorFlow's softplus has no threshold: it stays on the curve where PyTorch switches to y = x",
        "at beta x = 20 the outputs differ by log1p(e^-20)/beta = 2e-9/beta, the gradients by sigmoid(-20) = 2e-9; "
        "at threshold 1.5 by 0.2"),
    Divergence(
        "tf-flush-to-zero-at-kink",
        "*", "tensorflow", "*", _flushed_at_kink,
        "TensorFlow's CPU kernels treat subnormal inputs as zero and flush subnormal results to zero (denormals-"
        "are-zero and flush-to-zero on its threads): at a kink at 0 a positive or negative subnormal then takes "
        "the derivative of 0 (ReLU 0, leaky ReLU the slope, ELU alpha, L1 sign(0) = 0) instead of its own side's",
        "tensorflow-cpu 2.21: relu'(1.12e-44) = 0 in float32 and relu'(2.1e-314) = 0 in float64 (exact 1, PyTorch "
        "1); leaky_relu'(1.12e-44) = 0.01 (exact 1); elu'(1.3e-308) = alpha 2.9 (exact 1); the gradient of "
        "l1(pred = 1.12e-44, target = 0) is 0 (exact 1); binary cross-entropy with pos_weight "
        "(tf.nn.weighted_cross_entropy_with_logits: max(-z, 0) and |z|) gives twice the gradient at a subnormal z "
        "(logits (1, 1), mean: 1, exact 0.5); a max-pool window [0, 0, 0, 0, 5.9e-39] (float32) sends its gradient "
        "to the first 0 (exact: the subnormal); the outputs are flushed to 0 too"),
    Divergence(
        "residual-relu-kink-by-rounding",
        "residual_block", "*", "*", _residual_relu_near_kink,
        "ReLU'(0) = 0, but which side of the kink a pre-activation h = x W1 + b1 within rounding of 0 lands on "
        "is decided by the order each framework sums its terms in the case dtype (and, below tiny, by whether it "
        "keeps, rounds or flushes subnormal products): ReLU then passes g or 0, and gb1, gW1 and gx follow",
        "found by the thorough profile once magnitudes near sqrt(tiny) and subnormals were drawn: float32, "
        "h = 1.1e-19 (exact) from cancelling terms: PyTorch gb1[0] = 7.57, exact 0.42; W1 with a subnormal "
        "element, h = 7.0e-46: PyTorch gW1 = 0, exact 0.046"),
    Divergence(
        "tf-flush-to-zero-residual-relu",
        "residual_block", "tensorflow", "*", _subnormal_pre_activation,
        "TensorFlow's CPU kernels flush subnormal results to zero: a subnormal pre-activation x W1 + b1 "
        "becomes 0, and the ReLU then passes no gradient (PyTorch keeps it and passes g)",
        "float64 x = 1.7e-27, W1 = 2.5e-290: h = 4.3e-317 > 0; TensorFlow gives gb1 = 0, PyTorch and the oracle g"),
    Divergence(
        "keras-layer-norm-rms-scaling-uses-variance",
        "rms_norm", "tensorflow", "*", lambda c: c.attrs["route"] == "layer_normalization_rms_scaling",
        "keras.layers.LayerNormalization(rms_scaling=True) divides by sqrt(var(x) + eps), the centred variance, "
        "not by the root mean square; Keras 3.15 deprecates the argument for this reason (a warning points to "
        "keras.layers.RMSNormalization, which matches the oracle)",
        "agrees only where every normalized slice has mean 0; x = (1, 1), eps = 1e-5: RMS norm gives 0.999995, "
        "this route 316.2 (1 / sqrt(eps)); on drawn cases y is off by up to 1e18 eps (float64)"),
    # ---- losses
    Divergence(
        "tf-softmax-cross-entropy-unnormalized-targets",
        "cross_entropy", "tensorflow", "*", _targets_off_the_simplex,
        "Keras' CategoricalCrossentropy(from_logits=True) runs tf.nn.softmax_cross_entropy_with_logits, whose "
        "gradient is softmax(z) - t: right only when the targets of a sample sum to 1. The loss is -sum t log p "
        "for any t (as PyTorch's), whose gradient is (sum t) softmax(z) - t",
        "logits (1, 2) = [0, 0], probs [0, 0]: loss 0 in both; the logits' gradient TensorFlow [0.5, 0.5], "
        "PyTorch and the oracle [0, 0] (tensorflow-cpu 2.21.0, keras 3.15.1)"),
    Divergence(
        "tf-weighted-bce-kink-at-zero",
        "binary_cross_entropy_with_logits", "tensorflow", "*",
        lambda c: "pos_weight" in c.arrays and bool(np.any(c.arrays["logits"] == 0)),
        "tf.nn.weighted_cross_entropy_with_logits (Keras' BinaryCrossentropy has no pos_weight) computes "
        "(1 - t) z + (1 + (pw - 1) t) (log1p(exp(-|z|)) + relu(-z)) and differentiates it as written: at z = 0 "
        "the kinks of |z| and relu(-z), which cancel in the function, both take derivative 0, so the gradient "
        "misses -(1 + (pw - 1) t) / 2 (sigmoid_cross_entropy_with_logits, without pos_weight, is right at 0)",
        "z = 0, t = 1, pos_weight 1: d loss / dz TensorFlow 0, exact sigma(0) - 1 = -0.5 (PyTorch -0.5); "
        "z = -20, t = 0.78: both -0.78 (tensorflow-cpu 2.21.0)"),
    # ---- convolution and pooling
    Divergence(
        "tf-conv-transpose-float64-dilation",
        "conv_transpose2d", "tensorflow", "float64",
        lambda c: c.attrs["dilation_h"] > 1 or c.attrs["dilation_w"] > 1,
        "keras.layers.Conv2DTranspose runs Conv2DBackpropInput, whose float64 CPU kernel has no dilation "
        "(float32 goes through oneDNN and works)",
        "float64, dilation_rate (1, 2) or (2, 2), stride 1: the forward pass raises InvalidArgumentError 'Current CPU "
        "implementations do not yet support dilation rates larger than 1'; float32 matches the oracle"),
    Divergence(
        "tf-xla-conv1d-float64-heap-corruption",
        "conv1d", "tensorflow", "float64",
        lambda c: xla_conv1d_heap_corruption(c.dtype, c.arrays["x"].shape, c.arrays["W"].shape, c.attrs),
        "Keras runs grouped convolutions through XLA (jit_compile=True); XLA's CPU gradient of float64 grouped "
        "1-d convolutions with dilation 3 corrupts memory (the process aborts, or the kernel gradient holds "
        "garbage), so the adapter does not run such a case",
        "keras Conv1D(dilation_rate=3, groups=2, dtype='float64'), tape.gradient: with 4 input channels SIGABRT "
        "'corrupted size vs. prev_size' / 'free(): invalid next size' in every run under MALLOC_CHECK_=3 (lengths "
        "8 and 11, kernels 1-3, batch 1-3); with x (1, 2, 8), W (4, 1, 1) NaN/Inf in 3 positions of the kernel "
        "gradient in 2 of 4 runs; float32 and dilation 1 or 2: neither (tensorflow-cpu 2.21.0, keras 3.15.1). "
        "Found three times by the thorough profile"),
    # ---- normalization, embedding, dropout
    Divergence(
        "torch-batch-norm-one-value",
        "batch_norm", "torch", "*", lambda c: c.arrays["x"].size == c.arrays["x"].shape[1],
        "PyTorch's batch norm refuses training-mode statistics from one value per channel "
        "(N * prod(spatial) == 1), where the variance is 0; the oracle and Keras give y = beta, gx = 0",
        "torch: ValueError 'Expected more than 1 value per channel when training, got input size "
        "torch.Size([1, 3])' (also [1, 3, 1] and [1, 3, 1, 1]); keras BatchNormalization(training=True): "
        "y = beta, gradients match the oracle"),
    Divergence(
        "torch-group-norm-one-value",
        "group_norm", "torch", "*", lambda c: c.arrays["x"].size == c.arrays["x"].shape[0] * c.attrs["groups"],
        "PyTorch's group norm refuses groups of one value (channels per group * prod(spatial) == 1), where "
        "the variance is 0; the oracle and Keras give y = beta, gx = 0",
        "torch: ValueError 'Expected more than 1 value per channel when training, got input size [1, 1]' "
        "(F.group_norm checks [N * C / groups, groups, *spatial]); keras GroupNormalization: matches the oracle"),
    # ---- recurrent
    Divergence(
        "tf-flush-to-zero-rnn-relu",
        "*", "tensorflow", "*", lambda c: c.layer in ("rnn", "masked_rnn") and _subnormal_rnn_pre_activation(c),
        "TensorFlow's CPU kernels flush subnormal results to zero: in a ReLU SimpleRNN a pre-activation "
        "x_t W_ih + b + h_{t-1} W_hh that is subnormal (or a sum of subnormal products) becomes 0, and the ReLU "
        "then passes no gradient to that step (PyTorch keeps it and passes g); the states after it are off too",
        "float32 x = 1.1754944e-38 (the smallest normal), W_ih = 0.41776422, b = 0, h0 = 0: x W_ih = 4.9e-39 > 0; "
        "SimpleRNN(activation='relu') gives y = 0 and gb_ih = gb_hh = gx = 0, PyTorch's nn.RNN and the oracle "
        "y = 4.9e-39, gb = g_y + g_h_n = 1.1672 (tensorflow-cpu 2.21.0, keras 3.15.1)"),
    Divergence(
        "tf-rnn-relu-kink-summation-order",
        "rnn", "tensorflow", "*", _rnn_relu_sign_by_rounding,
        "ReLU'(0) = 0 everywhere, but which side of the kink a pre-activation within rounding of 0 falls on "
        "depends on the order of the sum: Keras' SimpleRNN holds one bias b_ih + b_hh and computes "
        "(x_t W_ih + b) + h_{t-1} W_hh, PyTorch and the oracle (x_t W_ih + b_ih) + (h_{t-1} W_hh + b_hh); where "
        "the terms cancel, one side gets exactly 0 (no gradient) and the other a rounding residue (gradient g)",
        "float64, x = 0, b_ih = 3, b_hh = -3 in unit 2, h0 W_hh contributing 3.5e-68 there: the oracle and "
        "nn.RNN compute 3 + 3.5e-68 - 3 = 0 and pass no gradient; SimpleRNN computes 0 + 0 + 3.5e-68 > 0 (the "
        "exact value) and passes it (gW_hh off by 5.7 at scale 2.5; tensorflow-cpu 2.21.0, keras 3.15.1)"),
    Divergence(
        "torch-rnn-relu-kink-float32-rounding",
        "rnn", "torch", "float32", _rnn_relu_sign_by_rounding,
        "as tf-rnn-relu-kink-summation-order, with the same order of the sum: nn.RNN computes the pre-activation "
        "in float32, the oracle exactly on the same float32 numbers, so a pre-activation within float32 "
        "rounding of 0 can land on the other side of the kink (and the step's whole gradient with it, carried "
        "back through every earlier step)",
        "found by the thorough profile: float32, ReLU, x (2, 2, 2): gW_ih[0, 1] 0.336 where the exact value is "
        "-5.73; T = 50: gx[1, 0, 0] 0 where the exact value is -3.15e6"),
    Divergence(
        "torch-softplus-float32-overflow-below-threshold",
        "softplus", "torch", "float32",
        lambda c: bool(np.any((c.attrs["beta"] * _x(c).astype(np.float64) > np.log(np.finfo(np.float32).max))
                              & (c.attrs["beta"] * _x(c).astype(np.float64) <= c.attrs["threshold"]))),
        "PyTorch's float32 softplus computes log1p(exp(beta x)) / beta below its threshold: exp(beta x) "
        "overflows to Inf past beta x = 88.7, so a threshold above that gives y = Inf and a NaN gradient where "
        "softplus(x) is about x (TensorFlow computes it stably; float64 overflows only past 709.8)",
        "torch 2.13, float32, beta 3.06, threshold 150.2, x = 37.5: y = Inf (exact 37.5), gradient NaN (exact "
        "-0.955 = g)",
        positions=True),
    Divergence(
        "tf-masked-rnn-relu-kink-summation-order",
        "masked_rnn", "tensorflow", "*", _rnn_relu_sign_by_rounding,
        "as tf-rnn-relu-kink-summation-order: the same SimpleRNN cell under a mask sums its one bias in another "
        "order than PyTorch and the oracle, so a pre-activation within rounding of 0 may take the other side of the kink",
        "as tf-rnn-relu-kink-summation-order (the cell is the same; the mask only decides which steps run); "
        "found by the thorough profile in 2 of 250 float64 cases (tensorflow-cpu 2.21.0, keras 3.15.1)"),
    *(Divergence(
        f"tf-masking-layer-dropped-with-initial-state-{_kind}",
        f"masked_{_kind}", "tensorflow", "*", _masking_layer_ignored,
        "Keras 3 hands the mask a keras.layers.Masking layer attaches to its output on to the next layer only when "
        "that layer is called with one tensor argument (Layer.__call__, step 6 'Populate mask argument(s)'); "
        "an RNN called with initial_state has two, so the mask is silently dropped and the padded steps (zeros "
        "out of Masking) run as data: y, the final states and every gradient differ wherever a sequence is short",
        "keras 3.15.1, LSTM(2, return_sequences=True, zero_output_for_mask=True) after Masking(0.0), x[1, 1:] = 0: "
        "called eagerly without initial_state y[1, :, 0] = [0.114, 0, 0] (masked); with initial_state=[h0, c0] "
        "[0.114, 0.102, 0.075] (not masked); the same in a functional keras.Model; mask= with initial_state "
        "masks; Bidirectional(LSTM/GRU) after Masking with initial_state: the same (y, h_n off entirely). The "
        "adapter's mask= route matches the oracle in these cases")
      for _kind in ("rnn", "lstm", "gru", "bidirectional_lstm", "bidirectional_gru")),
    # ---- attention
    Divergence(
        "torch-mha-masked-row-nan",
        "multi_head_attention", "torch", "*", lambda c: c.attrs["need_weights"] and _attention_rows_without_keys(c),
        *_TORCH_MHA_NAN),
    Divergence(
        "torch-mha-weights-masked-row-nan",
        "multi_head_attention_weights", "torch", "*", _attention_rows_without_keys, *_TORCH_MHA_NAN),
    Divergence(
        "keras-sdpa-float32-scale",
        "scaled_dot_product_attention", "tensorflow", "float64", lambda c: _float32_rounds(c.attrs["scale"]),
        *_KERAS_SCALE, bound=1e-7),
    Divergence(
        "keras-mha-float32-scale",
        "multi_head_attention", "tensorflow", "float64", _keras_mha_scale_rounds, *_KERAS_SCALE, bound=1e-7),
    Divergence(
        "keras-mha-weights-float32-scale",
        "multi_head_attention_weights", "tensorflow", "float64", _keras_mha_scale_rounds, *_KERAS_SCALE,
        bound=1e-7),
    Divergence(
        "keras-ops-add-bias-as-nchw",
        "multi_head_attention", "tensorflow", "*", _keras_bias_add_as_nchw, *_KERAS_BIAS_ADD),
    Divergence(
        "keras-ops-add-bias-as-nchw-weights",
        "multi_head_attention_weights", "tensorflow", "*", _keras_bias_add_as_nchw, *_KERAS_BIAS_ADD),
    # ---- training step
    *(Divergence(
        f"keras-optimizer-zero-{_arg}-clips-nothing",
        _layer, "tensorflow", "*",
        lambda c, _attr=_attr: c.attrs["route"] == "optimizer" and c.attrs[_attr] == 0,
        f"Keras' optimizers clip only when the argument is truthy and positive (BaseOptimizer._clip_gradients: "
        f"'if self.{_arg} and self.{_arg} > 0'): {_arg}=0 silently turns clipping off, where the exact answer "
        f"(and PyTorch's clip_grad_*_, and tf.clip_*) clips everything to 0",
        f"SGD(learning_rate=1, {_arg}=0) on the gradient [3, 4]: the update uses [3, 4], exact [0, 0] "
        f"(keras 3.15.1, float32 and float64)")
      for _layer, _arg, _attr in (("clip_by_value", "clipvalue", "clip_value"), ("clip_by_norm", "clipnorm", "max_norm"),
                                  ("clip_by_global_norm", "global_clipnorm", "max_norm"))),
    Divergence(
        "tf-clip-by-norm-nan-threshold",
        "clip_by_norm", "tensorflow", "*", _clip_threshold_nan,
        "tf.clip_by_norm (and Keras' clipnorm) computes t * c / maximum(||t||, c): an infinite threshold gives "
        "inf / inf and t * inf / inf, "
        "a zero threshold on an all-zero tensor 0 / 0; the exact answer (and PyTorch's clip_grad_norm_) leaves the "
        "tensor as it is",
        "clip_norm=inf on [3, 4]: [nan, nan] (PyTorch [3, 4]); clip_norm=0 on [0, 0]: [nan, nan] (PyTorch [0, 0]); "
        "float32 and float64 (tensorflow-cpu 2.21.0)"),
    Divergence(
        "tf-clip-by-global-norm-nan-threshold",
        "clip_by_global_norm", "tensorflow", "*", _clip_threshold_nan,
        "tf.clip_by_global_norm scales by c * minimum(1 / norm, 1 / c): an infinite threshold gives inf * 0, a zero "
        "threshold with all-zero gradients 0 * inf; every tensor becomes NaN (the returned norm is right)",
        "clip_norm=inf on [[3, 4], [0]]: all NaN, norm 5 (PyTorch: unchanged, norm 5); clip_norm=0 on [[0, 0], [0]]: "
        "all NaN, norm 0 (PyTorch: zeros); float32 and float64 (tensorflow-cpu 2.21.0)"),
    *(Divergence(
        f"{_layer}-eps-zero-squares-underflow",
        _layer, "*", "*", _eps_zero_on_underflowing_squares,
        "with eps = 0, a gradient element whose square underflows (|g| < sqrt(tiny): 1.1e-19 in float32, 1.5e-154 "
        "in float64) makes the second moment 0, and the update m / sqrt(v) divides by zero: +-inf, then NaN where "
        "an inf meets another inf. The exact ratio is finite, but the float64 oracle underflows too, so no "
        "implementation computes it, and where inf and NaN land depends on each one's order of operations",
        "adamw_step float64, w0 = 0, g = 5.8e-282 twice, eps 0, weight decay 0.01: w@1 = -inf everywhere; w@2 "
        "is NaN in the oracle and TensorFlow, -inf in PyTorch; rmsprop_step float32, g = 0, w0 = 1, weight decay "
        "1e-30 (L2: d = 1e-30, d^2 = 0): PyTorch's w@1 is -inf (found by the thorough profile)")
      for _layer in ("adam_step", "adamw_step", "rmsprop_step", "adagrad_step")),
    Divergence(
        "clip-norm-squares-underflow",
        "clip_by_norm", "*", "*", _squares_underflow,
        "Both frameworks sum squares in the gradient's dtype: below sqrt(tiny / eps) the squares are subnormal "
        "(PyTorch keeps them, losing digits, and loses them entirely below the smallest subnormal) or flushed to "
        "zero (TensorFlow's CPU kernels), so the norm is inexact or 0, and a zero threshold then gives 0 * inf = NaN "
        "in TensorFlow",
        "float32 g = [1e-19, 5e-20]: norm exact 1.118e-19, PyTorch 1.118e-19, TensorFlow 0; g = [1e-21, 5e-22]: "
        "PyTorch 1.118015e-21 (1.7e-5 relative), TensorFlow 0; g = [3.79e-29, 1.9e-29]: both 0 (exact 4.24e-29); "
        "float64 g = [1e-160, 5e-161]: PyTorch exact, TensorFlow 0 (torch 2.13, tensorflow-cpu 2.21.0)"),
    Divergence(
        "clip-global-norm-squares-underflow",
        "clip_by_global_norm", "*", "*", _squares_underflow,
        "The global norm sums squares in the gradients' dtype: see clip-norm-squares-underflow; the returned norm "
        "is inexact or 0, and TensorFlow's scale c * min(1 / norm, 1 / c) is NaN for c = 0 with a norm of 0",
        "float32 g1 = [3.79e-29]: exact norm 3.79e-29, TensorFlow 0 (and NaN gradients with max_norm = 0), PyTorch 0; "
        "see clip-norm-squares-underflow for the other sizes"),
    Divergence(
        "mlp-relu-kink-by-rounding",
        "train_step", "*", "*", _mlp_kink_by_rounding,
        "ReLU'(0) = 0 everywhere, but after an update a hidden pre-activation can land within rounding of 0; "
        "each framework's parameters carry their own rounding (within the step's tolerance), so the unit is on "
        "or off by rounding, and its gradient (and every later step) differs",
        "float32, sgd_momentum, lr 0.234, momentum 0.569, max_norm 0.914, D = 1: after step 1 the oracle's "
        "b1[3] is -5.1e-18 (unit off, gb1@2[3] = 0); PyTorch's is on the other side (gb1@2[3] = 5.4e-4), and "
        "b1@4[3] is -1.2e-5 against the oracle's 1.8e-4 (torch 2.13)"),
    Divergence(
        "mlp-adam-normalizes-rounding-noise",
        "train_step", "*", "*", _mlp_adam_gradient_at_rounding,
        "Adam divides each gradient element by its own running size: an element that is rounding noise of the "
        "backward pass (a softmax probability within eps of its label, p - 1) becomes a step of about lr in any "
        "framework, of a size and sign the noise decides (the gradient itself passes: its error is eps of the "
        "gradient's scale)",
        "float32, Adam lr 0.1, eps 1e-8, x (1, 3, 1): b2@1 PyTorch 0.0749, oracle 2.8e-10 (its exact gradient ~3e-9 "
        "is a 0.25 step for m / (sqrt(v) + eps), the oracle's a full one); float64: TensorFlow W2@3 -1 against "
        "-0.999998941 (torch 2.13, tensorflow-cpu 2.21.0)"),
    Divergence(
        "tf-flush-to-zero-mlp-relu",
        "train_step", "tensorflow", "*", _mlp_subnormal_pre_activation,
        "TensorFlow's CPU kernels flush subnormal results to zero: a hidden pre-activation x W1 + b1 that is "
        "subnormal becomes 0, ReLU passes no gradient, and the unit's weights stop moving (as in "
        "tf-flush-to-zero-residual-relu)",
        "float32, x[0] = [1.18e-38, -3, 0], W1[:, 0] = [0.259, 0, 0.806], b1 = 0: a = 3.0e-39 > 0; Keras gives "
        "gW1@1 = 0 (the oracle and PyTorch -0.365 in W1[1, 0]) and W1@1[1, 0] = 0 against 0.112 (tensorflow-cpu "
        "2.21.0, keras 3.15.1)"),
    # ---- zero-size arrays (a batch of 0)
    *(Divergence(
        f"keras-loss-empty-batch-{name}",
        name, "tensorflow", "*",
        lambda c: next(iter(c.arrays.values())).size == 0 and c.attrs["reduction"] != "none"
        and "pos_weight" not in c.arrays,
        "Keras' Loss.reduce_values returns the per-sample losses unreduced when they have shape (0,) (keras/src/"
        "losses/loss.py: '... or tuple(values.shape) == (0,)'): a batch of 0 reduced by 'sum' or a mean gives an "
        "empty loss, where the oracle and PyTorch give a scalar (a sum over nothing is 0, a mean NaN)",
        "pred, target (0, 3): keras.losses.MeanSquaredError()(...) has shape (0,); PyTorch's MSELoss gives nan "
        "('mean') and 0.0 ('sum'), gradients (0, 3) in both frameworks (tensorflow-cpu 2.21.0, keras 3.15.1; also "
        "L1, Huber, BinaryCrossentropy and SparseCategoricalCrossentropy; tf.nn.weighted_cross_entropy_with_logits "
        "reduced by tf.reduce_mean, the pos_weight route, gives nan as PyTorch does)")
      for name in ("mse", "l1", "huber", "binary_cross_entropy_with_logits", "cross_entropy")),
    *(Divergence(
        f"tf-conv-float32-empty-batch-shape-{name}",
        name, "tensorflow", "float32",
        lambda c: c.arrays["x"].shape[0] == 0 and c.cotangents["y"].shape != c.arrays["x"].shape,
        "TensorFlow's float32 CPU convolution (oneDNN) hands a batch of 0 back as it came, in the input's shape, "
        "not the output's: the output (and for a transposed convolution, whose input gradient is a convolution, "
        "the gradient of x) has the wrong shape, unless the two shapes agree (or agree after the adapter's "
        "subsampling for stride with dilation); float64 (no oneDNN) is right",
        "x (0, 3, 3, 1) NHWC, kernel 2x2, 'valid': keras Conv2D and tf.nn.conv2d give shape (0, 3, 3, 1) in "
        "float32, (0, 2, 2, 1) in float64; tf.nn.conv2d of x (0, 7, 7, 2), W (k, k, 2, 3) gives (0, 7, 7, 2) for "
        "every k in 1..3, stride 1 or 2, dilation 1 or 2 (Conv1D likewise (0, 3, 1) for (0, 2, 1)); "
        "Conv2DTranspose's x (0, 2, 2, 1) gets a gradient of shape (0, 3, 3, 1) in float32; PyTorch matches the oracle (tensorflow-cpu 2.21.0, "
        "keras 3.15.1)")
      for name in ("conv1d", "conv2d", "conv_transpose2d")),
    *(Divergence(
        f"keras-lstm-empty-batch-{name}",
        name, "tensorflow", "*", lambda c: c.arrays["x"].shape[0] == 0,
        "Keras' LSTMCell adds its bias to a (0, 4 H) pre-activation and TensorFlow's BiasAdd refuses it: an LSTM "
        "refuses a batch of 0 (SimpleRNN and GRU take it; PyTorch's nn.LSTM answers with empty outputs and zero "
        "weight gradients, as the oracle does)",
        "x (0, 2, 2), H = 2: InvalidArgumentError 'Exception encountered when calling LSTMCell.call(). Biases must "
        "be 1D: [0,8] [Op:BiasAdd]' in float32 and float64 (tensorflow-cpu 2.21.0, keras 3.15.1); nn.LSTM: y "
        "(0, 2, 2), gW_ih = 0 (torch 2.13)")
      for name in ("lstm", "stacked_lstm", "bidirectional_lstm", "masked_lstm", "masked_bidirectional_lstm")),
    *(Divergence(
        f"torch-pack-empty-batch-{name}",
        name, "torch", "*", lambda c: c.arrays["x"].shape[0] == 0,
        "PyTorch's variable-length path, pack_padded_sequence, refuses a batch of 0 (there is nothing to pack); "
        "the oracle and Keras (a mask over no sequence) answer with empty outputs and zero weight gradients "
        "(Keras' LSTM refuses every batch of 0 too: keras-lstm-empty-batch-*)",
        "x (0, 2, 2), lengths (0,): RuntimeError 'Cannot pack empty tensors.' (torch 2.13); Keras SimpleRNN and GRU "
        "with mask=: y (0, 2, 2), gradients match the oracle (tensorflow-cpu 2.21.0, keras 3.15.1)")
      for name in ("masked_rnn", "masked_lstm", "masked_gru", "masked_bidirectional_lstm", "masked_bidirectional_gru")),
    Divergence(
        "tf-batch-norm-empty-batch-nan",
        "batch_norm", "tensorflow", "*", lambda c: c.arrays["x"].size == 0,
        "a batch of 0: the batch statistics are a mean over nothing (0/0 = NaN) in Keras, and the gamma gradient "
        "sum(g xhat) picks up the NaN through 1/sqrt(var + eps); the oracle and PyTorch sum over nothing (0)",
        "x (0, 3, 2), keras BatchNormalization(axis=1, training=True): y (0, 3, 2), ggamma [nan, nan, nan], gbeta "
        "[0, 0, 0], moving_mean becomes nan; PyTorch's BatchNorm1d: ggamma = gbeta = 0 (tensorflow-cpu 2.21.0, "
        "keras 3.15.1, torch 2.13)"),
]


assert len({d.key for d in KNOWN_DIVERGENCES}) == len(KNOWN_DIVERGENCES), "divergence keys must be unique"


def divergence_notes() -> list[dict]:
    """The table as the report records it (a report shows what its run knew)."""
    return [{"key": d.key, "layer": d.layer, "framework": d.framework, "dtype": d.dtype, "reason": d.reason,
             "measured": d.measured, "bound": "any error" if d.bound is None else f"max_rel_err <= {d.bound:g}"}
            for d in KNOWN_DIVERGENCES]


def known_divergences(case, framework: str) -> list[Divergence]:
    """Every known divergence whose condition the case meets, in table order."""
    return [d for d in KNOWN_DIVERGENCES if d.matches(case, framework)]
