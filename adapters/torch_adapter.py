"""PyTorch: leaf tensors with ``requires_grad``, ``loss.backward()``, ``.grad``.

Builders take the case's arrays as tensors (``t``) and its attributes (``a``),
and return the output, plus, for layers with weights, a dict mapping each
canonical parameter name to ``(module parameter, to_canonical)``: the module's
own parameter receives the gradient, ``to_canonical`` converts its layout.
Every hyperparameter is passed explicitly: defaults differ between frameworks.
"""

from __future__ import annotations

import importlib

from ..reference import Case, differentiable
from ..reference.conv import resolve_padding  # the oracle's rule for TensorFlow-style 'same': one formula

from .base import Convention, NotApplicable, Output, by_name, same

_torch = None


def torch():
    global _torch
    if _torch is None:
        _torch = importlib.import_module("torch")
    return _torch


def nn():
    return torch().nn


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
        params["b"] = (lin.bias, same)
    return lin(t["x"]), params


def residual_block(t, a, dtype):
    d, h = t["W1"].shape
    first, second = _linear(d, h, t["W1"], t["b1"], dtype), _linear(h, d, t["W2"], t["b2"], dtype)
    body = nn().Sequential(first, nn().ReLU(), second)
    return t["x"] + body(t["x"]), {"W1": (first.weight, _transpose), "b1": (first.bias, same),
                                   "W2": (second.weight, _transpose), "b2": (second.bias, same)}


# ---- builders: convolution and pooling ---------------------------------------
# Canonical layouts are PyTorch's (NCHW / NCL, weight (O, I/G, k...), transposed
# weight (I, O/G, k...)): no conversion. Padding the modules cannot say themselves
# (asymmetric, or TensorFlow-style 'same' with stride > 1) is done first with
# nn.ZeroPad1d/2d, or F.pad(value=-inf) before max pooling: what a user writes.



def _conv_padding(mode, pads, stride):
    """(the module's padding argument, a ZeroPad spec (left, right[, top, bottom]) or None)."""
    if mode == "valid":
        return "valid", None
    if mode == "same" and all(s == 1 for s in stride):
        return "same", None  # PyTorch's 'same' (stride 1 only) puts the odd pixel last, as TensorFlow does
    if all(before == after for before, after in pads):
        return tuple(before for before, _ in pads), None
    return 0, tuple(p for before_after in reversed(pads) for p in before_after)


def _conv_params(conv, t):
    params = {"W": (conv.weight, same)}
    _set(conv.weight, t["W"])
    if "b" in t:
        _set(conv.bias, t["b"])
        params["b"] = (conv.bias, same)
    return params


def _conv(t, dtype, cls, pad_cls, stride, dilation, groups, mode, explicit):
    x, W = t["x"], t["W"]
    kernel = tuple(W.shape[2:])
    pads = resolve_padding(mode, explicit, tuple(x.shape[2:]), kernel, stride, dilation)
    padding, pre = _conv_padding(mode, pads, stride)
    conv = cls(x.shape[1], W.shape[0], kernel, stride=stride, padding=padding, dilation=dilation, groups=groups,
               bias="b" in t, padding_mode="zeros", dtype=dtype)
    params = _conv_params(conv, t)
    if pre is not None:
        x = pad_cls(pre)(x)
    return conv(x), params


def conv2d(t, a, dtype):
    return _conv(t, dtype, nn().Conv2d, nn().ZeroPad2d, (a["stride_h"], a["stride_w"]),
                 (a["dilation_h"], a["dilation_w"]), a["groups"], a["padding"],
                 ((a["pad_top"], a["pad_bottom"]), (a["pad_left"], a["pad_right"])))


def conv1d(t, a, dtype):
    return _conv(t, dtype, nn().Conv1d, nn().ZeroPad1d, (a["stride"],), (a["dilation"],), a["groups"],
                 a["padding"], ((a["pad_left"], a["pad_right"]),))


def conv_transpose2d(t, a, dtype):
    x, W = t["x"], t["W"]
    conv = nn().ConvTranspose2d(x.shape[1], W.shape[1] * a["groups"], tuple(W.shape[2:]),
                                stride=(a["stride_h"], a["stride_w"]), padding=(a["pad_h"], a["pad_w"]),
                                output_padding=(a["output_pad_h"], a["output_pad_w"]), groups=a["groups"],
                                bias="b" in t, dilation=(a["dilation_h"], a["dilation_w"]),
                                padding_mode="zeros", dtype=dtype)
    params = _conv_params(conv, t)
    return conv(x), params


def _pool_pads(t, a):
    kernel, stride = (a["kernel_h"], a["kernel_w"]), (a["stride_h"], a["stride_w"])
    pads = resolve_padding(a["padding"], ((a["pad_h"],) * 2, (a["pad_w"],) * 2), tuple(t["x"].shape[2:]),
                           kernel, stride, (1, 1))
    return kernel, stride, pads, all(before == after for before, after in pads)


def max_pool2d(t, a, dtype):
    kernel, stride, pads, symmetric = _pool_pads(t, a)
    x, padding = t["x"], (pads[0][0], pads[1][0])
    if not symmetric:  # 'same' with one pixel more at the bottom/right: -inf never wins a window
        x, padding = torch().nn.functional.pad(x, (*pads[1], *pads[0]), value=float("-inf")), 0
    return nn().MaxPool2d(kernel, stride, padding=padding, dilation=1, return_indices=False, ceil_mode=False)(x)


