"""Keras builder: embedding (its IndexedSlices gradient is densified, duplicates summed)."""

from ..base import Built, param
from .core import builder, keras

@builder("embedding")
def embedding(t, a, dtype):
    v, d = t["W"].shape
    layer = keras().layers.Embedding(input_dim=v, output_dim=d, mask_zero=False, dtype=dtype)
    layer.build(t["ids"].shape)
    layer.embeddings.assign(t["W"])
    # The gradient is an IndexedSlices (one slice per lookup), densified with duplicates summed.
    return Built(lambda t: layer(t["ids"]), (param(layer.embeddings, "W"),))
