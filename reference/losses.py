"""Loss functions, reduced as PyTorch reduces them (``reduction``).

``reduction``: "mean" (over every element, or the weighted mean for weighted
cross-entropy), "sum" (over every element), or "none" (the unreduced losses:
the shape of the input for the element-wise losses, (N, d1, ...) for
cross-entropy). Keras reduces per-sample losses, each the mean over the last
axis: its "sum" of an (N, D) loss is PyTorch's sum / D and its "none" is (N,);
the adapter maps (adapters/tensorflow/losses.py), the oracle computes PyTorch's numbers.
"""

import numpy as np

from .activations import _sigmoid, log_softmax
from .catalogue import NONFINITE, SUBNORMAL, S, attr_is, batch_of, holds, registrar
from .spec import Array, Choice, Drawn, Edge, Float, Int, Labels, Layer, Real, Shape, require

REDUCTIONS = ("mean", "sum", "none")
EMPTY_MEANS = ("zero", "nan")


def _check_reduction(reduction):
    require(reduction in REDUCTIONS, "reduction", f"expected one of {REDUCTIONS}, got {reduction!r}")


def _reduce(per_element, reduction):
    """The reduced loss, and the factor d loss / d per_element (a scalar, or g itself for "none")."""
    _check_reduction(reduction)
    if reduction == "none":
        return per_element, None
    if reduction == "sum":
        return per_element.sum(), 1.0
    # A mean over nothing (a batch of 0) is 0/0 = NaN, as in PyTorch; its gradient has no element.
    return (per_element.sum() / per_element.size if per_element.size else np.float64(np.nan)), (
        1.0 / max(per_element.size, 1))


def _spread(g, factor):
    """The cotangent of each element: g times the reduction's factor (g itself for "none")."""
    return g if factor is None else g * factor


def _pair(pred, target):
    require(target.shape == pred.shape, "target", f"expected shape {pred.shape} like pred, got {target.shape}")
    return pred - target


def mse(pred, target, reduction):
    """Squared error: l = (pred - target)^2, reduced (mean, sum or none).

    Gradients: gpred = 2 (pred - target) g_l,  gtarget = -gpred, where g_l is
    the cotangent of each element (g / n for the mean, g for the sum). Smooth.
    """
    d = _pair(pred, target)
    out, factor = _reduce(d * d, reduction)
    return out, (d, factor)


def mse_vjp(res, g):
    d, factor = res
    gp = _spread(g, factor) * 2.0 * d
    return {"pred": gp, "target": -gp}


def l1(pred, target, reduction):
    """Absolute error: l = |pred - target|, reduced (mean, sum or none).

    Gradients: gpred = sign(pred - target) g_l,  gtarget = -gpred; sign(0) = 0,
    so an exact match passes no gradient (both frameworks).
    """
    d = _pair(pred, target)
    out, factor = _reduce(np.abs(d), reduction)
    return out, (d, factor)


def l1_vjp(res, g):
    d, factor = res
    gp = _spread(g, factor) * np.sign(d)
    return {"pred": gp, "target": -gp}


def huber(pred, target, delta, reduction):
    """Huber loss: l = h(d), d = pred - target, reduced (mean, sum or none),
    h(d) = d^2 / 2 if |d| <= delta else delta (|d| - delta / 2).

    Gradients: gpred = clip(d, -delta, delta) g_l,  gtarget = -gpred. h is C^1:
    at |d| = delta both pieces give slope +-delta.
    """
    require(bool(np.isfinite(delta)) and delta > 0, "delta", f"must be a positive finite number, got {delta} "
            "(an infinite delta is 0.5 * mse: use mse)")
    d = _pair(pred, target)
    a = np.abs(d)
    h = np.where(a <= delta, 0.5 * d * d, delta * (a - 0.5 * delta))
    out, factor = _reduce(h, reduction)
    return out, (d, delta, factor)


def huber_vjp(res, g):
    d, delta, factor = res
    gp = _spread(g, factor) * np.clip(d, -delta, delta)
    return {"pred": gp, "target": -gp}


