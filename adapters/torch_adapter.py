"""PyTorch: leaf tensors with ``requires_grad``, ``loss.backward()``, ``.grad``.

Builders take the case's arrays as tensors (``t``) and its attributes (``a``),
and return the output, plus, for layers with weights, a dict mapping each
canonical parameter name to ``(module parameter, to_canonical)``: the module's
own parameter receives the gradient, ``to_canonical`` converts its layout.
Every hyperparameter is passed explicitly: defaults differ between frameworks.
"""

from __future__ import annotations

import importlib

from reference import Case, differentiable
from reference.catalogue import LAYERS

from .base import Convention, NotApplicable, Output

_torch = None


def torch():
    global _torch
    if _torch is None:
        _torch = importlib.import_module("torch")
    return _torch


def nn():
    return torch().nn


def _same(v):
    return v


def _transpose(v):
    return v.T


def _set(param, value):
    """Copy canonical numbers into a module's parameter (layout already converted)."""
    with torch().no_grad():
        param.copy_(value)
    return param


def _linear(n_in, n_out, W, b, dtype):
    """nn.Linear holding canonical W (in, out) as its (out, in) weight."""
    lin = nn().Linear(n_in, n_out, bias=b is not None, dtype=dtype)
    _set(lin.weight, W.T)
    if b is not None:
        _set(lin.bias, b)
    return lin


# ---- builders: one per catalogue layer -------------------------------------

def dense(t, a, dtype):
    lin = _linear(t["W"].shape[0], t["W"].shape[1], t["W"], t.get("b"), dtype)
    params = {"W": (lin.weight, _transpose)}
    if "b" in t:
        params["b"] = (lin.bias, _same)
    return lin(t["x"]), params


def residual_block(t, a, dtype):
    d, h = t["W1"].shape
    first, second = _linear(d, h, t["W1"], t["b1"], dtype), _linear(h, d, t["W2"], t["b2"], dtype)
    body = nn().Sequential(first, nn().ReLU(), second)
    return t["x"] + body(t["x"]), {"W1": (first.weight, _transpose), "b1": (first.bias, _same),
                                   "W2": (second.weight, _transpose), "b2": (second.bias, _same)}


# ---- builders: convolution and pooling ---------------------------------------


# ---- builders: normalization, embedding, dropout -----------------------------


BUILDERS = {
    "dense": dense,
    "residual_block": residual_block,
    "relu": lambda t, a, dt: nn().ReLU()(t["x"]),
    "leaky_relu": lambda t, a, dt: nn().LeakyReLU(negative_slope=a["negative_slope"])(t["x"]),
    "elu": lambda t, a, dt: nn().ELU(alpha=a["alpha"])(t["x"]),
    "selu": lambda t, a, dt: nn().SELU()(t["x"]),
    "gelu": lambda t, a, dt: nn().GELU(approximate=a["approximate"])(t["x"]),
    "sigmoid": lambda t, a, dt: nn().Sigmoid()(t["x"]),
    "tanh": lambda t, a, dt: nn().Tanh()(t["x"]),
    "softplus": lambda t, a, dt: nn().Softplus(beta=a["beta"], threshold=a["threshold"])(t["x"]),
    "silu": lambda t, a, dt: nn().SiLU()(t["x"]),
    "softmax": lambda t, a, dt: nn().Softmax(dim=a["axis"])(t["x"]),
    "log_softmax": lambda t, a, dt: nn().LogSoftmax(dim=a["axis"])(t["x"]),
    "mse": lambda t, a, dt: nn().MSELoss(reduction="mean")(t["pred"], t["target"]),
    "l1": lambda t, a, dt: nn().L1Loss(reduction="mean")(t["pred"], t["target"]),
    "huber": lambda t, a, dt: nn().HuberLoss(reduction="mean", delta=a["delta"])(t["pred"], t["target"]),
    "cross_entropy": lambda t, a, dt: nn().CrossEntropyLoss(
        reduction=a["reduction"], label_smoothing=a["label_smoothing"])(t["logits"], t["labels"]),
    "binary_cross_entropy_with_logits": lambda t, a, dt: nn().BCEWithLogitsLoss(reduction="mean")(
        t["logits"], t["targets"]),
    # ---- convolution and pooling
    # ---- normalization, embedding, dropout
}

# Where the math leaves a choice open, what PyTorch does (measured here, see CONVENTIONS.md).
CONVENTIONS: dict[str, Convention] = {
    "leaky_relu": Convention({"at_zero": "left"}, "backward tests x > 0, so x = 0 takes the slope; measured"),
    "elu": Convention({"at_zero": "left"}, "elu_backward tests x <= 0, so x = 0 takes alpha; measured"),
    "selu": Convention({"at_zero": "left"}, "selu shares elu_backward: x = 0 takes scale*alpha; measured"),
    # ---- convolution and pooling
    # ---- normalization, embedding, dropout
}


class TorchAdapter:
    name = "torch"

    def available(self):
        try:
            torch()
        except ImportError as e:
            return False, f"PyTorch is not installed ({e}); pip install -e '.[torch]'"
        return True, ""

    def version(self):
        return str(torch().__version__)

    def convention(self, layer):
        return CONVENTIONS.get(layer)

    def run(self, case: Case) -> Output:
        if case.layer not in BUILDERS:
            raise NotApplicable(f"no PyTorch builder for {case.layer}")
        T = torch()
        dtype = getattr(T, case.dtype)
        grad_of = set(differentiable(case))
        t = {}
        for name, arr in case.arrays.items():
            if arr.dtype.kind in "iu":
                t[name] = T.as_tensor(arr, dtype=T.long)
            else:
                t[name] = T.tensor(arr, dtype=dtype, requires_grad=name in grad_of)
        built = BUILDERS[case.layer](t, case.attrs, dtype)
        out, params = built if isinstance(built, tuple) else (built, {})
        (out * T.as_tensor(case.g, dtype=dtype)).sum().backward()
        grads = {}
        for name in grad_of:
            source, to_canonical = params.get(name, (t[name], _same))
            grad = source.grad if source.grad is not None else T.zeros_like(source)
            grads[name] = to_canonical(grad).detach().numpy()
        return Output(out.detach().numpy(), grads)
