"""Framework adapters: one module per framework behind one narrow protocol.

``ADAPTERS`` maps a framework name to its adapter. Importing this package
imports no framework; each adapter imports its framework on first use.
"""

from .base import Adapter, Convention, NotApplicable, Output
from .tf_adapter import TensorFlowAdapter
from .torch_adapter import TorchAdapter

ADAPTERS: dict[str, Adapter] = {a.name: a for a in (TorchAdapter(), TensorFlowAdapter())}

__all__ = ["ADAPTERS", "Adapter", "Convention", "NotApplicable", "Output"]
