"""Keras builders: the zoo's whole models, as a Keras user writes them.

A functional ``keras.Model`` from ``keras.Input`` through Dense, Conv2D,
BatchNormalization(training=True), LSTM over a mask, MultiHeadAttention, ...,
kept channels-last the whole way as Keras users keep it (so a flatten runs in
NHWC order, and the dense after it holds the canonical weights' rows permuted
to match: the port's classic pitfall, done right); the logits go through
SparseCategoricalCrossentropy(from_logits=True). One GradientTape over the
model's call. Each layer's output is an output of the same functional graph
(the model built over ``keras.Input``s returns them beside the logits), so the
tape gives the cotangent arriving at each; they are compared in the oracle's
layout (NCHW), converted back here.
"""

from __future__ import annotations

import numpy as np

from ...reference.models import STEPS, derived, steps_of
from .. import base
from ..base import Built, param
from .core import builder, keras, tf

_HWIO = [2, 3, 1, 0]  # OIHW -> HWIO


def _flatten_rows(c, h, w):
    """The rows of a dense after a flatten: canonical NCHW order (c, h, w) as Keras' NHWC flatten (h, w, c)."""
    return np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).ravel()


def _layer(step, t, dtype, flattened):
    """(a callable on KerasTensors for one step, its parameters as ``Param``s, whether it takes
    the data arrays); built and loaded with the case's weights. ``flattened``: the (C, H, W) a
    flatten before this dense produced, or None."""
    K, L = keras(), keras().layers
    p = {name: t[step.array(name)].numpy() for name in step.params}
    kind = step.layer
    if kind == "dense":
        W = p["W"]
        layer = L.Dense(W.shape[1], dtype=dtype)
        layer.build((None, W.shape[0]))
        if flattened is not None:  # canonical rows are NCHW-flattened; Keras flattens NHWC
            order = _flatten_rows(*flattened)
            layer.kernel.assign(W[order])
            inverse = np.argsort(order)
            kernel = param(layer.kernel, step.array("W"), lambda g: np.asarray(g)[inverse])
        else:
            layer.kernel.assign(W)
            kernel = param(layer.kernel, step.array("W"))
        layer.bias.assign(p["b"])
        return layer, (kernel, param(layer.bias, step.array("b")))
    if kind in ("relu", "tanh", "sigmoid"):
        return L.Activation(kind, dtype=dtype), ()
    if kind == "gelu":
        return L.Activation(lambda x: K.activations.gelu(x, approximate=step.attrs["approximate"] == "tanh"),
                            dtype=dtype), ()
    if kind == "conv2d":
        W = p["W"]
        layer = L.Conv2D(W.shape[0], tuple(W.shape[2:]), padding="same", data_format="channels_last", dtype=dtype)
        layer.build((None, None, None, W.shape[1]))
        layer.kernel.assign(np.transpose(W, _HWIO))
        layer.bias.assign(p["b"])
        back = np.argsort(_HWIO)
        return layer, (param(layer.kernel, step.array("W"), lambda g: np.transpose(g, back)),
                       param(layer.bias, step.array("b")))
    if kind == "max_pool2d":
        return L.MaxPooling2D(step.attrs["kernel_h"], step.attrs["stride_h"], data_format="channels_last",
                              dtype=dtype), ()
    if kind == "batch_norm":
        layer = L.BatchNormalization(axis=-1, epsilon=step.attrs["eps"], momentum=0.9, dtype=dtype)
        layer.build((None, None, None, p["gamma"].shape[0]))
        layer.gamma.assign(p["gamma"])
        layer.beta.assign(p["beta"])
        return (lambda x: layer(x, training=True)), (param(layer.gamma, step.array("gamma")),
                                                     param(layer.beta, step.array("beta")))
    if kind == "global_avg_pool2d":
        return L.GlobalAveragePooling2D(data_format="channels_last", dtype=dtype), ()
    if kind == "embedding":
        layer = L.Embedding(*p["W"].shape, dtype=dtype)
        layer.build((None, None))
        layer.embeddings.assign(p["W"])
        return layer, (param(layer.embeddings, step.array("W")),)
    if kind in ("masked_lstm", "masked_gru"):
        return _recurrent(step, p, dtype)
    if kind == "multi_head_attention":
        return _attention(step, p, dtype)
    if kind in ("layer_norm", "rms_norm"):
        if kind == "layer_norm":
            layer = L.LayerNormalization(axis=-1, epsilon=step.attrs["eps"], dtype=dtype)
        else:
            layer = L.RMSNormalization(axis=-1, epsilon=step.attrs["eps"], dtype=dtype)
        layer.build((None, None, p["gamma"].shape[0]))
        params = ()
        for name, var in (("gamma", layer.gamma if kind == "layer_norm" else layer.scale),
                          ("beta", getattr(layer, "beta", None))):
            if name in p:
                var.assign(p[name])
                params += (param(var, step.array(name)),)
        return layer, params
    raise TypeError(f"no Keras form for a {kind} step")


