"""TensorFlow / Keras: ``tf.GradientTape``, ``tape.gradient``.

Builders take the case's arrays as tensors (``t``), its attributes (``a``) and
the dtype name, build the real Keras layer holding the case's parameters
(outside the tape), and return a ``Built``: how to apply it (inside the tape),
and each variable with the canonical name(s) its gradient stands for. Keras
layers and losses get ``dtype`` explicitly: Keras computes in float32 unless
told otherwise. Every hyperparameter is passed explicitly: defaults differ
between frameworks.
"""

from __future__ import annotations

import importlib
import os
import warnings

import numpy as np

from ..reference import Convention
from ..reference.conv import resolve_padding, same_pads  # the oracle's rule for 'same': one formula
from ..reference.pooling import pool_pads  # the oracle's padding and ceil_mode rule: one formula
from .base import Built, FrameworkAdapter, NotApplicable, Param, by_name, param, seed_of, stateless

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
    params = (param(layer.kernel, "W"),) + ((param(layer.bias, "b"),) if "b" in t else ())
    return Built(lambda t: layer(t["x"]), params)


def residual_block(t, a, dtype):
    d, h = t["W1"].shape
    first, second = _dense(h, t["W1"], t["b1"], dtype), _dense(d, t["W2"], t["b2"], dtype)
    relu = keras().layers.ReLU(dtype=dtype)
    return Built(lambda t: t["x"] + second(relu(first(t["x"]))),
                 (param(first.kernel, "W1"), param(first.bias, "b1"),
                  param(second.kernel, "W2"), param(second.bias, "b2")))


def _loss(cls, y_true, y_pred, dtype, sample_weight=None, **kwargs):
    """A Keras loss object, called the Keras way round: (y_true, y_pred)."""
    return cls(dtype=dtype, **kwargs)(y_true, y_pred, sample_weight=sample_weight)


# PyTorch's reductions as Keras names them; Keras reduces per-sample losses (see _per_element).
_REDUCTION = {"mean": "sum_over_batch_size", "sum": "sum", "none": "none"}


def _per_element(a, *arrays):
    """Keras' losses average the last axis into one loss per sample before reducing:
    its 'sum' of an (N, D) loss is PyTorch's sum / D, and its 'none' is (N,). A
    trailing axis of 1 makes every element its own sample, so each reduction is
    PyTorch's ('mean' is the same number either way and is called as it is)."""
    if a["reduction"] == "mean":
        return arrays
    return tuple(None if v is None else v[..., None] for v in arrays)


def _channels_last(v):
    """(N, K, d1, ...) -> (N, d1, ..., K): Keras' losses take classes on the last axis."""
    rank = len(v.shape)
    return v if rank == 2 else tf().transpose(v, [0, *range(2, rank), 1])


def cross_entropy(t, a, dtype):
    """SparseCategoricalCrossentropy (ignore_class) for plain integer labels; with
    label smoothing the categorical loss on one-hot labels; class weights and
    ignored labels under smoothing as sample weights w[y] (0 where ignored), whose
    mean Keras takes as PyTorch does with reduction='mean_with_sample_weight'."""
    losses = keras().losses
    logits, eps, weighted = _channels_last(t["logits"]), a["label_smoothing"], "weight" in t
    reduction = _REDUCTION[a["reduction"]]
    if a["target_type"] == "probabilities":
        if weighted:
            raise NotApplicable("Keras' CategoricalCrossentropy has no class weights: a sample weight scales a "
                                "sample's whole loss, not each class's term of a probability target")
        return _loss(losses.CategoricalCrossentropy, _channels_last(t["probs"]), logits, dtype, from_logits=True,
                     label_smoothing=eps, reduction=reduction)
    labels, ignore = t["labels"], a["ignore_index"]
    if eps == 0 and not weighted:  # what a Keras user writes for integer labels
        return _loss(losses.SparseCategoricalCrossentropy, labels, logits, dtype, from_logits=True,
                     ignore_class=None if ignore == -100 else ignore, reduction=reduction)
    if eps > 0 and weighted:
        raise NotApplicable("with label smoothing PyTorch weighs each class's term of the smoothed target by its "
                            "own weight w_k; a Keras sample weight scales the whole loss by w[y]")
    keep = tf().not_equal(labels, ignore)
    sample_weight = tf().cast(keep, dtype)
    if weighted:
        sample_weight *= tf().gather(t["weight"], tf().where(keep, labels, tf().zeros_like(labels)))
    if a["reduction"] == "mean":
        reduction = "mean_with_sample_weight"
    if eps == 0:
        return _loss(losses.SparseCategoricalCrossentropy, labels, logits, dtype, sample_weight, from_logits=True,
                     reduction=reduction)
    onehot = tf().one_hot(labels, logits.shape[-1], dtype=dtype)
    return _loss(losses.CategoricalCrossentropy, onehot, logits, dtype, sample_weight, from_logits=True,
                 label_smoothing=eps, reduction=reduction)


def binary_cross_entropy_with_logits(t, a, dtype):
    """BinaryCrossentropy(from_logits=True), element weights as sample weights; with
    pos_weight (which Keras' loss has not) tf.nn.weighted_cross_entropy_with_logits,
    reduced by hand, as Keras users do."""
    if "pos_weight" in t:
        per = tf().nn.weighted_cross_entropy_with_logits(labels=t["targets"], logits=t["logits"],
                                                         pos_weight=t["pos_weight"])
        if "weight" in t:
            per *= t["weight"]
        return {"mean": tf().reduce_mean, "sum": tf().reduce_sum, "none": lambda v: v}[a["reduction"]](per)
    weight = t.get("weight")
    targets, logits, weight = (_per_element(a, t["targets"], t["logits"], weight) if weight is None
                               else (t["targets"][..., None], t["logits"][..., None], weight))
    return _loss(keras().losses.BinaryCrossentropy, targets, logits, dtype, weight, from_logits=True,
                 label_smoothing=0.0, reduction=_REDUCTION[a["reduction"]])


def _mean_loss(name, **kwargs):
    def apply(t, a, dtype):
        cls = getattr(keras().losses, name)
        extra = {k: a[v] for k, v in kwargs.items()}
        target, pred = _per_element(a, t["target"], t["pred"])
        return _loss(cls, target, pred, dtype, reduction=_REDUCTION[a["reduction"]], **extra)
    return apply


# ---- builders: convolution and pooling ---------------------------------------
# Keras on CPU is channels-last: inputs NCHW -> NHWC (NCL -> NLC), kernels
# (O, I/G, kH, kW) -> HWIO, transposed kernels (I, O/G, kH, kW) -> (kH, kW, O, I);
# outputs and kernel gradients go back. Explicit padding that Keras layers
# cannot say is done first, as a user would: ZeroPadding1D/2D for convolutions
# and counted average pooling, tf.pad(-inf) before max pooling.


