"""PyTorch: leaf tensors with ``requires_grad``, ``torch.autograd.grad``.

Builders take the case's arrays as tensors (``t``), its attributes (``a``) and
the dtype, build the real ``torch.nn`` module holding the case's parameters,
and return a ``Built``: how to apply it, and each module parameter with the
canonical name(s) its gradient stands for. Every hyperparameter is passed
explicitly: defaults differ between frameworks.
"""

from __future__ import annotations

import importlib

import numpy as np

from ..reference import Convention
from ..reference.conv import resolve_padding  # the oracle's rule for TensorFlow-style 'same': one formula
from ..reference.recurrent import param_names
from .base import Built, FrameworkAdapter, NotApplicable, Param, by_name, param, same, seed_of, stateless

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
    params = (param(lin.weight, "W", _transpose),) + ((param(lin.bias, "b"),) if "b" in t else ())
    return Built(lambda t: lin(t["x"]), params)


def residual_block(t, a, dtype):
    d, h = t["W1"].shape
    first, second = _linear(d, h, t["W1"], t["b1"], dtype), _linear(h, d, t["W2"], t["b2"], dtype)
    body = nn().Sequential(first, nn().ReLU(), second)
    return Built(lambda t: t["x"] + body(t["x"]),
                 (param(first.weight, "W1", _transpose), param(first.bias, "b1"),
                  param(second.weight, "W2", _transpose), param(second.bias, "b2")))


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
    _set(conv.weight, t["W"])
    if "b" not in t:
        return (param(conv.weight, "W"),)
    _set(conv.bias, t["b"])
    return param(conv.weight, "W"), param(conv.bias, "b")


def _conv(t, dtype, cls, pad_cls, stride, dilation, groups, mode, explicit):
    x, W = t["x"], t["W"]
    kernel = tuple(W.shape[2:])
    rank = len(kernel)  # x is (N, C, *spatial), or (C, *spatial) unbatched: counted from the end
    pads = resolve_padding(mode, explicit, tuple(x.shape[-rank:]), kernel, stride, dilation)
    padding, pre = _conv_padding(mode, pads, stride)
    conv = cls(x.shape[-rank - 1], W.shape[0], kernel, stride=stride, padding=padding, dilation=dilation, groups=groups,
               bias="b" in t, padding_mode="zeros", dtype=dtype)
    pad = pad_cls(pre) if pre is not None else (lambda x: x)
    return Built(lambda t: conv(pad(t["x"])), _conv_params(conv, t))


def conv2d(t, a, dtype):
    return _conv(t, dtype, nn().Conv2d, nn().ZeroPad2d, (a["stride_h"], a["stride_w"]),
                 (a["dilation_h"], a["dilation_w"]), a["groups"], a["padding"],
                 ((a["pad_top"], a["pad_bottom"]), (a["pad_left"], a["pad_right"])))


def conv1d(t, a, dtype):
    return _conv(t, dtype, nn().Conv1d, nn().ZeroPad1d, (a["stride"],), (a["dilation"],), a["groups"],
                 a["padding"], ((a["pad_left"], a["pad_right"]),))


def conv_transpose2d(t, a, dtype):
    x, W = t["x"], t["W"]
    conv = nn().ConvTranspose2d(x.shape[-3], W.shape[1] * a["groups"], tuple(W.shape[2:]),
                                stride=(a["stride_h"], a["stride_w"]), padding=(a["pad_h"], a["pad_w"]),
                                output_padding=(a["output_pad_h"], a["output_pad_w"]), groups=a["groups"],
                                bias="b" in t, dilation=(a["dilation_h"], a["dilation_w"]),
                                padding_mode="zeros", dtype=dtype)
    return Built(lambda t: conv(t["x"]), _conv_params(conv, t))


def _pool_pads(t, a):
    kernel, stride = (a["kernel_h"], a["kernel_w"]), (a["stride_h"], a["stride_w"])
    dilation = (a.get("dilation_h", 1), a.get("dilation_w", 1))
    pads = resolve_padding(a["padding"], ((a["pad_h"],) * 2, (a["pad_w"],) * 2), tuple(t["x"].shape[-2:]),
                           kernel, stride, dilation)
    return kernel, stride, dilation, pads, all(before == after for before, after in pads)


