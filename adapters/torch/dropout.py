"""PyTorch builder: dropout, nn.Dropout itself with its own seeded mask."""

from ...reference import Convention
from ..base import Built, seed_of
from .core import builder, nn, torch


@builder("dropout", convention=Convention(
    {}, "inverted dropout, x * (mask / (1 - p)); nn.Dropout draws its own mask (seeded per case), recovered from the "
        "same draw on ones, and the oracle answers for that mask"))
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