_NHWC, _NCHW, _HWIO_TO_OIHW = [0, 2, 3, 1], [0, 3, 1, 2], [3, 2, 0, 1]


def _transposed(perm):
    return lambda v: np.transpose(v, perm)


def _conv_layer(layer, x_shape, t, kernel_perm):
    """Build a Keras conv layer for an input of x_shape, load the canonical W (permuted) and b."""
    layer.build(tuple(x_shape))
    layer.kernel.assign(tf().transpose(t["W"], kernel_perm))
    params = (param(layer.kernel, "W", _transposed(_inverse(kernel_perm))),)
    if "b" in t:
        layer.bias.assign(t["b"])
        params += (param(layer.bias, "b"),)
    return params


def _inverse(perm):
    return [perm.index(i) for i in range(len(perm))]


def xla_conv1d_heap_corruption(dtype: str, x_shape, w_shape, attrs: dict) -> bool:
    """Whether Keras would run a conv1d whose gradient corrupts memory.

    Keras 3 runs every grouped convolution through ``tf.function(jit_compile=True)``
    (plain TensorFlow has no CPU gradient for grouped convolutions), and XLA's CPU
    gradient of float64 grouped 1-d convolutions with dilation 3 corrupts memory.
    Measured with tensorflow-cpu 2.21.0 / keras 3.15.1: with 4 input channels the
    process aborts ("corrupted size vs. prev_size", "free(): invalid next size";
    every run under MALLOC_CHECK_=3 for lengths 8 and 11, kernels 1 to 3, batch 1
    to 3); with 2 input channels (x (1, 2, 8), W (4, 1, 1)) the kernel gradient
    came back with NaN or Inf in 3 positions in 2 of 4 runs of the same case.
    float32 and dilation 1 or 2 showed neither. A process that dies is not a row,
    and a result that changes from run to run is not a measurement: such a case
    is not run. Any other case that still kills its process is named in the
    partial report.
    """
    return dtype == "float64" and attrs.get("groups", 1) > 1 and attrs.get("dilation") == 3 and len(w_shape) == 3


def _conv(t, a, dtype, cls, pad_cls, stride, dilation, explicit):
    """Conv1D/Conv2D on channels-last x. Keras refuses strides > 1 with
    dilation_rate > 1 (raises ValueError); the same map is the stride-1 dilated
    convolution subsampled every stride-th output, which is what this runs then."""
    rank = len(stride)
    W = t["W"]
    if xla_conv1d_heap_corruption(dtype, tuple(t["x"].shape), tuple(W.shape), a):
        raise RuntimeError("not run: the XLA gradient of a float64 grouped Conv1D with dilation 3 corrupts memory "
                           "(aborts the process, or returns garbage; see the known divergence)")
    kernel = tuple(W.shape[2:])
    mode = a["padding"]
    sizes = tuple(t["x"].shape[2:])
    pads = resolve_padding(mode, explicit, sizes, kernel, stride, dilation)
    subsample = max(stride) > 1 and max(dilation) > 1
    pad = lambda x: x  # noqa: E731
    if mode == "explicit" or (subsample and mode == "same"):
        if any(sum(p) for p in pads):
            pad = pad_cls(pads if rank == 2 else pads[0], data_format="channels_last", dtype=dtype)
        sizes = tuple(n + sum(p) for n, p in zip(sizes, pads))
        mode = "valid"
    layer = cls(filters=W.shape[0], kernel_size=kernel, strides=(1,) * rank if subsample else stride, padding=mode,
                data_format="channels_last", dilation_rate=dilation, groups=a["groups"], activation=None,
                use_bias="b" in t, dtype=dtype)
    params = _conv_layer(layer, (t["x"].shape[0], *sizes, t["x"].shape[1]), t, [*range(2, rank + 2), 1, 0])

    def apply(t):
        y = layer(pad(tf().transpose(t["x"], [0, *range(2, rank + 2), 1])))
        if subsample:
            y = y[(slice(None), *(slice(None, None, s) for s in stride))]
        return tf().transpose(y, [0, rank + 1, *range(1, rank + 1)])

    return Built(apply, params)


def conv2d(t, a, dtype):
    return _conv(t, a, dtype, keras().layers.Conv2D, keras().layers.ZeroPadding2D, (a["stride_h"], a["stride_w"]),
                 (a["dilation_h"], a["dilation_w"]), ((a["pad_top"], a["pad_bottom"]), (a["pad_left"], a["pad_right"])))


def conv1d(t, a, dtype):
    return _conv(t, a, dtype, keras().layers.Conv1D, keras().layers.ZeroPadding1D, (a["stride"],), (a["dilation"],),
                 ((a["pad_left"], a["pad_right"]),))


def conv_transpose2d(t, a, dtype):
    """Conv2DTranspose('valid', explicit output_padding) then Cropping2D(pad): PyTorch's
    padding p crops p from both sides of the full output (Keras' 'same' crops
    differently once output_padding is given)."""
    L = keras().layers
    if a["groups"] > 1:
        raise NotApplicable("keras.layers.Conv2DTranspose has no groups argument")
    stride, dilation = (a["stride_h"], a["stride_w"]), (a["dilation_h"], a["dilation_w"])
    if max(stride) > 1 and max(dilation) > 1:
        raise NotApplicable("keras.layers.Conv2DTranspose refuses strides > 1 with dilation_rate > 1 (ValueError)")
    if a["output_pad_h"] >= a["stride_h"] or a["output_pad_w"] >= a["stride_w"]:
        raise NotApplicable("keras.layers.Conv2DTranspose requires output_padding < strides (ValueError); PyTorch "
                            "takes output_padding < max(stride, dilation)")
    x, W = t["x"], t["W"]
    layer = L.Conv2DTranspose(filters=W.shape[1], kernel_size=tuple(W.shape[2:]), strides=stride, padding="valid",
                              output_padding=(a["output_pad_h"], a["output_pad_w"]), data_format="channels_last",
                              dilation_rate=dilation, activation=None, use_bias="b" in t, dtype=dtype)
    params = _conv_layer(layer, (x.shape[0], *x.shape[2:], x.shape[1]), t, [2, 3, 1, 0])
    crop = lambda y: y  # noqa: E731
    if a["pad_h"] or a["pad_w"]:
        crop = L.Cropping2D(((a["pad_h"],) * 2, (a["pad_w"],) * 2), data_format="channels_last", dtype=dtype)
    return Built(lambda t: tf().transpose(crop(layer(tf().transpose(t["x"], _NHWC))), _NCHW), params)


