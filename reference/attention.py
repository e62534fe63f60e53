"""Attention: scaled dot-product attention and multi-head attention.

Canonical layout (batch first, heads before positions, as PyTorch's
``scaled_dot_product_attention`` takes them; Keras' ``dot_product_attention``
takes (B, T, heads, E) and the adapter transposes):

    q (N, Hh, Lq, E),  k (N, Hh, Lk, E),  v (N, Hh, Lk, Ev),  mask (N, Hh, Lq, Lk)  ->  y (N, Hh, Lq, Ev)

Masks are keep-masks in the case dtype: 1 = the query attends to that key
(PyTorch's boolean attn_mask True, Keras' mask True), 0 = it does not
(PyTorch's key_padding_mask True / MultiheadAttention attn_mask True mean the
opposite: the adapter inverts them).

Inside, one attention core serves both layers: with s = scale q kᵀ, keep the
mask (and the causal band), and P = softmax over the kept keys of each row,

    y = P v
    gv = Pᵀ g,   dP = g vᵀ,   ds = P (dP - rowsum(P dP)) on kept keys, 0 elsewhere,
    gq = scale ds k,   gk = scale dsᵀ q.

A masked key gets weight exactly 0 and passes no gradient (the frameworks
replace its logit by a large negative number or -inf: exp gives 0).

A fully masked row (a query that may attend to nothing: a padded-out sequence,
a masked query row) asks for a softmax over the empty set. The oracle's answer
by default (``empty_row="zeros"``) is the empty sum: weights 0, output row 0,
and no gradient through that row. It is the only answer that reads no masked
value (a uniform average would read v at keys the mask forbids), it is what
PyTorch's own scaled_dot_product_attention returns (its "safe softmax"), and it
is the limit of masking by subtraction as the penalty grows, per row
renormalized to nothing. The other answer a framework gives is a convention the
oracle computes on request: ``empty_row="uniform"``: every key weighted 1 / Lk,
masked or not (Keras' where(mask, s, -big) then softmax), still with no
gradient into s. A framework that returns NaN there is a known divergence,
not a convention (see reports/tolerances.py).
"""

from __future__ import annotations

import numpy as np

from .catalogue import SUBNORMAL, S, attr_is, of_dim, registrar
from .spec import Array, Choice, Drawn, Edge, Float, Int, Layer, Mask, Real, require

EMPTY_ROW = ("zeros", "uniform")


def _keep(mask, causal: bool, shape) -> np.ndarray | None:
    """The boolean keep-mask of shape (..., Lq, Lk), or None when every key is kept.
    Causal: query i sees keys j <= i (aligned top-left, as both frameworks do)."""
    keep = None if mask is None else mask != 0
    if causal:
        band = np.tril(np.ones(shape[-2:], dtype=bool))
        keep = band if keep is None else keep & band
    return None if keep is None else np.broadcast_to(keep, shape)


def _softmax_rows(s, keep, empty_row):
    """Softmax over the last axis, kept entries only; (P, kept, empty rows or None)."""
    require(empty_row in EMPTY_ROW, "empty_row", f"expected one of {', '.join(EMPTY_ROW)}, got {empty_row!r}")
    # In place on one fresh array (s is the caller's scratch): at benchmark sizes
    # every extra temporary costs as much as the exp.
    if keep is None:
        s -= s.max(axis=-1, keepdims=True)
        np.exp(s, out=s)
        s /= s.sum(axis=-1, keepdims=True)
        return s, None
    np.copyto(s, -np.inf, where=~keep)
    m = s.max(axis=-1, keepdims=True)
    empty = ~np.isfinite(m)  # the row keeps nothing: its max is -inf
    if not empty.any():
        empty = None
    else:
        m[empty] = 0.0
    s -= m
    np.exp(s, out=s)  # exp(-inf) = 0 at every masked entry
    z = s.sum(axis=-1, keepdims=True)
    if empty is not None:
        z[empty] = 1.0
    s /= z
    if empty is not None and empty_row == "uniform":
        np.copyto(s, 1.0 / s.shape[-1], where=empty)
    return s, empty


