"""PyTorch: leaf tensors with ``requires_grad``, the nn modules users use, ``loss.backward()``.

Builders, one per catalogue layer and grouped by family like the oracle
(``dense.py``, ``conv.py``, ...), take the case's arrays as tensors (``t``), its
attributes (``a``) and the dtype, build the real ``torch.nn`` module holding
the case's parameters, and return a ``Built``: how to apply it, and each module
parameter with the canonical name(s) its gradient stands for. Every
hyperparameter is passed explicitly: defaults differ between frameworks.
"""

from __future__ import annotations

import shutil

from ...reference.oracle import layer_of
from ..base import FrameworkAdapter
from . import activations, attention, clipping, conv, dense, dropout, embedding, losses, norm  # noqa: F401
from . import models, optimizers, pooling, recurrent, training  # noqa: F401
from .core import builder, torch


# mode -> the torch.compile backend: "aot_eager" runs AOTAutograd's decompositions and
# functionalization with eager kernels; "inductor" (the default backend) compiles C++ on CPU.
BACKENDS = {"compile": "aot_eager", "inductor": "inductor"}


class TorchAdapter(FrameworkAdapter):
    name = "torch"
    modes = ("eager", "compile", "inductor")

    def refusals(self, case):
        why = super().refusals(case)
        if self.mode != "eager" and layer_of(case).trace is not None:
            why += ("a whole model's layers are read with forward hooks and retain_grad, which a compiled graph "
                    "does not keep: whole models run eager in PyTorch",)
        return why

    def mode_available(self):
        ok, why = self.available()
        if ok and self.mode == "inductor" and shutil.which("g++") is None and shutil.which("c++") is None:
            return False, "torch.compile's inductor backend builds C++ on CPU and finds no compiler (g++)"
        return ok, why

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
        if self.mode != "eager":
            forward = _compiled(forward, BACKENDS[self.mode])
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


def _compiled(forward, backend: str):
    """``forward`` under torch.compile with ``backend``. Dynamo keeps one compiled graph per
    structure (the code object, and guards on the modules' types, shapes and attributes, not on
    their identity: a new module of the same structure reuses it). Past its recompile limit
    dynamo would quietly run eager: here that is an error instead, and the limit is far beyond
    the suite's configurations."""
    config = torch()._dynamo.config
    config.recompile_limit = max(config.recompile_limit, 100_000)
    config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, 100_000)
    config.fail_on_recompile_limit_hit = True
    return torch().compile(forward, backend=backend)