def max_pool2d(t, a, dtype):
    kernel, stride, dilation, pads, symmetric = _pool_pads(t, a)
    padding, pad = (pads[0][0], pads[1][0]), (lambda x: x)
    if not symmetric or any(2 * b > k for (b, _), k in zip(pads, kernel)):
        # 'same' with one pixel more at the bottom/right, or more than MaxPool2d takes (half the
        # undilated kernel; 'same' pads half the dilated one): -inf never wins a window
        padding = 0
        pad = lambda x: torch().nn.functional.pad(x, (*pads[1], *pads[0]), value=float("-inf"))  # noqa: E731
    pool = nn().MaxPool2d(kernel, stride, padding=padding, dilation=dilation, return_indices=False,
                          ceil_mode=a["ceil_mode"])
    return Built(lambda t: pool(pad(t["x"])))


def avg_pool2d(t, a, dtype):
    kernel, stride, _, pads, symmetric = _pool_pads(t, a)
    padding, pad = (pads[0][0], pads[1][0]), (lambda x: x)
    if not symmetric:
        if not a["count_include_pad"] and a["divisor_override"] is None:
            raise NotApplicable(f"AvgPool2d pads symmetrically; the asymmetric 'same' padding {pads} "
                                "left out of the count has no PyTorch form")
        padding, pad = 0, nn().ZeroPad2d((*pads[1], *pads[0]))
    pool = nn().AvgPool2d(kernel, stride, padding=padding, ceil_mode=a["ceil_mode"],
                          count_include_pad=a["count_include_pad"], divisor_override=a["divisor_override"])
    return Built(lambda t: pool(pad(t["x"])))


def global_avg_pool2d(t, a, dtype):
    pool = nn().AdaptiveAvgPool2d((1, 1))
    return Built(lambda t: torch().flatten(pool(t["x"]), 1))


def adaptive_avg_pool2d(t, a, dtype):
    pool = nn().AdaptiveAvgPool2d((a["output_h"], a["output_w"]))
    return Built(lambda t: pool(t["x"]))



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
    return bn, (param(bn.weight, "gamma"), param(bn.bias, "beta"))


def batch_norm(t, a, dtype):
    bn, params = _batch_norm_module(t, a, dtype)
    bn.train()
    return Built(lambda t: bn(t["x"]), params)


def batch_norm_inference(t, a, dtype):
    bn, params = _batch_norm_module(t, a, dtype)
    _set(bn.running_mean, t["running_mean"])
    _set(bn.running_var, t["running_var"])
    bn.eval()
    return Built(lambda t: bn(t["x"]), params)


def _affine(module, t):
    """Optional gamma/beta into a module's weight/bias. PyTorch has no scale-only or
    shift-only affine: the missing one is held at its identity (weight 1, bias 0)."""
    params = ()
    if module.weight is not None:
        _set(module.weight, t["gamma"] if "gamma" in t else torch().ones_like(module.weight))
        params += (param(module.weight, "gamma"),) if "gamma" in t else ()
    if module.bias is not None:
        _set(module.bias, t["beta"] if "beta" in t else torch().zeros_like(module.bias))
        params += (param(module.bias, "beta"),) if "beta" in t else ()
    return params


def layer_norm(t, a, dtype):
    x = t["x"]
    affine = "gamma" in t or "beta" in t
    ln = nn().LayerNorm(tuple(x.shape[x.ndim - a["axes"]:]), eps=a["eps"], elementwise_affine=affine,
                        bias="beta" in t, dtype=dtype)
    return Built(lambda t: ln(t["x"]), _affine(ln, t))


def rms_norm(t, a, dtype):
    if a["route"] != "rms_normalization":
        raise NotApplicable(f"route {a['route']} is a Keras way to RMS normalization; PyTorch has one, nn.RMSNorm")
    x = t["x"]
    rn = nn().RMSNorm(tuple(x.shape[x.ndim - a["axes"]:]), eps=a["eps"], elementwise_affine="gamma" in t, dtype=dtype)
    if "gamma" not in t:
        return Built(lambda t: rn(t["x"]))
    _set(rn.weight, t["gamma"])
    return Built(lambda t: rn(t["x"]), (param(rn.weight, "gamma"),))


def group_norm(t, a, dtype):
    x = t["x"]
    gn = nn().GroupNorm(a["groups"], x.shape[1], eps=a["eps"], affine="gamma" in t or "beta" in t, dtype=dtype)
    return Built(lambda t: gn(t["x"]), _affine(gn, t))


def embedding(t, a, dtype):
    v, d = t["W"].shape
    emb = nn().Embedding(v, d, padding_idx=None, max_norm=None, scale_grad_by_freq=False, sparse=False, dtype=dtype)
    _set(emb.weight, t["W"])
    return Built(lambda t: emb(t["ids"]), (param(emb.weight, "W"),))


