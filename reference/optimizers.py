"""Optimizer trajectories: k update steps of SGD, SGD with momentum, Adam, AdamW,
RMSprop and Adagrad from given parameters and given gradients.

Forward-only catalogue entries (no cotangent): ``w0`` (any shape) and ``grads``
(k, *w0.shape), the gradient fed to step t = 1..k being ``grads[t - 1]``. The
outputs are named per step: ``w@t`` (the parameters after step t) and the
optimizer state after step t where both frameworks keep it (``m@t`` the first
moment or momentum, ``v@t`` the second moment, ``mean@t`` RMSprop's centered
mean gradient, ``sum@t`` Adagrad's accumulator). The loop over steps is the only
Python loop; a step is elementwise.

Every place where the frameworks write the update differently is an explicit
option here (a catalogue *convention*: an adapter says which its framework
follows, and is compared with the oracle under it):

* ``decay_form``: ``"l2"`` adds ``wd w`` to the gradient before the update
  (PyTorch's SGD, Adam, RMSprop, Adagrad); ``"decoupled"`` first shrinks
  ``w <- w - lr wd w`` and updates with the plain gradient (PyTorch's AdamW;
  every Keras optimizer's ``weight_decay``). For plain SGD the two are the same
  update.
* ``eps_form`` (Adam): ``"corrected"`` ``w -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)``
  (PyTorch); ``"uncorrected"`` ``w -= lr sqrt(bc2) / bc1 * m / (sqrt(v) + eps)``
  (Keras' "epsilon hat"), with ``bc1 = 1 - beta_1^t``, ``bc2 = 1 - beta_2^t``.
  They agree for eps = 0 only: eps_keras = eps_torch sqrt(bc2) changes every step.
* ``eps_form`` (RMSprop, Adagrad): ``"outside"`` ``d / (sqrt(s) + eps)`` (PyTorch);
  ``"inside"`` ``d / sqrt(s + eps)`` (Keras).
* ``momentum_form``: ``"buffer"`` ``b <- mu b + d; w <- w - lr b`` (PyTorch; the
  state is b); ``"velocity"`` the same recursion written for the velocity
  (Keras): SGD ``v = -lr b``, ``v <- mu v - lr d; w <- w + v``; RMSprop
  ``v = lr b``, ``v <- mu v + lr d / denom; w <- w - v``. Equal updates at a
  constant learning rate; the compared state differs by the factor.
* ``float32_hypers``: the hyperparameters a framework holds in float32 whatever
  the parameters' dtype, rounded so here first (only a float64 case can tell).
  Keras holds ``lr`` in a float32 variable and makes ``weight_decay``, SGD's
  ``momentum``, Adam's betas inside ``beta^t`` (``"beta_powers"``; its ``1 - beta``
  stays exact) and Adagrad's ``initial_accumulator_value`` with ``tf.cast`` of a
  Python float, which is float32 first.

Zero gradients with eps = 0 give 0 / 0 = NaN, as in both frameworks.
"""

from __future__ import annotations

import numpy as np

from .catalogue import S, attr_is, registrar
from .clipping import GRAD_VALUES
from .spec import Array, Choice, Edge, Float, Int, Layer, Real, Shape, require

DECAY_FORMS = ("l2", "decoupled")


HYPERS = ("lr", "weight_decay", "momentum", "beta_powers", "initial_accumulator_value")


def _held(float32_hypers, name: str, value: float) -> float:
    """``value`` as the framework holds hyperparameter ``name``: rounded to float32 if it is
    listed, a float32 subnormal flushed to 0 (TensorFlow's CPU kernels: Keras' Adagrad
    with initial_accumulator_value 1.4e-45 starts its float64 accumulator at 0)."""
    unknown = set(float32_hypers) - set(HYPERS)
    require(not unknown, "float32_hypers", f"unknown hyperparameter(s) {sorted(unknown)}; known: {HYPERS}")
    if name not in float32_hypers:
        return float(value)
    held = np.float32(value)
    return 0.0 if abs(held) < np.finfo(np.float32).tiny else float(held)


