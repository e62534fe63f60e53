"""Keras builder: dropout, keras.layers.Dropout itself with its own seeded mask."""

from ...reference import Convention
from ..base import Built, seed_of
from .core import builder, keras, tf

@builder("dropout", convention=Convention(
    {}, "inverted dropout, where(mask, x * (1 / (1 - rate)), 0); keras Dropout draws its own mask (seeded per case), "
        "recovered from the same draw on ones, and the oracle answers for that mask"))
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