def attend(q, k, v, keep, scale, empty_row, bias=None, drop=None):
    """The attention core on (..., L, E) stacks: (y, residuals). ``bias``: added to the
    scaled logits (an additive float mask); ``drop``: the dropout mask already divided
    by 1 - p, multiplying the weights before they meet v."""
    s = np.matmul(q, np.swapaxes(k, -1, -2))
    s *= scale
    if bias is not None:
        s += bias
    p, empty = _softmax_rows(s, keep, empty_row)
    pd = p if drop is None else p * drop
    return np.matmul(pd, v), (q, k, v, p, empty, scale, drop)


def attend_vjp(res, g, g_p=None):
    """(gq, gk, gv, gs) of the core, from the output's cotangent g and, when the
    weights themselves are an output, their cotangent g_p (same shape as P); gs is
    the gradient of the scaled logits (so of an additive bias)."""
    q, k, v, p, empty, scale, drop = res
    gv = np.matmul(np.swapaxes(p if drop is None else p * drop, -1, -2), g)
    dp = np.matmul(g, np.swapaxes(v, -1, -2))
    if drop is not None:
        dp *= drop
    if g_p is not None:
        dp += g_p
    ds = p * dp
    dp -= ds.sum(axis=-1, keepdims=True)
    np.multiply(p, dp, out=ds)
    if empty is not None:
        np.copyto(ds, 0.0, where=empty)  # a uniform row's weights do not depend on s
    gs = ds.copy()
    ds *= scale
    return np.matmul(ds, k), np.matmul(np.swapaxes(ds, -1, -2), q), gv, gs


# ---- scaled dot-product attention ----------------------------------------------

def scaled_dot_product_attention(q, k, v, mask=None, bias=None, dropout_mask=None, *, causal, scale, dropout_p=0.0,
                                 empty_row="zeros"):
    """Scaled dot-product attention: y = dropout(softmax(scale q kᵀ + bias, over kept keys)) v.

    Shapes: q (N, Hh, Lq, E), k (N, Hh, Lk, E), v (N, Hh, Lk, Ev), optional keep-mask
    (N, Hh, Lq, Lk) (1 = attend), optional additive float mask ``bias`` (N, Hh, Lq, Lk)
    (PyTorch's float attn_mask, Keras' bias), and with ``dropout_p`` p > 0 the dropout
    keep-mask ``dropout_mask`` M (N, Hh, Lq, Lk) of 0 and 1 (the one the framework drew)
    -> y (N, Hh, Lq, Ev). ``causal``: query i also drops keys j > i (top-left aligned:
    with Lq > Lk the last rows see every key). ``scale`` multiplies q kᵀ (PyTorch's
    default is 1 / sqrt(E)), before the bias is added.

    With P = softmax(s) and D = P M / (1 - p) (D = P without dropout, D = 0 at p = 1): y = D v.
    Gradients (see the module docstring): gv = Dᵀ g, dP = (g vᵀ) M / (1 - p),
    ds = P (dP - rowsum(P dP)), gbias = ds, gq = scale ds k, gk = scale dsᵀ q. Smooth
    in q, k, v and bias; a fully masked row gives 0 (``empty_row="zeros"``) or the
    plain mean of v (``"uniform"``) and passes no gradient to q, k or bias.
    """
    require(q.ndim == 4, "q", f"expected (N, Hh, Lq, E), got shape {q.shape}")
    n, h, lq, e = q.shape
    require(k.ndim == 4 and k.shape[:2] == (n, h) and k.shape[3] == e, "k",
            f"expected ({n}, {h}, Lk, {e}) for q {q.shape}, got {k.shape}")
    lk = k.shape[2]
    require(v.ndim == 4 and v.shape[:3] == (n, h, lk), "v", f"expected ({n}, {h}, {lk}, Ev), got {v.shape}")
    for name, m in (("mask", mask), ("bias", bias), ("dropout_mask", dropout_mask)):
        if m is not None:
            require(m.shape == (n, h, lq, lk), name, f"expected ({n}, {h}, {lq}, {lk}), got {m.shape}")
    require(np.isfinite(scale), "scale", f"expected a finite number, got {scale!r}")
    drop = _dropout(dropout_p, dropout_mask)
    y, res = attend(q, k, v, _keep(mask, causal, (n, h, lq, lk)), scale, empty_row, bias, drop)
    return y, (res, bias is not None)