def _pool_setup(t, a):
    """kernel, stride, dilation; the padding of each side including ceil_mode's
    overhang (the oracle's rule); the part of it the window count may include."""
    kernel, stride = (a["kernel_h"], a["kernel_w"]), (a["stride_h"], a["stride_w"])
    dilation = (a.get("dilation_h", 1), a.get("dilation_w", 1))
    x = np.zeros((1, 1) + tuple(t["x"].shape[2:]))
    pads, counted = pool_pads(x, kernel, stride, dilation, a["padding"], a["pad_h"], a["pad_w"], a["ceil_mode"])
    return kernel, stride, dilation, pads, counted


def _pooled(pool, pad=lambda x: x):
    """Apply a channels-last Keras pooling layer (after ``pad``) to the canonical NCHW x."""
    return Built(lambda t: tf().transpose(pool(pad(tf().transpose(t["x"], _NHWC))), _NCHW))


def _tf_same(sizes, kernel, stride):
    return tuple(same_pads(n, k, s, 1) for n, k, s in zip(sizes, kernel, stride))


def max_pool2d(t, a, dtype):
    """MaxPooling2D; explicit padding and ceil_mode's partial window are -inf
    padding first (no Keras layer pads with it). MaxPooling2D has no dilation:
    tf.nn.pool has (dilations), for strides of 1 only; a stride s is then the
    stride-1 dilated pooling subsampled every s-th window (the same windows,
    as the Conv adapter does for Keras' dilated convolutions)."""
    kernel, stride, dilation, pads, _ = _pool_setup(t, a)
    mode, pad = a["padding"], (lambda x: x)
    dilated = max(dilation) > 1
    if mode == "explicit" or a["ceil_mode"] or dilated:
        if any(sum(p) for p in pads):
            pad = lambda x: tf().pad(x, [[0, 0], *pads, [0, 0]], constant_values=float("-inf"))  # noqa: E731
        mode = "valid"
    if dilated:
        def pool(x):
            y = tf().nn.pool(x, kernel, "MAX", strides=(1, 1), padding="VALID", data_format="NHWC",
                             dilations=dilation)
            return y[:, ::stride[0], ::stride[1]]
        return _pooled(pool, pad)
    return _pooled(keras().layers.MaxPooling2D(pool_size=kernel, strides=stride, padding=mode,
                                               data_format="channels_last", dtype=dtype), pad)


def avg_pool2d(t, a, dtype):
    """AveragePooling2D('same') leaves padded cells out of the count; counting them
    is ZeroPadding2D then 'valid' pooling (the zeros are cells). ceil_mode's partial
    window, averaged over the cells it covers, is 'same' pooling where TensorFlow's
    'same' padding happens to be exactly that overhang (all at the bottom/right)."""
    if a["divisor_override"] is not None:
        raise NotApplicable("keras.layers.AveragePooling2D has no divisor_override: it always divides by the "
                            "cells it counts")
    kernel, stride, _, pads, counted = _pool_setup(t, a)
    sizes = tuple(t["x"].shape[2:])
    if not any(sum(p) for p in pads):
        mode, pad = "valid", (lambda x: x)
    elif a["count_include_pad"]:
        pad = (keras().layers.ZeroPadding2D(counted, data_format="channels_last", dtype=dtype)
               if any(sum(p) for p in counted) else (lambda x: x))
        overhang = tuple((0, a_ - c) for (_, a_), (_, c) in zip(pads, counted))
        padded = tuple(n + sum(c) for n, c in zip(sizes, counted))
        if not any(sum(p) for p in overhang):
            mode = "valid"
        elif _tf_same(padded, kernel, stride) == overhang:
            mode = "same"
        else:
            raise NotApplicable(f"AveragePooling2D has no ceil_mode: the partial window {overhang} past the counted "
                                f"padding is not the 'same' padding {_tf_same(padded, kernel, stride)}")
    elif pads == _tf_same(sizes, kernel, stride):
        mode, pad = "same", (lambda x: x)
    else:
        raise NotApplicable(f"AveragePooling2D leaves padding out of the count only as 'same' padding "
                            f"{_tf_same(sizes, kernel, stride)}; padding {pads} (with ceil_mode's overhang) has no "
                            "Keras form")
    return _pooled(keras().layers.AveragePooling2D(pool_size=kernel, strides=stride, padding=mode,
                                                   data_format="channels_last", dtype=dtype), pad)


def global_avg_pool2d(t, a, dtype):
    pool = keras().layers.GlobalAveragePooling2D(data_format="channels_last", keepdims=False, dtype=dtype)
    return Built(lambda t: pool(tf().transpose(t["x"], _NHWC)))


def adaptive_avg_pool2d(t, a, dtype):
    pool = keras().layers.AdaptiveAveragePooling2D((a["output_h"], a["output_w"]), data_format="channels_last",
                                                   dtype=dtype)
    return _pooled(pool)



# ---- builders: normalization, embedding, dropout -----------------------------

def _batch_norm_layer(t, a, dtype):
    """keras BatchNormalization on channels axis 1 (the canonical layout, no transpose),
    holding gamma and beta. momentum only moves the moving statistics, which neither
    the output nor a gradient reads; it is passed anyway (0.9 here is PyTorch's 0.1)."""
    layer = keras().layers.BatchNormalization(axis=1, momentum=0.9, epsilon=a["eps"], center=True, scale=True,
                                              dtype=dtype)
    layer.build(t["x"].shape)
    layer.gamma.assign(t["gamma"])
    layer.beta.assign(t["beta"])
    return layer, (param(layer.gamma, "gamma"), param(layer.beta, "beta"))


def batch_norm(t, a, dtype):
    layer, params = _batch_norm_layer(t, a, dtype)
    return Built(lambda t: layer(t["x"], training=True), params)


def batch_norm_inference(t, a, dtype):
    layer, params = _batch_norm_layer(t, a, dtype)
    layer.moving_mean.assign(t["running_mean"])
    layer.moving_variance.assign(t["running_var"])
    return Built(lambda t: layer(t["x"], training=False), params)


def _affine(layer, t):
    """Optional gamma/beta into a layer built with scale/center exactly when they are given."""
    params = ()
    if "gamma" in t:
        layer.gamma.assign(t["gamma"])
        params += (param(layer.gamma, "gamma"),)
    if "beta" in t:
        layer.beta.assign(t["beta"])
        params += (param(layer.beta, "beta"),)
    return params


def layer_norm(t, a, dtype):
    x = t["x"]
    axes = list(range(x.ndim - a["axes"], x.ndim))
    layer = keras().layers.LayerNormalization(axis=axes, epsilon=a["eps"], center="beta" in t, scale="gamma" in t,
                                              rms_scaling=False, dtype=dtype)
    layer.build(x.shape)
    return Built(lambda t: layer(t["x"]), _affine(layer, t))