def _check(w0, grads, decay_form="l2"):
    require(grads.ndim >= 1 and grads.shape[1:] == w0.shape, "grads",
            f"expected shape (k, *{w0.shape}) (one gradient per step), got {grads.shape}")
    require(decay_form in DECAY_FORMS, "decay_form", f"expected one of {DECAY_FORMS}, got {decay_form!r}")


def _decay(w, g, lr, weight_decay, decay_form):
    """(w after a decoupled shrink, the gradient the update uses). No decay adds
    nothing at all (0 * w would carry a NaN parameter into the gradient's state)."""
    if weight_decay == 0:
        return w, g
    if decay_form == "decoupled":
        return w - lr * weight_decay * w, g
    return w, g + weight_decay * w


def sgd(w0, grads, *, lr, weight_decay, float32_hypers=()):
    """Plain SGD: ``w_t = w_{t-1} - lr (g_t + wd w_{t-1})``; outputs ``w@t``.

    L2 and decoupled weight decay are the same update here (Keras shrinks
    ``w - lr wd w`` first, then subtracts ``lr g``)."""
    _check(w0, grads)
    lr, weight_decay = _held(float32_hypers, "lr", lr), _held(float32_hypers, "weight_decay", weight_decay)
    w, out = w0, {}
    for t, g in enumerate(grads, 1):
        w = w - lr * (g + weight_decay * w)
        out[f"w@{t}"] = w
    return out, None


def sgd_momentum(w0, grads, *, lr, momentum, dampening, nesterov, weight_decay,
                 decay_form="l2", momentum_form="buffer", float32_hypers=()):
    """SGD with momentum (PyTorch's formulation): with ``d_t`` the gradient after weight decay,

        b_1 = d_1,   b_t = mu b_{t-1} + (1 - dampening) d_t   (no dampening on the first step)
        w_t = w_{t-1} - lr (d_t + mu b_t)   (nesterov)   or   w_{t-1} - lr b_t

    Outputs ``w@t`` and ``m@t``: ``b_t`` (``momentum_form="buffer"``) or the
    velocity ``-lr b_t`` (``"velocity"``, Keras' ``v <- mu v - lr g``)."""
    _check(w0, grads, decay_form)
    require(momentum_form in ("buffer", "velocity"), "momentum_form", f"unknown form {momentum_form!r}")
    lr, weight_decay = _held(float32_hypers, "lr", lr), _held(float32_hypers, "weight_decay", weight_decay)
    momentum = _held(float32_hypers, "momentum", momentum)
    w, b, out = w0, None, {}
    for t, g in enumerate(grads, 1):
        w, d = _decay(w, g, lr, weight_decay, decay_form)
        w, b = momentum_update(w, b, d, lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov)
        out[f"w@{t}"], out[f"m@{t}"] = w, (b if momentum_form == "buffer" else -lr * b)
    return out, None


def momentum_update(w, b, d, *, lr, momentum, dampening, nesterov):
    """One momentum step on ``d`` from buffer ``b`` (None before the first step): (w, b)."""
    b = d if b is None else momentum * b + (1.0 - dampening) * d
    return w - lr * (d + momentum * b if nesterov else b), b


