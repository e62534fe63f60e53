"""Whole models: the layers where a framework computes differently, the first of them named on every row.

A model's rows hold every step's output (kind ``out``, named after the step,
"5:gelu"), the cotangent arriving at it (kind ``cot``), and the gradient of each
step's parameters (kind ``grad``, "3:dense.W") and of the input. Once one layer
is off, every layer after it is handed different numbers, so comparing each
step's result with the oracle's blames them all. Instead the oracle recomputes
every step from the framework's own values (``reference.models.local``): its
output from the inputs the framework gave it, and what it sends back from the
cotangent the framework gave it. A step diverges

- forward, when its output differs from the oracle's for those same inputs;
- backward, when its parameter gradients, or the cotangent it sends back (the
  previous step's, or the input's gradient), differ from the oracle's for that
  same cotangent;

by more than the row's relative tolerance (its atol over its scale) times the
size of what the step handles: the larger of the two results and of what the
step was given (the output of the step before it, or the cotangent arriving at
it). A row's own scale has the model's loss cotangent as its floor, which hides a
1 % error in a cotangent that has shrunk to 1e-3 on its way back; the step's own
sizes do not. NaN and Inf in only one of the two always count.

Every row of the case that did not pass gets ``first_divergence``: the first
step diverging forward, else the last diverging backward (the first the backward
pass reaches): "5:gelu (forward)", "3:rms_norm (backward)". When no step diverges
on its own inputs, rounding decided it: "6:relu (on its kink)" where a relu input or
a max-pool tie sits exactly on the kink in the oracle (``exact_kinks``; each side's
rounding picks its own branch there), else "not localized" (rounding grown across
the whole model).
Every row of a model case also gets the L2 norm of its tensor on both sides
(``norm``, ``reference_norm``): the gradient's health through depth.

A known divergence of a layer carries over to the model when it explains every
diverging step: each asked about as a case of its own layer (the inputs and
cotangent the oracle gave it), for this framework and dtype. The failing rows
then become ``known_divergence`` under the first step's key, their detail saying
so. A divergence's bound is the layer's, on the layer's own results, so it is
applied to the step's own gap (the relative difference above, on the step's own
sizes), not to the model's rows, whose difference is whatever the layers after it
make of it. A step that diverges for any other reason, or further than its
divergence's bound, keeps the model's rows failing.
"""

from __future__ import annotations

import numpy as np

from ..reference import COT, GRAD, OUT
from ..reference.models import exact_kinks, local, step_cases
from .divergences import known_divergences


def _size(a) -> float:
    a = np.asarray(a, dtype=np.float64)
    return float(np.abs(a[np.isfinite(a)]).max(initial=0.0))


