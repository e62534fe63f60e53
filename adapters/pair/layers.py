"""What corresponds between a PyTorch module and a Keras layer: the kind each class is, how
each kind's weights map from one to the other, and the settings whose defaults differ.

A *kind* names a layer the same way on both sides ("dense" for nn.Linear and
keras.layers.Dense, "conv2d", "lstm", "relu", ...), as the catalogue does. Weights
map PyTorch -> Keras through the layouts the adapters use (a dense weight transposed,
OIHW -> HWIO, an LSTM's two biases summed, a GRU's gates reordered r, z, n -> z, r, h,
an attention's packed in_proj split per head); a gradient maps the same way, except
where one Keras weight stands for several PyTorch ones (a summed bias: its gradient is
each of theirs).
"""

from __future__ import annotations

import numpy as np

# PyTorch module class name -> kind. Classes not here are not compared (containers are walked).
TORCH_KINDS = {
    "Linear": "dense", "Conv1d": "conv1d", "Conv2d": "conv2d", "ConvTranspose2d": "conv_transpose2d",
    "BatchNorm1d": "batch_norm", "BatchNorm2d": "batch_norm", "BatchNorm3d": "batch_norm",
    "LayerNorm": "layer_norm", "GroupNorm": "group_norm", "RMSNorm": "rms_norm", "Embedding": "embedding",
    "LSTM": "lstm", "GRU": "gru", "RNN": "rnn", "MultiheadAttention": "multi_head_attention",
    "MaxPool2d": "max_pool2d", "AvgPool2d": "avg_pool2d", "AdaptiveAvgPool2d": "global_avg_pool2d",
    "Flatten": "flatten", "Dropout": "dropout",
    "ReLU": "relu", "LeakyReLU": "leaky_relu", "ELU": "elu", "SELU": "selu", "GELU": "gelu", "Sigmoid": "sigmoid",
    "Tanh": "tanh", "Softplus": "softplus", "SiLU": "silu", "Softmax": "softmax", "LogSoftmax": "log_softmax",
}
KERAS_KINDS = {
    "Dense": "dense", "Conv1D": "conv1d", "Conv2D": "conv2d", "Conv2DTranspose": "conv_transpose2d",
    "BatchNormalization": "batch_norm", "LayerNormalization": "layer_norm", "GroupNormalization": "group_norm",
    "RMSNormalization": "rms_norm", "Embedding": "embedding", "LSTM": "lstm", "GRU": "gru", "SimpleRNN": "rnn",
    "MultiHeadAttention": "multi_head_attention", "MaxPooling2D": "max_pool2d", "AveragePooling2D": "avg_pool2d",
    "GlobalAveragePooling2D": "global_avg_pool2d", "Flatten": "flatten", "Dropout": "dropout",
    "ReLU": "relu", "LeakyReLU": "leaky_relu", "ELU": "elu", "Softmax": "softmax",
}
# keras.layers.Activation("name") -> kind
ACTIVATIONS = {"relu": "relu", "leaky_relu": "leaky_relu", "elu": "elu", "selu": "selu", "gelu": "gelu",
               "sigmoid": "sigmoid", "tanh": "tanh", "softplus": "softplus", "silu": "silu", "swish": "silu",
               "softmax": "softmax", "log_softmax": "log_softmax"}