def dropout(t, a, dtype):
    """nn.Dropout itself, seeded from the case; it draws its own mask, which is
    recovered by running the same seeded draw on ones (x may hold zeros, where
    the output cannot tell kept from dropped) and handed back as ``drawn``."""
    T, drop = torch(), nn().Dropout(p=a["p"], inplace=False).train()
    seed = seed_of(t["x"].detach().numpy())
    probe = {}

    def apply(t):
        with T.random.fork_rng(devices=[]):
            T.manual_seed(seed)
            probe["kept"] = drop(T.ones_like(t["x"])) != 0
        with T.random.fork_rng(devices=[]):
            T.manual_seed(seed)
            return drop(t["x"])

    return Built(apply, drawn=lambda: {"mask": probe["kept"].numpy().astype(str(dtype).removeprefix("torch."))})


# ---- builders: recurrent ------------------------------------------------------
# Canonical W_ih (I, G H) and W_hh (H, G H) are the transposes of torch's
# weight_ih_l0 (G H, I) and weight_hh_l0 (G H, H), in torch's own gate order
# (LSTM i, f, g, o; GRU r, z, n); the biases are bias_ih_l0 and bias_hh_l0 as
# they are. The modules take and return states with a leading num_layers axis.


def _recurrent(module, t, states=("h0",)):
    """Load the canonical weights into a one-layer batch-first module; apply returns
    y, h_n (and c_n) with the num_layers axis squeezed."""
    for name, canonical, convert in (("weight_ih_l0", "W_ih", _transpose), ("weight_hh_l0", "W_hh", _transpose),
                                     ("bias_ih_l0", "b_ih", None), ("bias_hh_l0", "b_hh", None)):
        _set(getattr(module, name), t[canonical] if convert is None else convert(t[canonical]))
    params = (param(module.weight_ih_l0, "W_ih", _transpose), param(module.weight_hh_l0, "W_hh", _transpose),
              param(module.bias_ih_l0, "b_ih"), param(module.bias_hh_l0, "b_hh"))

    def apply(t):
        init = tuple(t[s].unsqueeze(0) for s in states)
        y, last = module(t["x"], init if len(init) > 1 else init[0])
        last = last if isinstance(last, tuple) else (last,)
        return {"y": y, **{name: s.squeeze(0) for name, s in zip(("h_n", "c_n"), last)}}

    return Built(apply, params)


def _recurrent_sizes(t):
    return dict(input_size=t["W_ih"].shape[0], hidden_size=t["W_hh"].shape[0], num_layers=1, bias=True,
                batch_first=True, dropout=0.0, bidirectional=False)


def rnn(t, a, dtype):
    return _recurrent(nn().RNN(**_recurrent_sizes(t), nonlinearity=a["nonlinearity"], dtype=dtype), t)


def lstm(t, a, dtype):
    return _recurrent(nn().LSTM(**_recurrent_sizes(t), proj_size=0, dtype=dtype), t, ("h0", "c0"))


def gru(t, a, dtype):
    if not a["reset_after"]:
        raise NotApplicable("torch.nn.GRU only implements reset_after=True (the reset gate multiplies "
                            "h W_hn + b_hn); reset_after=False (r h_{t-1} before the matmul) has no PyTorch module")
    return _recurrent(nn().GRU(**_recurrent_sizes(t), dtype=dtype), t)


def _deep(cls, t, layers, directions, states=("h0",), **options):
    """nn.LSTM / nn.GRU with num_layers and bidirectional: torch's own parameter names
    (weight_ih_l1, weight_ih_l0_reverse, ...) are the canonical ones, weights transposed;
    states and final states are (L D, N, H) in both."""
    H = t["W_hh_l0"].shape[0]
    module = cls(input_size=t["W_ih_l0"].shape[0], hidden_size=H, num_layers=layers, bias=True, batch_first=True,
                 dropout=0.0, bidirectional=directions == 2, **options)
    params = ()
    for s in param_names(layers, directions):
        for weight, canonical, convert in (("weight_ih", "W_ih", _transpose), ("weight_hh", "W_hh", _transpose),
                                           ("bias_ih", "b_ih", None), ("bias_hh", "b_hh", None)):
            p = getattr(module, weight + s)
            _set(p, t[canonical + s] if convert is None else convert(t[canonical + s]))
            params += (param(p, canonical + s, convert or same),)

    rnn_utils, T = nn().utils.rnn, t["x"].shape[1]

    def apply(t):
        init = tuple(t[s] for s in states)
        x = t["x"]
        if "lengths" in t:  # a padded batch, as in _packed
            x = rnn_utils.pack_padded_sequence(x, t["lengths"], batch_first=True, enforce_sorted=False)
        y, last = module(x, init if len(init) > 1 else init[0])
        if "lengths" in t:
            y, _ = rnn_utils.pad_packed_sequence(y, batch_first=True, padding_value=0.0, total_length=T)
        last = last if isinstance(last, tuple) else (last,)
        return {"y": y, **dict(zip(("h_n", "c_n"), last))}

    return Built(apply, params)