def _reorder(order):
    def permute(v):
        blocks = np.split(np.asarray(v), len(order), axis=-1)
        return np.concatenate([blocks[k] for k in order], axis=-1)
    return permute


def _recurrent(step, p, dtype):
    """LSTM(return_state=True) / GRU(reset_after=True) over a mask: its last state. Keras' LSTM holds
    one bias for b_ih + b_hh; its GRU orders the gates z, r, h (PyTorch: r, z, n)."""
    L = keras().layers
    H, lstm = p["W_hh"].shape[0], step.layer == "masked_lstm"
    cls = L.LSTM if lstm else L.GRU
    options = dict(unit_forget_bias=False) if lstm else dict(reset_after=True)
    layer = cls(H, return_state=True, use_cudnn=False, dtype=dtype, **options)
    layer.build((None, None, p["W_ih"].shape[0]))
    reorder = (lambda v: np.asarray(v)) if lstm else _reorder((1, 0, 2))
    cell, ih, hh, b_ih, b_hh = (layer.cell, step.array("W_ih"), step.array("W_hh"), step.array("b_ih"),
                                step.array("b_hh"))
    cell.kernel.assign(reorder(p["W_ih"]))
    cell.recurrent_kernel.assign(reorder(p["W_hh"]))
    if lstm:
        cell.bias.assign(p["b_ih"] + p["b_hh"])
        bias = base.Param(cell.bias, (b_ih, b_hh), lambda g: {b_ih: np.asarray(g), b_hh: np.asarray(g)})
    else:
        cell.bias.assign(np.stack([reorder(p["b_ih"]), reorder(p["b_hh"])]))
        bias = base.Param(cell.bias, (b_ih, b_hh), lambda g: {b_ih: reorder(g[0]), b_hh: reorder(g[1])})
    params = (param(cell.kernel, ih, reorder), param(cell.recurrent_kernel, hh, reorder), bias)
    return (lambda x, mask: layer(x, mask=mask)[1]), params


def _attention(step, p, dtype):
    """MultiHeadAttention(query, value, key) with value_mask from the padding; each (E, E) projection is
    held as an einsum kernel (E, heads, D), its bias (heads, D), the output's (heads, D, E)."""
    L = keras().layers
    e, heads = p["W_q"].shape[0], step.attrs["num_heads"]
    d = e // heads
    layer = L.MultiHeadAttention(num_heads=heads, key_dim=d, value_dim=d, output_shape=e, dtype=dtype)
    layer.build((None, None, e), (None, None, e), (None, None, e))
    params = []
    for dense, w, b in ((layer.query_dense, "W_q", "b_q"), (layer.key_dense, "W_k", "b_k"),
                        (layer.value_dense, "W_v", "b_v")):
        dense.kernel.assign(p[w].reshape(e, heads, d))
        dense.bias.assign(p[b].reshape(heads, d))
        params += [param(dense.kernel, step.array(w), lambda g: np.reshape(g, (e, e))),
                   param(dense.bias, step.array(b), lambda g: np.reshape(g, (e,)))]
    layer.output_dense.kernel.assign(p["W_o"].reshape(heads, d, e))
    layer.output_dense.bias.assign(p["b_o"])
    params += [param(layer.output_dense.kernel, step.array("W_o"), lambda g: np.reshape(g, (e, e))),
               param(layer.output_dense.bias, step.array("b_o"))]
    return (lambda x, mask: layer(x, x, key=x, value_mask=mask)), tuple(params)


