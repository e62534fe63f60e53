"""Runners: the framework adapters behind one narrow protocol, and the registry.

``ADAPTERS`` maps a framework name to its runner. Importing this package imports
no framework; each adapter imports its framework on first use. Each framework's
builders live in its package, one module per family (``adapters/torch/conv.py``
beside ``reference/conv.py``). ``register_builder`` and ``register_runner`` are
how a user's own code adds a builder for a layer, or a whole runner (JAX, their
own implementation).
"""

from .base import Built, Builders, FrameworkAdapter, NotApplicable, Param, Runner, param, same, stateless
from .tensorflow import ADAPTER as _TENSORFLOW
from .torch import ADAPTER as _TORCH

ADAPTERS: dict[str, Runner] = {a.name: a for a in (_TORCH, _TENSORFLOW)}


def runner(label: str) -> Runner:
    """The runner a label names: ``"torch"`` (eager), or a framework adapter in one of its execution
    modes, ``"torch.compile"``, ``"tensorflow.xla"`` (see FrameworkAdapter); KeyError saying what
    exists otherwise."""
    name, _, mode = label.partition(".")
    found = ADAPTERS.get(name)
    if found is None:
        raise KeyError(f"no runner {name!r}; known: {', '.join(sorted(ADAPTERS))}")
    if not mode:
        return found
    if not isinstance(found, FrameworkAdapter) or mode not in found.modes:
        modes = getattr(found, "modes", ("eager",))
        raise KeyError(f"{name} has no mode {mode!r}; its modes: {', '.join(modes)}")
    return found.with_mode(mode)


def modes_of(name: str) -> tuple:
    """The execution modes of runner ``name`` (``("eager",)`` for a runner without any)."""
    return tuple(getattr(ADAPTERS[name], "modes", ("eager",)))


def register_runner(runner: Runner) -> Runner:
    """Add a runner (anything with the ``Runner`` protocol) under its ``name``."""
    if runner.name in ADAPTERS or runner.name == "oracle":
        raise ValueError(f"a runner named {runner.name!r} already exists")
    ADAPTERS[runner.name] = runner
    return runner


def register_builder(framework: str, layer: str, builder=None, *, convention=None):
    """Add the builder of ``layer`` to a framework adapter (usable as a decorator:
    ``@register_builder("torch", "swish")``); ``convention``, a ``Convention``, says
    what the framework does where the layer's math leaves a choice."""
    adapter = ADAPTERS.get(framework)
    if not isinstance(adapter, FrameworkAdapter):
        raise ValueError(f"no framework adapter named {framework!r}; known: {', '.join(sorted(ADAPTERS))}")
    add = adapter.builders(layer, convention=convention)
    return add if builder is None else add(builder)


__all__ = ["ADAPTERS", "Built", "Builders", "FrameworkAdapter", "NotApplicable", "Param", "Runner", "modes_of", "param",
           "register_builder", "register_runner", "runner", "same", "stateless"]