def stacked_lstm(t, a, dtype):
    return _deep(nn().LSTM, t, 2, 1, ("h0", "c0"), proj_size=0, dtype=dtype)


def stacked_gru(t, a, dtype):
    return _deep(nn().GRU, t, 2, 1, dtype=dtype)


def bidirectional_lstm(t, a, dtype):
    return _deep(nn().LSTM, t, 1, 2, ("h0", "c0"), proj_size=0, dtype=dtype)


def bidirectional_gru(t, a, dtype):
    return _deep(nn().GRU, t, 1, 2, dtype=dtype)


def _packed(module_cls, t, a, dtype, states=("h0",), **options):
    """A one-layer module run the way PyTorch users run a padded batch: pack_padded_sequence
    (enforce_sorted=False: the module sorts by length and unsorts states and outputs),
    the module on the packed sequence, pad_packed_sequence back to T with zeros."""
    if a["padded_output"] != "zeros":
        raise NotApplicable("pad_packed_sequence fills padded steps with one constant (padding_value); "
                            "y repeating the last valid output (Keras' zero_output_for_mask=False) has no PyTorch form")
    rnn_utils = nn().utils.rnn
    built = _recurrent(module_cls(**_recurrent_sizes(t), dtype=dtype, **options), t, states)
    T = t["x"].shape[1]

    def apply(t):
        packed = rnn_utils.pack_padded_sequence(t["x"], t["lengths"], batch_first=True, enforce_sorted=False)
        out = built.apply({**t, "x": packed})
        y, _ = rnn_utils.pad_packed_sequence(out["y"], batch_first=True, padding_value=0.0, total_length=T)
        return {**out, "y": y if a["return_sequences"] else y[:, -1]}

    return Built(apply, built.params)


def masked_bidirectional_lstm(t, a, dtype):
    return _deep(nn().LSTM, t, 1, 2, ("h0", "c0"), proj_size=0, dtype=dtype)


def masked_bidirectional_gru(t, a, dtype):
    return _deep(nn().GRU, t, 1, 2, dtype=dtype)


def masked_rnn(t, a, dtype):
    return _packed(nn().RNN, t, a, dtype, nonlinearity=a["nonlinearity"])


def masked_lstm(t, a, dtype):
    return _packed(nn().LSTM, t, a, dtype, ("h0", "c0"), proj_size=0)


def masked_gru(t, a, dtype):
    return _packed(nn().GRU, t, a, dtype)


# ---- builders: attention --------------------------------------------------------
# Canonical keep-masks (1 = attend) become what each call takes: SDPA's boolean
# attn_mask means the same (True = attend); MultiheadAttention's key_padding_mask
# and attn_mask mean the opposite (True = ignore). MultiheadAttention packs W_q,
# W_k, W_v as the (out, in) blocks of in_proj_weight (3E, E), in that order.


def scaled_dot_product_attention(t, a, dtype):
    F = nn().functional

    def apply(t):
        causal, attend = a["causal"], None
        if "mask" in t:
            attend = t["mask"] != 0
            if causal:  # SDPA refuses attn_mask with is_causal=True: the band goes into the mask
                lq, lk = attend.shape[-2:]
                attend = attend & torch().ones(lq, lk, dtype=torch().bool).tril()
                causal = False
        return F.scaled_dot_product_attention(t["q"], t["k"], t["v"], attn_mask=attend, dropout_p=0.0,
                                              is_causal=causal, scale=a["scale"], enable_gqa=False)

    return Built(apply)


def _packed_qkv(g):
    """The gradient of in_proj_weight (3E, E) or in_proj_bias (3E,) as canonical q, k, v blocks."""
    blocks = np.split(np.asarray(g), 3, axis=0)
    return {n: b.T if b.ndim == 2 else b for n, b in zip(("q", "k", "v"), blocks)}