def rms_norm(t, a, dtype):
    """Both ways Keras users reach RMS normalization. RMSNormalization always has a
    scale: without gamma it stays at ones and is not compared. LayerNormalization's
    rms_scaling=True (deprecated) always has gamma and no beta."""
    x = t["x"]
    axes = list(range(x.ndim - a["axes"], x.ndim))
    if a["route"] == "rms_normalization":
        layer = keras().layers.RMSNormalization(axis=axes, epsilon=a["eps"], dtype=dtype)
        weight = "scale"
    else:
        with warnings.catch_warnings():  # deprecated, and what this route measures
            warnings.simplefilter("ignore")
            layer = keras().layers.LayerNormalization(axis=axes, epsilon=a["eps"], center=False, rms_scaling=True,
                                                      dtype=dtype)
        weight = "gamma"
    layer.build(x.shape)
    if "gamma" in t:
        getattr(layer, weight).assign(t["gamma"])
    params = (param(getattr(layer, weight), "gamma"),) if "gamma" in t else ()

    def apply(t):
        with warnings.catch_warnings():  # LayerNormalization's op warns again on every call
            warnings.simplefilter("ignore")
            return layer(t["x"])

    return Built(apply, params)


def group_norm(t, a, dtype):
    x = t["x"]
    layer = keras().layers.GroupNormalization(groups=a["groups"], axis=1, epsilon=a["eps"], center="beta" in t,
                                              scale="gamma" in t, dtype=dtype)
    layer.build(x.shape)
    return Built(lambda t: layer(t["x"]), _affine(layer, t))


def embedding(t, a, dtype):
    v, d = t["W"].shape
    layer = keras().layers.Embedding(input_dim=v, output_dim=d, mask_zero=False, dtype=dtype)
    layer.build(t["ids"].shape)
    layer.embeddings.assign(t["W"])
    # The gradient is an IndexedSlices (one slice per lookup), densified with duplicates summed.
    return Built(lambda t: layer(t["ids"]), (param(layer.embeddings, "W"),))


def dropout(t, a, dtype):
    """keras.layers.Dropout itself, seeded from the case. A fresh layer per draw
    starts its seed generator at the same state, so the same seeded draw on ones
    recovers the mask (x may hold zeros, where the output cannot tell kept from
    dropped); it is handed back as ``drawn``."""
    seed = seed_of(t["x"].numpy())
    probe = {}

    def draw(x):
        return keras().layers.Dropout(a["p"], seed=seed, dtype=dtype)(x, training=True)

    def apply(t):
        probe["kept"] = draw(tf().ones_like(t["x"])).numpy() != 0
        return draw(t["x"])

    return Built(apply, drawn=lambda: {"mask": probe["kept"].astype(dtype)})


# ---- builders: recurrent ------------------------------------------------------
# Keras stores the kernel (I, G H) and recurrent kernel (H, G H) in the canonical
# (in, out) layout, with its own gate order: LSTM i, f, c, o is PyTorch's i, f, g, o
# (no reordering); GRU z, r, h is PyTorch's r, z, n with the first two blocks
# swapped. SimpleRNN and LSTM hold ONE bias for PyTorch's two: it is loaded with
# b_ih + b_hh, and its gradient is the gradient of each. GRU(reset_after=True)
# holds both, as bias (2, 3H): row 0 the input bias, row 1 the recurrent one.


def _gate_blocks(order):
    """A column permutation of a (.., G H) array: block k of the result is block order[k]."""
    def permute(v):
        blocks = np.split(np.asarray(v), len(order), axis=-1)
        return np.concatenate([blocks[k] for k in order], axis=-1)
    return permute


_GRU_ORDER = _gate_blocks((1, 0, 2))  # r, z, n <-> z, r, h (its own inverse)


def _same(v):
    return v


def _load(layer, t, shape, bias, reorder=_same, suffix=""):
    """Build a Keras RNN layer (unless built) for inputs of ``shape`` and load the
    canonical kernel, recurrent kernel and bias of names ending in ``suffix``
    (``bias(var, suffix) -> (value, Param)``); returns its Params."""
    if not layer.built:
        layer.build(tuple(shape))
    cell = layer.cell
    cell.kernel.assign(reorder(t["W_ih" + suffix].numpy()))
    cell.recurrent_kernel.assign(reorder(t["W_hh" + suffix].numpy()))
    value, bias_param = bias(cell.bias, suffix)
    cell.bias.assign(value)
    return (param(cell.kernel, "W_ih" + suffix, reorder), param(cell.recurrent_kernel, "W_hh" + suffix, reorder),
            bias_param)


def _recurrent(layer, t, bias, reorder=_same, states=("h0",)):
    """One Keras RNN layer holding the case's weights; apply returns y, h_n (and c_n)."""
    params = _load(layer, t, t["x"].shape, bias, reorder)

    def apply(t):
        y, *last = layer(t["x"], initial_state=[t[s] for s in states])
        return {"y": y, **dict(zip(("h_n", "c_n"), last))}

    return Built(apply, params)


def _summed_bias(t, reorder=_same):
    """One Keras bias standing for b_ih + b_hh: loaded with the sum, its gradient is each one's."""
    def bias(var, suffix=""):
        ih, hh = "b_ih" + suffix, "b_hh" + suffix
        return (reorder((t[ih] + t[hh]).numpy()),
                Param(var, (ih, hh), lambda g: {ih: reorder(g), hh: reorder(g)}))
    return bias


def _two_biases(t):
    """GRU(reset_after=True)'s bias (2, 3H): input bias, recurrent bias, each in Keras' gate order."""
    def bias(var, suffix=""):
        ih, hh = "b_ih" + suffix, "b_hh" + suffix
        return (np.stack([_GRU_ORDER(t[ih].numpy()), _GRU_ORDER(t[hh].numpy())]),
                Param(var, (ih, hh), lambda g: {ih: _GRU_ORDER(g[0]), hh: _GRU_ORDER(g[1])}))
    return bias


def _rnn_options(t, dtype, suffix=""):
    return dict(units=t["W_hh" + suffix].shape[0], use_bias=True, dropout=0.0, recurrent_dropout=0.0,
                return_sequences=True, return_state=True, go_backwards=False, stateful=False, unroll=False,
                dtype=dtype)


def _keras_lstm(t, dtype, suffix="", **options):
    return keras().layers.LSTM(activation="tanh", recurrent_activation="sigmoid", unit_forget_bias=False,
                               use_cudnn=False, **{**_rnn_options(t, dtype, suffix), **options})


def _keras_gru(t, dtype, suffix="", reset_after=True, **options):
    return keras().layers.GRU(activation="tanh", recurrent_activation="sigmoid", reset_after=reset_after,
                              use_cudnn=False, **{**_rnn_options(t, dtype, suffix), **options})


