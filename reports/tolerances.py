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
kappa = max(1, max|x|, max|gamma|) / sqrt(var + eps)); the report shows it.
The scale never drops below tiny / (eps rtol condition): under tiny / eps a
result's own rounding error is subnormal, and TensorFlow flushes those to zero.

Tolerances are tightened from the report's measurements, never loosened to get
green: every override says why it exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..adapters.tf_adapter import xla_conv1d_heap_corruption
from ..reference.activations import SELU_ALPHA, SELU_SCALE
from ..reference.recurrent import rnn

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
class Divergence:
    """A difference between a framework and the oracle that is known and explained.

    ``key`` names it in rows and reports, stably: a report merged long after
    a divergence was added or removed still means the same by it.
    A failing or erroring row whose case satisfies ``when`` becomes
    ``known_divergence``: still shown with its measured error, never hidden.
    ``bound``: the largest ``max_rel_err`` the divergence can explain; a larger
    error still fails (None: the divergence can change a result entirely, so
    ``when`` must be narrow). ``measured`` says what each framework does here.
    """

    key: str
    layer: str
    framework: str
    dtype: str
    when: Callable
    reason: str
    measured: str
    bound: float | None = None

    def explains(self, row: dict) -> bool:
        return self.bound is None or row["status"] == "fail" and row["max_rel_err"] <= self.bound

    def matches(self, case, framework: str) -> bool:
        return (self.layer == case.layer and self.framework in ("*", framework)
                and self.dtype in ("*", case.dtype) and bool(self.when(case)))


def _x(case):
    return case.arrays["x"]


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
    a = {k: v.astype(np.float64) for k, v in case.arrays.items()}
    y = rnn(**a, nonlinearity="relu")[0]["y"]
    h_prev = np.concatenate([a["h0"][:, None], y[:, :-1]], axis=1)
    pre = a["x"] @ a["W_ih"] + a["b_ih"] + h_prev @ a["W_hh"] + a["b_hh"]
    size = (np.abs(a["x"]) @ np.abs(a["W_ih"]) + np.abs(a["b_ih"]) + np.abs(h_prev) @ np.abs(a["W_hh"])
            + np.abs(a["b_hh"]))
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


KNOWN_DIVERGENCES: list[Divergence] = [
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
        "rnn", "tensorflow", "*", _subnormal_rnn_pre_activation,
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
]


assert len({d.key for d in KNOWN_DIVERGENCES}) == len(KNOWN_DIVERGENCES), "divergence keys must be unique"


def divergence_notes() -> list[dict]:
    """The table as the report records it (a report shows what its run knew)."""
    return [{"key": d.key, "layer": d.layer, "framework": d.framework, "dtype": d.dtype, "reason": d.reason,
             "measured": d.measured, "bound": "any error" if d.bound is None else f"max_rel_err <= {d.bound:g}"}
            for d in KNOWN_DIVERGENCES]


def known_divergence(case, framework: str) -> Divergence | None:
    return next((d for d in KNOWN_DIVERGENCES if d.matches(case, framework)), None)
