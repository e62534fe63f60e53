"""A whole training loop: a two-layer MLP trained for a few steps, forward-only.

    h = relu(x_t W1 + b1),  z = h W2 + b2,  L_t = mean_n CE(z_n, y_n)   (softmax cross-entropy on logits)

for each step t = 1..S on batch t (``x[t - 1]``, ``labels[t - 1]``), backprop by
the layers' own vjps (dense, relu, cross_entropy), optional global-norm clipping
of all four gradients together (``max_norm = inf``: none), then one optimizer
update of all parameters together: SGD with momentum (no dampening, no
nesterov) or Adam, no weight decay. Shapes: x (S, N, D), labels (S, N) ints in
[0, K), W1 (D, H), b1 (H,), W2 (H, K), b2 (K,).

Outputs per step t: ``loss@t`` (the loss of batch t before the update), the raw
gradients before clipping ``gW1@t`` .. ``gb2@t``, and the parameters after the
update ``W1@t`` .. ``b2@t``. Conventions as in clipping.py (``norm_eps``) and
optimizers.py (``eps_form``, ``float32_hypers``). ReLU'(0) = 0. The residuals are,
per step, the hidden pre-activations, the size of the terms each sums, the same with
every parameter's own scale added (|x| (|W1| + max|W1|) + |b1| + max|b1|: after an update,
a pre-activation within the parameters' rounding of 0 sits on a side of the kink
that rounding decides), sum|x| + 1 per row, the gradients flattened, and the size of the
terms each gradient element sums (Adam divides each element by its own size: one
at the rounding level of its terms is normalized to a full step either way).
"""

from __future__ import annotations

import numpy as np

from . import activations as act
from . import dense as dn
from . import losses as ls
from . import optimizers as op
from .clipping import _scale
from .catalogue import S, registrar
from .spec import Array, Choice, Drawn, Edge, Float, Int, Labels, Layer, Real, require

PARAMS = ("W1", "b1", "W2", "b2")


def _loss_and_grads(x, labels, p, seen=None):
    h_pre, r1 = dn.dense(x, p["W1"], p["b1"])
    if seen is not None:  # each pre-activation and the size of the terms it sums (where a kink is decided)
        ax, aw, ab = np.abs(x), np.abs(p["W1"]), np.abs(p["b1"])
        seen.append((h_pre, ax @ aw + ab, ax @ (aw + aw.max()) + ab + ab.max(), ax.sum(axis=1, keepdims=True) + 1.0))
    h, r_relu = act.relu(h_pre)
    z, r2 = dn.dense(h, p["W2"], p["b2"])
    loss, r_loss = ls.cross_entropy(z, labels, label_smoothing=0.0, reduction="mean", target_type="indices",
                                    ignore_index=-100)
    gz = ls.cross_entropy_vjp(r_loss, 1.0)["logits"]
    g2 = dn.dense_vjp(r2, gz)
    g1 = dn.dense_vjp(r1, act.relu_vjp(r_relu, g2["x"])["x"])
    if seen is not None:  # the same backward on the terms' magnitudes: softmax p and the label enter as p + q
        q, scale = r_loss["c"], r_loss["scale"]  # the one-hot labels (no weights, smoothing or ignored labels)
        p_minus_q = r_loss["p"] - q
        m2 = dn.dense_vjp((np.abs(h), np.abs(p["W2"]), True), (np.abs(p_minus_q + q) + q) * scale)
        m1 = dn.dense_vjp((np.abs(x), np.abs(p["W1"]), True), act.relu_vjp(r_relu, m2["x"])["x"])
        seen[-1] += ({"W1": m1["W"], "b1": m1["b"], "W2": m2["W"], "b2": m2["b"]},)
    return float(loss), {"W1": g1["W"], "b1": g1["b"], "W2": g2["W"], "b2": g2["b"]}


