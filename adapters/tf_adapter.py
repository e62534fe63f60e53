"""TensorFlow / Keras: ``tf.GradientTape``, ``tape.gradient``.

Builders take the case's arrays as tensors (``t``, watched by the tape), its
attributes (``a``) and the dtype name, and return the output, plus, for layers
with weights, a dict mapping each canonical parameter name to
``(variable, to_canonical)``. Keras layers and losses get ``dtype`` explicitly:
Keras computes in float32 unless told otherwise. Every hyperparameter is passed
explicitly: defaults differ between frameworks.
"""

from __future__ import annotations

import importlib
import os

from reference import Case, differentiable

from .base import Convention, NotApplicable, Output

_tf = None


def tf():
    global _tf
    if _tf is None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        _tf = importlib.import_module("tensorflow")
    return _tf


def keras():
    return importlib.import_module("keras")


def _same(v):
    return v


def _dense(units, W, b, dtype):
    """keras.layers.Dense holding canonical W (in, out) as its kernel (same layout)."""
    layer = keras().layers.Dense(units, use_bias=b is not None, dtype=dtype)
    layer.build((None, W.shape[0]))
    layer.kernel.assign(W)
    if b is not None:
        layer.bias.assign(b)
    return layer


# ---- builders: one per catalogue layer -------------------------------------

def dense(t, a, dtype):
    layer = _dense(t["W"].shape[1], t["W"], t.get("b"), dtype)
    params = {"W": (layer.kernel, _same)}
    if "b" in t:
        params["b"] = (layer.bias, _same)
    return layer(t["x"]), params


def residual_block(t, a, dtype):
    d, h = t["W1"].shape
    first, second = _dense(h, t["W1"], t["b1"], dtype), _dense(d, t["W2"], t["b2"], dtype)
    relu = keras().layers.ReLU(dtype=dtype)
    return t["x"] + second(relu(first(t["x"]))), {
        "W1": (first.kernel, _same), "b1": (first.bias, _same),
        "W2": (second.kernel, _same), "b2": (second.bias, _same)}


def _loss(cls, y_true, y_pred, dtype, **kwargs):
    """A Keras loss object, called the Keras way round: (y_true, y_pred)."""
    return cls(dtype=dtype, **kwargs)(y_true, y_pred)


def cross_entropy(t, a, dtype):
    losses = keras().losses
    reduction = {"mean": "sum_over_batch_size", "sum": "sum"}[a["reduction"]]
    if a["label_smoothing"] == 0:  # what a Keras user writes for integer labels
        return _loss(losses.SparseCategoricalCrossentropy, t["labels"], t["logits"], dtype,
                     from_logits=True, reduction=reduction)
    # SparseCategoricalCrossentropy has no smoothing: one-hot labels and the categorical loss.
    onehot = tf().one_hot(t["labels"], t["logits"].shape[-1], dtype=dtype)
    return _loss(losses.CategoricalCrossentropy, onehot, t["logits"], dtype, from_logits=True,
                 label_smoothing=a["label_smoothing"], reduction=reduction)


def _mean_loss(name, **kwargs):
    def build(t, a, dtype):
        cls = getattr(keras().losses, name)
        extra = {k: a[v] for k, v in kwargs.items()}
        return _loss(cls, t["target"], t["pred"], dtype, reduction="sum_over_batch_size", **extra)
    return build


# ---- builders: convolution and pooling ---------------------------------------


# ---- builders: normalization, embedding, dropout -----------------------------


BUILDERS = {
    "dense": dense,
    "residual_block": residual_block,
    "relu": lambda t, a, dt: tf().nn.relu(t["x"]),
    "leaky_relu": lambda t, a, dt: tf().nn.leaky_relu(t["x"], alpha=a["negative_slope"]),
    "elu": lambda t, a, dt: keras().layers.ELU(alpha=a["alpha"], dtype=dt)(t["x"]),
    "selu": lambda t, a, dt: tf().nn.selu(t["x"]),
    "gelu": lambda t, a, dt: tf().nn.gelu(t["x"], approximate=a["approximate"] == "tanh"),
    "sigmoid": lambda t, a, dt: tf().math.sigmoid(t["x"]),
    "tanh": lambda t, a, dt: tf().math.tanh(t["x"]),
    # TF's softplus has neither beta nor threshold: softplus(beta x) / beta is the user's form.
    "softplus": lambda t, a, dt: tf().math.softplus(a["beta"] * t["x"]) / a["beta"],
    "silu": lambda t, a, dt: tf().nn.silu(t["x"]),
    "softmax": lambda t, a, dt: tf().nn.softmax(t["x"], axis=a["axis"]),
    "log_softmax": lambda t, a, dt: tf().nn.log_softmax(t["x"], axis=a["axis"]),
    "mse": _mean_loss("MeanSquaredError"),
    "l1": _mean_loss("MeanAbsoluteError"),
    "huber": _mean_loss("Huber", delta="delta"),
    "cross_entropy": cross_entropy,
    "binary_cross_entropy_with_logits": lambda t, a, dt: _loss(
        keras().losses.BinaryCrossentropy, t["targets"], t["logits"], dt, from_logits=True,
        label_smoothing=0.0, reduction="sum_over_batch_size"),
    # ---- convolution and pooling
    # ---- normalization, embedding, dropout
}

# Where the math leaves a choice open, what TensorFlow does (measured here, see CONVENTIONS.md).
CONVENTIONS: dict[str, Convention] = {
    "leaky_relu": Convention({"at_zero": "left"}, "LeakyReluGrad tests x > 0, so x = 0 takes alpha; measured"),
    "elu": Convention({"at_zero": "left"},
                      "keras ELU is where(x > 0, elu(x), alpha * elu(x)), so x = 0 takes alpha; measured"),
    "selu": Convention({"at_zero": "right"},
                       "SeluGrad branches on out < 0, so x = 0 takes the positive slope `scale` "
                       "(PyTorch takes scale*alpha); measured with tensorflow-cpu 2.21"),
    # ---- convolution and pooling
    # ---- normalization, embedding, dropout
}


class TensorFlowAdapter:
    name = "tensorflow"

    def available(self):
        try:
            tf()
        except ImportError as e:
            return False, f"TensorFlow is not installed ({e}); pip install -e '.[tensorflow]'"
        return True, ""

    def version(self):
        return f"{tf().__version__} (keras {keras().__version__})"

    def convention(self, layer):
        return CONVENTIONS.get(layer)

    def run(self, case: Case) -> Output:
        if case.layer not in BUILDERS:
            raise NotApplicable(f"no TensorFlow builder for {case.layer}")
        T = tf()
        grad_of = differentiable(case)
        t = {name: T.constant(arr) for name, arr in case.arrays.items()}
        with T.GradientTape() as tape:
            for name in grad_of:
                tape.watch(t[name])
            built = BUILDERS[case.layer](t, case.attrs, case.dtype)
            out, params = built if isinstance(built, tuple) else (built, {})
            loss = T.reduce_sum(out * T.constant(case.g, dtype=case.dtype))
        sources = [params[n][0] if n in params else t[n] for n in grad_of]
        raw = tape.gradient(loss, sources, unconnected_gradients=T.UnconnectedGradients.ZERO)
        grads = {}
        for name, source, grad in zip(grad_of, sources, raw):
            to_canonical = params[name][1] if name in params else _same
            grads[name] = to_canonical(T.convert_to_tensor(grad)).numpy()  # densifies IndexedSlices
        return Output(out.numpy(), grads)
