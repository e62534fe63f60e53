"""PyTorch builder: embedding (a dense gradient, duplicates summed)."""

from ..base import Built, param
from .core import builder, nn, set_


@builder("embedding")
def embedding(t, a, dtype):
    v, d = t["W"].shape
    emb = nn().Embedding(v, d, padding_idx=None, max_norm=None, scale_grad_by_freq=False, sparse=False, dtype=dtype)
    set_(emb.weight, t["W"])
    return Built(lambda t: emb(t["ids"]), (param(emb.weight, "W"),))