def smooth_l1(pred, target, beta, reduction):
    """Smooth L1 loss (PyTorch's SmoothL1Loss, Huber's twin): l = s(d), d = pred - target,
    reduced (mean, sum or none),
    s(d) = d^2 / (2 beta) if |d| < beta else |d| - beta / 2,
    i.e. huber(d, delta=beta) / beta for beta > 0; beta = 0 is the L1 loss |d| (PyTorch
    runs l1_loss there).

    Gradients: gpred = clip(d / beta, -1, 1) g_l (beta = 0: sign(d) g_l, sign(0) = 0),
    gtarget = -gpred. C^1 for beta > 0: at |d| = beta both pieces give slope +-1.
    """
    require(bool(np.isfinite(beta)) and beta >= 0, "beta", f"must be a finite number >= 0, got {beta} (PyTorch "
            "refuses a negative beta; an infinite one gives 0 everywhere)")
    d = _pair(pred, target)
    a = np.abs(d)
    s = a if beta == 0 else np.where(a < beta, 0.5 * d * d / beta, a - 0.5 * beta)
    out, factor = _reduce(s, reduction)
    return out, (d, beta, factor)


def smooth_l1_vjp(res, g):
    d, beta, factor = res
    gp = _spread(g, factor) * (np.sign(d) if beta == 0 else np.clip(d / beta, -1.0, 1.0))
    return {"pred": gp, "target": -gp}


def cross_entropy(logits, labels=None, probs=None, weight=None, *, label_smoothing, reduction, target_type,
                  ignore_index, empty_mean="zero"):
    """Softmax cross-entropy from logits (PyTorch's CrossEntropyLoss), classes on axis 1.

    Targets: class indices ``labels`` (N, d1, ...) (``target_type="indices"``) or
    class probabilities ``probs`` (N, K, d1, ...) (``"probabilities"``). With
    label smoothing eps the target is q = (1 - eps) onehot(y) (or (1 - eps) probs)
    + eps / K; class weights w (K,) (1 without ``weight``) weigh each class's term:

      l_i = -sum_k w_k q_ik log softmax(z_i)_k     (one l per sample i = (n, d1, ...)),

    which for indices without smoothing is w[y_i] (-log p_{i, y_i}). A label equal
    to ``ignore_index`` gives l_i = 0 and leaves the mean (indices only; -100,
    PyTorch's default, matches no label). Reductions: "none" -> l (N, d1, ...);
    "sum"; "mean" = sum_i l_i / W with W = sum of w[y_i] over the labels not
    ignored (indices; the count of them without weights) or the number of samples
    (probabilities, weighted or not: PyTorch's rule).

    Gradients: gz_ik = c_i ((sum_j w_j q_ij) p_ik - w_k q_ik) and, for
    probabilities, gprobs_ik = -c_i (1 - eps) w_k log p_ik, where c_i is the
    cotangent of l_i (g / W for the mean). Smooth; labels and weights get none.

    Non-finite logits follow IEEE arithmetic, with one rule from the formula: for
    indices a class of weight 0 is no term of l_i (-log p_y selects p_y), so a -inf
    logit of another class leaves l_i finite, and an ignored label's l_i is 0
    whatever its logits; probability targets weigh every class, and 0 * log 0 is NaN.

    A mean over nothing (every label ignored, W = 0) is a convention,
    ``empty_mean``: "zero" (loss 0, gradient 0: Keras' divide_no_nan) or "nan"
    (PyTorch: loss 0/0 = NaN; the rows of ignored labels get gradient 0, any
    other row NaN).
    """
    require(logits.ndim >= 2, "logits", f"expected (N, K, d1, ...), got shape {logits.shape}")
    require(empty_mean in EMPTY_MEANS, "empty_mean", f"expected one of {EMPTY_MEANS}, got {empty_mean!r}")
    _check_reduction(reduction)
    n, k = logits.shape[:2]
    samples = (n,) + logits.shape[2:]
    require(0.0 <= label_smoothing <= 1.0, "label_smoothing", f"must be in [0, 1], got {label_smoothing}")
    require(target_type in ("indices", "probabilities"), "target_type",
            f"expected 'indices' or 'probabilities', got {target_type!r}")
    w = np.ones(k)
    if weight is not None:
        require(weight.shape == (k,), "weight",
                f"expected ({k},), one per class of logits {logits.shape}, got {weight.shape}")
        w = weight
    logp, (p, _) = log_softmax(np.moveaxis(logits, 1, -1), axis=-1)  # (N, d1, ..., K)
    if target_type == "indices":
        require(labels is not None and probs is None, "labels", "indices targets take labels and no probs")
        require(labels.shape == samples, "labels",
                f"expected {samples} to match logits {logits.shape}, got {labels.shape}")
        require(np.issubdtype(labels.dtype, np.integer), "labels", f"expected integers, got {labels.dtype}")
        keep = labels != ignore_index
        require(bool(np.all(~keep | ((labels >= 0) & (labels < k)))), "labels", f"out of range [0, {k}): {labels}")
        onehot = np.where(keep, labels, 0)[..., None] == np.arange(k)
        q = (1.0 - label_smoothing) * onehot + label_smoothing / k
        total = float((w[np.where(keep, labels, 0)] * keep).sum())
    else:
        require(probs is not None and labels is None, "probs", "probability targets take probs and no labels")
        require(probs.shape == logits.shape, "probs", f"expected shape {logits.shape} like logits, got {probs.shape}")
        require(ignore_index == -100, "ignore_index",
                f"probability targets ignore no class; expected -100, got {ignore_index}")
        keep = np.ones(samples, dtype=bool)
        q = (1.0 - label_smoothing) * np.moveaxis(probs, 1, -1) + label_smoothing / k
        total = float(np.prod(samples))
    c = w * q * keep[..., None]  # the weight each log-probability carries
    terms = c * logp
    if target_type == "indices":
        # -w_y log p_y selects: a class with no weight (another class's -inf logit, an
        # ignored label's row) is not a term, where 0 * log 0 would make it NaN.
        terms = np.where(c != 0, terms, 0.0)
    per_sample = -terms.sum(axis=-1)
    if reduction == "none":
        out, scale = per_sample, None
    elif reduction == "sum":
        out, scale = per_sample.sum(), 1.0
    elif total != 0:
        out, scale = per_sample.sum() / total, 1.0 / total
    else:
        out, scale = (np.nan, np.inf) if empty_mean == "nan" else (0.0, 0.0)
    res = {"c": c, "p": p, "keep": keep, "scale": scale, "logp": logp, "w": w,
           "soft": target_type == "probabilities", "eps": label_smoothing}
    return out, res


