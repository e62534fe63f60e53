"""Keras builders: the losses, as Keras loss classes (tf.nn for pos_weight), every reduction."""

from ...reference import Convention
from ..base import stateless
from .core import builder, keras, tf

# Keras reduces per-sample losses, each the mean over the last axis (see _per_element).
PER_SAMPLE = Convention(
    {}, "Keras reduces per-sample losses, each the mean over the last axis: for an (N, D) loss its reduction='sum' is "
        "PyTorch's sum / D and 'none' is (N,) per-sample means (measured: MeanSquaredError(reduction='sum') of pred "
        "(2, 3) = 1, target 0 gives 2.0, PyTorch 6.0). Called on (N, D, 1) every element is its own sample: that is "
        "how 'sum' and 'none' are run here")


def _loss(cls, y_true, y_pred, dtype, sample_weight=None, **kwargs):
    """A Keras loss object, called the Keras way round: (y_true, y_pred)."""
    return cls(dtype=dtype, **kwargs)(y_true, y_pred, sample_weight=sample_weight)


# PyTorch's reductions as Keras names them; Keras reduces per-sample losses (see _per_element).
_REDUCTION = {"mean": "sum_over_batch_size", "sum": "sum", "none": "none"}


def _per_element(a, *arrays):
    """Keras' losses average the last axis into one loss per sample before reducing:
    its 'sum' of an (N, D) loss is PyTorch's sum / D, and its 'none' is (N,). A
    trailing axis of 1 makes every element its own sample, so each reduction is
    PyTorch's ('mean' is the same number either way and is called as it is)."""
    if a["reduction"] == "mean":
        return arrays
    return tuple(None if v is None else v[..., None] for v in arrays)


def _channels_last(v):
    """(N, K, d1, ...) -> (N, d1, ..., K): Keras' losses take classes on the last axis."""
    rank = len(v.shape)
    return v if rank == 2 else tf().transpose(v, [0, *range(2, rank), 1])


def _class_weights_refusal(case):
    if "weight" not in case.arrays:
        return None
    why = []
    if case.attrs["target_type"] == "probabilities":
        why.append("Keras' CategoricalCrossentropy has no class weights: a sample weight scales a sample's whole "
                   "loss, not each class's term of a probability target")
    if case.attrs["label_smoothing"] > 0:
        why.append("with label smoothing PyTorch weighs each class's term of the smoothed target by its own weight "
                   "w_k; a Keras sample weight scales the whole loss by w[y]")
    return why


@builder("cross_entropy", refuses=_class_weights_refusal, convention=Convention(
    {"empty_mean": "zero"}, "a mean over no label (every label equal to ignore_class, or sample weights summing to "
                            "0) divides with divide_no_nan: loss 0, gradient 0 (PyTorch: NaN); measured with keras "
                            "3.15.1"))
@stateless
def cross_entropy(t, a, dtype):
    """SparseCategoricalCrossentropy (ignore_class) for plain integer labels; with
    label smoothing the categorical loss on one-hot labels; class weights and
    ignored labels under smoothing as sample weights w[y] (0 where ignored), whose
    mean Keras takes as PyTorch does with reduction='mean_with_sample_weight'."""
    losses = keras().losses
    logits, eps, weighted = _channels_last(t["logits"]), a["label_smoothing"], "weight" in t
    reduction = _REDUCTION[a["reduction"]]
    if a["target_type"] == "probabilities":
        return _loss(losses.CategoricalCrossentropy, _channels_last(t["probs"]), logits, dtype, from_logits=True,
                     label_smoothing=eps, reduction=reduction)
    labels, ignore = t["labels"], a["ignore_index"]
    if eps == 0 and not weighted:  # what a Keras user writes for integer labels
        return _loss(losses.SparseCategoricalCrossentropy, labels, logits, dtype, from_logits=True,
                     ignore_class=None if ignore == -100 else ignore, reduction=reduction)
    keep = tf().not_equal(labels, ignore)
    sample_weight = tf().cast(keep, dtype)
    if weighted:
        sample_weight *= tf().gather(t["weight"], tf().where(keep, labels, tf().zeros_like(labels)))
    if a["reduction"] == "mean":
        reduction = "mean_with_sample_weight"
    if eps == 0:
        return _loss(losses.SparseCategoricalCrossentropy, labels, logits, dtype, sample_weight, from_logits=True,
                     reduction=reduction)
    onehot = tf().one_hot(labels, logits.shape[-1], dtype=dtype)
    return _loss(losses.CategoricalCrossentropy, onehot, logits, dtype, sample_weight, from_logits=True,
                 label_smoothing=eps, reduction=reduction)


@builder("binary_cross_entropy_with_logits", convention=PER_SAMPLE)
@stateless
def binary_cross_entropy_with_logits(t, a, dtype):
    """BinaryCrossentropy(from_logits=True), element weights as sample weights; with
    pos_weight (which Keras' loss has not) tf.nn.weighted_cross_entropy_with_logits,
    reduced by hand, as Keras users do."""
    if "pos_weight" in t:
        per = tf().nn.weighted_cross_entropy_with_logits(labels=t["targets"], logits=t["logits"],
                                                         pos_weight=t["pos_weight"])
        if "weight" in t:
            per *= t["weight"]
        return {"mean": tf().reduce_mean, "sum": tf().reduce_sum, "none": lambda v: v}[a["reduction"]](per)
    weight = t.get("weight")
    targets, logits, weight = (_per_element(a, t["targets"], t["logits"], weight) if weight is None
                               else (t["targets"][..., None], t["logits"][..., None], weight))
    return _loss(keras().losses.BinaryCrossentropy, targets, logits, dtype, weight, from_logits=True,
                 label_smoothing=0.0, reduction=_REDUCTION[a["reduction"]])



def _mean_loss(cls, t, a, dtype, **kwargs):
    target, pred = _per_element(a, t["target"], t["pred"])
    return _loss(cls, target, pred, dtype, reduction=_REDUCTION[a["reduction"]], **kwargs)


@builder("mse", convention=PER_SAMPLE)
@stateless
def mse(t, a, dtype):
    return _mean_loss(keras().losses.MeanSquaredError, t, a, dtype)


@builder("l1", convention=PER_SAMPLE)
@stateless
def l1(t, a, dtype):
    return _mean_loss(keras().losses.MeanAbsoluteError, t, a, dtype)


@builder("huber", convention=PER_SAMPLE)
@stateless
def huber(t, a, dtype):
    return _mean_loss(keras().losses.Huber, t, a, dtype, delta=a["delta"])


@builder("smooth_l1", convention=Convention(
    {}, PER_SAMPLE.reason + ". Keras has no smooth L1 loss: PyTorch's SmoothL1Loss(beta) is Huber(delta=beta) / beta "
                            "(its identity, what a Keras user writes), and at beta = 0 the L1 loss, "
                            "MeanAbsoluteError (as PyTorch runs l1_loss there)"))
@stateless
def smooth_l1(t, a, dtype):
    beta = a["beta"]
    if beta == 0:
        return _mean_loss(keras().losses.MeanAbsoluteError, t, a, dtype)
    return _mean_loss(keras().losses.Huber, t, a, dtype, delta=beta) / beta