def rnn(t, a, dtype):
    layer = keras().layers.SimpleRNN(activation=a["nonlinearity"], **_rnn_options(t, dtype))
    return _recurrent(layer, t, _summed_bias(t))


def lstm(t, a, dtype):
    return _recurrent(_keras_lstm(t, dtype), t, _summed_bias(t), states=("h0", "c0"))


def gru(t, a, dtype):
    """reset_after=True holds two biases, as bias (2, 3H); reset_after=False one (3H,),
    added on the input side (x W + b), with b_hn outside the reset: b_ih + b_hh."""
    layer = _keras_gru(t, dtype, reset_after=a["reset_after"])
    if not a["reset_after"]:
        return _recurrent(layer, t, _summed_bias(t, _GRU_ORDER), _GRU_ORDER)
    return _recurrent(layer, t, _two_biases(t), _GRU_ORDER)


# Stacks and directions, as Keras users write them: two layers, the first with
# return_sequences=True, each given its slice of the (L D, N, H) initial states;
# keras.layers.Bidirectional(merge_mode="concat") with initial_state = forward
# states then backward states, returning [y, forward states, backward states].

def _stacked(make, bias, reorder, t, dtype, states):
    N, T, I = t["x"].shape
    first, second = make(t, dtype, "_l0"), make(t, dtype, "_l1")
    H = t["W_hh_l0"].shape[0]
    params = (_load(first, t, (N, T, I), bias, reorder, "_l0")
              + _load(second, t, (N, T, H), bias, reorder, "_l1"))

    def apply(t):
        y1, *last1 = first(t["x"], initial_state=[t[s][0] for s in states])
        y2, *last2 = second(y1, initial_state=[t[s][1] for s in states])
        return {"y": y2, **{name: tf().stack([a, b]) for name, a, b in zip(("h_n", "c_n"), last1, last2)}}

    return Built(apply, params)


def _bidirectional(make, bias, reorder, t, dtype, states):
    options = {"zero_output_for_mask": True} if "lengths" in t else {}  # forced by Bidirectional anyway
    layer = keras().layers.Bidirectional(make(t, dtype, "_l0", **options), merge_mode="concat", dtype=dtype)
    layer.build(tuple(t["x"].shape))
    params = (_load(layer.forward_layer, t, None, bias, reorder, "_l0")
              + _load(layer.backward_layer, t, None, bias, reorder, "_l0_reverse"))
    call = _masked_call(layer, t, dtype) if "lengths" in t else (lambda t, init: layer(t["x"], initial_state=init))
    k = len(states)

    def apply(t):
        y, *last = call(t, [t[s][d] for d in range(2) for s in states])
        return {"y": y, **{name: tf().stack([last[i], last[k + i]]) for i, name in enumerate(("h_n", "c_n")[:k])}}

    return Built(apply, params)


def stacked_lstm(t, a, dtype):
    return _stacked(_keras_lstm, _summed_bias(t), _same, t, dtype, ("h0", "c0"))


def stacked_gru(t, a, dtype):
    return _stacked(_keras_gru, _two_biases(t), _GRU_ORDER, t, dtype, ("h0",))


def bidirectional_lstm(t, a, dtype):
    return _bidirectional(_keras_lstm, _summed_bias(t), _same, t, dtype, ("h0", "c0"))


def bidirectional_gru(t, a, dtype):
    return _bidirectional(_keras_gru, _two_biases(t), _GRU_ORDER, t, dtype, ("h0",))


# Variable-length sequences as Keras users give them: a boolean mask (N, T) passed as
# mask=, or a keras.layers.Masking layer in front, which masks the steps whose
# features all equal mask_value (the padded steps of x are set to it first; 0.0
# unless some valid step is all zeros, then an integer above every |x|). Both
# routes are run, alternately, chosen by the case's numbers (``masking_route``:
# a replay takes the same). zero_output_for_mask=True is padded_output "zeros",
# False (Keras' default) "repeat"; return_sequences=False returns the last step's
# output. Keras 3 hands a Masking layer's mask on only to a layer called with one
# tensor argument: with initial_state (the case's h0, c0, always passed: their
# gradients are checked) the mask is dropped (see the known divergence).

def masking_route(x: np.ndarray) -> bool:
    """Whether the TensorFlow adapter masks this case with a keras.layers.Masking
    layer (else with mask=): half the cases each, by the case's numbers."""
    return seed_of(x) % 2 == 1


def _masking_value(x, valid):
    # TensorFlow reads subnormals as 0 (denormals-are-zero): Masking(0) would drop a
    # valid step of subnormals as padding (measured: x = 8.5e-39, float32), so such a
    # step counts as zero here too.
    zero_steps = np.all(np.abs(x) < np.finfo(x.dtype).tiny, axis=-1) & valid
    return 0.0 if not zero_steps.any() else float(np.ceil(np.abs(x).max())) + 1.0


def _masked_call(layer, t, dtype):
    """``call(t, initial_state)``: the layer on x masked by the case's lengths, by one
    of the two routes (``masking_route``)."""
    x, lengths = t["x"].numpy(), t["lengths"].numpy()
    valid = np.arange(x.shape[1])[None, :] < lengths[:, None]
    if masking_route(x):
        value = _masking_value(x, valid)
        masking = keras().layers.Masking(mask_value=value, dtype=dtype)

        def call(t, init):
            padded = tf().where(valid[:, :, None], t["x"], tf().constant(value, dtype=dtype))
            return layer(masking(padded), initial_state=init)
        return call
    return lambda t, init: layer(t["x"], mask=tf().constant(valid), initial_state=init)


def _masked(make, bias, reorder, t, a, dtype, states):
    layer = make(t, dtype, return_sequences=a["return_sequences"],
                 zero_output_for_mask=a["padded_output"] == "zeros")
    params = _load(layer, t, t["x"].shape, bias, reorder)
    call = _masked_call(layer, t, dtype)

    def apply(t):
        y, *last = call(t, [t[s] for s in states])
        return {"y": y, **dict(zip(("h_n", "c_n"), last))}

    return Built(apply, params)


def masked_bidirectional_lstm(t, a, dtype):
    return bidirectional_lstm(t, a, dtype)


def masked_bidirectional_gru(t, a, dtype):
    return bidirectional_gru(t, a, dtype)


def masked_rnn(t, a, dtype):
    make = lambda t, dtype, **options: keras().layers.SimpleRNN(  # noqa: E731
        activation=a["nonlinearity"], **{**_rnn_options(t, dtype), **options})
    return _masked(make, _summed_bias(t), _same, t, a, dtype, ("h0",))