def _multi_head_attention(t, a, dtype, need_weights, weights_out):
    e, heads = t["W_q"].shape[0], a["num_heads"]
    mha = nn().MultiheadAttention(e, heads, dropout=0.0, bias=True, add_bias_kv=False, add_zero_attn=False,
                                  kdim=None, vdim=None, batch_first=True, dtype=dtype).train()
    T = torch()
    _set(mha.in_proj_weight, T.cat([t["W_q"].T, t["W_k"].T, t["W_v"].T]))
    _set(mha.in_proj_bias, T.cat([t["b_q"], t["b_k"], t["b_v"]]))
    _set(mha.out_proj.weight, t["W_o"].T)
    _set(mha.out_proj.bias, t["b_o"])
    params = (Param(mha.in_proj_weight, ("W_q", "W_k", "W_v"),
                    lambda g: {f"W_{n}": w for n, w in _packed_qkv(g).items()}),
              Param(mha.in_proj_bias, ("b_q", "b_k", "b_v"),
                    lambda g: {f"b_{n}": b for n, b in _packed_qkv(g).items()}),
              param(mha.out_proj.weight, "W_o", _transpose), param(mha.out_proj.bias, "b_o"))

    def apply(t):
        padding = t["key_padding_mask"] == 0 if "key_padding_mask" in t else None
        # (N, Lq, Lk) -> (N heads, Lq, Lk), batch-major as MultiheadAttention reads it
        ignore = (t["attn_mask"] == 0).repeat_interleave(heads, dim=0) if "attn_mask" in t else None
        y, w = mha(t["query"], t["key"], t["value"], key_padding_mask=padding, need_weights=need_weights,
                   attn_mask=ignore, average_attn_weights=True, is_causal=False)
        return {"y": y, "weights": w} if weights_out else y

    return Built(apply, params)


def multi_head_attention(t, a, dtype):
    return _multi_head_attention(t, a, dtype, a["need_weights"], weights_out=False)


def multi_head_attention_weights(t, a, dtype):
    return _multi_head_attention(t, a, dtype, True, weights_out=True)


# ---- builders: training step ---------------------------------------------------
# Clipping acts on .grad of parameters (what clip_grad_*_ take); an optimizer is
# the real torch.optim class on one parameter: .grad is set and step() called for
# each of the k gradients, and the parameter and the state are read after each.
# foreach/fused are off (the single-tensor path, the same on every machine).


def _with_grads(*grads):
    params = []
    for g in grads:
        p = nn().Parameter(torch().zeros_like(g))
        p.grad = g.detach().clone()
        params.append(p)
    return params


def _function_route(a):
    if a["route"] != "function":
        raise NotApplicable("torch.optim optimizers take no clipping argument: PyTorch clips with "
                            "nn.utils.clip_grad_value_ / clip_grad_norm_ (the function route)")


def clip_by_value(t, a, dtype):
    _function_route(a)
    def apply(t):
        (p,) = _with_grads(t["g"])
        nn().utils.clip_grad_value_([p], clip_value=a["clip_value"], foreach=False)
        return {"g": p.grad}
    return Built(apply)


def clip_by_norm(t, a, dtype):
    _function_route(a)
    def apply(t):
        (p,) = _with_grads(t["g"])
        nn().utils.clip_grad_norm_([p], max_norm=a["max_norm"], norm_type=2.0,
                                   error_if_nonfinite=a["error_if_nonfinite"], foreach=False)
        return {"g": p.grad}
    return Built(apply)


def clip_by_global_norm(t, a, dtype):
    _function_route(a)
    names = [n for n in ("g1", "g2") if n in t]

    def apply(t):
        params = _with_grads(*(t[n] for n in names))
        norm = nn().utils.clip_grad_norm_(params, max_norm=a["max_norm"], norm_type=2.0,
                                          error_if_nonfinite=a["error_if_nonfinite"], foreach=False)
        return {**{n: p.grad for n, p in zip(names, params)}, "norm": norm}
    return Built(apply)


def _trajectory(t, make, states=()):
    """Run ``make([w])`` (a torch.optim optimizer) over the case's k gradients; after
    each step t, ``w@t`` and each ``(name, state key)`` as ``name@t``."""
    w = nn().Parameter(t["w0"].detach().clone())
    opt = make([w])

    def apply(t):
        out = {}
        for step, g in enumerate(t["grads"], 1):
            w.grad = g.detach().clone()
            opt.step()
            out[f"w@{step}"] = w.detach().clone()
            out.update({f"{name}@{step}": opt.state[w][key].clone() for name, key in states})
        return out

    return Built(apply)