def adam(w0, grads, *, lr, beta_1, beta_2, eps, weight_decay, decay_form="l2", eps_form="corrected",
         float32_hypers=()):
    """Adam: with ``d_t`` the gradient after weight decay (see ``decay_form``),

        m_t = beta_1 m + (1 - beta_1) d_t,   v_t = beta_2 v + (1 - beta_2) d_t^2   (m_0 = v_0 = 0)
        corrected:   w_t = w - lr / bc1 * m_t / (sqrt(v_t) / sqrt(bc2) + eps)
        uncorrected: w_t = w - lr sqrt(bc2) / bc1 * m_t / (sqrt(v_t) + eps)

    with ``bc1 = 1 - beta_1^t``, ``bc2 = 1 - beta_2^t``. Outputs ``w@t``, ``m@t``, ``v@t``."""
    _check(w0, grads, decay_form)
    require(eps_form in ("corrected", "uncorrected"), "eps_form", f"unknown form {eps_form!r}")
    lr, weight_decay = _held(float32_hypers, "lr", lr), _held(float32_hypers, "weight_decay", weight_decay)
    p1, p2 = (_held(float32_hypers, "beta_powers", b) for b in (beta_1, beta_2))
    w, m, v, out = w0, np.zeros_like(w0), np.zeros_like(w0), {}
    sums = []
    for t, g in enumerate(grads, 1):
        w, d = _decay(w, g, lr, weight_decay, decay_form)
        before = w
        sums.append((beta_1 * np.abs(m) + (1.0 - beta_1) * np.abs(d), beta_1 * m + (1.0 - beta_1) * d))
        w, m, v = adam_update(w, m, v, d, t, lr=lr, beta_1=beta_1, beta_2=beta_2, eps=eps, eps_form=eps_form,
                              powers=(p1, p2))
        with np.errstate(invalid="ignore"):  # eps = 0 on a zero gradient: a NaN step, as in both frameworks
            sums.append((np.abs(before) + np.abs(w - before), w))
        out[f"w@{t}"], out[f"m@{t}"], out[f"v@{t}"] = w, m, v
    return out, sums


def adam_update(w, m, v, d, t, *, lr, beta_1, beta_2, eps, eps_form, powers):
    """Adam's step t on ``d`` from moments (m, v): (w, m, v). ``powers``: the betas as
    raised to the power t (the framework's own rounding of them)."""
    m = beta_1 * m + (1.0 - beta_1) * d
    v = beta_2 * v + (1.0 - beta_2) * d * d
    bc1, bc2 = 1.0 - powers[0]**t, 1.0 - powers[1]**t
    with np.errstate(divide="ignore", invalid="ignore"):
        if eps_form == "corrected":
            return w - lr / bc1 * m / (np.sqrt(v) / np.sqrt(bc2) + eps), m, v
        return w - lr * np.sqrt(bc2) / bc1 * m / (np.sqrt(v) + eps), m, v


def adamw(w0, grads, *, lr, beta_1, beta_2, eps, weight_decay, eps_form="corrected", float32_hypers=()):
    """AdamW: Adam with decoupled weight decay, ``w <- w - lr wd w`` before each update (both frameworks)."""
    return adam(w0, grads, lr=lr, beta_1=beta_1, beta_2=beta_2, eps=eps, weight_decay=weight_decay,
                decay_form="decoupled", eps_form=eps_form, float32_hypers=float32_hypers)


def rmsprop(w0, grads, *, lr, alpha, eps, momentum, centered, weight_decay, decay_form="l2", eps_form="outside",
            momentum_form="buffer", float32_hypers=()):
    """RMSprop: with ``d_t`` the gradient after weight decay,

        v_t = alpha v + (1 - alpha) d_t^2;   centered: mean_t = alpha mean + (1 - alpha) d_t, s = v_t - mean_t^2
        denom = sqrt(s) + eps (outside)   or   sqrt(s + eps) (inside);   s = v_t when not centered
        momentum > 0: b_t = mu b + d_t / denom, w -= lr b_t;   else w -= lr d_t / denom

    Outputs ``w@t``, ``v@t``, ``mean@t`` (centered), ``m@t`` (momentum > 0:
    ``b_t``, or the velocity ``lr b_t`` in Keras' form)."""
    _check(w0, grads, decay_form)
    require(eps_form in ("outside", "inside"), "eps_form", f"unknown form {eps_form!r}")
    require(momentum_form in ("buffer", "velocity"), "momentum_form", f"unknown form {momentum_form!r}")
    lr, weight_decay = _held(float32_hypers, "lr", lr), _held(float32_hypers, "weight_decay", weight_decay)
    w, v, mean, b, out, sums = w0, np.zeros_like(w0), np.zeros_like(w0), np.zeros_like(w0), {}, []
    with np.errstate(divide="ignore", invalid="ignore"):
        for t, g in enumerate(grads, 1):
            w, d = _decay(w, g, lr, weight_decay, decay_form)
            v = alpha * v + (1.0 - alpha) * d * d
            s = v
            if centered:
                mean = alpha * mean + (1.0 - alpha) * d
                s = v - mean * mean
            denom = np.sqrt(s) + eps if eps_form == "outside" else np.sqrt(s + eps)
            out[f"v@{t}"] = v
            if centered:
                out[f"mean@{t}"] = mean
            inc = d / denom
            if momentum > 0:
                held = 1.0 if momentum_form == "buffer" else lr
                sums.append((held * (momentum * np.abs(b) + np.abs(inc)), held * (momentum * b + inc)))
                b = momentum * b + inc
                out[f"m@{t}"] = held * b
                inc = b
            sums.append((np.abs(w) + lr * np.abs(inc), w - lr * inc))
            w = w - lr * inc
            out[f"w@{t}"] = w
    return out, sums


