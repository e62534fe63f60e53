"""PyTorch builders: the zoo's whole models, as a user writes them.

One ``nn.Module`` whose forward calls its layers in turn (nn.Linear, nn.Conv2d,
nn.BatchNorm2d, nn.LSTM over packed sequences, nn.MultiheadAttention, ...), with
the residual adds, the flatten and the means in its forward, and
nn.CrossEntropyLoss at the end: one forward, one ``loss.backward()``, so autograd
crosses every layer boundary itself. The weights come from the case in the same
layouts the per-layer builders use. Each layer's output is read by a forward hook
and keeps its ``.grad`` (``retain_grad``): reading them changes no gradient (tested).
"""

from __future__ import annotations

import functools
import warnings

import numpy as np

from ...reference.models import STEPS, derived, steps_of
from .. import base
from ..base import Built, Param, param, same
from .core import builder, linear, nn, set_, torch, transpose


def _packed_qkv(g):
    blocks = np.split(np.asarray(g), 3, axis=0)
    return {n: b.T if b.ndim == 2 else b for n, b in zip(("q", "k", "v"), blocks)}


@functools.cache
def _modules():
    """The two nn.Module classes of this file (torch is imported on first use)."""
    T = torch()

    class Recurrent(T.nn.Module):
        """nn.LSTM / nn.GRU over a padded batch, as users run it: pack_padded_sequence, the
        module, the final state of each sequence (its last valid step); zero initial states."""

        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, x, lengths):
            packed = T.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            _, last = self.module(packed)
            return (last[0] if isinstance(last, tuple) else last)[0]

    class Network(T.nn.Module):
        """The steps' layers in turn, with the ops between them; returns the loss."""

        def __init__(self, steps, layers, data):
            super().__init__()
            self.steps, self.layers, self.data = steps, T.nn.ModuleList(layers), data

        def forward(self, t):
            data = {**t, **self.data}
            flow, entering = t["x"], {}
            for step, layer in zip(self.steps, self.layers):
                entering[step.index] = flow
                if step.layer == "cross_entropy":
                    y = layer(flow, data["labels"])
                elif step.layer in ("masked_lstm", "masked_gru"):
                    y = layer(flow, data["lengths"])
                elif step.layer == "multi_head_attention":
                    y = layer(flow, flow, flow, key_padding_mask=data["mask"] == 0, need_weights=False)[0]
                else:
                    y = layer(flow)
                flow = y
                for op in step.then:
                    if op[0] == "flatten":
                        flow = T.flatten(flow, 1)
                    elif op[0] == "add":
                        flow = flow + entering[op[1]]
                    elif op[0] == "mean":
                        flow = flow.mean(dim=op[1])
            return flow

    return Recurrent, Network