def sgd_step(t, a, dtype):
    return _trajectory(t, lambda p: torch().optim.SGD(
        p, lr=a["lr"], momentum=0.0, dampening=0.0, weight_decay=a["weight_decay"], nesterov=False,
        maximize=False, foreach=False, differentiable=False, fused=False))


def momentum_step(t, a, dtype):
    if a["nesterov"] and a["dampening"] != 0:
        raise NotApplicable("torch.optim.SGD refuses nesterov with dampening != 0 (ValueError)")
    return _trajectory(t, lambda p: torch().optim.SGD(
        p, lr=a["lr"], momentum=a["momentum"], dampening=a["dampening"], weight_decay=a["weight_decay"],
        nesterov=a["nesterov"], maximize=False, foreach=False, differentiable=False, fused=False),
        (("m", "momentum_buffer"),))


def _adam_options(a):
    return dict(lr=a["lr"], betas=(a["beta_1"], a["beta_2"]), eps=a["eps"], weight_decay=a["weight_decay"],
                amsgrad=False, maximize=False, foreach=False, capturable=False, differentiable=False, fused=False)


def adam_step(t, a, dtype):
    return _trajectory(t, lambda p: torch().optim.Adam(p, **_adam_options(a), decoupled_weight_decay=False),
                       (("m", "exp_avg"), ("v", "exp_avg_sq")))


def adamw_step(t, a, dtype):
    return _trajectory(t, lambda p: torch().optim.AdamW(p, **_adam_options(a)),
                       (("m", "exp_avg"), ("v", "exp_avg_sq")))


def rmsprop_step(t, a, dtype):
    states = (("v", "square_avg"),) + ((("mean", "grad_avg"),) if a["centered"] else ()) + (
        (("m", "momentum_buffer"),) if a["momentum"] > 0 else ())
    return _trajectory(t, lambda p: torch().optim.RMSprop(
        p, lr=a["lr"], alpha=a["alpha"], eps=a["eps"], weight_decay=a["weight_decay"], momentum=a["momentum"],
        centered=a["centered"], capturable=False, foreach=False, maximize=False, differentiable=False), states)


def adagrad_step(t, a, dtype):
    return _trajectory(t, lambda p: torch().optim.Adagrad(
        p, lr=a["lr"], lr_decay=0.0, weight_decay=a["weight_decay"],
        initial_accumulator_value=a["initial_accumulator_value"], eps=a["eps"], foreach=False, maximize=False,
        differentiable=False, fused=False), (("sum", "sum"),))


def train_step(t, a, dtype):
    """nn.Linear -> nn.ReLU -> nn.Linear, nn.CrossEntropyLoss, and per batch: zero_grad,
    backward, the gradients read, clip_grad_norm_ (unless max_norm is inf), step."""
    first, second = (_linear(t["W1"].shape[0], t["W1"].shape[1], t["W1"], t["b1"], dtype),
                     _linear(t["W2"].shape[0], t["W2"].shape[1], t["W2"], t["b2"], dtype))
    model, loss_fn = nn().Sequential(first, nn().ReLU(), second), nn().CrossEntropyLoss(reduction="mean",
                                                                                           label_smoothing=0.0)
    named = {"W1": (first.weight, _transpose), "b1": (first.bias, same), "W2": (second.weight, _transpose),
             "b2": (second.bias, same)}
    params = [p for p, _ in named.values()]
    if a["optimizer"] == "adam":
        opt = torch().optim.Adam(params, lr=a["lr"], betas=(a["beta_1"], a["beta_2"]), eps=a["eps"],
                                 weight_decay=0.0, amsgrad=False, maximize=False, foreach=False, capturable=False,
                                 differentiable=False, fused=False, decoupled_weight_decay=False)
    else:
        opt = torch().optim.SGD(params, lr=a["lr"], momentum=a["momentum"], dampening=0.0, weight_decay=0.0,
                                nesterov=False, maximize=False, foreach=False, differentiable=False, fused=False)

    def apply(t):
        out = {}
        for step, (x, y) in enumerate(zip(t["x"], t["labels"]), 1):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            out[f"loss@{step}"] = loss.detach().clone()
            out.update({f"g{n}@{step}": convert(p.grad.detach().clone()) for n, (p, convert) in named.items()})
            if a["max_norm"] != float("inf"):
                nn().utils.clip_grad_norm_(params, max_norm=a["max_norm"], norm_type=2.0, error_if_nonfinite=False,
                                           foreach=False)
            opt.step()
            out.update({f"{n}@{step}": convert(p.detach().clone()) for n, (p, convert) in named.items()})
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
    # layers without parameters: the module applied to the case's tensors
    **{name: stateless(fn) for name, fn in {
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
        "mse": lambda t, a, dt: nn().MSELoss(reduction=a["reduction"])(t["pred"], t["target"]),
        "l1": lambda t, a, dt: nn().L1Loss(reduction=a["reduction"])(t["pred"], t["target"]),
        "huber": lambda t, a, dt: nn().HuberLoss(reduction=a["reduction"], delta=a["delta"])(t["pred"], t["target"]),
        "cross_entropy": lambda t, a, dt: nn().CrossEntropyLoss(
            weight=t.get("weight"), ignore_index=a["ignore_index"], reduction=a["reduction"],
            label_smoothing=a["label_smoothing"])(t["logits"], t["labels"] if "labels" in t else t["probs"]),
        "binary_cross_entropy_with_logits": lambda t, a, dt: nn().BCEWithLogitsLoss(
            weight=t.get("weight"), reduction=a["reduction"], pos_weight=t.get("pos_weight"))(
            t["logits"], t["targets"]),
    }.items()},
}