def _scaled(scale, direction, dtype):
    """An identity Lambda layer that scales the forward value, or the gradient (the fault seam)."""
    T = tf()

    @T.custom_gradient
    def on_the_way_back(x):
        return T.identity(x), lambda g: g * scale

    fn = (lambda x: x * scale) if direction == "forward" else on_the_way_back
    return keras().layers.Lambda(fn, dtype=dtype)  # without dtype, Keras computes it in float32


def network(t, a, dtype, name):
    """The zoo's model ``name`` as a functional keras.Model holding the case's weights."""
    K, T = keras(), tf()
    arrays = {k: v.numpy() for k, v in t.items()}
    steps = steps_of(name, arrays, a)
    x = arrays["x"]
    image = x.ndim == 4
    x_in = K.Input(shape=(x.shape[2], x.shape[3], x.shape[1]) if image else x.shape[1:],
                   dtype="int32" if x.dtype.kind == "i" else dtype, name="x")
    extra = derived(name, arrays)
    inputs = {"x": x_in}
    if "lengths" in arrays:
        inputs["mask"] = K.Input(shape=(x.shape[1],), dtype="bool", name="mask")
    params, symbolic, flattened, fault = (), {}, None, base.FAULT
    flow, entering = x_in, {}
    for step in steps[:-1]:  # the last step, the loss, is applied to the model's logits
        entering[step.index] = flow
        layer, more = _layer(step, t, dtype, flattened)
        params += more
        if fault and fault["step"] == step.name and fault["direction"] == "backward":
            flow = _scaled(fault["scale"], "backward", dtype)(flow)
        takes_mask = step.layer in ("masked_lstm", "masked_gru", "multi_head_attention")
        y = layer(flow, inputs["mask"]) if takes_mask else layer(flow)
        if fault and fault["step"] == step.name and fault["direction"] == "forward":
            y = _scaled(fault["scale"], "forward", dtype)(y)
        symbolic[step.name], flow, flattened = y, y, None
        for op in step.then:
            if op[0] == "flatten":
                flattened = (y.shape[3], y.shape[1], y.shape[2])  # (C, H, W) of the NHWC output
                flow = K.layers.Flatten(data_format="channels_last", dtype=dtype)(flow)
            elif op[0] == "add":
                flow = K.layers.Add(dtype=dtype)([flow, entering[op[1]]])
            elif op[0] == "mean":
                flow = K.layers.GlobalAveragePooling1D(dtype=dtype)(flow)
    model = K.Model(inputs, symbolic)  # the user's model returns the logits; the same graph returns each layer's
    loss_fn = K.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum_over_batch_size", dtype=dtype)
    last, loss_step = steps[-2].name, steps[-1].name
    tapped = {}

    def apply(t):
        values = {"x": T.transpose(t["x"], [0, 2, 3, 1]) if image else t["x"]}
        if "mask" in inputs:
            values["mask"] = T.sequence_mask(t["lengths"], x.shape[1])
        outs = model(values)
        loss = loss_fn(t["labels"], outs[last])
        tapped.clear()
        tapped.update({**outs, loss_step: loss})
        return loss

    def to_canonical(name, array):
        return np.transpose(array, [0, 3, 1, 2]) if np.ndim(array) == 4 else array

    del extra  # the padding mask is the Keras mask input, from the lengths
    return Built(apply, params, taps=lambda: dict(tapped), tap_to_canonical=to_canonical)


for _name in STEPS:
    builder(_name)(lambda t, a, dtype, _name=_name: network(t, a, dtype, _name))