def _dropout(p, mask):
    """The dropout factor M / (1 - p) (None without dropout; 0 at p = 1, which drops every
    weight, as the dropout layer); checks p and the mask."""
    require(0.0 <= p <= 1.0, "dropout_p", f"must be in [0, 1], got {p}")
    require((mask is not None) == (p > 0), "dropout_mask",
            f"dropout_p={p} takes {'a' if p > 0 else 'no'} dropout_mask")
    if mask is None:
        return None
    require(bool(np.all((mask == 0) | (mask == 1))), "dropout_mask", "expected only 0 and 1")
    return np.zeros(mask.shape) if p == 1 else mask / (1.0 - p)


def scaled_dot_product_attention_vjp(residuals, g):
    res, biased = residuals
    gq, gk, gv, gs = attend_vjp(res, g)
    return {"q": gq, "k": gk, "v": gv, **({"bias": gs} if biased else {})}


# ---- multi-head attention ------------------------------------------------------

def _heads(x, heads):
    """(N, L, E) -> (N, heads, L, E / heads): head h holds features h D .. (h + 1) D - 1."""
    n, length, e = x.shape
    return x.reshape(n, length, heads, e // heads).transpose(0, 2, 1, 3)


def _merge(x):
    """(N, heads, L, D) -> (N, L, heads D)."""
    n, h, length, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(n, length, h * d)


def multi_head_attention(query, key, value, W_q, W_k, W_v, b_q, b_k, b_v, W_o, b_o,
                         key_padding_mask=None, attn_mask=None, attn_bias=None, bias_k=None, bias_v=None, *,
                         num_heads, need_weights, add_bias_kv=False, add_zero_attn=False,
                         empty_row="zeros", empty_row_weights="zeros"):
    """Multi-head attention (PyTorch's nn.MultiheadAttention, Keras' MultiHeadAttention).

        Q = query W_q + b_q,  K = key W_k + b_k,  V = value W_v + b_v     (N, L, E)
        head h: columns h D .. (h + 1) D - 1 of Q, K, V, with D = E / num_heads,
        O_h = softmax(Q_h K_hᵀ / sqrt(D) + attn_bias, over kept keys) V_h,
        y = [O_0 | .. | O_{heads-1}] W_o + b_o

    ``add_bias_kv`` (PyTorch's): one more key and value after the projections, the
    learned rows bias_k, bias_v (E,) appended to K and V of every sequence;
    ``add_zero_attn``: then one more key and value of zeros per head (logit 0,
    value 0). The masks and the bias get a column for each added key that keeps it
    (bias 0), so a query always has a key to see; ``weights`` has Lk + the added keys.

    Shapes: query (N, Lq, E), key (N, Lk, E), value (N, Lk, E); W_q, W_k, W_v, W_o
    (E, E) in (in, out) layout; biases (E,); optional keep-masks key_padding_mask
    (N, Lk) (0: that key is padding, for every query) and attn_mask (N, Lq, Lk)
    (0: query i may not see key j), combined by AND; optional additive float mask
    attn_bias (N, Lq, Lk) (PyTorch's float attn_mask); all shared by the heads ->
    y (N, Lq, E). ``need_weights`` chooses the framework's code path (PyTorch's
    explicit softmax that returns head-averaged weights, against its fused kernel;
    Keras' masked Softmax layer with return_attention_scores, against
    ops.dot_product_attention); the math is the same, except at a fully masked
    row: ``empty_row`` is its answer without weights, ``empty_row_weights`` with.

    Gradients: the core's (module docstring) per head, then the projections:
    gW_o = Oᵀ g, gb_o = sum g, dO = g W_oᵀ; for X in (Q, K, V) with input x:
    gW_x = xᵀ dX, gb_x = sum dX, gx = dX W_xᵀ (summed when the inputs coincide);
    gbias_k, gbias_v = the sums over N of dK, dV at the added key; gattn_bias = the
    logits' gradient summed over heads (the added keys' columns dropped).
    """
    require(query.ndim == 3, "query", f"expected (N, Lq, E), got shape {query.shape}")
    n, lq, e = query.shape
    require(key.ndim == 3 and key.shape[0] == n and key.shape[2] == e, "key",
            f"expected ({n}, Lk, {e}), got {key.shape}")
    lk = key.shape[1]
    require(value.shape == key.shape, "value", f"expected {key.shape} like key, got {value.shape}")
    for name, w in (("W_q", W_q), ("W_k", W_k), ("W_v", W_v), ("W_o", W_o)):
        require(w.shape == (e, e), name, f"expected ({e}, {e}), got {w.shape}")
    for name, b in (("b_q", b_q), ("b_k", b_k), ("b_v", b_v), ("b_o", b_o)):
        require(b.shape == (e,), name, f"expected ({e},), got {b.shape}")
    require(num_heads >= 1 and e % num_heads == 0, "num_heads",
            f"must divide the embedding size {e}, got {num_heads}")
    require(add_bias_kv in (True, False), "add_bias_kv", f"expected True or False, got {add_bias_kv!r}")
    require(add_zero_attn in (True, False), "add_zero_attn", f"expected True or False, got {add_zero_attn!r}")
    for name, b in (("bias_k", bias_k), ("bias_v", bias_v)):
        require((b is not None) == add_bias_kv, name, f"add_bias_kv={add_bias_kv} takes {'a' if add_bias_kv else 'no'} "
                f"{name}")
        if b is not None:
            require(b.shape == (e,), name, f"expected ({e},), got {b.shape}")
    if key_padding_mask is not None:
        require(key_padding_mask.shape == (n, lk), "key_padding_mask",
                f"expected ({n}, {lk}), got {key_padding_mask.shape}")
    for name, m in (("attn_mask", attn_mask), ("attn_bias", attn_bias)):
        if m is not None:
            require(m.shape == (n, lq, lk), name, f"expected ({n}, {lq}, {lk}), got {m.shape}")
    added = int(add_bias_kv) + int(add_zero_attn)  # keys appended after the projections
    keep = None
    if key_padding_mask is not None:
        keep = (key_padding_mask != 0)[:, None, :]
    if attn_mask is not None:
        keep = attn_mask != 0 if keep is None else keep & (attn_mask != 0)
    if keep is not None:
        keep = np.concatenate([np.broadcast_to(keep, (n, lq, lk)), np.ones((n, lq, added), dtype=bool)], axis=2)
        keep = np.broadcast_to(keep[:, None], (n, num_heads, lq, lk + added))
    bias = None
    if attn_bias is not None:
        bias = np.concatenate([attn_bias, np.zeros((n, lq, added))], axis=2)[:, None]
    K, V = key @ W_k + b_k, value @ W_v + b_v
    if add_bias_kv:
        K = np.concatenate([K, np.broadcast_to(bias_k, (n, 1, e))], axis=1)
        V = np.concatenate([V, np.broadcast_to(bias_v, (n, 1, e))], axis=1)
    q, k, v = _heads(query @ W_q + b_q, num_heads), _heads(K, num_heads), _heads(V, num_heads)
    if add_zero_attn:
        zeros = np.zeros(k.shape[:2] + (1, k.shape[3]))
        k, v = np.concatenate([k, zeros], axis=2), np.concatenate([v, zeros], axis=2)
    o, core = attend(q, k, v, keep, 1.0 / np.sqrt(e // num_heads), empty_row_weights if need_weights else empty_row,
                     bias)
    merged = _merge(o)
    y = merged @ W_o + b_o
    weights = core[3].mean(axis=1)
    return y, {"query": query, "key": key, "value": value, "W_q": W_q, "W_k": W_k, "W_v": W_v, "W_o": W_o,
               "merged": merged, "core": core, "heads": num_heads, "weights": weights, "add_bias_kv": add_bias_kv,
               "add_zero_attn": add_zero_attn, "attn_bias": attn_bias is not None}


def multi_head_attention_vjp(res, g, g_weights=None):
    core, heads, W_o = res["core"], res["heads"], res["W_o"]
    e = W_o.shape[0]
    g2 = g.reshape(-1, e)
    grads = {"W_o": res["merged"].reshape(-1, e).T @ g2, "b_o": g2.sum(axis=0)}
    g_p = None if g_weights is None else np.broadcast_to(g_weights[:, None] / heads, core[3].shape)
    dq, dk, dv, gs = attend_vjp(core, _heads(g @ W_o.T, heads), g_p)
    if res["add_zero_attn"]:  # the zero key and value are constants
        dk, dv = dk[:, :, :-1], dv[:, :, :-1]
    dK, dV = _merge(dk), _merge(dv)
    if res["add_bias_kv"]:
        grads["bias_k"], grads["bias_v"] = dK[:, -1].sum(axis=0), dV[:, -1].sum(axis=0)
        dK, dV = dK[:, :-1], dV[:, :-1]
    lk = res["key"].shape[1]
    if res["attn_bias"]:
        grads["attn_bias"] = gs.sum(axis=1)[:, :, :lk]
    for x_name, w_name, b_name, dX in (("query", "W_q", "b_q", _merge(dq)), ("key", "W_k", "b_k", dK),
                                       ("value", "W_v", "b_v", dV)):
        x, W = res[x_name], res[w_name]
        d2 = dX.reshape(-1, e)
        grads[w_name] = x.reshape(-1, e).T @ d2
        grads[b_name] = d2.sum(axis=0)
        grads[x_name] = (d2 @ W.T).reshape(x.shape)
    return grads


def multi_head_attention_with_weights(*args, **kwargs):
    """Multi-head attention that also returns its head-averaged attention weights
    (PyTorch's need_weights=True, average_attn_weights=True; Keras'
    return_attention_scores=True averaged over heads):

        y as multi_head_attention,  weights = (1 / heads) sum_h P_h      (N, Lq, Lk + added keys)

    Gradient: each head's dP gains g_weights / heads. A fully masked row's weights
    follow ``empty_row_weights`` (0 by default).
    """
    y, res = multi_head_attention(*args, need_weights=True, **kwargs)
    return {"y": y, "weights": res["weights"]}, res


def multi_head_attention_with_weights_vjp(res, g):
    return multi_head_attention_vjp(res, g["y"], g["weights"])


def kappa(residuals, **arrays_and_attrs):
    """How far one rounding in the backward pass moves a gradient, relative to the
    cotangent it is judged against: kappa = max(1, the largest sum of magnitudes
    behind one element of gb_q or gb_k, per unit cotangent).

    The backward pass carries g through W_o and V into dP = (g W_oᵀ) Vᵀ, whose
    size is |W_o| |V| times |g|, and then sums ds = P (dP - rowsum(P dP)) times Q
    or K over positions: gb_k = sum_j dK_j is exactly 0 (adding a constant to
    every key moves every logit of a row equally), computed as a difference of
    such terms, and gb_q can be just as small. Rounding those terms in float32
    leaves eps times their summed magnitude. Bounded here with |g| = 1 everywhere:
    |dP| <= (1 |W_o|ᵀ) |V|ᵀ (+ 1 / heads for the weights' own cotangent),
    |ds| <= scale P (|dP| + rowsum(P |dP|)), and the sums sum_{n,i,j} |ds_ij| |Q_i|,
    sum_{n,i,j} |ds_ij| |K_j| per feature.
    """
    query, W_o, heads = residuals["query"], residuals["W_o"], residuals["heads"]
    q, k, v, p, _, scale, _ = residuals["core"]
    n, lq, e = query.shape
    unit = _heads(np.broadcast_to(np.abs(W_o).sum(axis=1), (n, lq, e)), heads)
    dp = np.matmul(unit, np.swapaxes(np.abs(v), -1, -2))
    if arrays_and_attrs.get("need_weights", True):
        dp += 1.0 / heads  # the weights' cotangent (an entry that outputs them); harmless otherwise
    ds = scale * p * (dp + (p * dp).sum(axis=-1, keepdims=True))
    through_q = np.matmul(np.swapaxes(ds, -1, -2), np.abs(q)).sum(axis=(0, 2))
    through_k = np.matmul(ds, np.abs(k)).sum(axis=(0, 2))
    return max(1.0, float(through_q.max(initial=0.0)), float(through_k.max(initial=0.0)))


# ---- catalogue entries --------------------------------------------------------

register = registrar("attention")

# Small on purpose: one head, a head dim of 1, one query or one key (L = 1) are
# all drawn. Keep-masks (1 = attend) drop about a third of the keys, now and then
# none, all, or whole rows: a query that may see nothing, a sequence that is all
# padding next to one that is not (see reference/attention.py for the answer there).

ATTENTION_MASK = Mask(0.3, lines=True)

def _sdpa_row_without_keys(case):
    keep = _keep(case.arrays.get("mask"), case.attrs["causal"], case.cotangents["y"].shape[:-1] +
                 (case.arrays["k"].shape[-2],))
    return keep is not None and bool(np.any(~keep.any(axis=-1)))


def mha_row_without_keys(case):
    """Some query of a multi-head attention case sees none of the given keys (its key
    padding mask and attention mask rows, ANDed, are all 0); the keys add_bias_kv and
    add_zero_attn append are not counted (they are never masked)."""
    a = case.arrays
    keep = np.ones((a["query"].shape[0], a["query"].shape[1], a["key"].shape[1]), dtype=bool)
    if "key_padding_mask" in a:
        keep &= (a["key_padding_mask"] != 0)[:, None, :]
    if "attn_mask" in a:
        keep &= a["attn_mask"] != 0
    return bool(np.any(~keep.any(axis=-1)))


# Additive float masks (PyTorch's float attn_mask, Keras' bias) beside the keep-masks;
# dropout on the weights (PyTorch's dropout_p), half the cases without.
ATTENTION_BIAS = Real(-3.0, 3.0, edges=(0.0,))
DROPOUT_P = Float(0.0, 0.9, edges=(0.0,))

register(Layer(
    "scaled_dot_product_attention", scaled_dot_product_attention, scaled_dot_product_attention_vjp,
    edges=(attr_is("causal", True), Edge("query_without_keys", _sdpa_row_without_keys),
           Edge("one_key", lambda c: c.arrays["k"].shape[2] == 1, {"Lk": 1}),
           Edge("one_head", lambda c: c.arrays["q"].shape[1] == 1, {"Hh": 1}),
           Edge("head_dim_1", lambda c: c.arrays["q"].shape[3] == 1, {"E": 1}),
           Edge("default_scale", lambda c: c.attrs["scale"] == 1.0 / float(np.sqrt(c.arrays["q"].shape[3]))),
           Edge("float_mask", lambda c: "bias" in c.arrays),
           Edge("float_and_boolean_mask", lambda c: "bias" in c.arrays and "mask" in c.arrays),
           Edge("dropout", lambda c: c.attrs["dropout_p"] > 0, {"dropout_p": 0.5}),
           SUBNORMAL),
    dims={"N": Int(1, 2), "Hh": Int(1, 2), "Lq": Int(1, 4), "Lk": Int(1, 4, like="Lq"), "E": Int(1, 3),
          "Ev": Int(1, 3, like="E")},
    attrs={"causal": Choice(False, True),
           "scale": Drawn(float, lambda d: Float(0.1, 2.0, edges=(1.0 / float(np.sqrt(d.E)), 1.0))),
           "dropout_p": DROPOUT_P},
    arrays={
        "q": Array(S("N", "Hh", "Lq", "E")),
        "k": Array(S("N", "Hh", "Lk", "E")),
        "v": Array(S("N", "Hh", "Lk", "Ev")),
        "mask": Array(S("N", "Hh", "Lq", "Lk"), ATTENTION_MASK, optional=True, grad=False),
        "bias": Array(S("N", "Hh", "Lq", "Lk"), ATTENTION_BIAS, optional=True),
        "dropout_mask": Array(S("N", "Hh", "Lq", "Lk"), Mask("dropout_p"), grad=False,
                              when=lambda a: a["dropout_p"] > 0),
    },
    conventions={"empty_row": "zeros"},
))

MHA_DIMS = {"N": Int(1, 3), "Lq": Int(1, 4), "Lk": Int(1, 4, like="Lq"), "heads": Int(1, 3), "D": Int(1, 2)}


def _embedding(d, a):
    return (d.heads * d.D,)


def _square(d, a):
    return (d.heads * d.D,) * 2


def _mha_arrays():
    return {
        "query": Array(lambda d, a: (d.N, d.Lq, d.heads * d.D)),
        "key": Array(lambda d, a: (d.N, d.Lk, d.heads * d.D)),
        "value": Array(lambda d, a: (d.N, d.Lk, d.heads * d.D)),
        **{w: Array(_square, param=True) for w in ("W_q", "W_k", "W_v")},
        **{b: Array(_embedding, param=True) for b in ("b_q", "b_k", "b_v")},
        "W_o": Array(_square, param=True),
        "b_o": Array(_embedding, param=True),
        "key_padding_mask": Array(S("N", "Lk"), ATTENTION_MASK, optional=True, grad=False),
        "attn_mask": Array(S("N", "Lq", "Lk"), ATTENTION_MASK, optional=True, grad=False),
        "attn_bias": Array(S("N", "Lq", "Lk"), ATTENTION_BIAS, optional=True),
        **{b: Array(_embedding, param=True, when=lambda a: a["add_bias_kv"]) for b in ("bias_k", "bias_v")},
    }


# Multi-head attention: masks of each kind, a query that may see no key, one key,
# one head, a head dimension of 1, and as many heads as positions (where Keras'
# bias add goes wrong: keras-ops-add-bias-as-nchw).
MHA_EDGES = (Edge("key_padding_mask", lambda c: "key_padding_mask" in c.arrays),
             Edge("attention_mask", lambda c: "attn_mask" in c.arrays),
             Edge("query_without_keys", mha_row_without_keys),
             Edge("one_key", lambda c: c.arrays["key"].shape[1] == 1, {"Lk": 1}),
             Edge("one_head", lambda c: c.attrs["num_heads"] == 1, {"heads": 1}),
             Edge("head_dim_1", lambda c: c.arrays["W_q"].shape[0] == c.attrs["num_heads"], {"D": 1}),
             Edge("heads_as_many_as_positions", lambda c: c.attrs["num_heads"] > 1 and c.attrs["num_heads"] in (
                 c.arrays["query"].shape[1], c.arrays["key"].shape[1]), {"D": 1, "heads": Choice(2, 3)}),
             Edge("float_attention_mask", lambda c: "attn_bias" in c.arrays),
             attr_is("add_bias_kv", True), attr_is("add_zero_attn", True),
             Edge("bias_kv_and_zero_attn", lambda c: c.attrs["add_bias_kv"] and c.attrs["add_zero_attn"],
                  {"add_bias_kv": True, "add_zero_attn": True}),
             Edge("bias_kv_with_masked_rows", lambda c: c.attrs["add_bias_kv"] and mha_row_without_keys(c),
                  {"add_bias_kv": True}),
             SUBNORMAL)
# PyTorch's extra keys (add_bias_kv: learned bias_k, bias_v rows; add_zero_attn: a zero row)
EXTRA_KEYS = {"add_bias_kv": Choice(False, True, default=False), "add_zero_attn": Choice(False, True, default=False)}


register(Layer(
    "multi_head_attention", multi_head_attention, multi_head_attention_vjp, condition=kappa,
    dims=MHA_DIMS, attrs={"num_heads": of_dim("heads"), "need_weights": Choice(False, True), **EXTRA_KEYS},
    edges=(attr_is("need_weights", True), *MHA_EDGES),
    arrays=_mha_arrays(),
    conventions={"empty_row": "zeros", "empty_row_weights": "zeros"},
))

register(Layer(
    "multi_head_attention_weights", multi_head_attention_with_weights, multi_head_attention_with_weights_vjp,
    condition=kappa, dims=MHA_DIMS, attrs={"num_heads": of_dim("heads"), **EXTRA_KEYS}, outputs=("y", "weights"),
    edges=MHA_EDGES,
    arrays=_mha_arrays(),
    conventions={"empty_row_weights": "zeros"},
))

