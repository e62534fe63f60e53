"""PyTorch: leaf tensors with ``requires_grad``, the nn modules users use, ``loss.backward()``.

Builders, one per catalogue layer and grouped by family like the oracle
(``dense.py``, ``conv.py``, ...), take the case's arrays as tensors (``t``), its
attributes (``a``) and the dtype, build the real ``torch.nn`` module holding
the case's parameters, and return a ``Built``: how to apply it, and each module
parameter with the canonical name(s) its gradient stands for. Every
hyperparameter is passed explicitly: defaults differ between frameworks.
"""

from __future__ import annotations

from ..base import FrameworkAdapter
from . import activations, attention, clipping, conv, dense, dropout, embedding, losses, norm  # noqa: F401
from . import models, optimizers, pooling, recurrent, training  # noqa: F401
from .core import builder, torch


class TorchAdapter(FrameworkAdapter):
    name = "torch"

    def available(self):
        try:
            torch()
        except ImportError as e:
            return False, f"PyTorch is not installed ({e}); pip install 'gradparity[torch]'"
        return True, ""

    def version(self):
        return str(torch().__version__)

    def native_dtype(self, dtype):
        return getattr(torch(), dtype)

    def tensor(self, array, dtype, watch):
        T = torch()
        if array.dtype.kind in "iu":
            return T.as_tensor(array, dtype=T.long)
        return T.tensor(array, dtype=getattr(T, dtype), requires_grad=watch)

    def forward_backward(self, forward, tensors, cotangents, sources, dtype, taps=None):
        """The user's own call: ``loss.backward()``, then each leaf's ``.grad`` (through
        AccumulateGrad and any hook on the parameters, as in a training loop). Every
        module and tensor is new for the case, so each ``.grad`` starts empty; a leaf
        the loss does not reach keeps ``.grad`` None: its gradient is zero. A model's
        taps (its layers' outputs) keep their ``.grad`` with ``retain_grad``."""
        T = torch()
        outs = forward(tensors)
        tapped = taps() if taps is not None else {}
        for t in tapped.values():
            if t.requires_grad:
                t.retain_grad()
        loss = sum((outs[n] * T.as_tensor(g, dtype=getattr(T, dtype))).sum() for n, g in cotangents.items())
        if sources and loss.requires_grad:
            loss.backward()
        traced = {"out": {n: t.detach().numpy() for n, t in tapped.items()},
                  "cot": {n: T.zeros_like(t).numpy() if t.grad is None else t.grad.numpy() for n, t in tapped.items()}}
        return ({n: out.detach().numpy() for n, out in outs.items()},
                [T.zeros_like(s).numpy() if s.grad is None else s.grad.detach().numpy() for s in sources],
                traced if taps is not None else None)

ADAPTER = TorchAdapter(builder)
