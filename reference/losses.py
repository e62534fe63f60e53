"""Loss functions: each returns a scalar, reduced as the frameworks reduce.

Regression losses average over every element (PyTorch ``reduction='mean'``;
Keras' default reduction averages the last axis, then the batch, which is the
same number when every row has the same length).
"""

import numpy as np

from .activations import _sigmoid, log_softmax
from .spec import require


def _pair(pred, target):
    require(target.shape == pred.shape, "target", f"expected shape {pred.shape} like pred, got {target.shape}")
    return pred - target


def mse(pred, target):
    """Mean squared error: L = mean((pred - target)^2).

    Gradients: gpred = 2 (pred - target) / n,  gtarget = -gpred. Smooth.
    """
    d = _pair(pred, target)
    return np.mean(d * d), d


def mse_vjp(d, g):
    gp = g * 2.0 * d / d.size
    return {"pred": gp, "target": -gp}


def l1(pred, target):
    """Mean absolute error: L = mean(|pred - target|).

    Gradients: gpred = sign(pred - target) / n,  gtarget = -gpred; sign(0) = 0,
    so an exact match passes no gradient (both frameworks).
    """
    d = _pair(pred, target)
    return np.mean(np.abs(d)), d


def l1_vjp(d, g):
    gp = g * np.sign(d) / d.size
    return {"pred": gp, "target": -gp}


def huber(pred, target, delta):
    """Huber loss: L = mean(h(d)), d = pred - target,
    h(d) = d^2 / 2 if |d| <= delta else delta (|d| - delta / 2).

    Gradients: gpred = clip(d, -delta, delta) / n,  gtarget = -gpred. h is C^1:
    at |d| = delta both pieces give slope +-delta.
    """
    require(delta > 0, "delta", f"must be > 0, got {delta}")
    d = _pair(pred, target)
    a = np.abs(d)
    h = np.where(a <= delta, 0.5 * d * d, delta * (a - 0.5 * delta))
    return np.mean(h), (d, delta)


def huber_vjp(res, g):
    d, delta = res
    gp = g * np.clip(d, -delta, delta) / d.size
    return {"pred": gp, "target": -gp}


def cross_entropy(logits, labels, label_smoothing, reduction):
    """Softmax cross-entropy from logits and integer labels, with label smoothing.

    q = (1 - eps) onehot(labels) + eps / K;  l_n = -sum_k q_nk log_softmax(z_n)_k;
    L = mean_n l_n (``reduction="mean"``) or sum_n l_n (``"sum"``).
    Shapes: logits (N, K), labels (N,) ints in [0, K).

    Gradient: gz = (softmax(z) - q) / N for the mean, without the 1/N for the sum.
    Smooth in the logits; labels get no gradient.
    """
    require(logits.ndim == 2, "logits", f"expected (N, K), got shape {logits.shape}")
    n, k = logits.shape
    require(labels.shape == (n,), "labels", f"expected ({n},) to match logits {logits.shape}, got {labels.shape}")
    require(np.issubdtype(labels.dtype, np.integer), "labels", f"expected integers, got {labels.dtype}")
    require(labels.size == 0 or (labels.min() >= 0 and labels.max() < k), "labels", f"out of range [0, {k}): {labels}")
    require(0.0 <= label_smoothing <= 1.0, "label_smoothing", f"must be in [0, 1], got {label_smoothing}")
    require(reduction in ("mean", "sum"), "reduction", f"expected 'mean' or 'sum', got {reduction!r}")
    logp, (p, _) = log_softmax(logits, axis=1)
    q = np.full_like(logp, label_smoothing / k)
    q[np.arange(n), labels] += 1.0 - label_smoothing
    per_sample = -(q * logp).sum(axis=1)
    scale = 1.0 / n if reduction == "mean" else 1.0
    return scale * per_sample.sum(), (p - q, scale)


def cross_entropy_vjp(res, g):
    p_minus_q, scale = res
    return {"logits": g * scale * p_minus_q}


def binary_cross_entropy_with_logits(logits, targets):
    """Binary cross-entropy on logits: L = mean(max(z, 0) - z t + log(1 + e^-|z|)).

    Gradients: gz = (sigma(z) - t) / n,  gt = -z / n. Smooth (the max and |z|
    kinks cancel in the sum).
    """
    require(targets.shape == logits.shape, "targets", f"expected shape {logits.shape} like logits, got {targets.shape}")
    z, t = logits, targets
    per_element = np.maximum(z, 0.0) - z * t + np.log1p(np.exp(-np.abs(z)))
    return np.mean(per_element), (z, t)


def binary_cross_entropy_with_logits_vjp(res, g):
    z, t = res
    return {"logits": g * (_sigmoid(z) - t) / z.size, "targets": -g * z / z.size}