def cross_entropy_vjp(res, g):
    c, keep = res["c"], res["keep"]
    coef = g if res["scale"] is None else g * res["scale"]
    # Rows of ignored labels carry nothing, even where the mean's factor is infinite or their
    # logits are NaN (PyTorch skips them): selected out, not multiplied by 0.
    with np.errstate(invalid="ignore"):
        coef = np.where(keep, coef, 0.0)[..., None]
        gz = np.where(keep[..., None], coef * (c.sum(axis=-1, keepdims=True) * res["p"] - c), 0.0)
    grads = {"logits": np.moveaxis(gz, -1, 1)}
    if res["soft"]:
        grads["probs"] = np.moveaxis(-coef * (1.0 - res["eps"]) * res["w"] * res["logp"], -1, 1)
    return grads


def binary_cross_entropy_with_logits(logits, targets, weight=None, pos_weight=None, *, reduction):
    """Binary cross-entropy on logits (PyTorch's BCEWithLogitsLoss), reduced (mean, sum or none):

      l = w [pw t softplus(-z) + (1 - t) softplus(z)] = -w [pw t log sigma(z) + (1 - t) log(1 - sigma(z))],

    with element weights ``weight`` w (shape of z; 1 without) and ``pos_weight`` pw
    (D,), broadcast along the last axis (1 without). The mean divides by the
    number of elements, not by the weights (PyTorch's rule).

    Gradients: gz = g_l w [(1 - t) sigma(z) - pw t sigma(-z)],
    gt = g_l w [pw softplus(-z) - softplus(z)] (= -z g_l without weights).
    Smooth (the max and |z| kinks of softplus cancel); weights get no gradient.
    """
    require(targets.shape == logits.shape, "targets", f"expected shape {logits.shape} like logits, got {targets.shape}")
    z, t = logits, targets
    w = np.ones(()) if weight is None else weight
    pw = np.ones(()) if pos_weight is None else pos_weight
    require(weight is None or weight.shape == z.shape, "weight", f"expected shape {z.shape} like logits, got {w.shape}")
    require(pos_weight is None or pos_weight.shape == z.shape[-1:], "pos_weight",
            f"expected {z.shape[-1:]}, one per class (the last axis of logits {z.shape}), got {pw.shape}")
    tail = np.log1p(np.exp(-np.abs(z)))
    sp, sp_neg = np.maximum(z, 0.0) + tail, np.maximum(-z, 0.0) + tail  # softplus(z), softplus(-z)
    out, factor = _reduce(w * (pw * t * sp_neg + (1.0 - t) * sp), reduction)
    return out, (z, t, w, pw, sp, sp_neg, factor)


