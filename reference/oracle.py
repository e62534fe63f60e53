"""Running the oracle on a Case: validation, float64 evaluation, gradients."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .case import DTYPES, Case
from .catalogue import LAYERS
from .spec import Labels, Layer, require


@dataclass(frozen=True)
class Result:
    """The forward output and the gradient of every differentiable array, by name."""

    out: np.ndarray
    grads: dict


def layer_of(case: Case) -> Layer:
    require(case.layer in LAYERS, "layer", f"unknown layer {case.layer!r}; known: {', '.join(sorted(LAYERS))}")
    return LAYERS[case.layer]


def differentiable(case: Case) -> list[str]:
    """Names of the case's arrays whose gradient is checked, in catalogue order."""
    layer = layer_of(case)
    return [n for n, spec in layer.arrays.items() if spec.differentiable and n in case.arrays]


def _as_float64(case: Case) -> dict:
    return {k: (v if np.issubdtype(v.dtype, np.integer) else v.astype(np.float64)) for k, v in case.arrays.items()}


def validate(case: Case) -> Layer:
    """Check a case against its catalogue entry and the oracle; raise ``ValueError``
    naming the first field that is wrong. Runs before any framework is touched."""
    layer = layer_of(case)
    require(case.dtype in DTYPES, "dtype", f"unsupported dtype {case.dtype!r}; supported: {', '.join(DTYPES)}")
    known = set(layer.attrs)
    missing = [a for a in layer.attrs if a not in case.attrs]
    require(not missing, "attrs", f"{case.layer} needs {', '.join(missing)}")
    unknown = [a for a in case.attrs if a not in known]
    require(not unknown, "attrs", f"{case.layer} takes no attribute {', '.join(unknown)}")
    wanted = layer.arrays
    for name, spec in wanted.items():
        require(spec.optional or name in case.arrays, name, f"missing; {case.layer} takes {', '.join(wanted)}")
    for name, arr in case.arrays.items():
        require(name in wanted, name, f"{case.layer} takes no array {name!r} (it takes {', '.join(wanted)})")
        require(isinstance(arr, np.ndarray), name, f"expected a NumPy array, got {type(arr).__name__}")
        if isinstance(wanted[name].values, Labels):
            require(np.issubdtype(arr.dtype, np.integer), name, f"expected integer labels, got {arr.dtype}")
        else:
            require(arr.dtype == np.dtype(case.dtype), name, f"expected {case.dtype} values, got {arr.dtype}")
            require(arr.size == 0 or np.isfinite(arr).all(), name, "contains NaN or Inf")
    out, _ = layer.forward(**_as_float64(case), **case.attrs)
    require(case.g is not None and np.shape(case.g) == np.shape(out), "g",
            f"expected a cotangent of shape {np.shape(out)} like the output, got "
            f"{None if case.g is None else np.shape(case.g)}")
    return layer


def condition(case: Case) -> float:
    """The case's condition number kappa >= 1 (1 for layers that declare none)."""
    layer = layer_of(case)
    if layer.condition is None:
        return 1.0
    return max(1.0, float(layer.condition(**_as_float64(case), **case.attrs)))


def evaluate(case: Case, conventions: dict | None = None) -> Result:
    """The exact answer for the case's (already rounded) numbers, in float64.

    ``conventions`` override the layer's defaults for choices frameworks make
    differently (see ``Layer.conventions``). Gradients of arrays the output does
    not depend on come back as zeros.
    """
    layer = layer_of(case)
    chosen = {**layer.conventions, **(conventions or {})}
    unknown = set(chosen) - set(layer.conventions)
    require(not unknown, "conventions", f"{case.layer} has no convention {', '.join(sorted(unknown))}")
    out, res = layer.forward(**_as_float64(case), **case.attrs, **chosen)
    grads = layer.vjp(res, np.asarray(case.g, dtype=np.float64))
    names = differentiable(case)
    return Result(np.asarray(out, dtype=np.float64),
                  {n: np.asarray(grads.get(n, np.zeros(case.arrays[n].shape)), dtype=np.float64) for n in names})