def masked_lstm(t, a, dtype):
    return _masked(_keras_lstm, _summed_bias(t), _same, t, a, dtype, ("h0", "c0"))


def masked_gru(t, a, dtype):
    return _masked(_keras_gru, _two_biases(t), _GRU_ORDER, t, a, dtype, ("h0",))



# ---- builders: attention --------------------------------------------------------
# Keras takes (B, T, heads, E) where the canonical layout is (N, heads, L, E):
# q, k, v and the output are transposed. Keep-masks (1 = attend) are Keras'
# own convention (True = attend), cast to bool. MultiHeadAttention holds each
# projection as an einsum kernel: query/key/value (E, heads, D), biases (heads, D),
# output (heads, D, E): the canonical (E, E) matrices with the head axis split
# out of their output (input for W_o) axis, a reshape.

_BTNH = [0, 2, 1, 3]


def scaled_dot_product_attention(t, a, dtype):
    T = tf()

    def apply(t):
        mask = T.not_equal(t["mask"], 0) if "mask" in t else None
        y = keras().ops.dot_product_attention(*(T.transpose(t[n], _BTNH) for n in ("q", "k", "v")), bias=None,
                                              mask=mask, scale=a["scale"], is_causal=a["causal"],
                                              flash_attention=False)
        return T.transpose(y, _BTNH)

    return Built(apply)


def _multi_head_attention(t, a, dtype, need_weights, weights_out):
    e, heads = t["W_q"].shape[0], a["num_heads"]
    d = e // heads
    layer = keras().layers.MultiHeadAttention(num_heads=heads, key_dim=d, value_dim=d, dropout=0.0, use_bias=True,
                                              output_shape=e, attention_axes=None, flash_attention=False,
                                              dtype=dtype)
    layer.build(tuple(t["query"].shape), tuple(t["value"].shape), tuple(t["key"].shape))
    params = []
    for dense, w, b in ((layer.query_dense, "W_q", "b_q"), (layer.key_dense, "W_k", "b_k"),
                        (layer.value_dense, "W_v", "b_v")):
        dense.kernel.assign(tf().reshape(t[w], (e, heads, d)))
        dense.bias.assign(tf().reshape(t[b], (heads, d)))
        params += [param(dense.kernel, w, lambda g: g.reshape(e, e)), param(dense.bias, b, lambda g: g.reshape(e))]
    layer.output_dense.kernel.assign(tf().reshape(t["W_o"], (heads, d, e)))
    layer.output_dense.bias.assign(t["b_o"])
    params += [param(layer.output_dense.kernel, "W_o", lambda g: g.reshape(e, e)), param(layer.output_dense.bias, "b_o")]

    def apply(t):
        T = tf()
        padding = T.not_equal(t["key_padding_mask"], 0) if "key_padding_mask" in t else None
        attend = T.not_equal(t["attn_mask"], 0) if "attn_mask" in t else None
        with warnings.catch_warnings():  # one key (Lk = 1, drawn on purpose): Keras warns its softmax is 1
            warnings.filterwarnings("ignore", message="You are using a softmax over axis")
            out = layer(t["query"], t["value"], key=t["key"], value_mask=padding, attention_mask=attend,
                        return_attention_scores=need_weights, training=True, use_causal_mask=False)
        if not need_weights:
            return out
        y, scores = out  # scores (N, heads, Lq, Lk): averaged as PyTorch's average_attn_weights=True does
        return {"y": y, "weights": T.reduce_mean(scores, axis=1)} if weights_out else y

    return Built(apply, tuple(params))


def multi_head_attention(t, a, dtype):
    return _multi_head_attention(t, a, dtype, a["need_weights"], weights_out=False)


def multi_head_attention_weights(t, a, dtype):
    return _multi_head_attention(t, a, dtype, True, weights_out=True)



# ---- builders: training step ---------------------------------------------------
# Clipping is tf.clip_by_value / tf.clip_by_norm / tf.clip_by_global_norm on the
# gradient tensors. An optimizer is the real keras.optimizers class on one
# keras.Variable: apply_gradients once per gradient, the variable and the
# optimizer's slot variables read after each step. Every argument is passed,
# clipping and EMA off.


_NO_CLIPPING = dict(clipnorm=None, clipvalue=None, global_clipnorm=None, use_ema=False, ema_momentum=0.99,
                    ema_overwrite_frequency=None, loss_scale_factor=None, gradient_accumulation_steps=None)


def _clipped_by_optimizer(t, names, dtype, **clipping):
    """The gradients as a Keras optimizer clips them before its update: plain SGD with
    learning rate 1 from zero variables, so each variable ends at exactly -clipped."""
    def apply(t):
        K = keras()
        opt = K.optimizers.SGD(learning_rate=1.0, momentum=0.0, nesterov=False, weight_decay=None,
                               **{**_NO_CLIPPING, **clipping})
        variables = [K.Variable(np.zeros(tuple(t[n].shape)), dtype=dtype, trainable=True) for n in names]
        opt.apply_gradients(zip([t[n] for n in names], variables))
        return {n: -v.numpy() for n, v in zip(names, variables)}

    return Built(apply)


def clip_by_value(t, a, dtype):
    if a["route"] == "optimizer":
        return _clipped_by_optimizer(t, ["g"], dtype, clipvalue=a["clip_value"])
    return Built(lambda t: {"g": tf().clip_by_value(t["g"], -a["clip_value"], a["clip_value"])})


def clip_by_norm(t, a, dtype):  # error_if_nonfinite: PyTorch's flag, no TensorFlow counterpart
    if a["route"] == "optimizer":
        return _clipped_by_optimizer(t, ["g"], dtype, clipnorm=a["max_norm"])
    return Built(lambda t: {"g": tf().clip_by_norm(t["g"], a["max_norm"])})


def clip_by_global_norm(t, a, dtype):
    names = [n for n in ("g1", "g2") if n in t]
    if a["route"] == "optimizer":
        return _clipped_by_optimizer(t, names, dtype, global_clipnorm=a["max_norm"])

    def apply(t):
        clipped, norm = tf().clip_by_global_norm([t[n] for n in names], a["max_norm"])
        return {**dict(zip(names, clipped)), "norm": norm}

    return Built(apply)


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


def sgd_step(t, a, dtype):
    return _trajectory(t, dtype, keras().optimizers.SGD(
        learning_rate=a["lr"], momentum=0.0, nesterov=False, weight_decay=a["weight_decay"], **_NO_CLIPPING))


def momentum_step(t, a, dtype):
    if a["dampening"] != 0:
        raise NotApplicable("keras.optimizers.SGD has no dampening")
    return _trajectory(t, dtype, keras().optimizers.SGD(
        learning_rate=a["lr"], momentum=a["momentum"], nesterov=a["nesterov"], weight_decay=a["weight_decay"],
        **_NO_CLIPPING), (("m", "momentums"),))