def binary_cross_entropy_with_logits_vjp(res, g):
    z, t, w, pw, sp, sp_neg, factor = res
    ge = _spread(g, factor) * w
    return {"logits": ge * ((1.0 - t) * _sigmoid(z) - pw * t * _sigmoid(-z)), "targets": ge * (pw * sp_neg - sp)}


# ---- catalogue entries --------------------------------------------------------

register = registrar("losses")

# Every loss takes PyTorch's three reductions; "none" returns the unreduced losses,
# which get a random cotangent like any other output.

REDUCTION = Choice("mean", "sum", "none")
# A batch of 0 now and then: the mean over nothing is NaN (see losses._reduce).
REGRESSION = {"N": Int(1, 4, edges=(0,)), "D": Int(1, 5)}
REDUCED = (attr_is("reduction", "none"), attr_is("reduction", "sum"), attr_is("reduction", "mean"))
EQUAL = Edge("pred_equals_target", lambda c: bool(np.any(c.arrays["pred"] == c.arrays["target"])))  # l1's kink
# Huber with differences on both sides of delta: the parabola and the line in one case.
def _both_branches(attr):
    return Edge("both_branches", lambda c: bool(np.any(_diff(c) <= c.attrs[attr]))
                and bool(np.any(_diff(c) > c.attrs[attr])))


BOTH_BRANCHES = _both_branches("delta")


def _diff(case):
    d = np.abs(case.arrays["pred"].astype(float) - case.arrays["target"])
    return d[np.isfinite(d)]


for _name, _fwd, _vjp, _attrs, _edges in (
    ("mse", mse, mse_vjp, {}, ()),
    ("l1", l1, l1_vjp, {}, (EQUAL,)),
    # Deltas from 1e-3 (every |d| on the line) to 1e3 (every |d| on the parabola), and the kink d = +-delta.
    ("huber", huber, huber_vjp, {"delta": Float(1e-3, 1e3, edges=(1.0, 1e-3, 0.5, 2.0, 1e3))}, (EQUAL, BOTH_BRANCHES)),
    # beta from 1e-3 to 1e3 as huber's delta, beta = 1 (PyTorch's default) and beta = 0 (the L1 loss).
    ("smooth_l1", smooth_l1, smooth_l1_vjp, {"beta": Float(1e-3, 1e3, edges=(1.0, 1e-3, 0.5, 2.0, 1e3, 0.0))},
     (EQUAL, _both_branches("beta"), Edge("beta_not_1", lambda c: c.attrs["beta"] not in (0.0, 1.0), {"beta": 0.5}),
      Edge("beta_0", lambda c: c.attrs["beta"] == 0, {"beta": 0.0}))),
):
    register(Layer(
        _name, _fwd, _vjp, dims=REGRESSION, attrs={**_attrs, "reduction": REDUCTION}, loss=True, empty=True,
        nonfinite=("pred", "target"), edges=(batch_of(0, "pred"), batch_of(1, "pred"), *REDUCED, *_edges,
                                             NONFINITE, SUBNORMAL),
        arrays={"pred": Array(S("N", "D")), "target": Array(S("N", "D"), Real(like="pred"))},
    ))


def _class_first(d, attrs):
    """(N, K, d1, ...): logits and probability targets, classes on axis 1 (PyTorch's layout)."""
    return (d.N, d.K, *d.spatial)


