"""Keras builders: ops.dot_product_attention and layers.MultiHeadAttention."""

import warnings

from ...reference import Convention
from ..base import Built, param
from .core import builder, keras, tf

# Keras takes (B, T, heads, E) where the canonical layout is (N, heads, L, E):
# q, k, v and the output are transposed. Keep-masks (1 = attend) are Keras'
# own convention (True = attend), cast to bool. MultiHeadAttention holds each
# projection as an einsum kernel: query/key/value (E, heads, D), biases (heads, D),
# output (heads, D, E): the canonical (E, E) matrices with the head axis split
# out of their output (input for W_o) axis, a reshape.

_BTNH = [0, 2, 1, 3]


def _sdpa_dropout(case):
    if case.attrs["dropout_p"] > 0:
        return ("keras.ops.dot_product_attention takes no dropout (keras 3.15.1: query, key, value, bias, mask, scale, "
                "is_causal, flash_attention, attn_logits_soft_cap); Keras drops attention weights only inside "
                "keras.layers.Attention and MultiHeadAttention (dropout=)")


@builder("scaled_dot_product_attention", refuses=_sdpa_dropout, convention=Convention(
    {"empty_row": "uniform"}, "ops.dot_product_attention replaces masked logits by -0.7 * 3.38953e38 (tf.where) "
                              "before the softmax: a query whose mask row is all False weights every key 1 / Lk (y = "
                              "mean of v over all keys) and passes no gradient to q or k; measured with keras 3.15.1 "
                              "in float32 and float64"))
def scaled_dot_product_attention(t, a, dtype):
    T = tf()

    def apply(t):
        mask = T.not_equal(t["mask"], 0) if "mask" in t else None
        # bias: added to the scaled logits, laid out (N, heads, Lq, Lk) as the canonical one
        y = keras().ops.dot_product_attention(*(T.transpose(t[n], _BTNH) for n in ("q", "k", "v")), bias=t.get("bias"),
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
    params += [param(layer.output_dense.kernel, "W_o", lambda g: g.reshape(e, e)),
               param(layer.output_dense.bias, "b_o")]

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


def _torch_only_options(case):
    """What keras.layers.MultiHeadAttention cannot express (its constructor and call take none of these)."""
    why = []
    if case.attrs["add_bias_kv"]:
        why.append("keras.layers.MultiHeadAttention has no add_bias_kv: it attends to the projected keys and values "
                   "only; no learned bias_k, bias_v row can be appended after the projections (a row appended to key "
                   "and value before them becomes x W_k + b_k: bias_k only where W_k can reach it)")
    if case.attrs["add_zero_attn"]:
        why.append("keras.layers.MultiHeadAttention has no add_zero_attn: no zero key and value can be appended "
                   "after the projections (a zero row appended before them projects to b_k, b_v, not 0)")
    if "attn_bias" in case.arrays:
        why.append("keras.layers.MultiHeadAttention takes a boolean attention_mask only: no additive float mask "
                   "(its masked Softmax and ops.dot_product_attention paths get the mask, never a bias)")
    return why


@builder("multi_head_attention", refuses=_torch_only_options, convention=Convention(
    {"empty_row": "uniform", "empty_row_weights": "zeros"},
    "without scores (return_attention_scores=False) the layer calls ops.dot_product_attention, whose fully masked "
    "rows weight every key 1 / Lk; with scores it runs its masked Softmax layer, which after the softmax sets masked "
    "weights to 0 (where(mask, p, 0)): a fully masked row weights nothing, y = b_o; measured with keras 3.15.1"))
def multi_head_attention(t, a, dtype):
    return _multi_head_attention(t, a, dtype, a["need_weights"], weights_out=False)


@builder("multi_head_attention_weights", refuses=_torch_only_options, convention=Convention(
    {"empty_row_weights": "zeros"}, "return_attention_scores=True: the masked Softmax layer zeroes masked weights "
                                    "after the softmax, so a fully masked row has weights 0 and attention output 0; "
                                    "measured with keras 3.15.1"))
def multi_head_attention_weights(t, a, dtype):
    return _multi_head_attention(t, a, dtype, True, weights_out=True)