def _adam_options(a):
    return dict(learning_rate=a["lr"], beta_1=a["beta_1"], beta_2=a["beta_2"], epsilon=a["eps"], amsgrad=False,
                weight_decay=a["weight_decay"], **_NO_CLIPPING)


def adam_step(t, a, dtype):
    return _trajectory(t, dtype, keras().optimizers.Adam(**_adam_options(a)),
                       (("m", "_momentums"), ("v", "_velocities")))


def adamw_step(t, a, dtype):
    return _trajectory(t, dtype, keras().optimizers.AdamW(**_adam_options(a)),
                       (("m", "_momentums"), ("v", "_velocities")))


def rmsprop_step(t, a, dtype):
    states = (("v", "_velocities"),) + ((("mean", "_average_gradients"),) if a["centered"] else ()) + (
        (("m", "_momentums"),) if a["momentum"] > 0 else ())
    return _trajectory(t, dtype, keras().optimizers.RMSprop(
        learning_rate=a["lr"], rho=a["alpha"], momentum=a["momentum"], epsilon=a["eps"], centered=a["centered"],
        weight_decay=a["weight_decay"], **_NO_CLIPPING), states)


def adagrad_step(t, a, dtype):
    return _trajectory(t, dtype, keras().optimizers.Adagrad(
        learning_rate=a["lr"], initial_accumulator_value=a["initial_accumulator_value"], epsilon=a["eps"],
        weight_decay=a["weight_decay"], **_NO_CLIPPING), (("sum", "_accumulators"),))


def train_step(t, a, dtype):
    """Dense -> ReLU -> Dense and SparseCategoricalCrossentropy(from_logits=True); per
    batch a GradientTape, the gradients read, then optimizer.apply_gradients with the
    optimizer's own global_clipnorm (None when max_norm is inf)."""
    first, second = _dense(t["W1"].shape[1], t["W1"], t["b1"], dtype), _dense(t["W2"].shape[1], t["W2"], t["b2"], dtype)
    relu = keras().layers.ReLU(dtype=dtype)
    loss_fn = keras().losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum_over_batch_size",
                                                           dtype=dtype)
    named = {"W1": first.kernel, "b1": first.bias, "W2": second.kernel, "b2": second.bias}
    clip = {**_NO_CLIPPING, "global_clipnorm": None if a["max_norm"] == float("inf") else a["max_norm"]}
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



BUILDERS = {
    # layers whose builder is the function of the same name above
    **by_name(dense, residual_block, conv1d, conv2d, conv_transpose2d, max_pool2d, avg_pool2d,
              global_avg_pool2d, adaptive_avg_pool2d, batch_norm, batch_norm_inference, layer_norm, rms_norm,
              group_norm, embedding, dropout, rnn, lstm, gru, stacked_lstm, stacked_gru, bidirectional_lstm,
              bidirectional_gru,
              masked_rnn, masked_lstm, masked_gru, masked_bidirectional_lstm, masked_bidirectional_gru),
    # ---- attention
    **by_name(scaled_dot_product_attention, multi_head_attention, multi_head_attention_weights),
    # training step
    **by_name(clip_by_value, clip_by_norm, clip_by_global_norm, sgd_step, momentum_step, adam_step, adamw_step,
              rmsprop_step, adagrad_step, train_step),
    # layers without parameters: the op or layer applied to the case's tensors
    **{name: stateless(fn) for name, fn in {
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
        "binary_cross_entropy_with_logits": binary_cross_entropy_with_logits,
    }.items()},
}

_KERAS_LR = ("Held in float32 for float64 variables (measured): the learning rate is a float32 variable "
             "(backend.floatx()); weight_decay, SGD's momentum, Adam's betas in beta^t and Adagrad's initial "
             "accumulator go through tf.cast / ops.cast of a Python float, which makes a float32 tensor first "
             "(RMSprop's rho and momentum, epsilon and every 1 - beta stay exact)")

