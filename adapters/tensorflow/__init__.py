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

from ...reference import Convention
from ...reference.batching import as_batch_of_one
from ...reference.oracle import layer_of
from ..base import FrameworkAdapter
from . import activations, attention, clipping, conv, dense, dropout, embedding, losses, norm  # noqa: F401
from . import models, optimizers, pooling, recurrent, training  # noqa: F401
from .core import builder, keras, tf


class TensorFlowAdapter(FrameworkAdapter):
    """Modes: ``eager``; ``function``: the forward and the tape under ``tf.function`` (as
    Keras' ``fit`` runs its train step, reduce_retracing, autograph on); ``xla``: the same with
    ``jit_compile=True`` (what ``fit`` runs where ``jit_compile`` resolves to true)."""

    name = "tensorflow"
    modes = ("eager", "function", "xla")
    mode_conventions = {"xla": {
        "elu": Convention({"at_nan": "left"}, "XLA's EluGrad selects on x > 0, so a NaN takes the negative branch: "
                                              "alpha (y + 1) g = NaN (eager: g); measured, tensorflow-cpu 2.21.0"),
        "selu": Convention({"at_zero": "left", "at_nan": "left"},
                           "XLA's SeluGrad selects on x > 0: x = 0 takes scale * alpha (1.7581; eager: scale, "
                           "1.0507) and a NaN gives NaN; measured, tensorflow-cpu 2.21.0"),
    }}

    def refusals(self, case):
        why = self._refusals(case)
        if self.mode != "eager":
            why += _compiled_refusals(self.mode, case)
        return why

    def available(self):
        try:
            tf()
        except ImportError as e:
            return False, f"TensorFlow is not installed ({e}); pip install 'gradparity[tensorflow]'"
        return True, ""

    def version(self):
        return f"{tf().__version__} (keras {keras().__version__})"

    def _refusals(self, case):
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
        given = {id(t): n for n, t in tensors.items()}

        def step(tensors, cotangents):
            # a source that is one of the inputs is this call's tensor (a tf.function's argument)
            srcs = [tensors[given[id(s)]] if id(s) in given else s for s in sources]
            with T.GradientTape() as tape:
                for s in srcs:
                    if isinstance(s, T.Tensor):  # inputs; Keras variables are watched already
                        tape.watch(s)
                outs = forward(tensors)
                tapped = taps() if taps is not None else {}
                loss = sum(T.reduce_sum(outs[n] * cotangents[n]) for n in cotangents)
            outs = {n: T.convert_to_tensor(out) for n, out in outs.items()}
            if not srcs and not tapped:
                return outs, [], {}, []
            names = list(tapped)
            grads = tape.gradient(loss, [*srcs, *tapped.values()], unconnected_gradients=T.UnconnectedGradients.ZERO)
            # convert_to_tensor densifies an IndexedSlices (an embedding's), summing duplicates
            grads = [T.convert_to_tensor(g) for g in grads]
            return outs, grads[:len(srcs)], {n: T.convert_to_tensor(tapped[n]) for n in names}, grads[len(srcs):]

        if self.mode != "eager":
            step = T.function(step, jit_compile=self.mode == "xla", reduce_retracing=True)
        outs, grads, tapped, tap_grads = step(tensors, {n: T.constant(g, dtype=dtype) for n, g in cotangents.items()})
        traced = {"out": {n: v.numpy() for n, v in tapped.items()},
                  "cot": {n: g.numpy() for n, g in zip(tapped, tap_grads)}}
        return ({n: out.numpy() for n, out in outs.items()}, [g.numpy() for g in grads],
                traced if taps is not None else None)

def _compiled_refusals(mode: str, case) -> tuple:
    """What the function and xla modes cannot run, with why."""
    layer = layer_of(case)
    if layer.family == "training step" or case.layer == "dropout":
        return (f"the {case.layer} builder reads values back with .numpy() between its steps (or the dropout mask it "
                "drew): eager code; under tf.function it would have to return them as tensors, which it does not "
                "yet",)
    if mode == "function" and case.layer == "max_pool2d" and case.arrays["x"].shape[0] == 0:
        return ("the gradient of a max pool over an empty batch under tf.function aborts the process (tensor.cc: Check "
                "failed: dtype() == expected_dtype (1 vs. 3) int32 expected, got float; every padding, dilation and "
                "ceil_mode tried; tensorflow-cpu 2.21.0; eager and XLA run it): a process that dies is not a row",)
    return ()


ADAPTER = TensorFlowAdapter(builder)
