"""The NumPy backprop oracle: every layer's forward and vjp, written out by hand.

NumPy only, float64 inside. Entry points: ``LAYERS`` (the catalogue) and
``register`` (add a layer), ``Case``, ``validate(case)``, ``evaluate(case)`` and
``Oracle`` (the oracle as a runner).
"""

from .case import DTYPES, Case, load
from .catalogue import LAYERS, register

# Each family module registers its layers beside their oracle pairs when imported.
from . import dense, activations, losses, conv, pooling, norm, embedding, dropout  # noqa: E402, F401, I001
from . import recurrent, attention, clipping, optimizers, training, models  # noqa: E402, F401
from .oracle import (COT, FLOW, GRAD, OUT, Evaluation, Oracle, condition, differentiable, evaluate, reached_edges,
                     validate, with_flow)
from .spec import Array, Choice, Convention, Drawn, Edge, Float, Int, Labels, Layer, Lengths, Mask, Real, Shape, require

__all__ = ["COT", "DTYPES", "FLOW", "GRAD", "LAYERS", "OUT", "Array", "Case", "Choice", "Convention", "Drawn", "Edge",
           "Evaluation", "Float", "Int", "Labels", "Layer", "Lengths", "Mask", "Oracle", "Real", "Shape", "condition",
           "differentiable", "evaluate", "load", "reached_edges", "register", "require", "validate", "with_flow"]
