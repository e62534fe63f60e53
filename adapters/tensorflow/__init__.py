"""TensorFlow / Keras: ``tf.GradientTape``, ``tape.gradient``, the Keras layers users use.

Builders, one per catalogue layer and grouped by family like the oracle
(``dense.py``, ``conv.py``, ...), take the case's arrays as tensors (``t``), its
attributes (``a``) and the dtype name, build the real Keras layer holding the
case's parameters (outside the tape), and return a ``Built``: how to apply it
(inside the tape), and each variable with the canonical name(s) its gradient
stands for. Keras layers and losses get ``dtype`` explicitly: Keras computes in
float32 unless told otherwise. Every hyperparameter is passed explicitly:
defaults differ between frameworks.
"""

from __future__ import annotations

from ...reference.batching import as_batch_of_one
from ..base import FrameworkAdapter
from . import activations, attention, clipping, conv, dense, dropout, embedding, losses, norm  # noqa: F401
from . import models, optimizers, pooling, recurrent, training  # noqa: F401
from .core import builder, keras, tf


class TensorFlowAdapter(FrameworkAdapter):
    name = "tensorflow"

    def available(self):
        try:
            tf()
        except ImportError as e:
            return False, f"TensorFlow is not installed ({e}); pip install 'gradparity[tensorflow]'"
        return True, ""

    def version(self):
        return f"{tf().__version__} (keras {keras().__version__})"

    def refusals(self, case):
        if case.attrs.get("batched") is not False:
            return super().refusals(case)
        # and whatever the same configuration as a batch of one would be refused for
        return (("Keras layers take a batch axis: an input without one is refused (Conv2D: ValueError 'expected "
                 "min_ndim=4, found ndim=3'; MaxPooling2D: 'expected ndim=4'); unbatched inputs are PyTorch's",)
                + super().refusals(as_batch_of_one(case)))

    def tensor(self, array, dtype, watch):
        return tf().constant(array)

    def forward_backward(self, forward, tensors, cotangents, sources, dtype, taps=None):
        T = tf()
        with T.GradientTape() as tape:
            for s in sources:
                if isinstance(s, T.Tensor):  # inputs; Keras variables are watched already
                    tape.watch(s)
            outs = forward(tensors)
            tapped = taps() if taps is not None else {}
            loss = sum(T.reduce_sum(outs[n] * T.constant(g, dtype=dtype)) for n, g in cotangents.items())
        if not sources and not tapped:
            return {n: T.convert_to_tensor(out).numpy() for n, out in outs.items()}, [], None
        names = list(tapped)
        grads = tape.gradient(loss, [*sources, *tapped.values()], unconnected_gradients=T.UnconnectedGradients.ZERO)
        traced = {"out": {n: T.convert_to_tensor(tapped[n]).numpy() for n in names},
                  "cot": {n: T.convert_to_tensor(g).numpy() for n, g in zip(names, grads[len(sources):])}}
        # convert_to_tensor densifies an IndexedSlices (an embedding's), summing duplicates
        return ({n: out.numpy() for n, out in outs.items()},
                [T.convert_to_tensor(g).numpy() for g in grads[:len(sources)]], traced if taps is not None else None)

ADAPTER = TensorFlowAdapter(builder)
