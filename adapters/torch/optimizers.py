"""PyTorch builders: optimizer trajectories. The real torch.optim class on one parameter:
.grad is set and step() called for each of the k gradients, and the parameter and
the state are read after each. foreach/fused are off (the single-tensor path, the
same on every machine)."""

from ...reference import Convention
from ..base import Built
from .core import builder, nn, torch


def _trajectory(t, make, states=()):
    """Run ``make([w])`` (a torch.optim optimizer) over the case's k gradients; after
    each step t, ``w@t`` and each ``(name, state key)`` as ``name@t``."""
    w = nn().Parameter(t["w0"].detach().clone())
    opt = make([w])

    def apply(t):
        out = {}
        for step, g in enumerate(t["grads"], 1):
            w.grad = g.detach().clone()
            opt.step()
            out[f"w@{step}"] = w.detach().clone()
            out.update({f"{name}@{step}": opt.state[w][key].clone() for name, key in states})
        return out

    return Built(apply)



@builder("sgd_step", convention=Convention(
    {"float32_hypers": ()}, "grad.add(param, alpha=wd); param.add_(grad, alpha=-lr), lr a Python float"))
def sgd_step(t, a, dtype):
    return _trajectory(t, lambda p: torch().optim.SGD(
        p, lr=a["lr"], momentum=0.0, dampening=0.0, weight_decay=a["weight_decay"], nesterov=False,
        maximize=False, foreach=False, differentiable=False, fused=False))


def _nesterov_dampened(case):
    if case.attrs["nesterov"] and case.attrs["dampening"] != 0:
        return "torch.optim.SGD refuses nesterov with dampening != 0 (ValueError)"


@builder("momentum_step", refuses=_nesterov_dampened, convention=Convention(
    {"decay_form": "l2", "momentum_form": "buffer", "float32_hypers": ()},
    "L2 decay grad + wd p; buf = d on the first step, then buf.mul_(mu).add_(d, alpha=1 - dampening); nesterov steps "
    "with d + mu buf; param.add_(., alpha=-lr)"))
def momentum_step(t, a, dtype):
    return _trajectory(t, lambda p: torch().optim.SGD(
        p, lr=a["lr"], momentum=a["momentum"], dampening=a["dampening"], weight_decay=a["weight_decay"],
        nesterov=a["nesterov"], maximize=False, foreach=False, differentiable=False, fused=False),
        (("m", "momentum_buffer"),))


def _adam_options(a):
    return dict(lr=a["lr"], betas=(a["beta_1"], a["beta_2"]), eps=a["eps"], weight_decay=a["weight_decay"],
                amsgrad=False, maximize=False, foreach=False, capturable=False, differentiable=False, fused=False)


@builder("adam_step", convention=Convention(
    {"decay_form": "l2", "eps_form": "corrected", "float32_hypers": ()},
    "Adam(decoupled_weight_decay=False): grad + wd p; denom = sqrt(v) / sqrt(bc2) + eps; p -= lr / bc1 * m / denom "
    "(bias corrections in Python float64)"))
def adam_step(t, a, dtype):
    return _trajectory(t, lambda p: torch().optim.Adam(p, **_adam_options(a), decoupled_weight_decay=False),
                       (("m", "exp_avg"), ("v", "exp_avg_sq")))


@builder("adamw_step", convention=Convention(
    {"eps_form": "corrected", "float32_hypers": ()},
    "param.mul_(1 - lr wd), then Adam's corrected-eps update"))
def adamw_step(t, a, dtype):
    return _trajectory(t, lambda p: torch().optim.AdamW(p, **_adam_options(a)),
                       (("m", "exp_avg"), ("v", "exp_avg_sq")))


@builder("rmsprop_step", convention=Convention(
    {"decay_form": "l2", "eps_form": "outside", "momentum_form": "buffer", "float32_hypers": ()},
    "avg = sqrt(square_avg [- grad_avg^2]) + eps; buf = mu buf + d / avg, p -= lr buf"))
def rmsprop_step(t, a, dtype):
    states = (("v", "square_avg"),) + ((("mean", "grad_avg"),) if a["centered"] else ()) + (
        (("m", "momentum_buffer"),) if a["momentum"] > 0 else ())
    return _trajectory(t, lambda p: torch().optim.RMSprop(
        p, lr=a["lr"], alpha=a["alpha"], eps=a["eps"], weight_decay=a["weight_decay"], momentum=a["momentum"],
        centered=a["centered"], capturable=False, foreach=False, maximize=False, differentiable=False), states)


@builder("adagrad_step", convention=Convention(
    {"decay_form": "l2", "eps_form": "outside", "float32_hypers": ()},
    "state_sum += d^2; p -= lr d / (sqrt(state_sum) + eps) (lr_decay 0)"))
def adagrad_step(t, a, dtype):
    return _trajectory(t, lambda p: torch().optim.Adagrad(
        p, lr=a["lr"], lr_decay=0.0, weight_decay=a["weight_decay"],
        initial_accumulator_value=a["initial_accumulator_value"], eps=a["eps"], foreach=False, maximize=False,
        differentiable=False, fused=False), (("sum", "sum"),))