def cancellation(sums, w0, grads, **attrs) -> float:
    """How much a trajectory can amplify rounding, for the optimizers whose update is
    scale-free (Adam's m / sqrt(v), RMSprop's and Adagrad's d / sqrt(s): about 1 / sqrt(1 -
    beta) whatever the gradients' size): the parameters w - lr u (and RMSprop's buffer
    mu b + d / denom, Adam's m) may cancel to far below the terms they sum, and each
    term carries its own rounding. ``sums``: the forward's (|terms|, result) per sum.
    kappa = max over them of max|terms| / max(max|result|, max|w0|, max|grads|): the
    terms' rounding measured against the scale the comparison uses.

    Measured (thorough, float32 RMSprop, eps 0, w0 ~ 1e-6, lr 0.49): w@2 = 1e-6 from
    terms of 3.7, PyTorch off by 6e6 eps of it; kappa 7.3e6."""
    floor = max(float(np.abs(w0).max()), float(np.abs(grads).max()))
    kappa = 1.0
    for terms, result in sums:
        finite = np.isfinite(terms) & np.isfinite(result)
        if finite.any():
            scale = max(float(np.abs(result[finite]).max()), floor)
            kappa = max(kappa, float(terms[finite].max()) / scale if scale > 0 else 1.0)
    return kappa


def adagrad(w0, grads, *, lr, eps, initial_accumulator_value, weight_decay, decay_form="l2", eps_form="outside",
            float32_hypers=()):
    """Adagrad: with ``d_t`` the gradient after weight decay and ``s_0 = initial_accumulator_value``,

        s_t = s_{t-1} + d_t^2,   w_t = w - lr d_t / (sqrt(s_t) + eps)  (outside)  or  / sqrt(s_t + eps)  (inside)

    Outputs ``w@t`` and ``sum@t``."""
    _check(w0, grads, decay_form)
    require(eps_form in ("outside", "inside"), "eps_form", f"unknown form {eps_form!r}")
    require(initial_accumulator_value >= 0, "initial_accumulator_value", "must be >= 0")
    lr, weight_decay = _held(float32_hypers, "lr", lr), _held(float32_hypers, "weight_decay", weight_decay)
    init = _held(float32_hypers, "initial_accumulator_value", initial_accumulator_value)
    w, s, out, sums = w0, np.full_like(w0, init), {}, []
    with np.errstate(divide="ignore", invalid="ignore"):
        for t, g in enumerate(grads, 1):
            w, d = _decay(w, g, lr, weight_decay, decay_form)
            s = s + d * d
            step = lr * d / (np.sqrt(s) + eps if eps_form == "outside" else np.sqrt(s + eps))
            sums.append((np.abs(w) + np.abs(step), w - step))
            w = w - step
            out[f"w@{t}"], out[f"sum@{t}"] = w, s
    return out, sums


# ---- catalogue entries --------------------------------------------------------

register = registrar("training step")

