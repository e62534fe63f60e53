"""Runners: the framework adapters behind one narrow protocol, and the registry.

``ADAPTERS`` maps a framework name to its adapter. Importing this package
imports no framework; each adapter imports its framework on first use.
``register_builder`` and ``register_runner`` are how a user's own code adds a
builder for a layer, or a whole runner (JAX, their own implementation).
"""

from .base import Built, FrameworkAdapter, NotApplicable, Param, Runner, by_name, param, same, stateless
from .tf_adapter import BUILDERS as _TF_BUILDERS
from .tf_adapter import CONVENTIONS as _TF_CONVENTIONS
from .tf_adapter import TensorFlowAdapter
from .torch_adapter import BUILDERS as _TORCH_BUILDERS
from .torch_adapter import CONVENTIONS as _TORCH_CONVENTIONS
from .torch_adapter import TorchAdapter

ADAPTERS: dict[str, Runner] = {
    a.name: a for a in (TorchAdapter(dict(_TORCH_BUILDERS), dict(_TORCH_CONVENTIONS)),
                        TensorFlowAdapter(dict(_TF_BUILDERS), dict(_TF_CONVENTIONS)))}


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

    def add(fn):
        if layer in adapter.builders:
            raise ValueError(f"{framework} already has a builder for {layer!r}")
        adapter.builders[layer] = fn
        if convention is not None:
            adapter.conventions[layer] = convention
        return fn

    return add if builder is None else add(builder)


__all__ = ["ADAPTERS", "Built", "FrameworkAdapter", "NotApplicable", "Param", "Runner", "by_name", "param",
           "register_builder", "register_runner", "same", "stateless"]