def _layer(step, t, dtype):
    """(the module for one step, its parameters as ``Param``s)."""
    p = {name: t[step.array(name)] for name in step.params}
    kind = step.layer
    if kind == "dense":
        lin = linear(p["W"].shape[0], p["W"].shape[1], p["W"], p["b"], dtype)
        return lin, (param(lin.weight, step.array("W"), transpose), param(lin.bias, step.array("b")))
    if kind in ("relu", "tanh", "sigmoid"):
        return {"relu": nn().ReLU, "tanh": nn().Tanh, "sigmoid": nn().Sigmoid}[kind](), ()
    if kind == "gelu":
        return nn().GELU(approximate=step.attrs["approximate"]), ()
    if kind == "conv2d":
        W = p["W"]
        conv = nn().Conv2d(W.shape[1], W.shape[0], tuple(W.shape[2:]), padding="same", dtype=dtype)
        set_(conv.weight, W)
        set_(conv.bias, p["b"])
        return conv, (param(conv.weight, step.array("W")), param(conv.bias, step.array("b")))
    if kind == "max_pool2d":
        return nn().MaxPool2d(step.attrs["kernel_h"], step.attrs["stride_h"]), ()
    if kind == "batch_norm":
        bn = nn().BatchNorm2d(p["gamma"].shape[0], eps=step.attrs["eps"], momentum=0.1, dtype=dtype).train()
        set_(bn.weight, p["gamma"])
        set_(bn.bias, p["beta"])
        return bn, (param(bn.weight, step.array("gamma")), param(bn.bias, step.array("beta")))
    if kind == "global_avg_pool2d":
        return nn().Sequential(nn().AdaptiveAvgPool2d(1), nn().Flatten()), ()
    if kind == "embedding":
        emb = nn().Embedding(*p["W"].shape, dtype=dtype)
        set_(emb.weight, p["W"])
        return emb, (param(emb.weight, step.array("W")),)
    if kind in ("masked_lstm", "masked_gru"):
        module = (nn().LSTM if kind == "masked_lstm" else nn().GRU)(p["W_ih"].shape[0], p["W_hh"].shape[0],
                                                                    batch_first=True, dtype=dtype)
        cell, params = _modules()[0](module), ()
        for weight, name, convert in (("weight_ih_l0", "W_ih", transpose), ("weight_hh_l0", "W_hh", transpose),
                                      ("bias_ih_l0", "b_ih", same), ("bias_hh_l0", "b_hh", same)):
            tensor = getattr(cell.module, weight)
            set_(tensor, convert(p[name]))
            params += (param(tensor, step.array(name), convert),)
        return cell, params
    if kind == "multi_head_attention":
        e = p["W_q"].shape[0]
        mha = nn().MultiheadAttention(e, step.attrs["num_heads"], batch_first=True, dtype=dtype).train()
        set_(mha.in_proj_weight, torch().cat([p["W_q"].T, p["W_k"].T, p["W_v"].T]))
        set_(mha.in_proj_bias, torch().cat([p["b_q"], p["b_k"], p["b_v"]]))
        set_(mha.out_proj.weight, p["W_o"].T)
        set_(mha.out_proj.bias, p["b_o"])
        names = {w: step.array(w) for w in ("W_q", "W_k", "W_v", "b_q", "b_k", "b_v")}
        return mha, (Param(mha.in_proj_weight, tuple(names[f"W_{n}"] for n in "qkv"),
                           lambda g: {names[f"W_{n}"]: w for n, w in _packed_qkv(g).items()}),
                     Param(mha.in_proj_bias, tuple(names[f"b_{n}"] for n in "qkv"),
                           lambda g: {names[f"b_{n}"]: b for n, b in _packed_qkv(g).items()}),
                     param(mha.out_proj.weight, step.array("W_o"), transpose),
                     param(mha.out_proj.bias, step.array("b_o")))
    if kind == "layer_norm":
        ln = nn().LayerNorm(p["gamma"].shape[0], eps=step.attrs["eps"], dtype=dtype)
        set_(ln.weight, p["gamma"])
        set_(ln.bias, p["beta"])
        return ln, (param(ln.weight, step.array("gamma")), param(ln.bias, step.array("beta")))
    if kind == "rms_norm":
        rn = nn().RMSNorm(p["gamma"].shape[0], eps=step.attrs["eps"], dtype=dtype)
        set_(rn.weight, p["gamma"])
        return rn, (param(rn.weight, step.array("gamma")),)
    if kind == "cross_entropy":
        return nn().CrossEntropyLoss(reduction="mean"), ()
    raise TypeError(f"no PyTorch form for a {kind} step")


def _scaled_gradient(x, scale):
    """x, whose gradient is multiplied by ``scale`` on its way back (the fault seam)."""
    T = torch()

    class Scale(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.view_as(x)

        @staticmethod
        def backward(ctx, g):
            return g * scale

    return Scale.apply(x)


def _first(output):
    """A layer's output tensor (nn.MultiheadAttention returns (output, weights))."""
    return output[0] if isinstance(output, tuple) else output


def network(t, a, dtype, name):
    """The zoo's model ``name`` as an nn.Module holding the case's weights. Forward hooks read
    each layer's output; a fault (``base.FAULT``, tests only) scales one layer's output in a
    hook before that, or the gradient it sends back to its input in a pre-hook."""
    arrays = {k: v.detach().numpy() for k, v in t.items()}
    steps = steps_of(name, arrays, a)
    built = [_layer(step, t, dtype) for step in steps]
    data = {k: torch().as_tensor(v) for k, v in derived(name, arrays).items()}
    model = _modules()[1](steps, [m for m, _ in built], data)
    outputs, fault = {}, base.FAULT
    for step, layer in zip(steps, model.layers):
        if fault and fault["step"] == step.name:
            scale = fault["scale"]
            if fault["direction"] == "forward":
                layer.register_forward_hook(lambda m, i, o, s=scale: (
                    (o[0] * s, *o[1:]) if isinstance(o, tuple) else o * s))
            else:
                layer.register_forward_pre_hook(lambda m, i, s=scale: (_scaled_gradient(i[0], s), *i[1:]))
        layer.register_forward_hook(lambda m, i, o, n=step.name: outputs.__setitem__(n, _first(o)))
    def apply(t):
        with warnings.catch_warnings():  # an even kernel under 'same' is drawn on purpose, not news
            warnings.filterwarnings("ignore", message="Using padding='same' with even kernel")
            return model(t)

    return Built(apply, tuple(p for _, ps in built for p in ps), taps=lambda: dict(outputs))


for _name in STEPS:
    builder(_name)(lambda t, a, dtype, _name=_name: network(t, a, dtype, _name))