def _gap(mine, theirs, given) -> float:
    """How far apart two arrays are where both are finite, relative to the largest of their
    sizes and of ``given``'s; Inf where their shapes, or where (and which) NaN and Inf are,
    differ."""
    mine, theirs = np.asarray(mine, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    if mine.shape != theirs.shape:
        return np.inf
    finite = np.isfinite(mine) & np.isfinite(theirs)
    same_special = (np.isnan(mine) & np.isnan(theirs)) | (np.isinf(mine) & (mine == theirs))
    if np.any(~finite & ~same_special):
        return np.inf
    worst = float(np.abs(mine[finite] - theirs[finite]).max(initial=0.0))
    scale = max(_size(mine), _size(theirs), _size(given))
    return worst / scale if scale > 0 else (np.inf if worst > 0 else 0.0)


def _differs(mine, theirs, rtol: float, given) -> bool:
    """Whether two arrays differ by more than ``rtol`` times the largest of their sizes and of
    ``given``'s where both are finite, or in where (and which) NaN and Inf are."""
    return _gap(mine, theirs, given) > rtol


def step_gaps(steps, recomputed: dict, actual: dict, rtol: dict, x=0.0) -> list[tuple[str, object, float]]:
    """``[(direction, step, gap)]``: the steps diverging forward, in order, then those diverging
    backward, in the order the backward pass reaches them, each with its worst relative gap
    (``_gap``) over the tensors it diverges in. ``rtol``: {(kind, name): relative tolerance};
    ``x``: the model's input (what the first step is given)."""
    def gap(kind, name, given):
        if name not in actual.get(kind, {}):
            return 0.0
        g = _gap(recomputed[kind][name], actual[kind][name], given)
        return g if g > rtol[kind, name] else 0.0

    given = [x] + [actual[OUT].get(s.name, 0.0) for s in steps[:-1]]
    forward = [("forward", s, gap(OUT, s.name, entering)) for s, entering in zip(steps, given)]
    backward = []
    for i in reversed(range(len(steps))):
        step = steps[i]
        g = actual.get(COT, {}).get(step.name, 0.0)
        sent = (COT, steps[i - 1].name) if i else (GRAD, "x")
        backward.append(("backward", step, max([gap(GRAD, step.array(p), g) for p in step.params] + [gap(*sent, g)])))
    return [f for f in forward + backward if f[2] > 0]


def diverging_steps(steps, recomputed: dict, actual: dict, rtol: dict, x=0.0) -> list[tuple[str, object]]:
    """``[(direction, step)]`` of ``step_gaps``."""
    return [(direction, step) for direction, step, _ in step_gaps(steps, recomputed, actual, rtol, x)]


def _norm(a) -> float:
    return float(np.sqrt(np.sum(np.square(np.asarray(a, dtype=np.float64)))))


def localize(case, rows: list[dict], truth, framework: str, actual: dict) -> list[dict]:
    """Record the gradient health of a model case (``norm`` and ``reference_norm``: the L2 norm of
    each row's tensor, the framework's and the oracle's), name its first diverging step on the
    rows that did not pass (``truth``: the oracle's Evaluation of it; ``actual``: the framework's
    answer) and carry known divergences of the diverging steps to the rows. Any other case:
    unchanged."""
    residuals = truth.residuals
    if not (isinstance(residuals, dict) and "steps" in residuals):
        return rows
    for r in rows:
        mine, theirs = actual.get(r["kind"], {}).get(r["name"]), truth.outputs.get(r["kind"], {}).get(r["name"])
        r["norm"] = _norm(mine) if mine is not None else np.nan
        r["reference_norm"] = _norm(theirs) if theirs is not None else np.nan
    if not any(r["status"] == "fail" for r in rows):
        return rows
    steps = residuals["steps"]
    recomputed = local(case.layer, case, actual[OUT], actual[COT])
    rtol = {(r["kind"], r["name"]): r["atol"] / r["scale"] if r["scale"] > 0 else 0.0 for r in rows}
    x = case.arrays["x"] if case.arrays["x"].dtype.kind == "f" else 0.0
    found = step_gaps(steps, recomputed, actual, rtol, x)
    if found:
        first = f"{found[0][1].name} ({found[0][0]})"
    else:  # every layer agrees on its own inputs: the difference grew from rounding, or a kink took it
        kinks = exact_kinks(residuals, truth.outputs[COT])
        first = f"{kinks[0]} (on its kink)" if kinks else "not localized"
    for r in rows:
        if r["status"] != "pass":
            r["first_divergence"] = first
    if not found:
        return rows
    cases = {s.name: (c, e) for s, c, e in step_cases(case, residuals, truth.outputs[COT])}
    keys = []
    for _, step, gap in found:
        # A finite gap within what the divergence explains at finite positions, or NaN and Inf
        # placed otherwise (an infinite gap) where it declares an outcome for them.
        known = [d for d in known_divergences(*cases[step.name][:1], framework, cases[step.name][1])
                 if gap <= d.finite_reach or (np.isinf(gap) and d.outcome is not None)]
        if not known:
            return rows  # a step diverges for a reason nobody recorded, or further than recorded: rows fail
        keys.append((known[0].key, step.name))
    key, where = keys[0]
    others = "; also " + ", ".join(f"{k} of {s}" for k, s in keys[1:]) if len(keys) > 1 else ""
    for r in rows:
        r["divergence"] = key
        if r["status"] == "fail":
            r.update(status="known_divergence", detail=f"[known divergence {key}: explained by {key} at {where}, "
                                                        f"where the model first diverges{others}] {r['detail']}")
    return rows