def _indices(attrs):
    return attrs["target_type"] == "indices"


# Class-index or probability targets (drawn as a dim: ignore_index only applies to
# indices; probabilities sum to 1 over the classes now and then, any values in
# [0, 1] otherwise, which PyTorch takes as they are); no, one or two spatial axes.
# ignore_index is -100 (PyTorch's default: no label), class 0 (hypothesis draws label
# arrays of zeros often, so every label of the batch is ignored now and then) or the
# last class. Class weights are
# positive: a zero weight on every label of a batch makes PyTorch's weighted mean
# 0/0 and its gradient NaN, which no perturbation could be seen in.
register(Layer(
    "cross_entropy", cross_entropy, cross_entropy_vjp, loss=True, empty=True, nonfinite=("logits",),
    edges=(batch_of(0, "logits"), *REDUCED[:2],
           Edge("probabilities", lambda c: c.attrs["target_type"] == "probabilities", {"soft": 1}),
           Edge("every_label_ignored", lambda c: "labels" in c.arrays and c.arrays["labels"].size > 0
                and bool(np.all(c.arrays["labels"] == c.attrs["ignore_index"])), {"soft": 0, "N": 1}),
           Edge("label_smoothing", lambda c: c.attrs["label_smoothing"] > 0, {"label_smoothing": 0.1}),
           Edge("class_weights", lambda c: "weight" in c.arrays),
           Edge("spatial", lambda c: c.arrays["logits"].ndim > 2), NONFINITE, SUBNORMAL),
    dims={"N": Int(1, 5, edges=(0,)), "K": Int(2, 6), "spatial": Shape(min_dims=0, max_dims=2, min_side=1, max_side=3),
          "soft": Int(0, 1)},
    attrs={"label_smoothing": Float(0.0, 0.5, edges=(0.0, 0.1)), "reduction": REDUCTION,
           "target_type": Drawn(str, lambda d: Choice(("indices", "probabilities")[d.soft])),
           "ignore_index": Drawn(int, lambda d: Choice(-100) if d.soft else Choice(-100, 0, d.K - 1))},
    arrays={
        # +-20: p of the label rounds to 1 and p - q cancels (the precision check's tail).
        "logits": Array(_class_first, Real(-20.0, 20.0, edges=(0.0, 15.0, -15.0, 20.0, -20.0), ties=True)),
        "labels": Array(S("N", "spatial"), Labels("K"), when=_indices),
        "probs": Array(_class_first, Real(0.0, 1.0, edges=(0.0, 1.0, 0.5), sum_to_one=1),
                       when=lambda a: not _indices(a)),
        "weight": Array(S("K"), Real(0.1, 3.0, edges=(1.0,)), optional=True, grad=False),
    },
    conventions={"empty_mean": "zero"},
))

register(Layer(
    "binary_cross_entropy_with_logits", binary_cross_entropy_with_logits,
    binary_cross_entropy_with_logits_vjp, loss=True, empty=True, nonfinite=("logits",),
    edges=(batch_of(0, "logits"), *REDUCED[:2], Edge("pos_weight", lambda c: "pos_weight" in c.arrays),
           Edge("element_weight", lambda c: "weight" in c.arrays), holds("logit_zero", "logits", lambda z: z == 0),
           holds("saturated", "logits", lambda z: np.abs(z) >= 17.5), NONFINITE, SUBNORMAL),
    dims=REGRESSION, attrs={"reduction": REDUCTION},
    arrays={
        # sigma(z) - t past z = 16.6 (float32) or 36.7 (float64) with t = 1: 1 - sigma cancels to 0.
        "logits": Array(S("N", "D"), Real(-40.0, 40.0, edges=(0.0, 20.0, -20.0, 17.5, -17.5, 37.5, -37.5,
                                                               1e-30, -1e-30))),
        "targets": Array(S("N", "D"), Real(0.0, 1.0, edges=(0.0, 1.0, 0.5))),
        "weight": Array(S("N", "D"), Real(0.0, 2.0, edges=(0.0, 1.0)), optional=True, grad=False),
        "pos_weight": Array(S("D"), Real(0.0, 4.0, edges=(1.0, 0.0)), optional=True, grad=False),
    },
))

