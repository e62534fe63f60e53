"""Embedding lookup."""

import numpy as np

from .catalogue import SUBNORMAL, S, batch_of, registrar
from .spec import Array, Edge, Int, Labels, Layer, require


def embedding(ids, W):
    """Embedding: y[...] = W[ids[...]], one row of W per index.

    Gradient: gW[v] = sum of g[...] over every position where ids == v, so a
    repeated index accumulates (a scatter-add); rows never looked up get 0.
    No padding_idx: PyTorch's zeroes that row's gradient although the output
    depends on it (a choice, not a derivative), and Keras has no equivalent.
    Shapes: ids (*batch,) integers in [0, V), W (V, D) -> y (*batch, D).
    """
    require(W.ndim == 2, "W", f"expected (V, D), got shape {W.shape}")
    require(np.issubdtype(ids.dtype, np.integer), "ids", f"expected integers, got {ids.dtype}")
    require(ids.size == 0 or (ids.min() >= 0 and ids.max() < W.shape[0]), "ids",
            f"expected indices in [0, {W.shape[0]}), got {ids.min()}..{ids.max()}" if ids.size else "")
    return W[ids], (ids, W.shape)


def embedding_vjp(res, g):
    ids, w_shape = res
    gW = np.zeros(w_shape)
    np.add.at(gW, ids.reshape(-1), g.reshape(-1, w_shape[1]))  # duplicates sum
    return {"W": gW}


# ---- catalogue entries --------------------------------------------------------

register = registrar("embedding")

# A small vocabulary and up to 16 lookups: repeated indices in most cases (V = 1: all equal).
register(Layer(
    "embedding", embedding, embedding_vjp, empty=True,
    edges=(batch_of(0, "ids"), Edge("repeated_index", lambda c: len(np.unique(c.arrays["ids"])) < c.arrays["ids"].size),
           Edge("one_row", lambda c: c.arrays["W"].shape[0] == 1, {"V": 1}),
           Edge("unused_rows", lambda c: len(np.unique(c.arrays["ids"])) < c.arrays["W"].shape[0]), SUBNORMAL),
    dims={"N": Int(1, 4, edges=(0,)), "L": Int(1, 4), "V": Int(1, 5), "D": Int(1, 4)},
    arrays={"ids": Array(S("N", "L"), Labels("V")), "W": Array(S("V", "D"), param=True)},
))
