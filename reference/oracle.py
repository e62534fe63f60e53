"""Running the oracle on a Case: validation, float64 evaluation, gradients.

Every runner (this oracle, each framework adapter, a user's own code) turns a
Case into named outputs: ``{kind: {name: array}}``, kind ``out`` for the
forward outputs and ``grad`` for the gradient of every differentiable input
and parameter. ``check`` compares the names two runners produce.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable

import numpy as np

from .case import DTYPES, Case, as_float64
from .catalogue import LAYERS
from .spec import Convention, Labels, Layer, Lengths, attr_type_error, require

OUT, GRAD, FLOW, COT = "out", "grad", "flow", "cot"


@dataclass(frozen=True)
class Evaluation:
    """The oracle's answer for a case: named outputs, and the condition number
    kappa >= 1 of the case (1 for layers that declare none), computed when first
    asked for (a condition measured by perturbation reruns the layer: the oracle
    as a runner never needs it). ``residuals``: what the forward pass kept for the
    vjp (the layer's own structure), for whatever must look inside the answer
    without running the layer again (the conditions of known divergences)."""

    outputs: dict
    measure_condition: Callable[[], float] = field(repr=False)
    residuals: Any = field(default=None, repr=False)

    @cached_property
    def condition(self) -> float:
        return self.measure_condition()


def ieee():
    """NumPy's IEEE results without its warnings: inf - inf is NaN and 1 / 0 is Inf on
    purpose here (the oracle's answer for non-finite inputs and overflowing cases)."""
    return np.errstate(invalid="ignore", divide="ignore", over="ignore", under="ignore")


def layer_of(case: Case) -> Layer:
    require(isinstance(case.layer, str) and case.layer in LAYERS, "layer",
            f"unknown layer {case.layer!r}; known: {', '.join(sorted(LAYERS))}")
    return LAYERS[case.layer]


def differentiable(case: Case) -> list[str]:
    """Names of the case's arrays whose gradient is checked, in catalogue order
    (none for a forward-only entry)."""
    layer = layer_of(case)
    if layer.vjp is None:
        return []
    return [n for n, spec in layer.arrays.items() if spec.differentiable and n in case.arrays]


def _check_array(field: str, arr, dtype: str, *, finite: bool = True) -> None:
    require(isinstance(arr, np.ndarray), field, f"expected a NumPy array, got {type(arr).__name__}")
    require(arr.dtype == np.dtype(dtype), field, f"expected {dtype} values, got {arr.dtype}")
    require(not finite or bool(np.isfinite(arr).all()), field,
            "contains NaN or Inf" + ("" if field.startswith("cotangents") else
                                     " (the layer does not declare non-finite values meaningful here: Layer.nonfinite)"))


def validate(case: Case) -> Layer:
    """Check a case against its catalogue entry, without running anything; raise
    ``ValueError`` naming the first field that is wrong. What only the layer's
    formula can judge (shapes that must agree, a kernel larger than its input)
    is checked by :func:`evaluate`, still before any framework runs."""
    layer = layer_of(case)
    require(case.dtype in DTYPES, "dtype", f"unsupported dtype {case.dtype!r}; supported: {', '.join(DTYPES)}")
    require(isinstance(case.attrs, dict), "attrs", f"expected a dict, got {type(case.attrs).__name__}")
    require(isinstance(case.arrays, dict), "arrays",
            f"expected a dict of named NumPy arrays ({', '.join(layer.arrays)}), got {type(case.arrays).__name__}")
    missing = [a for a in layer.attrs if a not in case.attrs]
    require(not missing, "attrs", f"{case.layer} needs {', '.join(missing)}")
    unknown = [a for a in case.attrs if a not in layer.attrs]
    require(not unknown, "attrs", f"{case.layer} takes no attribute {', '.join(unknown)}")
    for name, spec in layer.attrs.items():
        why = attr_type_error(spec, case.attrs[name])
        require(why is None, name, why or "")
    wanted = layer.arrays
    for name, spec in wanted.items():
        if spec.when is not None:  # present exactly when the attributes say
            taken = bool(spec.when(case.attrs))
            require(taken == (name in case.arrays), name, f"{'missing' if taken else 'not taken'} with "
                    f"{', '.join(f'{k}={v!r}' for k, v in case.attrs.items())}")
            continue
        require(spec.optional or name in case.arrays, name, f"missing; {case.layer} takes {', '.join(wanted)}")
    for name, arr in case.arrays.items():
        require(name in wanted, name, f"{case.layer} takes no array {name!r} (it takes {', '.join(wanted)})")
        require(isinstance(arr, np.ndarray), name, f"expected a NumPy array, got {type(arr).__name__}")
        require(arr.size > 0 or layer.empty, name, f"is empty (shape {arr.shape}); {case.layer} does not take "
                "zero-size arrays")
        if isinstance(wanted[name].values, (Labels, Lengths)):
            what = "labels" if isinstance(wanted[name].values, Labels) else "lengths"
            require(np.issubdtype(arr.dtype, np.integer), name, f"expected integer {what}, got {arr.dtype}")
        else:
            _check_array(name, arr, case.dtype, finite=name not in layer.nonfinite)
    require(isinstance(case.cotangents, dict), "cotangents",
            f"expected a dict of one array per output, got {type(case.cotangents).__name__}")
    outputs = layer.output_names or ()
    require(set(case.cotangents) == set(outputs), "cotangents",
            f"expected one per output ({', '.join(outputs) or 'none: the layer is forward-only'}), "
            f"got {', '.join(case.cotangents) or 'none'}")
    for name in outputs:
        _check_array(f"cotangents[{name}]", case.cotangents[name], case.dtype)
    return layer


def named_outputs(layer: Layer, out) -> dict:
    """A forward's output as {output name: float64 array}."""
    names = layer.output_names
    if names is not None and len(names) == 1 and not isinstance(out, dict):
        return {names[0]: np.asarray(out, dtype=np.float64)}
    assert isinstance(out, dict) and (names is None or set(out) == set(names)), (
        f"{layer.name}'s forward must return {{{', '.join(names or ['name: array'])}}}, got {type(out).__name__}")
    return {n: np.asarray(v, dtype=np.float64) for n, v in out.items()}


def evaluate(case: Case, conventions: dict | None = None) -> Evaluation:
    """The exact answer for the case's (already rounded) numbers, in float64: one
    forward pass, one vjp.

    Validates the case first (``ValueError`` naming the field). ``conventions``
    override the layer's defaults for choices frameworks make differently (see
    ``Layer.conventions``). Gradients of arrays the outputs do not depend on come
    back as zeros.
    """
    layer = validate(case)
    chosen = {**layer.conventions, **(conventions or {})}
    unknown = set(chosen) - set(layer.conventions)
    require(not unknown, "conventions", f"{case.layer} has no convention {', '.join(sorted(unknown))}")
    arrays = as_float64(case.arrays)
    with ieee():
        out, res = layer.forward(**arrays, **case.attrs, **chosen)
    outs = named_outputs(layer, out)
    for name, value in outs.items():
        if layer.vjp is None:
            continue
        g = case.cotangents[name]
        require(g.shape == value.shape, f"cotangents[{name}]",
                f"expected shape {value.shape} like the output {name}, got {g.shape}")
    gs = {n: case.cotangents[n].astype(np.float64) for n in case.cotangents}
    with ieee():
        grads = {} if layer.vjp is None else layer.vjp(res, gs if len(gs) > 1 else next(iter(gs.values())))
    names = differentiable(case)

    def kappa() -> float:
        if layer.condition is None:
            return 1.0
        return max(1.0, float(layer.condition(res, cotangents=gs, **arrays, **case.attrs)))

    outputs = {OUT: outs,
               GRAD: {n: np.asarray(grads.get(n, np.zeros(case.arrays[n].shape)), dtype=np.float64) for n in names}}
    if layer.trace is not None:  # a whole model: every layer's output and the cotangent arriving there
        with ieee():
            traced = layer.trace(res, gs if len(gs) > 1 else next(iter(gs.values())))
        outputs = {**outputs, OUT: {**outs, **traced.get(OUT, {})},
                   **{kind: named for kind, named in traced.items() if kind != OUT}}
    return Evaluation(with_flow(case, outputs), kappa, res)


def with_flow(case: Case, outputs: dict) -> dict:
    """``outputs`` plus, for a layer through time (``Layer.flow``), kind ``flow``:
    the norm of the gradient reaching each time step, sqrt(sum over the batch and
    features of (dL/dx[:, t])^2), shape (T,); derived from the runner's own
    gradient, so every runner gets it the same way."""
    name = layer_of(case).flow
    g = outputs.get(GRAD, {}).get(name)
    if name is None or g is None:
        return outputs
    g = np.asarray(g, dtype=np.float64)
    if g.size == 0:  # a batch of 0: no gradient reaches any step
        return {**outputs, FLOW: {name: np.zeros(g.shape[1])}}
    return {**outputs, FLOW: {name: np.sqrt(np.square(np.moveaxis(g, 1, 0)).reshape(g.shape[1], -1).sum(axis=1))}}


def reached_edges(case: Case) -> list[str]:
    """The names of the layer's declared edges (``Layer.edges``) that the case reaches."""
    return [edge.name for edge in layer_of(case).edges if edge.reached(case)]


def condition(case: Case) -> float:
    """The case's condition number kappa >= 1 (1 for layers that declare none)."""
    return evaluate(case).condition


class Oracle:
    """The NumPy oracle as a runner: float64, exact up to its own rounding.

    ``Oracle(conventions)`` evaluates layers under chosen conventions (the
    derivative at a kink); ``check`` puts it under the candidate's own, so each
    framework is judged by the choice it documents."""

    name = "oracle"

    def __init__(self, conventions: dict | None = None):
        self.conventions = dict(conventions or {})

    def available(self) -> tuple[bool, str]:
        return True, ""

    def version(self) -> str:
        return f"numpy {np.__version__}"

    def convention(self, layer: str) -> Convention | None:
        defaults = LAYERS[layer].conventions if layer in LAYERS else {}
        if not defaults:
            return None
        return Convention({**defaults, **self.conventions}, "the oracle computes under the convention asked of it")

    def run(self, case: Case) -> dict:
        return evaluate(case, self.conventions).outputs
