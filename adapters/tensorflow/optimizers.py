"""Keras builders: optimizer trajectories. The real keras.optimizers class on one
keras.Variable: apply_gradients once per gradient, the variable and the optimizer's
slot variables read after each step. Every argument is passed, clipping and EMA off."""

import numpy as np

from ...reference import Convention
from ..base import Built
from .core import KERAS_LR, NO_CLIPPING, builder, keras, tf

def _trajectory(t, dtype, opt, states=()):
    """Apply ``opt`` over the case's k gradients to a variable holding w0; after each
    step t, ``w@t`` and each ``(name, slot list attribute)`` as ``name@t``."""
    var = keras().Variable(t["w0"].numpy(), dtype=dtype, trainable=True)

    def apply(t):
        out = {}
        for step, g in enumerate(tf().unstack(t["grads"]), 1):
            opt.apply_gradients([(g, var)])
            out[f"w@{step}"] = np.array(var.numpy())
            out.update({f"{name}@{step}": np.array(getattr(opt, slots)[0].numpy()) for name, slots in states})
        return out

    return Built(apply)


@builder("sgd_step", convention=Convention(
    {"float32_hypers": ("lr", "weight_decay")},
    "" + KERAS_LR))
def sgd_step(t, a, dtype):
    return _trajectory(t, dtype, keras().optimizers.SGD(
        learning_rate=a["lr"], momentum=0.0, nesterov=False, weight_decay=a["weight_decay"], **NO_CLIPPING))


def _dampened(case):
    if case.attrs["dampening"] != 0:
        return "keras.optimizers.SGD has no dampening"


@builder("momentum_step", refuses=_dampened, convention=Convention(
    {"decay_form": "decoupled", "momentum_form": "velocity", "float32_hypers": ("lr", "weight_decay", "momentum")},
    "weight_decay shrinks w - w wd lr before the step (base_optimizer._apply_weight_decay); m = mu m - lr "
    "g; w += m, nesterov w += mu m - lr g; no dampening. " + KERAS_LR))
def momentum_step(t, a, dtype):
    return _trajectory(t, dtype, keras().optimizers.SGD(
        learning_rate=a["lr"], momentum=a["momentum"], nesterov=a["nesterov"], weight_decay=a["weight_decay"],
        **NO_CLIPPING), (("m", "momentums"),))


def _adam_options(a):
    return dict(learning_rate=a["lr"], beta_1=a["beta_1"], beta_2=a["beta_2"], epsilon=a["eps"], amsgrad=False,
                weight_decay=a["weight_decay"], **NO_CLIPPING)


@builder("adam_step", convention=Convention(
    {"decay_form": "decoupled", "eps_form": "uncorrected", "float32_hypers": ("lr", "weight_decay", "beta_powers")},
    "alpha = lr sqrt(1 - beta_2^t) / (1 - beta_1^t); w -= m alpha / (sqrt(v) + epsilon) ('epsilon hat'); "
    "weight_decay decoupled as in AdamW. " + KERAS_LR))
def adam_step(t, a, dtype):
    return _trajectory(t, dtype, keras().optimizers.Adam(**_adam_options(a)),
                       (("m", "_momentums"), ("v", "_velocities")))


@builder("adamw_step", convention=Convention(
    {"eps_form": "uncorrected", "float32_hypers": ("lr", "weight_decay", "beta_powers")},
    "Adam's update with decoupled decay w - w wd lr first. " + KERAS_LR))
def adamw_step(t, a, dtype):
    return _trajectory(t, dtype, keras().optimizers.AdamW(**_adam_options(a)),
                       (("m", "_momentums"), ("v", "_velocities")))


@builder("rmsprop_step", convention=Convention(
    {"decay_form": "decoupled", "eps_form": "inside", "momentum_form": "velocity",
     "float32_hypers": ("lr", "weight_decay")},
    "increment = lr g / sqrt(velocity [- average_grad^2] + epsilon) (eps inside the sqrt); momentum m = "
    "mu m + increment, w -= m (m is lr times PyTorch's buffer). " + KERAS_LR))
def rmsprop_step(t, a, dtype):
    states = (("v", "_velocities"),) + ((("mean", "_average_gradients"),) if a["centered"] else ()) + (
        (("m", "_momentums"),) if a["momentum"] > 0 else ())
    return _trajectory(t, dtype, keras().optimizers.RMSprop(
        learning_rate=a["lr"], rho=a["alpha"], momentum=a["momentum"], epsilon=a["eps"], centered=a["centered"],
        weight_decay=a["weight_decay"], **NO_CLIPPING), states)


@builder("adagrad_step", convention=Convention(
    {"decay_form": "decoupled", "eps_form": "inside",
     "float32_hypers": ("lr", "weight_decay", "initial_accumulator_value")},
    "accumulator += g^2; w -= lr g / sqrt(accumulator + epsilon) (eps inside). " + KERAS_LR))
def adagrad_step(t, a, dtype):
    return _trajectory(t, dtype, keras().optimizers.Adagrad(
        learning_rate=a["lr"], initial_accumulator_value=a["initial_accumulator_value"], epsilon=a["eps"],
        weight_decay=a["weight_decay"], **NO_CLIPPING), (("sum", "_accumulators"),))
