"""The NumPy backprop oracle: every layer's forward and vjp, written out by hand.

NumPy only, float64 inside. Entry points: ``LAYERS`` (the catalogue),
``Case``, ``validate(case)`` and ``evaluate(case)``.
"""

from .case import DTYPES, Case, load
from .catalogue import LAYERS
from .oracle import Result, condition, differentiable, evaluate, validate

__all__ = ["DTYPES", "LAYERS", "Case", "Result", "condition", "differentiable", "evaluate", "load", "validate"]
