"""PyTorch builder: a whole training loop, as a user writes it."""

from ...reference import Convention
from ..base import Built, same
from .core import builder, linear, nn, torch, transpose


@builder("train_step", convention=Convention(
    {"norm_eps": 1e-6, "eps_form": "corrected", "float32_hypers": ()},
    "clip_grad_norm_ adds 1e-6 to the norm; Adam's corrected eps (see clip_by_global_norm and adam_step)"))
def train_step(t, a, dtype):
    """nn.Linear -> nn.ReLU -> nn.Linear, nn.CrossEntropyLoss, and per batch: zero_grad,
    backward, the gradients read, clip_grad_norm_ (unless max_norm is inf), step."""
    first, second = (linear(t["W1"].shape[0], t["W1"].shape[1], t["W1"], t["b1"], dtype),
                     linear(t["W2"].shape[0], t["W2"].shape[1], t["W2"], t["b2"], dtype))
    model, loss_fn = nn().Sequential(first, nn().ReLU(), second), nn().CrossEntropyLoss(reduction="mean",
                                                                                           label_smoothing=0.0)
    named = {"W1": (first.weight, transpose), "b1": (first.bias, same), "W2": (second.weight, transpose),
             "b2": (second.bias, same)}
    params = [p for p, _ in named.values()]
    if a["optimizer"] == "adam":
        opt = torch().optim.Adam(params, lr=a["lr"], betas=(a["beta_1"], a["beta_2"]), eps=a["eps"],
                                 weight_decay=0.0, amsgrad=False, maximize=False, foreach=False, capturable=False,
                                 differentiable=False, fused=False, decoupled_weight_decay=False)
    else:
        opt = torch().optim.SGD(params, lr=a["lr"], momentum=a["momentum"], dampening=0.0, weight_decay=0.0,
                                nesterov=False, maximize=False, foreach=False, differentiable=False, fused=False)

    def apply(t):
        out = {}
        for step, (x, y) in enumerate(zip(t["x"], t["labels"]), 1):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            out[f"loss@{step}"] = loss.detach().clone()
            out.update({f"g{n}@{step}": convert(p.grad.detach().clone()) for n, (p, convert) in named.items()})
            if a["max_norm"] != float("inf"):
                nn().utils.clip_grad_norm_(params, max_norm=a["max_norm"], norm_type=2.0, error_if_nonfinite=False,
                                           foreach=False)
            opt.step()
            out.update({f"{n}@{step}": convert(p.detach().clone()) for n, (p, convert) in named.items()})
        return out

    return Built(apply)