TRAJECTORY_DIMS = {"K": Int(1, 10), "shape": Shape(min_dims=1, max_dims=2, max_side=3)}
TRAJECTORY_ARRAYS = {
    "w0": Array(S("shape"), Real(-3.0, 3.0, edges=(0.0, 1.0, -1.0)), param=True),
    "grads": Array(S("K", "shape"), GRAD_VALUES),
}
LR = Float(1e-4, 1.0, edges=(1e-3, 0.01, 0.1))
WEIGHT_DECAY = Float(0.0, 0.1, edges=(0.0, 0.01))


# A trajectory's edges: one step, the longest, weight decay on, gradients all 0
# (the state alone moves the parameters), and each optimizer's own options.
TRAJECTORY_EDGES = (Edge("one_step", lambda c: c.arrays["grads"].shape[0] == 1, {"K": 1}),
                    Edge("ten_steps", lambda c: c.arrays["grads"].shape[0] == 10, {"K": 10}),
                    Edge("weight_decay", lambda c: c.attrs["weight_decay"] > 0, {"weight_decay": 0.01}),
                    Edge("zero_gradients", lambda c: not np.any(c.arrays["grads"])))
EPS_0 = Edge("eps_0", lambda c: c.attrs["eps"] == 0, {"eps": 0.0})


def _trajectory(name, forward, attrs, conventions, condition=None, edges=()):
    register(Layer(name, forward, None, dims=TRAJECTORY_DIMS, arrays=TRAJECTORY_ARRAYS,
                   attrs={"lr": LR, **attrs, "weight_decay": WEIGHT_DECAY},
                   conventions={**conventions, "float32_hypers": ()}, condition=condition,
                   edges=(*TRAJECTORY_EDGES, *edges)))


_trajectory("sgd_step", sgd, {}, {})
_trajectory("momentum_step", sgd_momentum,
            {"momentum": Float(0.1, 0.99, edges=(0.9, 0.99)), "dampening": Float(0.0, 0.9, edges=(0.0, 0.5)),
             "nesterov": Choice(False, True)},
            {"decay_form": "l2", "momentum_form": "buffer"},
            edges=(attr_is("nesterov", True), Edge("dampening", lambda c: c.attrs["dampening"] > 0, {"dampening": 0.5})))
ADAM_ATTRS = {"beta_1": Float(0.0, 0.99, edges=(0.9, 0.0)), "beta_2": Float(0.5, 0.999, edges=(0.999, 0.9)),
              "eps": Float(1e-10, 1e-3, edges=(1e-8, 1e-7, 0.0))}
ADAM_EDGES = (EPS_0, Edge("beta_1_0", lambda c: c.attrs["beta_1"] == 0, {"beta_1": 0.0}))
_trajectory("adam_step", adam, ADAM_ATTRS, {"decay_form": "l2", "eps_form": "corrected"}, cancellation, ADAM_EDGES)
_trajectory("adamw_step", adamw, ADAM_ATTRS, {"eps_form": "corrected"}, cancellation, ADAM_EDGES)
_trajectory("rmsprop_step", rmsprop,
            {"alpha": Float(0.9, 0.999, edges=(0.99, 0.9)), "eps": Float(1e-10, 1e-3, edges=(1e-8, 1e-7, 0.0)),
             "momentum": Float(0.0, 0.99, edges=(0.0, 0.9)), "centered": Choice(False, True)},
            {"decay_form": "l2", "eps_form": "outside", "momentum_form": "buffer"}, cancellation,
            (EPS_0, attr_is("centered", True), Edge("momentum", lambda c: c.attrs["momentum"] > 0, {"momentum": 0.9})))
_trajectory("adagrad_step", adagrad,
            {"eps": Float(1e-10, 1e-3, edges=(1e-10, 1e-7, 0.0)),
             "initial_accumulator_value": Float(0.0, 1.0, edges=(0.0, 0.1))},
            {"decay_form": "l2", "eps_form": "outside"}, cancellation,
            (EPS_0, Edge("no_initial_accumulator", lambda c: c.attrs["initial_accumulator_value"] == 0,
                         {"initial_accumulator_value": 0.0})))