SPATIAL = {"conv1d", "conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "batch_norm"}


def torch_kind(module) -> str | None:
    return TORCH_KINDS.get(type(module).__name__)


def keras_kind(layer) -> str | None:
    name = type(layer).__name__
    if name == "Activation":
        activation = layer.get_config().get("activation")
        return ACTIVATIONS.get(activation if isinstance(activation, str) else getattr(activation, "__name__", ""))
    return KERAS_KINDS.get(name)


def channels_last(layer) -> bool:
    """Whether a Keras layer's tensors put channels last (its data_format; Keras' default)."""
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _relayout(value, shape, source: int, target: int, moved_first: bool):
    value = np.asarray(value)
    moved = np.moveaxis(value, source, target) if value.ndim >= 3 else None
    candidates = [moved, value] if moved_first else [value, moved]
    return next((c for c in candidates if c is not None and c.shape == tuple(shape)), None)


def to_torch_layout(value: np.ndarray, torch_shape: tuple, channels_last: bool = False) -> np.ndarray | None:
    """A Keras tensor in PyTorch's layout: channels moved from last to axis 1 (NHWC -> NCHW, NLC ->
    NCL) or as it is, whichever makes the shapes agree, the first tried being what the Keras
    layer's layout says (``channels_last``: a square image of as many channels fits both); None
    when neither does."""
    return _relayout(value, torch_shape, -1, 1, channels_last)


def to_keras_layout(value: np.ndarray, keras_shape: tuple, channels_last: bool = False) -> np.ndarray | None:
    """The inverse of to_torch_layout."""
    return _relayout(value, keras_shape, 1, -1, channels_last)


def layouts(layers) -> list[bool]:
    """Whether each Keras layer's output (in order) holds channels last: its data_format where it
    has one, a normalization's axis -1, else what the layer before it held."""
    out, last = [], False
    for layer in layers:
        if hasattr(layer, "data_format") and keras_kind(layer) != "flatten":
            last = channels_last(layer)
        elif type(layer).__name__ == "BatchNormalization":
            last = layer.axis in (-1, [-1]) or layer.axis == [3] or layer.axis == 3
        elif keras_kind(layer) in ("flatten", "dense", "embedding", "lstm", "gru", "rnn", "multi_head_attention"):
            last = False
        out.append(last)
    return out


def flatten_order(torch_input_shape: tuple) -> np.ndarray:
    """For a Flatten after channels-last Keras tensors: the index into Keras' flat vector (H, W, C
    order) of each element of PyTorch's (C, H, W order), so keras_flat[..., order] is PyTorch's."""
    c, *spatial = torch_input_shape[1:]
    return np.moveaxis(np.arange(int(np.prod(torch_input_shape[1:]))).reshape(*spatial, c), -1, 0).reshape(-1)


# ---- weights: PyTorch module -> Keras layer.get_weights() order, and gradients the same way


def _gates(order):
    """Reorder the gate blocks along axis 0 of a (G H, ...) array."""
    def reorder(v):
        blocks = np.split(np.asarray(v), len(order), axis=0)
        return np.concatenate([blocks[i] for i in order], axis=0)
    return reorder


GRU_TO_KERAS = _gates((1, 0, 2))  # PyTorch r, z, n -> Keras z, r, h


def _np(t):
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


def keras_weights(kind: str, module, grads: bool = False, flatten: np.ndarray | None = None) -> list | None:
    """The Keras layer's weights (in ``get_weights()`` order) that hold ``module``'s parameters,
    or with ``grads`` their gradients (from each parameter's ``.grad``); None for a kind without
    weights. ``flatten``: the flatten_order of a Flatten just before a dense layer (its rows are
    then PyTorch's features permuted into Keras' order)."""
    def p(name):
        t = getattr(module, name)
        if t is None:
            return None
        return None if grads and t.grad is None else _np(t.grad if grads else t)

    def present(*arrays):
        return [a for a in arrays if a is not None]

    if kind == "dense":
        W = p("weight").T
        if flatten is not None:
            W = W[np.argsort(flatten)]  # Keras' row k is PyTorch's row flatten_order^-1[k]
        return present(W, p("bias"))
    if kind in ("conv1d", "conv2d"):
        return present(np.moveaxis(p("weight"), (0, 1), (-1, -2)), p("bias"))  # OI... -> ...IO
    if kind == "conv_transpose2d":
        return present(p("weight").transpose(2, 3, 1, 0), p("bias"))  # (in, out, kH, kW) -> (kH, kW, out, in)
    if kind == "batch_norm":
        if grads:
            return present(p("weight"), p("bias"))
        stats = [_np(module.running_mean), _np(module.running_var)] if module.track_running_stats else []
        return present(p("weight"), p("bias"), *stats)
    if kind in ("layer_norm", "group_norm", "rms_norm"):
        return present(p("weight"), p("bias") if hasattr(module, "bias") else None)
    if kind == "embedding":
        return [p("weight")]
    if kind in ("lstm", "gru", "rnn"):
        reorder = GRU_TO_KERAS if kind == "gru" else (lambda v: v)
        w_ih, w_hh, b_ih, b_hh = (p(f"{n}_l0") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
        weights = [reorder(w_ih).T, reorder(w_hh).T]
        if b_ih is None:
            return weights
        if kind == "gru":
            return weights + [np.stack([reorder(b_ih), reorder(b_hh)])]
        return weights + [b_ih if grads else b_ih + b_hh]  # one Keras bias: its gradient is each of theirs
    if kind == "multi_head_attention":
        e, heads = module.embed_dim, module.num_heads
        d = e // heads
        w, b = np.split(p("in_proj_weight"), 3), (np.split(p("in_proj_bias"), 3) if module.in_proj_bias is not None
                                                  else [None] * 3)
        out_w, out_b = _np(module.out_proj.weight.grad if grads else module.out_proj.weight), (
            _np(module.out_proj.bias.grad if grads else module.out_proj.bias) if module.out_proj.bias is not None
            else None)
        weights = []
        for wi, bi in zip(w, b):  # query, key, value: kernel (E, heads, d), bias (heads, d)
            weights += present(wi.T.reshape(e, heads, d), None if bi is None else bi.reshape(heads, d))
        return weights + present(out_w.T.reshape(heads, d, e), out_b)
    return None


def unmatched(mine: np.ndarray, theirs: np.ndarray) -> str:
    """How ``theirs`` (a Keras weight as the user set it) relates to ``mine`` (PyTorch's, mapped):
    "" when equal, else what it matches up to, or "differs"."""
    mine, theirs = np.asarray(mine, dtype=np.float64), np.asarray(theirs, dtype=np.float64)

    def same(a, b):
        return a.shape == b.shape and np.allclose(a, b, rtol=1e-6, atol=1e-7 * max(1.0, np.abs(a).max(initial=0.0)))

    if same(mine, theirs):
        return ""
    if mine.ndim == 2 and same(mine.T, theirs):
        return "matches only up to a transpose"
    if mine.ndim >= 1 and mine.shape == theirs.shape and same(np.sort(mine, axis=None), np.sort(theirs, axis=None)):
        return "holds the same numbers in another order (a permuted layout, gate order or flatten order)"
    if mine.size == theirs.size and same(np.sort(mine, axis=None), np.sort(theirs, axis=None)):
        return f"holds the same numbers in another shape ({theirs.shape} against {mine.shape})"
    return "differs"


# ---- settings whose defaults differ: what explains a divergent pair


def _cfg(layer) -> dict:
    return layer.get_config()


def explain(kind: str, module, layer, torch_input_shape=None, after_flatten: bool = False,
            masked: bool = False) -> list[str]:
    """The settings of a paired module and layer that differ in a way that changes results,
    each as one sentence ("BatchNorm2d eps=1e-05 vs BatchNormalization epsilon=0.001").
    ``kind`` "dense+relu": a Keras Dense fusing the activation PyTorch runs as a module of its
    own (paired as one: no difference); ``after_flatten``: a dense layer right after a Flatten of
    channels-last tensors whose rows were left in PyTorch's order; ``masked``: a recurrent layer
    PyTorch runs over packed sequences while no mask reaches the Keras one."""
    kind, plus, _ = kind.partition("+")
    found, cfg, t = [], _cfg(layer), type(module).__name__
    k = type(layer).__name__
    if kind == "batch_norm":
        if not np.isclose(module.eps, cfg["epsilon"]):
            found.append(f"{t} eps={module.eps:g} vs {k} epsilon={cfg['epsilon']:g}")
        if module.momentum is not None and not np.isclose(1 - module.momentum, cfg["momentum"]):
            found.append(f"momentum {module.momentum:g} vs {cfg['momentum']:g} (running statistics only: "
                         "training-mode gradients unaffected)")
    if kind in ("layer_norm", "group_norm", "rms_norm"):
        eps = getattr(module, "eps", None)
        theirs = cfg.get("epsilon")
        if eps is not None and theirs is not None and not np.isclose(eps, theirs):
            found.append(f"{t} eps={eps:g} vs {k} epsilon={theirs:g}")
    if kind == "gelu":
        approximate = getattr(module, "approximate", "none")
        theirs = cfg.get("approximate", False) if k != "Activation" else False
        if (approximate == "tanh") != bool(theirs):
            found.append(f"GELU {'approximate=' + repr(approximate)} vs Keras gelu approximate={bool(theirs)} "
                         "(exact erf against the tanh approximation)")
    if kind in ("conv1d", "conv2d"):
        padding, stride = module.padding, module.stride
        if cfg["padding"] == "same" and (isinstance(padding, str) or any(s > 1 for s in stride)):
            if not isinstance(padding, str) or padding != "same":
                found.append(f"padding={padding} symmetric vs padding='same' (asymmetric for stride "
                             f"{max(stride)}: Keras pads the extra cell at the end)")
        elif cfg["padding"] == "valid" and not isinstance(padding, str) and any(padding):
            found.append(f"padding={padding} vs padding='valid'")
    if kind == "dense" and not plus and cfg.get("activation") not in (None, "linear"):
        found.append(f"Dense has activation={cfg['activation']!r} fused; nn.Linear has none and no activation "
                     "module follows it in PyTorch")
    if kind == "dense" and after_flatten:
        found.append("Flatten of NCHW vs NHWC: the next Dense sees permuted features (Keras flattens (H, W, C), "
                     "PyTorch (C, H, W): the Dense's kernel rows must be permuted, as gradparity's weight "
                     "transfer does)")
    if kind == "gru" and not cfg.get("reset_after", True):
        found.append("GRU reset_after=False has no PyTorch form (PyTorch's GRU applies the reset gate after the "
                     "matrix product)")
    if kind == "flatten" and torch_input_shape is not None and len(torch_input_shape) >= 3 and channels_last(layer):
        found.append("Flatten of NCHW vs NHWC: the next Dense sees permuted features")
    if kind in ("lstm", "gru", "rnn") and masked:
        found.append("PyTorch runs packed sequences (pack_padded_sequence: each sequence stops at its length); "
                     "no mask reaches the Keras layer (no Embedding(mask_zero=True), no Masking layer): the padded "
                     "steps run as data")
    if kind == "dropout":
        found.append("dropout draws a different mask in each framework: compare with dropout off (eval mode)")
    return found
