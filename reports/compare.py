"""Comparing a framework's output and gradients with the oracle: one row per tensor.

``check(case, adapter)`` is the whole pipeline for one case and one framework:
validate, evaluate the oracle under the framework's conventions, run the
framework, compare. It never raises for a framework's failure: the rows say
``error`` with the message, so a crash in one case never loses the rest.
"""

from __future__ import annotations

import traceback

import numpy as np

from ..adapters.base import NotApplicable
from ..reference import Case, condition, evaluate, validate

from .tolerances import EPS, divergence_tag, known_divergence, tolerance_for

STATUSES = ("pass", "fail", "known_divergence", "not_applicable", "error")
COLUMNS = ["layer", "framework", "framework_version", "dtype", "case", "tensor", "shape",
           "max_abs_err", "max_rel_err", "err_eps", "scale", "condition", "atol", "rtol", "status", "detail",
           "convention", "divergence", "tolerance_reason", "attrs", "reproduce"]


UNDERFLOW = {d: float(np.finfo(d).tiny / np.finfo(d).eps) for d in ("float32", "float64")}


def scale_of(values, floor) -> float:
    """The scale an error is measured against: max(max|finite values|, max|floor|).

    The floor is the cotangent g for a gradient and the inputs for the output
    (see tolerances.py)."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return max(float(np.abs(finite).max(initial=0.0)), float(np.abs(np.asarray(floor)).max(initial=0.0)))


def tensor_errors(expected: np.ndarray, actual: np.ndarray, floor: float, dtype: str, rtol: float,
                  condition: float = 1.0) -> dict:
    """Errors of one tensor, NaN-aware: a non-finite value agrees only with the same
    non-finite value at the same position. Passes when max error <= rtol * condition * scale."""
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if actual.shape != expected.shape:
        return {"ok": False, "detail": f"shape {actual.shape}, expected {expected.shape}"}
    finite = np.isfinite(expected) & np.isfinite(actual)
    same_special = (np.isnan(expected) & np.isnan(actual)) | (np.isinf(expected) & (expected == actual))
    bad_special = int((~finite & ~same_special).sum())
    diff = np.abs(actual[finite] - expected[finite])
    max_abs = float(diff.max()) if diff.size else 0.0
    # Under tiny / eps a result's own rounding error is subnormal, where TensorFlow's
    # CPU kernels flush to zero (and squares of the inputs underflow): the scale never
    # lets atol fall below that.
    scale = max(scale_of(expected, floor), UNDERFLOW[dtype] / (rtol * condition))
    atol = rtol * condition * scale
    rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else np.inf)
    detail = ""
    if bad_special:
        detail = f"{bad_special} position(s) non-finite in only one of framework/oracle"
    elif max_abs > atol:
        errors = np.full(expected.shape, -1.0)
        errors[finite] = diff
        worst = np.unravel_index(int(np.argmax(errors)), expected.shape)
        detail = f"worst at {tuple(int(i) for i in worst)}: framework {actual[worst]:.9g}, oracle {expected[worst]:.9g}"
    return {"ok": not bad_special and max_abs <= atol, "max_abs_err": max_abs, "max_rel_err": rel,
            "err_eps": rel / EPS[dtype], "scale": scale, "condition": condition, "atol": atol, "detail": detail}


def conventions(adapter, layer: str) -> dict:
    """The convention values a framework follows for a layer ({} where it follows the oracle's defaults)."""
    c = adapter.convention(layer)
    return dict(c.values) if c else {}


def _base_row(case: Case, adapter, tensor: str, shape) -> dict:
    tol = tolerance_for(case.layer, adapter.name, case.dtype)
    conv = conventions(adapter, case.layer)
    return {"layer": case.layer, "framework": adapter.name, "framework_version": adapter.version(),
            "dtype": case.dtype, "case": case.id, "tensor": tensor, "shape": str(tuple(shape)),
            "max_abs_err": np.nan, "max_rel_err": np.nan, "err_eps": np.nan, "scale": np.nan,
            "condition": np.nan, "atol": np.nan, "rtol": tol.rtol, "status": "pass", "detail": "",
            "convention": ", ".join(f"{k}={v}" for k, v in conv.items()), "divergence": "",
            "tolerance_reason": tol.reason, "attrs": case.describe(), "reproduce": ""}


def check(case: Case, adapter) -> list[dict]:
    """Run one case through one framework and compare with the oracle, tensor by tensor.

    The first row is the forward output (``tensor="out"``), then one per gradient.
    Raises ``ValueError`` only for an invalid case, before the framework runs.
    """
    validate(case)
    ref = evaluate(case, conventions(adapter, case.layer))
    expected = {"out": ref.out, **ref.grads}
    rows = [_base_row(case, adapter, name, value.shape) for name, value in expected.items()]
    try:
        got = adapter.run(case)
    except NotApplicable as e:
        return [{**r, "status": "not_applicable", "detail": str(e)} for r in rows]
    except Exception as e:  # noqa: BLE001 - any framework failure becomes a row
        last = traceback.format_exception_only(type(e), e)[-1].strip()
        return _known([{**r, "status": "error", "detail": last[:500]} for r in rows], case, adapter)
    actual = {"out": got.out, **got.grads}
    # Gradients are judged against the cotangent's size as a floor, the forward output
    # against the inputs' size: rounding the inputs alone moves it by eps of them.
    floors = {"out": max((scale_of(a, 0.0) for a in case.arrays.values() if a.dtype.kind == "f"), default=0.0)}
    g_size = scale_of(0.0, case.g)
    kappa = condition(case)
    for r in rows:
        if r["tensor"] not in actual:
            r.update(status="error", detail=f"{adapter.name} returned no gradient for {r['tensor']}")
            continue
        floor = floors.get(r["tensor"], g_size)
        m = tensor_errors(expected[r["tensor"]], actual[r["tensor"]], floor, case.dtype, r["rtol"], kappa)
        ok = m.pop("ok")
        r.update(m, status="pass" if ok else "fail")
    return _known(rows, case, adapter)


def _known(rows: list[dict], case: Case, adapter) -> list[dict]:
    """Rows that fail in a recorded, explained way become ``known_divergence``. Every
    row of a case inside a divergence's condition names it, passing or not, so the
    report can tell a divergence that no longer shows from one not reached."""
    div = known_divergence(case, adapter.name)
    if div is None:
        return rows
    for r in rows:
        r["divergence"] = divergence_tag(div)
        if r["status"] in ("fail", "error") and div.explains(r):
            r.update(status="known_divergence", detail=f"[known divergence {divergence_tag(div)}] {r['detail']}".strip())
    return rows