# Where the math leaves a choice open, what PyTorch does (measured here, see CONVENTIONS.md).
CONVENTIONS: dict[str, Convention] = {
    "relu": Convention({"at_nan": "right"}, "threshold_backward tests x <= 0 for the zero branch, so a NaN passes "
                                            "the cotangent through (relu(NaN) = NaN, gradient g); measured"),
    "leaky_relu": Convention({"at_zero": "left", "at_nan": "left"},
                             "backward tests x > 0, so x = 0 and NaN take the slope; measured"),
    "elu": Convention({"at_zero": "left", "at_nan": "right"},
                      "elu_backward tests x <= 0, so x = 0 takes alpha and a NaN the positive branch (gradient g); "
                      "measured"),
    "selu": Convention({"at_zero": "left", "at_nan": "right"},
                       "selu shares elu_backward: x = 0 takes scale*alpha, a NaN scale; measured"),
    # ---- losses
    "cross_entropy": Convention({"empty_mean": "nan"},
                                "a mean over no label (every label equal to ignore_index) is 0/0: the loss is NaN, "
                                "and the gradient is 0 (nll_loss's backward skips ignored labels; the smoothing "
                                "term's masked_fill zeroes them); measured with torch 2.13: logits (3, 4), labels "
                                "[1, 1, 1], ignore_index=1 -> loss nan (also with label_smoothing 0.1), gradient all "
                                "0; reduction 'sum' -> 0. A zero class weight on every label gives NaN in the "
                                "gradient too (not drawn: weights are positive)"),
    # ---- convolution and pooling
    "max_pool2d": Convention({"tie": "first", "nan_route": "last"},
                             "the first maximum in row-major window order gets the gradient (as a scan that replaces its "
                             "candidate only on val > max would); measured with torch 2.13: in all 98 of 150 drawn cases where "
                             "first and last differ it matches tie=first, and -0.0 vs 0.0 routes to the first. NaN "
                             "replaces the candidate every time (val > max || isnan(val)): a window holding NaN gives NaN "
                             "and its LAST NaN gets the gradient ([[1, nan], [nan, 2]] routes to (1, 0))"),
    # ---- normalization, embedding, dropout
    "dropout": Convention({}, "inverted dropout, x * (mask / (1 - p)); nn.Dropout draws its own mask (seeded per "
                              "case), recovered from the same draw on ones, and the oracle answers for that mask"),
    "batch_norm": Convention({}, "training mode normalizes with the biased batch variance (stores the unbiased one in "
                                 "running_var); refuses N * prod(spatial) == 1; measured"),
    # ---- recurrent
    **{name: Convention({}, "pack_padded_sequence(enforce_sorted=False) + pad_packed_sequence(padding_value=0, "
                            "total_length=T): padded steps keep the state, get no gradient, and y is 0 there "
                            "(padded_output 'zeros' only); h_n, c_n are the states after each sequence's last "
                            "valid step; measured")
       for name in ("masked_rnn", "masked_lstm", "masked_gru", "masked_bidirectional_lstm",
                    "masked_bidirectional_gru")},
    # ---- attention
    "scaled_dot_product_attention": Convention(
        {"empty_row": "zeros"},
        "a query whose boolean attn_mask row is all False gets output 0 and passes no gradient (the math kernel's "
        "_safe_softmax); measured with torch 2.13 in float32 and float64"),
    "multi_head_attention": Convention(
        {"empty_row": "zeros", "empty_row_weights": "zeros"},
        "need_weights=False runs scaled_dot_product_attention: a query that may see no key gets attention output 0 "
        "(so y = b_o) and passes no gradient; need_weights=True computes softmax(-inf, ..., -inf) = NaN itself "
        "(a known divergence, torch-mha-masked-row-nan); measured with torch 2.13"),
    "multi_head_attention_weights": Convention(
        {"empty_row_weights": "zeros"},
        "need_weights=True: a query that may see no key gives NaN (known divergence torch-mha-masked-row-nan); "
        "every other row is the plain softmax"),
    # ---- training step (torch/nn/utils/clip_grad.py, torch/optim/*.py, torch 2.13)
    "clip_by_norm": Convention({"norm_eps": 1e-6}, "clip_grad_norm_: clip_coef = max_norm / (total_norm + 1e-6), "
                                                   "clamped to 1; a norm exactly at the threshold is scaled by "
                                                   "c / (c + 1e-6)"),
    "clip_by_global_norm": Convention({"norm_eps": 1e-6}, "clip_grad_norm_ over all tensors: clip_coef = max_norm / "
                                                          "(total_norm + 1e-6), clamped to 1; returns the norm "
                                                          "before clipping"),
    "sgd_step": Convention({"float32_hypers": ()}, "grad.add(param, alpha=wd); param.add_(grad, alpha=-lr), lr a "
                                                 "Python float"),
    "momentum_step": Convention({"decay_form": "l2", "momentum_form": "buffer", "float32_hypers": ()},
                                "L2 decay grad + wd p; buf = d on the first step, then buf.mul_(mu).add_(d, "
                                "alpha=1 - dampening); nesterov steps with d + mu buf; param.add_(., alpha=-lr)"),
    "adam_step": Convention({"decay_form": "l2", "eps_form": "corrected", "float32_hypers": ()},
                            "Adam(decoupled_weight_decay=False): grad + wd p; denom = sqrt(v) / sqrt(bc2) + eps; "
                            "p -= lr / bc1 * m / denom (bias corrections in Python float64)"),
    "adamw_step": Convention({"eps_form": "corrected", "float32_hypers": ()},
                             "param.mul_(1 - lr wd), then Adam's corrected-eps update"),
    "rmsprop_step": Convention({"decay_form": "l2", "eps_form": "outside", "momentum_form": "buffer",
                                "float32_hypers": ()},
                               "avg = sqrt(square_avg [- grad_avg^2]) + eps; buf = mu buf + d / avg, p -= lr buf"),
    "adagrad_step": Convention({"decay_form": "l2", "eps_form": "outside", "float32_hypers": ()},
                               "state_sum += d^2; p -= lr d / (sqrt(state_sum) + eps) (lr_decay 0)"),
    "train_step": Convention({"norm_eps": 1e-6, "eps_form": "corrected", "float32_hypers": ()},
                             "clip_grad_norm_ adds 1e-6 to the norm; Adam's corrected eps (see clip_by_global_norm "
                             "and adam_step)"),
}


class TorchAdapter(FrameworkAdapter):
    name = "torch"

    def available(self):
        try:
            torch()
        except ImportError as e:
            return False, f"PyTorch is not installed ({e}); pip install 'gradparity[torch]'"
        return True, ""

    def version(self):
        return str(torch().__version__)

    def native_dtype(self, dtype):
        return getattr(torch(), dtype)

    def tensor(self, array, dtype, watch):
        T = torch()
        if array.dtype.kind in "iu":
            return T.as_tensor(array, dtype=T.long)
        return T.tensor(array, dtype=getattr(T, dtype), requires_grad=watch)

    def forward_backward(self, forward, tensors, cotangents, sources, dtype):
        T = torch()
        outs = forward(tensors)
        loss = sum((outs[n] * T.as_tensor(g, dtype=getattr(T, dtype))).sum() for n, g in cotangents.items())
        grads = (T.autograd.grad(loss, sources, allow_unused=True) if sources and loss.requires_grad
                 else [None] * len(sources))
        return ({n: out.detach().numpy() for n, out in outs.items()},
                [T.zeros_like(s).numpy() if g is None else g.detach().numpy() for s, g in zip(sources, grads)])
