"""PyTorch builders: gradient clipping, as clip_grad_value_ / clip_grad_norm_ act on .grad of parameters."""

from ...reference import Convention
from ..base import Built
from .core import builder, nn, torch


def _with_grads(*grads):
    params = []
    for g in grads:
        p = nn().Parameter(torch().zeros_like(g))
        p.grad = g.detach().clone()
        params.append(p)
    return params


def _optimizer_route(case):
    if case.attrs["route"] != "function":
        return ("torch.optim optimizers take no clipping argument: PyTorch clips with nn.utils.clip_grad_value_ / "
                "clip_grad_norm_ (the function route)")


@builder("clip_by_value", refuses=_optimizer_route)
def clip_by_value(t, a, dtype):
    def apply(t):
        (p,) = _with_grads(t["g"])
        nn().utils.clip_grad_value_([p], clip_value=a["clip_value"], foreach=False)
        return {"g": p.grad}
    return Built(apply)


@builder("clip_by_norm", refuses=_optimizer_route, convention=Convention(
    {"norm_eps": 1e-6}, "clip_grad_norm_: clip_coef = max_norm / (total_norm + 1e-6), clamped to 1; a norm exactly at "
                        "the threshold is scaled by c / (c + 1e-6)"))
def clip_by_norm(t, a, dtype):
    def apply(t):
        (p,) = _with_grads(t["g"])
        nn().utils.clip_grad_norm_([p], max_norm=a["max_norm"], norm_type=2.0,
                                   error_if_nonfinite=a["error_if_nonfinite"], foreach=False)
        return {"g": p.grad}
    return Built(apply)


@builder("clip_by_global_norm", refuses=_optimizer_route, convention=Convention(
    {"norm_eps": 1e-6}, "clip_grad_norm_ over all tensors: clip_coef = max_norm / (total_norm + 1e-6), clamped to 1; "
                        "returns the norm before clipping"))
def clip_by_global_norm(t, a, dtype):
    names = [n for n in ("g1", "g2") if n in t]

    def apply(t):
        params = _with_grads(*(t[n] for n in names))
        norm = nn().utils.clip_grad_norm_(params, max_norm=a["max_norm"], norm_type=2.0,
                                          error_if_nonfinite=a["error_if_nonfinite"], foreach=False)
        return {**{n: p.grad for n, p in zip(names, params)}, "norm": norm}
    return Built(apply)