# Where the math leaves a choice open, what TensorFlow does (measured here, see CONVENTIONS.md).
CONVENTIONS: dict[str, Convention] = {
    "relu": Convention({"at_nan": "left"}, "ReluGrad is gradients * (features > 0): a NaN gets 0 (PyTorch: g); "
                                           "measured"),
    "leaky_relu": Convention({"at_zero": "left", "at_nan": "left"},
                             "LeakyReluGrad tests x > 0, so x = 0 and NaN take alpha; measured"),
    "elu": Convention({"at_zero": "left", "at_nan": "right"},
                      "keras ELU is where(x > 0, elu(x), alpha * elu(x)), so x = 0 takes alpha; EluGrad branches on "
                      "out < 0, so a NaN takes the positive branch (gradient g); measured"),
    "selu": Convention({"at_zero": "right", "at_nan": "right"},
                       "SeluGrad branches on out < 0, so x = 0 takes the positive slope `scale` "
                       "(PyTorch takes scale*alpha), and so does a NaN; measured with tensorflow-cpu 2.21"),
    # ---- losses
    **{name: Convention({}, "Keras reduces per-sample losses, each the mean over the last axis: for an (N, D) loss "
                            "its reduction='sum' is PyTorch's sum / D and 'none' is (N,) per-sample means (measured: "
                            "MeanSquaredError(reduction='sum') of pred (2, 3) = 1, target 0 gives 2.0, PyTorch 6.0). "
                            "Called on (N, D, 1) every element is its own sample: that is how 'sum' and 'none' "
                            "are run here")
       for name in ("mse", "l1", "huber", "binary_cross_entropy_with_logits")},
    "cross_entropy": Convention({"empty_mean": "zero"},
                                "a mean over no label (every label equal to ignore_class, or sample weights summing "
                                "to 0) divides with divide_no_nan: loss 0, gradient 0 (PyTorch: NaN); measured with "
                                "keras 3.15.1"),
    # ---- convolution and pooling
    "max_pool2d": Convention({"tie": "first", "nan_route": "first"},
                             "the first maximum in row-major window order gets the gradient (MaxPoolGrad, float32 and "
                             "float64, valid and same padding); measured with tensorflow-cpu 2.21: matches tie=first in all "
                             "98 of 150 drawn cases where first and last differ. NaN follows no convention: the forward "
                             "output skips it (known divergence tf-max-pool-skips-nan)"),
    # ---- normalization, embedding, dropout
    "dropout": Convention({}, "inverted dropout, where(mask, x * (1 / (1 - rate)), 0); keras Dropout draws its own "
                              "mask (seeded per case), recovered from the same draw on ones, and the oracle answers "
                              "for that mask"),
    "batch_norm": Convention({}, "training mode normalizes with the biased batch variance (tf.nn.moments, two-pass) "
                                 "and stores that biased variance in moving_variance; N * prod(spatial) == 1 gives "
                                 "y = beta, gx = 0; measured"),
    # ---- recurrent
    **{name: Convention({}, "a mask (mask= or a Masking layer, alternately) keeps the state and passes no gradient "
                            "at a padded step; y there is the previous output repeated by default "
                            "(zero_output_for_mask=False: padded_output 'repeat', the state after the last valid "
                            "step) or 0 (zero_output_for_mask=True: 'zeros'); return_sequences=False returns the "
                            "last step's output, so 0 for a short sequence under zero_output_for_mask=True; measured")
       for name in ("masked_rnn", "masked_lstm", "masked_gru")},
    **{name: Convention({}, "Bidirectional(merge_mode='concat') over a mask (mask= or a Masking layer, alternately): "
                            "the backward layer (go_backwards) reads the whole padded sequence reversed, so its "
                            "masked steps come first and keep the initial state: the valid part is processed "
                            "reversed, as PyTorch's packed sequences do; Bidirectional forces zero_output_for_mask "
                            "when it returns sequences, so y is 0 at padded steps; measured")
       for name in ("masked_bidirectional_lstm", "masked_bidirectional_gru")},
    # ---- attention
    "scaled_dot_product_attention": Convention(
        {"empty_row": "uniform"},
        "ops.dot_product_attention replaces masked logits by -0.7 * 3.38953e38 (tf.where) before the softmax: a "
        "query whose mask row is all False weights every key 1 / Lk (y = mean of v over all keys) and passes no "
        "gradient to q or k; measured with keras 3.15.1 in float32 and float64"),
    "multi_head_attention": Convention(
        {"empty_row": "uniform", "empty_row_weights": "zeros"},
        "without scores (return_attention_scores=False) the layer calls ops.dot_product_attention, whose fully "
        "masked rows weight every key 1 / Lk; with scores it runs its masked Softmax layer, which after the "
        "softmax sets masked weights to 0 (where(mask, p, 0)): a fully masked row weights nothing, y = b_o; "
        "measured with keras 3.15.1"),
    "multi_head_attention_weights": Convention(
        {"empty_row_weights": "zeros"},
        "return_attention_scores=True: the masked Softmax layer zeroes masked weights after the softmax, so a "
        "fully masked row has weights 0 and attention output 0; measured with keras 3.15.1"),
    # ---- training step (tensorflow/python/ops/clip_ops.py, keras/src/optimizers/*.py; keras 3.15.1)
    "clip_by_norm": Convention({"norm_eps": 0.0}, "tf.clip_by_norm: t * c / maximum(l2norm, c), no eps"),
    "clip_by_global_norm": Convention({"norm_eps": 0.0}, "tf.clip_by_global_norm: t * c * minimum(1 / norm, 1 / c), "
                                                         "no eps; returns the norm before clipping"),
    "sgd_step": Convention({"float32_hypers": ("lr", "weight_decay")}, _KERAS_LR),
    "momentum_step": Convention({"decay_form": "decoupled", "momentum_form": "velocity",
                                 "float32_hypers": ("lr", "weight_decay", "momentum")},
                                "weight_decay shrinks w - w wd lr before the step (base_optimizer."
                                "_apply_weight_decay); m = mu m - lr g; w += m, nesterov w += mu m - lr g; no "
                                "dampening. " + _KERAS_LR),
    "adam_step": Convention({"decay_form": "decoupled", "eps_form": "uncorrected",
                             "float32_hypers": ("lr", "weight_decay", "beta_powers")},
                            "alpha = lr sqrt(1 - beta_2^t) / (1 - beta_1^t); w -= m alpha / (sqrt(v) + epsilon) "
                            "('epsilon hat'); weight_decay decoupled as in AdamW. " + _KERAS_LR),
    "adamw_step": Convention({"eps_form": "uncorrected", "float32_hypers": ("lr", "weight_decay", "beta_powers")},
                             "Adam's update with decoupled decay w - w wd lr first. " + _KERAS_LR),
    "rmsprop_step": Convention({"decay_form": "decoupled", "eps_form": "inside", "momentum_form": "velocity",
                                "float32_hypers": ("lr", "weight_decay")},
                               "increment = lr g / sqrt(velocity [- average_grad^2] + epsilon) (eps inside the "
                               "sqrt); momentum m = mu m + increment, w -= m (m is lr times PyTorch's buffer). "
                               + _KERAS_LR),
    "adagrad_step": Convention({"decay_form": "decoupled", "eps_form": "inside",
                                "float32_hypers": ("lr", "weight_decay", "initial_accumulator_value")},
                               "accumulator += g^2; w -= lr g / sqrt(accumulator + epsilon) (eps inside). "
                               + _KERAS_LR),
    "train_step": Convention({"norm_eps": 0.0, "eps_form": "uncorrected",
                              "float32_hypers": ("lr", "momentum", "beta_powers")},
                             "the optimizer's global_clipnorm: t * c * minimum(1 / norm, 1 / c), no eps; Adam's "
                             "epsilon hat (see adam_step). " + _KERAS_LR),
}


class TensorFlowAdapter(FrameworkAdapter):
    name = "tensorflow"

    def available(self):
        try:
            tf()
        except ImportError as e:
            return False, f"TensorFlow is not installed ({e}); pip install 'gradparity[tensorflow]'"
        return True, ""

    def version(self):
        return f"{tf().__version__} (keras {keras().__version__})"

    def run(self, case):
        if case.attrs.get("batched") is False:
            raise NotApplicable("Keras layers take a batch axis: an input without one is refused (Conv2D: "
                                "ValueError 'expected min_ndim=4, found ndim=3'; MaxPooling2D: 'expected ndim=4'); "
                                "unbatched inputs are PyTorch's")
        return super().run(case)

    def tensor(self, array, dtype, watch):
        return tf().constant(array)

    def forward_backward(self, forward, tensors, cotangents, sources, dtype):
        T = tf()
        with T.GradientTape() as tape:
            for s in sources:
                if isinstance(s, T.Tensor):  # inputs; Keras variables are watched already
                    tape.watch(s)
            outs = forward(tensors)
            loss = sum(T.reduce_sum(outs[n] * T.constant(g, dtype=dtype)) for n, g in cotangents.items())
        if not sources:
            return {n: T.convert_to_tensor(out).numpy() for n, out in outs.items()}, []
        grads = tape.gradient(loss, sources, unconnected_gradients=T.UnconnectedGradients.ZERO)
        # convert_to_tensor densifies an IndexedSlices (an embedding's), summing duplicates
        return {n: out.numpy() for n, out in outs.items()}, [T.convert_to_tensor(g).numpy() for g in grads]
