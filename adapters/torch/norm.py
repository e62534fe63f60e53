"""PyTorch builders: batch, layer, RMS and group normalization."""

from ...reference import Convention
from ..base import Built, param
from .core import builder, nn, set_, torch


def _batch_norm_module(t, a, dtype):
    """BatchNorm1d for (N, C) and (N, C, L), BatchNorm2d for (N, C, H, W), holding gamma and beta.
    momentum only moves the running statistics, which neither the output nor a gradient reads;
    it is passed anyway (0.1 here is Keras' 0.9)."""
    x = t["x"]
    cls = nn().BatchNorm2d if x.ndim == 4 else nn().BatchNorm1d
    bn = cls(x.shape[1], eps=a["eps"], momentum=0.1, affine=True, track_running_stats=True, dtype=dtype)
    set_(bn.weight, t["gamma"])
    set_(bn.bias, t["beta"])
    return bn, (param(bn.weight, "gamma"), param(bn.bias, "beta"))


@builder("batch_norm", convention=Convention(
    {}, "training mode normalizes with the biased batch variance (stores the unbiased one in running_var); refuses "
        "N * prod(spatial) == 1; measured"))
def batch_norm(t, a, dtype):
    bn, params = _batch_norm_module(t, a, dtype)
    bn.train()
    return Built(lambda t: bn(t["x"]), params)


@builder("batch_norm_inference")
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
