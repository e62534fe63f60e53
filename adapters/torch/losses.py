"""PyTorch builders: the losses, as the nn loss modules users call (every reduction)."""

from ...reference import Convention
from ..base import stateless
from .core import builder, nn


@builder("mse")
@stateless
def mse(t, a, dtype):
    return nn().MSELoss(reduction=a["reduction"])(t["pred"], t["target"])


@builder("l1")
@stateless
def l1(t, a, dtype):
    return nn().L1Loss(reduction=a["reduction"])(t["pred"], t["target"])


@builder("huber")
@stateless
def huber(t, a, dtype):
    return nn().HuberLoss(reduction=a["reduction"], delta=a["delta"])(t["pred"], t["target"])


@builder("smooth_l1")
@stateless
def smooth_l1(t, a, dtype):
    return nn().SmoothL1Loss(reduction=a["reduction"], beta=a["beta"])(t["pred"], t["target"])


@builder("cross_entropy", convention=Convention(
    {"empty_mean": "nan"},
    "a mean over no label (every label equal to ignore_index) is 0/0: the loss is NaN, and the gradient is 0 "
    "(nll_loss's backward skips ignored labels; the smoothing term's masked_fill zeroes them); measured with torch "
    "2.13: logits (3, 4), labels [1, 1, 1], ignore_index=1 -> loss nan (also with label_smoothing 0.1), gradient all "
    "0; reduction 'sum' -> 0. A zero class weight on every label gives NaN in the gradient too (not drawn: weights "
    "are positive)"))
@stateless
def cross_entropy(t, a, dtype):
    loss = nn().CrossEntropyLoss(weight=t.get("weight"), ignore_index=a["ignore_index"], reduction=a["reduction"],
                                 label_smoothing=a["label_smoothing"])
    return loss(t["logits"], t["labels"] if "labels" in t else t["probs"])


@builder("binary_cross_entropy_with_logits")
@stateless
def binary_cross_entropy_with_logits(t, a, dtype):
    loss = nn().BCEWithLogitsLoss(weight=t.get("weight"), reduction=a["reduction"], pos_weight=t.get("pos_weight"))
    return loss(t["logits"], t["targets"])
