"""PyTorch builders: batch, layer, RMS, group and instance normalization."""

from ...reference import Convention
from ..base import Built, param
from .core import builder, nn, set_, torch


BATCH_NORMS = {2: "BatchNorm1d", 3: "BatchNorm1d", 4: "BatchNorm2d", 5: "BatchNorm3d"}


def _batch_norm_module(t, a, dtype):
    """BatchNorm1d for (N, C) and (N, C, L), BatchNorm2d for (N, C, H, W), BatchNorm3d for
    (N, C, D, H, W); affine when gamma or beta is given (bias=False without beta; without
    gamma its weight is held at 1). momentum only moves the running statistics, which
    neither the output nor a gradient reads; it is passed anyway (0.1 here is Keras' 0.9)."""
    x = t["x"]
    cls = getattr(nn(), BATCH_NORMS[x.ndim])
    bn = cls(x.shape[1], eps=a["eps"], momentum=0.1, affine="gamma" in t or "beta" in t, track_running_stats=True,
             bias="beta" in t, dtype=dtype)
    return bn, _affine(bn, t)


def _batch_norm_refusal(case, training):
    why, rank, eps = [], case.arrays["x"].ndim, case.attrs["eps"]
    if rank not in BATCH_NORMS:
        why.append(f"PyTorch's batch norm modules take (N, C) to (N, C, D, H, W) (BatchNorm1d/2d/3d); x has rank "
                   f"{rank}")
    if training and eps <= 0:
        why.append(f"PyTorch's batch norm refuses eps <= 0 in training mode (ValueError 'batch_norm eps must be "
                   f"positive during training, but got {eps}')")
    if not training and eps < 0:
        why.append(f"PyTorch's batch norm refuses eps < 0 (ValueError 'batch_norm eps must be non-negative, but got "
                   f"{eps}')")
    return why


@builder("batch_norm", refuses=lambda case: _batch_norm_refusal(case, True), convention=Convention(
    {}, "training mode normalizes with the biased batch variance (stores the unbiased one in running_var); refuses "
        "N * prod(spatial) == 1; measured"))
def batch_norm(t, a, dtype):
    bn, params = _batch_norm_module(t, a, dtype)
    bn.train()
    return Built(lambda t: bn(t["x"]), params)


@builder("batch_norm_inference", refuses=lambda case: _batch_norm_refusal(case, False))
def batch_norm_inference(t, a, dtype):
    bn, params = _batch_norm_module(t, a, dtype)
    set_(bn.running_mean, t["running_mean"])
    set_(bn.running_var, t["running_var"])
    bn.eval()
    return Built(lambda t: bn(t["x"]), params)


def _affine(module, t):
    """Optional gamma/beta into a module's weight/bias. PyTorch has no scale-only or
    shift-only affine: the missing one is held at its identity (weight 1, bias 0)."""
    params = ()
    if module.weight is not None:
        set_(module.weight, t["gamma"] if "gamma" in t else torch().ones_like(module.weight))
        params += (param(module.weight, "gamma"),) if "gamma" in t else ()
    if module.bias is not None:
        set_(module.bias, t["beta"] if "beta" in t else torch().zeros_like(module.bias))
        params += (param(module.bias, "beta"),) if "beta" in t else ()
    return params


@builder("layer_norm")
def layer_norm(t, a, dtype):
    x = t["x"]
    affine = "gamma" in t or "beta" in t
    ln = nn().LayerNorm(tuple(x.shape[x.ndim - a["axes"]:]), eps=a["eps"], elementwise_affine=affine,
                        bias="beta" in t, dtype=dtype)
    return Built(lambda t: ln(t["x"]), _affine(ln, t))


def _keras_route(case):
    if case.attrs["route"] != "rms_normalization":
        return f"route {case.attrs['route']} is a Keras way to RMS normalization; PyTorch has one, nn.RMSNorm"


@builder("rms_norm", refuses=_keras_route)
def rms_norm(t, a, dtype):
    x = t["x"]
    rn = nn().RMSNorm(tuple(x.shape[x.ndim - a["axes"]:]), eps=a["eps"], elementwise_affine="gamma" in t, dtype=dtype)
    if "gamma" not in t:
        return Built(lambda t: rn(t["x"]))
    set_(rn.weight, t["gamma"])
    return Built(lambda t: rn(t["x"]), (param(rn.weight, "gamma"),))


@builder("group_norm")
def group_norm(t, a, dtype):
    x = t["x"]
    gn = nn().GroupNorm(a["groups"], x.shape[1], eps=a["eps"], affine="gamma" in t or "beta" in t, dtype=dtype)
    return Built(lambda t: gn(t["x"]), _affine(gn, t))


INSTANCE_NORMS = {3: "InstanceNorm1d", 4: "InstanceNorm2d", 5: "InstanceNorm3d"}


def _instance_norm_refusal(case):
    why, rank = [], case.arrays["x"].ndim
    if rank not in INSTANCE_NORMS:
        why.append(f"PyTorch's instance norm modules take (N, C, L) to (N, C, D, H, W) (InstanceNorm1d/2d/3d); x has "
                   f"rank {rank}")
    return why


@builder("instance_norm", refuses=_instance_norm_refusal, convention=Convention(
    {}, "InstanceNorm1d/2d/3d(track_running_stats=False): statistics of each (sample, channel) over its spatial "
        "positions, biased variance; affine when gamma or beta is given; takes eps <= 0 (the formula, unlike "
        "BatchNorm); refuses one spatial position and fails on a batch of 0; measured"))
def instance_norm(t, a, dtype):
    x = t["x"]
    norm = getattr(nn(), INSTANCE_NORMS[x.ndim])(x.shape[1], eps=a["eps"], momentum=0.1,
                                                affine="gamma" in t or "beta" in t, track_running_stats=False,
                                                bias="beta" in t, dtype=dtype).train()
    return Built(lambda t: norm(t["x"]), _affine(norm, t))