def train_step(x, labels, W1, b1, W2, b2, *, optimizer, lr, momentum, beta_1, beta_2, eps, max_norm,
               norm_eps=0.0, eps_form="corrected", float32_hypers=()):
    """S steps of training a dense-relu-dense classifier (see the module docstring)."""
    require(optimizer in ("sgd_momentum", "adam"), "optimizer", f"expected 'sgd_momentum' or 'adam', got {optimizer!r}")
    require(x.ndim == 3 and labels.shape == x.shape[:2], "labels", f"expected {x.shape[:2]} like x, got {labels.shape}")
    require(not np.isnan(max_norm) and max_norm > 0, "max_norm", f"must be > 0 (inf: no clipping), got {max_norm!r}")
    held = {n: op._held(float32_hypers, n, v) for n, v in
            (("lr", lr), ("momentum", momentum), ("beta_powers", beta_1))}
    p2 = op._held(float32_hypers, "beta_powers", beta_2)
    params = {"W1": W1, "b1": b1, "W2": W2, "b2": b2}
    sizes = [params[n].size for n in PARAMS]

    def flat(d):
        return np.concatenate([d[n].ravel() for n in PARAMS])

    def unflat(v):
        return {n: part.reshape(params[n].shape) for n, part in zip(PARAMS, np.split(v, np.cumsum(sizes)[:-1]))}

    w, b, m, v, out, seen = flat(params), None, 0.0, 0.0, {}, []
    for t, (x_t, y_t) in enumerate(zip(x, labels), 1):
        loss, grads = _loss_and_grads(x_t, y_t, unflat(w), seen)
        seen[-1] = (*seen[-1][:4], flat(grads), flat(seen[-1][4]))
        out[f"loss@{t}"] = np.array(loss)
        out.update({f"g{n}@{t}": g for n, g in grads.items()})
        d = flat(grads)
        d = d * _scale(float(np.sqrt(np.sum(d * d))), max_norm, norm_eps)
        if optimizer == "sgd_momentum":
            w, b = op.momentum_update(w, b, d, lr=held["lr"], momentum=held["momentum"], dampening=0.0,
                                      nesterov=False)
        else:
            w, m, v = op.adam_update(w, m, v, d, t, lr=held["lr"], beta_1=beta_1, beta_2=beta_2, eps=eps,
                                     eps_form=eps_form, powers=(held["beta_powers"], p2))
        out.update({f"{n}@{t}": value for n, value in unflat(w).items()})
    return out, seen


# ---- catalogue entries --------------------------------------------------------

register = registrar("training step")

# The whole loop: a dense-relu-dense classifier trained S steps (one batch each)
# by SGD with momentum or Adam, global-norm clipping on (a finite max_norm) or off
# (inf). Attributes of the optimizer not drawn are 0 (a case never carries
# numbers it ignores).
OPTIMIZERS = ("sgd_momentum", "adam")


def _for(opt, spec):
    return Drawn(float, lambda d: spec if OPTIMIZERS[d.opt] == opt else Choice(0.0))


register(Layer(
    "train_step", train_step, None,
    edges=(Edge("adam", lambda c: c.attrs["optimizer"] == "adam", {"opt": 1}),
           Edge("sgd_momentum", lambda c: c.attrs["optimizer"] == "sgd_momentum", {"opt": 0}),
           Edge("clipped", lambda c: np.isfinite(c.attrs["max_norm"])),
           Edge("not_clipped", lambda c: np.isinf(c.attrs["max_norm"]), {"max_norm": float("inf")}),
           Edge("one_step", lambda c: c.arrays["x"].shape[0] == 1, {"S": 1})),
    dims={"S": Int(1, 5), "N": Int(1, 4), "D": Int(1, 4), "H": Int(1, 5), "K": Int(2, 4), "opt": Int(0, 1)},
    attrs={"optimizer": Drawn(str, lambda d: Choice(OPTIMIZERS[d.opt])), "lr": Float(1e-3, 0.5, edges=(0.1,)),
           "momentum": _for("sgd_momentum", Float(0.5, 0.95, edges=(0.9,))),
           "beta_1": _for("adam", Float(0.5, 0.95, edges=(0.9,))),
           "beta_2": _for("adam", Float(0.9, 0.999, edges=(0.999,))),
           "eps": _for("adam", Float(1e-8, 1e-3, edges=(1e-8, 1e-7))),
           "max_norm": Float(0.1, 5.0, edges=(float("inf"), 1.0))},
    arrays={
        "x": Array(S("S", "N", "D"), Real(-3.0, 3.0, edges=(0.0,))),
        "labels": Array(S("S", "N"), Labels("K")),
        "W1": Array(S("D", "H"), Real(-1.0, 1.0, edges=(0.0,)), param=True),
        "b1": Array(S("H"), Real(-1.0, 1.0, edges=(0.0,)), param=True),
        "W2": Array(S("H", "K"), Real(-1.0, 1.0, edges=(0.0,)), param=True),
        "b2": Array(S("K"), Real(-1.0, 1.0, edges=(0.0,)), param=True),
    },
    conventions={"norm_eps": 0.0, "eps_form": "corrected", "float32_hypers": ()},
))
