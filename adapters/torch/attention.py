"""PyTorch builders: scaled dot-product and multi-head attention.

Canonical keep-masks (1 = attend) become what each call takes: SDPA's boolean
attn_mask means the same (True = attend); MultiheadAttention's key_padding_mask
and attn_mask mean the opposite (True = ignore). MultiheadAttention packs W_q,
W_k, W_v as the (out, in) blocks of in_proj_weight (3E, E), in that order.
"""

import numpy as np

from ...reference import Convention
from ..base import Built, Param, param, seed_of
from .core import builder, nn, set_, torch, transpose


@builder("scaled_dot_product_attention", convention=Convention(
    {"empty_row": "zeros"},
    "a query whose boolean attn_mask row is all False gets output 0 and passes no gradient (the math kernel's "
    "_safe_softmax); measured with torch 2.13 in float32 and float64. dropout_p > 0: the math kernel's "
    "dropout(attn, p) (inverted, kept weights times 1 / (1 - p)) draws its own mask (seeded per case), recovered "
    "by the same seeded draw of F.dropout on ones of the weights' shape (N, Hh, Lq, Lk); the oracle answers for "
    "that mask"))
def scaled_dot_product_attention(t, a, dtype):
    """F.scaled_dot_product_attention. A keep-mask and a float bias are one float attn_mask
    (the bias, -inf where the keep-mask is 0); dropout_p > 0 runs under a seed from the
    case, and the mask it drew is handed back as ``drawn``."""
    F, T = nn().functional, torch()
    p = a["dropout_p"]
    seed = seed_of(t["q"].detach().numpy())
    probe = {}

    def attention(t):
        causal, attend = a["causal"], None
        if "mask" in t:
            attend = t["mask"] != 0
            if causal:  # SDPA refuses attn_mask with is_causal=True: the band goes into the mask
                lq, lk = attend.shape[-2:]
                attend = attend & T.ones(lq, lk, dtype=T.bool).tril()
                causal = False
        if "bias" in t:
            bias = t["bias"]
            if causal:
                lq, lk = bias.shape[-2:]
                band = T.ones(lq, lk, dtype=T.bool).tril()
                attend = band if attend is None else attend & band
                causal = False
            attend = bias if attend is None else bias.masked_fill(~attend, float("-inf"))
        return F.scaled_dot_product_attention(t["q"], t["k"], t["v"], attn_mask=attend, dropout_p=p,
                                              is_causal=causal, scale=a["scale"], enable_gqa=False)

    if p == 0:
        return Built(attention)

    def apply(t):
        shape = t["q"].shape[:-1] + (t["k"].shape[-2],)
        with T.random.fork_rng(devices=[]):
            T.manual_seed(seed)
            probe["kept"] = F.dropout(T.ones(shape, dtype=dtype), p, training=True) != 0
        with T.random.fork_rng(devices=[]):
            T.manual_seed(seed)
            return attention(t)

    return Built(apply, drawn=lambda: {"dropout_mask": probe["kept"].numpy().astype(str(dtype).removeprefix("torch."))})


def _packed_qkv(g):
    """The gradient of in_proj_weight (3E, E) or in_proj_bias (3E,) as canonical q, k, v blocks."""
    blocks = np.split(np.asarray(g), 3, axis=0)
    return {n: b.T if b.ndim == 2 else b for n, b in zip(("q", "k", "v"), blocks)}


def _multi_head_attention(t, a, dtype, need_weights, weights_out):
    e, heads = t["W_q"].shape[0], a["num_heads"]
    mha = nn().MultiheadAttention(e, heads, dropout=0.0, bias=True, add_bias_kv=a["add_bias_kv"],
                                  add_zero_attn=a["add_zero_attn"], kdim=None, vdim=None, batch_first=True,
                                  dtype=dtype).train()
    T = torch()
    set_(mha.in_proj_weight, T.cat([t["W_q"].T, t["W_k"].T, t["W_v"].T]))
    set_(mha.in_proj_bias, T.cat([t["b_q"], t["b_k"], t["b_v"]]))
    set_(mha.out_proj.weight, t["W_o"].T)
    set_(mha.out_proj.bias, t["b_o"])
    params = (Param(mha.in_proj_weight, ("W_q", "W_k", "W_v"),
                    lambda g: {f"W_{n}": w for n, w in _packed_qkv(g).items()}),
              Param(mha.in_proj_bias, ("b_q", "b_k", "b_v"),
                    lambda g: {f"b_{n}": b for n, b in _packed_qkv(g).items()}),
              param(mha.out_proj.weight, "W_o", transpose), param(mha.out_proj.bias, "b_o"))
    if a["add_bias_kv"]:  # (1, 1, E) each
        set_(mha.bias_k, t["bias_k"].reshape(1, 1, e))
        set_(mha.bias_v, t["bias_v"].reshape(1, 1, e))
        params += (param(mha.bias_k, "bias_k", lambda g: g.reshape(e)),
                   param(mha.bias_v, "bias_v", lambda g: g.reshape(e)))

    def apply(t):
        padding = t["key_padding_mask"] == 0 if "key_padding_mask" in t else None
        # (N, Lq, Lk) -> (N heads, Lq, Lk), batch-major as MultiheadAttention reads it
        ignore = (t["attn_mask"] == 0).repeat_interleave(heads, dim=0) if "attn_mask" in t else None
        if "attn_bias" in t:  # a float mask: the bias, -inf where the keep-mask says ignore
            bias = t["attn_bias"].repeat_interleave(heads, dim=0)
            ignore = bias if ignore is None else bias.masked_fill(ignore, float("-inf"))
            if padding is not None:  # of the float mask's type too (mixed types are deprecated)
                padding = T.zeros(padding.shape, dtype=dtype).masked_fill(padding, float("-inf"))
        y, w = mha(t["query"], t["key"], t["value"], key_padding_mask=padding, need_weights=need_weights,
                   attn_mask=ignore, average_attn_weights=True, is_causal=False)
        return {"y": y, "weights": w} if weights_out else y

    return Built(apply, params)


@builder("multi_head_attention", convention=Convention(
    {"empty_row": "zeros", "empty_row_weights": "zeros"},
    "need_weights=False runs scaled_dot_product_attention: a query that may see no key gets attention output 0 "
    "(so y = b_o) and passes no gradient; need_weights=True computes softmax(-inf, ..., -inf) = NaN itself "
    "(a known divergence, torch-mha-masked-row-nan); measured with torch 2.13"))
def multi_head_attention(t, a, dtype):
    return _multi_head_attention(t, a, dtype, a["need_weights"], weights_out=False)


@builder("multi_head_attention_weights", convention=Convention(
    {"empty_row_weights": "zeros"},
    "need_weights=True: a query that may see no key gives NaN (known divergence torch-mha-masked-row-nan); "
    "every other row is the plain softmax"))
def multi_head_attention_weights(t, a, dtype):
    return _multi_head_attention(t, a, dtype, True, weights_out=True)
