"""Keras builder: a whole training loop, as a user writes it."""

import numpy as np

from ...reference import Convention
from ..base import Built
from .core import KERAS_LR, NO_CLIPPING, builder, dense_layer, keras, tf

@builder("train_step", convention=Convention(
    {"norm_eps": 0.0, "eps_form": "uncorrected", "float32_hypers": ("lr", "momentum", "beta_powers")},
    "the optimizer's global_clipnorm: t * c * minimum(1 / norm, 1 / c), no eps; Adam's epsilon hat (see "
    "adam_step). " + KERAS_LR))
def train_step(t, a, dtype):
    """Dense -> ReLU -> Dense and SparseCategoricalCrossentropy(from_logits=True); per
    batch a GradientTape, the gradients read, then optimizer.apply_gradients with the
    optimizer's own global_clipnorm (None when max_norm is inf)."""
    first = dense_layer(t["W1"].shape[1], t["W1"], t["b1"], dtype)
    second = dense_layer(t["W2"].shape[1], t["W2"], t["b2"], dtype)
    relu = keras().layers.ReLU(dtype=dtype)
    loss_fn = keras().losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum_over_batch_size",
                                                           dtype=dtype)
    named = {"W1": first.kernel, "b1": first.bias, "W2": second.kernel, "b2": second.bias}
    clip = {**NO_CLIPPING, "global_clipnorm": None if a["max_norm"] == float("inf") else a["max_norm"]}
    if a["optimizer"] == "adam":
        opt = keras().optimizers.Adam(learning_rate=a["lr"], beta_1=a["beta_1"], beta_2=a["beta_2"],
                                      epsilon=a["eps"], amsgrad=False, weight_decay=None, **clip)
    else:
        opt = keras().optimizers.SGD(learning_rate=a["lr"], momentum=a["momentum"], nesterov=False,
                                     weight_decay=None, **clip)

    def apply(t):
        out = {}
        for step, (x, y) in enumerate(zip(tf().unstack(t["x"]), tf().unstack(t["labels"])), 1):
            with tf().GradientTape() as tape:
                loss = loss_fn(y, second(relu(first(x))))
            grads = tape.gradient(loss, list(named.values()))
            out[f"loss@{step}"] = loss.numpy()
            out.update({f"g{n}@{step}": g.numpy() for n, g in zip(named, grads)})
            opt.apply_gradients(zip(grads, named.values()))
            out.update({f"{n}@{step}": np.array(var.numpy()) for n, var in named.items()})
        return out

    return Built(apply)