def avg_pool2d(t, a, dtype):
    kernel, stride, pads, symmetric = _pool_pads(t, a)
    x, padding = t["x"], (pads[0][0], pads[1][0])
    if not symmetric:
        if not a["count_include_pad"]:
            raise NotApplicable(f"AvgPool2d pads symmetrically; the asymmetric 'same' padding {pads} "
                                "left out of the count has no PyTorch form")
        x, padding = nn().ZeroPad2d((*pads[1], *pads[0]))(x), 0
    return nn().AvgPool2d(kernel, stride, padding=padding, ceil_mode=False,
                          count_include_pad=a["count_include_pad"], divisor_override=None)(x)


def global_avg_pool2d(t, a, dtype):
    return torch().flatten(nn().AdaptiveAvgPool2d((1, 1))(t["x"]), 1)



# ---- builders: normalization, embedding, dropout -----------------------------

def _batch_norm_module(t, a, dtype):
    """BatchNorm1d for (N, C) and (N, C, L), BatchNorm2d for (N, C, H, W), holding gamma and beta.
    momentum only moves the running statistics, which neither the output nor a gradient reads;
    it is passed anyway (0.1 here is Keras' 0.9)."""
    x = t["x"]
    cls = nn().BatchNorm2d if x.ndim == 4 else nn().BatchNorm1d
    bn = cls(x.shape[1], eps=a["eps"], momentum=0.1, affine=True, track_running_stats=True, dtype=dtype)
    _set(bn.weight, t["gamma"])
    _set(bn.bias, t["beta"])
    return bn, {"gamma": (bn.weight, same), "beta": (bn.bias, same)}


def batch_norm(t, a, dtype):
    bn, params = _batch_norm_module(t, a, dtype)
    return bn.train()(t["x"]), params


def batch_norm_inference(t, a, dtype):
    bn, params = _batch_norm_module(t, a, dtype)
    _set(bn.running_mean, t["running_mean"])
    _set(bn.running_var, t["running_var"])
    return bn.eval()(t["x"]), params


def _affine(module, t, params):
    """Optional gamma/beta into a module's weight/bias. PyTorch has no scale-only or
    shift-only affine: the missing one is held at its identity (weight 1, bias 0)."""
    if module.weight is not None:
        _set(module.weight, t["gamma"] if "gamma" in t else torch().ones_like(module.weight))
        if "gamma" in t:
            params["gamma"] = (module.weight, same)
    if module.bias is not None:
        _set(module.bias, t["beta"] if "beta" in t else torch().zeros_like(module.bias))
        if "beta" in t:
            params["beta"] = (module.bias, same)
    return params


def layer_norm(t, a, dtype):
    x = t["x"]
    affine = "gamma" in t or "beta" in t
    ln = nn().LayerNorm(tuple(x.shape[x.ndim - a["axes"]:]), eps=a["eps"], elementwise_affine=affine,
                        bias="beta" in t, dtype=dtype)
    params = _affine(ln, t, {})
    return ln(x), params


def group_norm(t, a, dtype):
    x = t["x"]
    gn = nn().GroupNorm(a["groups"], x.shape[1], eps=a["eps"], affine="gamma" in t or "beta" in t, dtype=dtype)
    params = _affine(gn, t, {})
    return gn(x), params


def embedding(t, a, dtype):
    v, d = t["W"].shape
    emb = nn().Embedding(v, d, padding_idx=None, max_norm=None, scale_grad_by_freq=False, sparse=False, dtype=dtype)
    _set(emb.weight, t["W"])
    return emb(t["ids"]), {"W": (emb.weight, same)}


def dropout(t, a, dtype):
    # nn.Dropout draws its own mask and cannot take one. Its CPU kernel computes
    # x * (mask / (1 - p)); this line is that formula, bit for bit (measured: the
    # output and gradient of nn.Dropout(p).train() equal it exactly, float32 and float64).
    return t["x"] * (t["mask"] / (1.0 - a["p"]))


BUILDERS = {
    # layers whose builder is the function of the same name above
    **by_name(dense, residual_block, conv1d, conv2d, conv_transpose2d, max_pool2d, avg_pool2d,
              global_avg_pool2d, batch_norm, batch_norm_inference, layer_norm, group_norm, embedding,
              dropout),
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
}

# Where the math leaves a choice open, what PyTorch does (measured here, see CONVENTIONS.md).
CONVENTIONS: dict[str, Convention] = {
    "leaky_relu": Convention({"at_zero": "left"}, "backward tests x > 0, so x = 0 takes the slope; measured"),
    "elu": Convention({"at_zero": "left"}, "elu_backward tests x <= 0, so x = 0 takes alpha; measured"),
    "selu": Convention({"at_zero": "left"}, "selu shares elu_backward: x = 0 takes scale*alpha; measured"),
    # ---- convolution and pooling
    "max_pool2d": Convention({"tie": "first"},
                             "the first maximum in row-major window order gets the gradient (as a scan that replaces its "
                             "candidate only on val > max would); measured with torch 2.13: in all 98 of 150 drawn cases where "
                             "first and last differ it matches tie=first, and -0.0 vs 0.0 routes to the first. NaN (not "
                             "drawn: cases are finite) replaces the candidate every time ([[1, nan], [nan, 2]]): the "
                             "output is NaN and the LAST NaN in the window gets the gradient"),
    # ---- normalization, embedding, dropout
    "dropout": Convention({}, "inverted dropout, x * (mask / (1 - p)); nn.Dropout cannot take a given mask, the "
                              "builder applies its formula, measured bit-identical to nn.Dropout's output and gradient"),
    "batch_norm": Convention({}, "training mode normalizes with the biased batch variance (stores the unbiased one in "
                                 "running_var); refuses N * prod(spatial) == 1; measured"),
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
            source, to_canonical = params.get(name, (t[name], same))
            grad = source.grad if source.grad is not None else T.zeros_like(source)
            grads[name] = to_canonical(grad).detach().numpy()
        return Output(out.detach().numpy(), grads)
