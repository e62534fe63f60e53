"""The comparison engine: two runners on one case, one row per compared name.

``check(case, reference, candidate)`` validates the case, evaluates the oracle
once (its answer, or at least the validation and the condition number when the
reference is another framework), runs both runners and compares every name
both produce: the forward outputs (kind ``out``) and the gradients (kind
``grad``), and for a layer through time the per-step gradient norms (kind
``flow``, with both profiles in the row). It never raises for a runner's failure: the rows say ``error`` with
the message, so a crash in one case never loses the rest. It raises
``ValueError`` only for an invalid case, before any framework runs.
"""

from __future__ import annotations

import json
import math
import re
import traceback

import numpy as np

from ..adapters.base import NotApplicable
from ..reference import COT, FLOW, GRAD, LAYERS, OUT, Case, Oracle, evaluate, reached_edges, with_flow
from ..reference import precise
from .rows import COLUMNS
from .divergences import KNOWN_DIVERGENCES, known_divergences, together
from .localize import localize
from .tolerances import EPS, PRECISION, Tolerance, at_step, tolerance_for

UNDERFLOW = {d: float(np.finfo(d).tiny / np.finfo(d).eps) for d in ("float32", "float64")}


def scale_of(values, floor) -> float:
    """The scale an error is measured against: max(max|finite values|, floor)."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return max(float(np.abs(finite).max(initial=0.0)), float(floor))


def _max_abs(arrays) -> float:
    """The largest finite magnitude among float arrays (a NaN or Inf input sets no scale)."""
    return max((scale_of(a, 0.0) for a in arrays if a.dtype.kind == "f"), default=0.0)


# What an error of each kind is measured against, below the tensor's own size
# (see tolerances.py): a forward output moves by eps of the inputs when they are
# rounded; a gradient carries the cotangent through the backward pass.
FLOORS = {
    OUT: lambda case: _max_abs(case.arrays.values()),
    GRAD: lambda case: _max_abs(case.cotangents.values()),
    FLOW: lambda case: _max_abs(case.cotangents.values()),
    COT: lambda case: _max_abs(case.cotangents.values()),  # a model's: the cotangent carried back to a step
}


def _spread(case: Case, kind: str, name: str) -> float:
    """How much wider a kind's tolerance is than the gradient's it derives from: a
    per-step norm over m elements, each within atol, is within sqrt(m) atol."""
    if kind != FLOW:
        return 1.0
    x = case.arrays[name]
    return math.sqrt(x.size // x.shape[1]) if x.size else 1.0


def _profile(expected, actual) -> str:
    """Both per-step profiles of a flow row, for the report's plot (6 digits)."""
    return json.dumps({"reference": [float(f"{v:.6g}") for v in np.asarray(expected, dtype=float)],
                       "candidate": [float(f"{v:.6g}") for v in np.asarray(actual, dtype=float)]})


def _census(a: np.ndarray) -> str:
    """How many NaN, +Inf and -Inf ``a`` holds ("" for none)."""
    counts = ((int(np.isnan(a).sum()), "NaN"), (int(np.isposinf(a).sum()), "+Inf"), (int(np.isneginf(a).sum()), "-Inf"))
    return ", ".join(f"{n} {what}" for n, what in counts if n)


def _flushed(expected: np.ndarray, actual: np.ndarray, dtype: str) -> str:
    """Where the exact value is subnormal in ``dtype`` and the answer is 0: "k of m"
    ("" when no exact value is subnormal). A framework that flushes subnormal
    results to zero (TensorFlow's CPU kernels) shows here, whatever the tolerance."""
    tiny = float(np.finfo(dtype).tiny)
    with np.errstate(invalid="ignore"):
        subnormal = (expected != 0) & (np.abs(expected) < tiny)
    if not subnormal.any():
        return ""
    return f"{int((actual[subnormal] == 0).sum())} of {int(subnormal.sum())}"


def tensor_errors(expected: np.ndarray, actual: np.ndarray, floor: float, dtype: str, tol: Tolerance | float,
                  condition: float = 1.0) -> dict:
    """Errors of one array, NaN-aware: a non-finite value agrees only with the same
    non-finite value at the same position (NaN with NaN, +Inf with +Inf). Passes when
    every position agrees so and the max error over the positions finite in both is
    <= tol.allowed(condition) * scale (a bare number is an rtol that the condition
    multiplies). ``nonfinite`` says what each side held where either held a
    non-finite value; ``flushed`` how many subnormal exact values came back as 0."""
    allowed = tol.allowed(condition) if isinstance(tol, Tolerance) else tol * condition
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if actual.shape != expected.shape:
        return {"ok": False, "detail": f"shape {actual.shape}, expected {expected.shape}"}
    finite = np.isfinite(expected) & np.isfinite(actual)
    same_special = (np.isnan(expected) & np.isnan(actual)) | (np.isinf(expected) & (expected == actual))
    bad = ~finite & ~same_special
    diff = np.abs(actual[finite] - expected[finite])
    max_abs = float(diff.max()) if diff.size else 0.0
    # Under tiny / eps a result's own rounding error is subnormal, where TensorFlow's
    # CPU kernels flush to zero (and squares of the inputs underflow): the scale never
    # lets atol fall below that.
    scale = max(scale_of(expected, floor), UNDERFLOW[dtype] / allowed)
    atol = allowed * scale
    rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else np.inf)
    detail = ""
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        detail = (f"{int(bad.sum())} position(s) non-finite in only one of the two or of another kind; first at "
                  f"{first}: got {actual[first]:.9g}, expected {expected[first]:.9g}")
    elif max_abs > atol:
        errors = np.full(expected.shape, -1.0)
        errors[finite] = diff
        worst = np.unravel_index(int(np.argmax(errors)), expected.shape)
        detail = f"worst at {tuple(int(i) for i in worst)}: got {actual[worst]:.9g}, expected {expected[worst]:.9g}"
    nonfinite = ""
    if (~finite).any():
        nonfinite = (f"expected {_census(expected) or 'all finite'}; got {_census(actual) or 'all finite'}; "
                     f"{int(bad.sum())} position(s) differ")
    return {"ok": not bad.any() and max_abs <= atol, "max_abs_err": max_abs, "max_rel_err": rel,
            "err_eps": rel / EPS[dtype], "scale": scale, "condition": condition, "atol": atol, "detail": detail,
            "nonfinite": nonfinite, "flushed": _flushed(expected, actual, dtype)}


def special_values(case: Case) -> str:
    """The special values a case holds, per array: NaN, +-Inf and subnormals of the
    case dtype ("x: 1 NaN, 2 subnormal"; "" for an ordinary case)."""
    tiny = float(np.finfo(case.dtype).tiny)
    parts = []
    for name, a in case.arrays.items():
        if a.dtype.kind != "f":
            continue
        a = a.astype(np.float64)
        with np.errstate(invalid="ignore"):
            n_sub = int(((a != 0) & (np.abs(a) < tiny)).sum())
        found = ", ".join(filter(None, [_census(a), f"{n_sub} subnormal" if n_sub else ""]))
        if found:
            parts.append(f"{name}: {found}")
    return "; ".join(parts)


# ---- element-wise precision

def ulp_of(hi, lo, dtype: str) -> np.ndarray:
    """The ulp of ``dtype`` at the exact value ``hi + lo``: the spacing of the dtype's
    numbers in the binade of |exact|, 2^(floor(log2 |exact|) - (p - 1)) with p = 24
    (float32) or 53 (float64) significand bits. The binade is the exact value's, not
    its rounding's: an exact value a hair below 2^k (hi = 2^k, lo < 0) has the
    smaller spacing. Meaningful only where |exact| is a normal number of the dtype."""
    hi, lo = np.asarray(hi, dtype=np.float64), np.asarray(lo, dtype=np.float64)
    mant, exp = np.frexp(np.abs(hi))  # |hi| = mant 2^exp, mant in [0.5, 1)
    below = (mant == 0.5) & (np.sign(lo) * np.sign(hi) < 0)
    return np.ldexp(1.0, exp - 1 - below - (np.finfo(dtype).nmant))


def ulp_errors(actual, hi, lo, resolved, dtype: str) -> dict:
    """Each element's error in ulps of the case dtype at the element itself:
    |actual - exact| / ulp_of(exact), for every element whose exact value is a
    normal number of the dtype (tiny <= |exact| <= max) and is resolved by the
    oracle that gave it. Exact zeros, exact values that are subnormal (or
    underflow) in the dtype, values beyond its range and unresolved elements are
    excluded, and counted: an error relative to 0 or to a subnormal spacing says
    nothing about digits. A non-finite answer where the exact value is normal has
    lost every digit (inf ulps). ``err`` is NaN where not measured."""
    actual = np.asarray(actual, dtype=np.float64)
    hi, lo = np.asarray(hi, dtype=np.float64), np.asarray(lo, dtype=np.float64)
    info = np.finfo(dtype)
    size = np.abs(hi)
    zero = hi == 0
    subnormal = ~zero & ((size < info.tiny) | ((size == info.tiny) & (np.sign(lo) * np.sign(hi) < 0)))
    beyond = ~np.isfinite(hi) | (size > float(info.max))
    unresolved = ~np.asarray(resolved, dtype=bool) & ~zero
    measured = ~zero & ~subnormal & ~beyond & ~unresolved
    err = np.full(hi.shape, np.nan)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs((actual - hi) - lo)
        err[measured] = np.where(np.isfinite(actual[measured]), diff[measured] / ulp_of(hi, lo, dtype)[measured],
                                 np.inf)
    return {"err": err, "measured": int(measured.sum()), "zero": int(zero.sum()), "subnormal": int(subnormal.sum()),
            "beyond": int(beyond.sum()), "unresolved": int(unresolved.sum())}


def _g(v, dtype: str) -> str:
    return f"{float(v):.{9 if dtype == 'float32' else 17}g}"


def _inputs_at(case: Case, shape: tuple, index: tuple) -> list[tuple[str, float]]:
    """The case's real arrays shaped like the compared tensor, at ``index``: for an
    element-wise layer, the input that produced the element."""
    return [(n, float(a[index])) for n, a in case.arrays.items()
            if a.dtype.kind == "f" and a.shape == shape and shape != ()]


LOST_POINTS = 48  # the worst lost elements a row keeps (with every count): rows stay short


def _lost_points(case: Case, err: np.ndarray, actual: np.ndarray, shape: tuple) -> str:
    """JSON: where elements lost more than the ulp bound, along the input's values
    (the first real array shaped like the tensor): ``lost`` holds [input, ulps,
    what came out] for the worst ``LOST_POINTS`` of the ``n`` lost elements, ``kept``
    the inputs of the elements that kept their digits next to a lost one (in input
    order), so a report can tell where a range of lost digits starts and ends."""
    lost = err > PRECISION.ulps
    if not lost.any():
        return ""
    name = next((n for n, a in case.arrays.items() if a.dtype.kind == "f" and a.shape == shape and shape != ()), None)
    if name is None:  # a scalar (a loss): no input of its shape
        return json.dumps({"input": None, "n": int(lost.sum()), "lost": [[None, float(np.nanmax(err)), None]],
                           "kept": []})
    x = case.arrays[name].astype(np.float64).ravel()
    measured = ~np.isnan(err.ravel())
    order = np.argsort(x[measured], kind="stable")
    xs, es, got = x[measured][order], err.ravel()[measured][order], actual.ravel()[measured][order]
    bad = es > PRECISION.ulps
    edge = np.zeros_like(bad)
    edge[:-1] |= bad[1:]
    edge[1:] |= bad[:-1]
    keep = np.argsort(-es[bad], kind="stable")[:LOST_POINTS]
    points = sorted(([float(xs[bad][i]), float(es[bad][i]), float(got[bad][i])] for i in keep), key=lambda p: p[0])
    return json.dumps({"input": name, "n": int(bad.sum()), "lost": points,
                       "kept": sorted(set(float(v) for v in xs[edge & ~bad]))})


def precision_columns(case: Case, actual, exact, source: str) -> dict:
    """The precision columns of one row: ``exact`` is a ``precise.Exact``, or None
    where nothing can resolve the dtype's ulps (then "not measured", and why)."""
    dtype = case.dtype
    if exact is None:
        return {"max_ulp_err": np.nan, "precision": "not measured", "ulp_oracle": source}
    actual = np.asarray(actual, dtype=np.float64)
    if actual.shape != exact.hi.shape:
        return {"max_ulp_err": np.nan, "precision": "not measured", "ulp_oracle": f"{source}; shapes differ"}
    m = ulp_errors(actual, exact.hi, exact.lo, exact.resolved, dtype)
    err = m["err"]
    excluded = [f"{m[k]} {what}" for k, what in (("zero", "exact zero"), ("subnormal", "exact subnormal in " + dtype),
                                                 ("beyond", "beyond the dtype's range"),
                                                 ("unresolved", "unresolved by the oracle")) if m[k]]
    note = f"{source}; measured {m['measured']} of {err.size}" + (f"; excluded: {', '.join(excluded)}" if excluded else "")
    judged = source.startswith("mpmath")
    if not m["measured"]:
        return {"max_ulp_err": np.nan, "precision": "not measured", "ulp_oracle": note}
    worst = np.unravel_index(int(np.nanargmax(np.where(np.isnan(err), -1.0, err))), err.shape)
    where = ", ".join([f"at {tuple(int(i) for i in worst)}"]
                      + [f"{n}={_g(v, dtype)}" for n, v in _inputs_at(case, err.shape, worst)]
                      + [f"got {_g(actual[worst], dtype)}", f"exact {exact.hi[worst]:.17g}"])
    worst_ulps = float(err[worst])
    verdict = ("lost" if worst_ulps > PRECISION.ulps else "ok") if judged else "measured"
    return {"max_ulp_err": worst_ulps, "ulp_where": where, "precision": verdict, "ulp_oracle": note,
            "ulp_lost": _lost_points(case, err, actual, err.shape) if judged else ""}


PRECISE_SOURCE = f"mpmath at {precise.PRECISIONS[0]} and {precise.PRECISIONS[1]} bits"
FLOAT64_SOURCE = ("the float64 oracle (no precision oracle for this layer or this configuration of it; its own "
                  "rounding unchecked)")
UNRESOLVABLE = ("not measured: no precision oracle for this layer or this configuration of it, and the float64 "
                "oracle's own rounding is ulps of float64")


def _precision(rows: list[dict], case: Case, conv: dict, actual: dict, oracle_outputs: dict) -> None:
    """Fill the precision columns of rows that compared values (pass or fail)."""
    todo = [r for r in rows if r["status"] in ("pass", "fail") and r["kind"] in (OUT, GRAD)]
    if not todo:
        return
    try:
        exact = precise.exact(case, conv)
    except Exception as e:  # noqa: BLE001 - the precision oracle's failure costs its columns, never the rows
        for r in todo:
            r.update(precision="not measured", ulp_oracle=f"the precision oracle failed: {_failure(e)}")
        return
    for r in todo:
        kind, name = r["kind"], r["name"]
        got = actual[kind][name]
        if exact is not None and name in exact.get(kind, {}):
            r.update(precision_columns(case, got, exact[kind][name], PRECISE_SOURCE))
        elif case.dtype == "float32":
            ref = np.asarray(oracle_outputs[kind][name], dtype=np.float64)
            r.update(precision_columns(case, got, precise.Exact(ref, np.zeros_like(ref), np.ones(ref.shape, bool)),
                                       FLOAT64_SOURCE))
        else:
            r.update(precision_columns(case, got, None, UNRESOLVABLE))


def enforce_precision(rows: list[dict]) -> list[dict]:
    """``--strict-precision``: a passing row whose precision was lost fails (a
    known divergence that covers the row's case still explains it, within its bound)."""
    by_key = {d.key: d for d in KNOWN_DIVERGENCES}
    for r in rows:
        if r["status"] == "pass" and r.get("precision") == "lost":
            r.update(status="fail", detail=f"precision lost: {r['max_ulp_err']:.3g} ulps > {PRECISION.ulps:g} "
                                            f"({r['ulp_where']})")
            div = by_key.get(r.get("divergence") or "")
            if div is not None and div.explains(r):
                r.update(status="known_divergence", detail=f"[known divergence {div.key}] {r['detail']}")
    return rows


def conventions(runner, layer: str) -> dict:
    """The convention values a runner follows for a layer ({} where it follows the oracle's defaults)."""
    c = runner.convention(layer)
    return dict(c.values) if c else {}


def _text(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


_TRACED = re.compile(r"^\s*File \".*\n(?:\s{8,}.*\n)?|\x1b\[[0-9;]*m", re.MULTILINE)
_TRACED_CALL = re.compile(r"\(\*\(.*?\), \*\*\{.*?\}\)", re.DOTALL)  # dynamo's call_function <fn>(*(args), **{kwargs})


def _failure(e: BaseException) -> str:
    """The exception in at most 500 characters. A traced function's error quotes what it passed
    through before the message itself: tf.function and XLA the user code's frames, torch.compile
    the call's fake-tensor arguments. Those are left out, or the cut would leave nothing but them
    (and a divergence's ``raises`` nothing to match)."""
    message = traceback.format_exception_only(type(e), e)[-1]
    return _TRACED_CALL.sub("(...)", _TRACED.sub("", message)).strip()[:500]


def _tolerance(case: Case, reference, candidate) -> Tolerance:
    """The candidate's tolerance; against another framework, both sides' errors add up."""
    tol = tolerance_for(case.layer, candidate.name, case.dtype)
    if isinstance(reference, Oracle):
        return tol
    other = tolerance_for(case.layer, reference.name, case.dtype)
    rounding = None if tol.rounding is None and other.rounding is None else (
        (tol.rounding or tol.rtol) + (other.rounding or other.rtol))
    return Tolerance(tol.rtol + other.rtol, f"{candidate.name}: {tol.reason}; {reference.name}: {other.reason}",
                     rounding, min(tol.ceiling, other.ceiling))


def _run(runner, case: Case):
    """(named outputs, None) or (None, (status, detail)) for a runner that cannot or did not run."""
    try:
        return runner.run(case), None
    except NotApplicable as e:
        return None, ("not_applicable", str(e))
    except Exception as e:  # noqa: BLE001 - any framework failure becomes a row
        return None, ("error", _failure(e))


def check(case: Case, reference, candidate) -> list[dict]:
    """Compare ``candidate`` with ``reference`` on one case, name by name.

    ``reference`` is usually the oracle (``Oracle()``), put under the candidate's
    conventions; it may be another framework (a ported model pair). Rows come in
    the order of the oracle's outputs: forward outputs first, then gradients.
    """
    conv = conventions(candidate, case.layer)
    truth = evaluate(case, conv)  # validates: ValueError here, before any framework runs
    tol = _tolerance(case, reference, candidate)
    special = special_values(case)
    family, edges = LAYERS[case.layer].family, ", ".join(reached_edges(case))
    case_id = case.id  # a hash of every array: once, not once per row
    rows = [{**dict.fromkeys(COLUMNS, ""), **{
        "family": family, "layer": case.layer, "framework": getattr(candidate, "label", candidate.name),
        "mode": getattr(candidate, "mode", "eager"), "framework_version": _version(candidate),
        "reference": reference.name, "dtype": case.dtype, "case": case_id, "kind": kind, "name": name,
        "shape": str(tuple(value.shape)), "max_abs_err": np.nan, "max_rel_err": np.nan, "err_eps": np.nan,
        "scale": np.nan, "condition": truth.condition, "atol": np.nan, "rtol": step_tol.rtol, "status": "pass",
        "convention": _text(conv), "tolerance_reason": step_tol.reason, "attrs": case.describe(),
        "max_ulp_err": np.nan, "precision": "not measured", "special": special, "edges": edges}}
        for kind, named in truth.outputs.items() for name, value in named.items()
        for step_tol in (at_step(tol, case.layer, name),)]
    tols = {(r["kind"], r["name"]): at_step(tol, case.layer, r["name"]) for r in rows}

    actual, failed = _run(candidate, case)
    if actual is not None:
        actual = with_flow(case, actual)
    if isinstance(reference, Oracle):
        expected, ref_failed = truth.outputs, None
        drawn = (actual or {}).get("drawn")
        if drawn:  # randomness the framework drew itself (a dropout mask): the oracle answers for it
            try:
                expected = evaluate(case.replace(arrays={**case.arrays, **drawn}), conv).outputs
            except ValueError as e:
                failed = ("error", f"{candidate.name} drew {', '.join(drawn)} the layer cannot take: {e}")
    else:
        expected, ref_failed = _run(reference, case)
        if expected is not None:
            expected = with_flow(case, expected)
        other = conventions(reference, case.layer)
        if other != conv:
            for r in rows:
                r["convention"] = f"{candidate.name}: {_text(conv)}; {reference.name}: {_text(other)}"
    if failed or ref_failed:
        status, detail = failed or ref_failed
        side = candidate.name if failed else f"the reference {reference.name}"
        for r in rows:
            r.update(status=status, detail=detail if status == "not_applicable" else f"{side}: {detail}")
        return _known(rows, case, reference, candidate, truth)

    floors = {kind: floor(case) for kind, floor in FLOORS.items()}
    for r in rows:
        kind, name = r["kind"], r["name"]
        missing = [who.name for who, got in ((candidate, actual), (reference, expected))
                   if name not in got.get(kind, {})]
        if missing:
            r.update(status="error", detail=f"{' and '.join(missing)} returned no {kind} {name}")
            continue
        row_tol, spread = tols[(kind, name)], _spread(case, kind, name)
        if spread != 1.0:
            m = round(spread ** 2)
            row_tol = row_tol.scaled(spread, f"x sqrt({m}): a norm over {m} gradient elements")
            r.update(rtol=row_tol.rtol, tolerance_reason=row_tol.reason)
        if kind == FLOW:
            r["profile"] = _profile(expected[kind][name], actual[kind][name])
        m = tensor_errors(expected[kind][name], actual[kind][name], floors.get(kind, 0.0), case.dtype,
                          row_tol, truth.condition)
        ok = m.pop("ok")
        r.update(m, status="pass" if ok else "fail")
    _precision(rows, case, conv, actual, expected if isinstance(reference, Oracle) else truth.outputs)
    if isinstance(reference, Oracle):  # against another framework, both sides' layers are in question
        localize(case, rows, truth, candidate.name, actual)
    return _known(rows, case, reference, candidate, truth, expected, actual)


def with_eager_distance(rows: list[dict], case: Case, runner) -> list[dict]:
    """For a runner in a compiled execution mode: each row's distance from the same framework's
    eager result (``vs_eager_eps``: the comparison of the two runners, in eps of the scale). A
    measure, not a verdict: bitwise equality is not expected of a compiled graph."""
    if getattr(runner, "mode", "eager") == "eager":
        return rows
    apart = {(r["kind"], r["name"]): r["err_eps"] for r in check(case, runner.with_mode("eager"), runner)}
    for r in rows:
        r["vs_eager_eps"] = apart.get((r["kind"], r["name"]), np.nan)
    return rows


def _version(runner) -> str:
    try:
        return str(runner.version())
    except Exception as e:  # noqa: BLE001 - a version we cannot read is said, not fatal
        return f"unknown ({_failure(e)})"


def _known(rows: list[dict], case: Case, reference, candidate, truth, expected: dict | None = None,
           actual: dict | None = None) -> list[dict]:
    """Rows that fail in a recorded, explained way become ``known_divergence``. Every
    row of a case inside a divergence's condition names it, passing or not, so the
    report can tell a divergence that no longer shows from one not reached.
    Against another framework, a divergence of either side can explain a row (the
    candidate's are tried first). ``expected`` and ``actual`` ({kind: {name: array}},
    None where a runner gave nothing) are what each row compared: a divergence that
    explains only some positions (its ``outcome``) is checked element by element, and
    so is its bound on every other position. Where several hold for the case and none
    explains a row alone, they may together (``together``): a subnormal logit and a
    zero logit of one weighted cross-entropy each take their own positions."""
    sides = [candidate] if isinstance(reference, Oracle) else [candidate, reference]
    divs = [d for runner in sides
            for d in known_divergences(case, runner.name, truth, getattr(runner, "mode", "eager"))]
    if not divs:
        return rows
    for r in rows:
        r["divergence"] = divs[0].key
        arrays = [(outputs or {}).get(r["kind"], {}).get(r["name"]) for outputs in (expected, actual)]
        failed = r["status"] in ("fail", "error")
        div = next((d for d in divs if d.explains(r, *arrays, case)), None) if failed else None
        if div is not None:
            r.update(status="known_divergence", divergence=div.key,
                     detail=f"[known divergence {div.key}] {r['detail']}".strip())
        elif failed and len(divs) > 1 and together(divs).explains(r, *arrays, case):
            r.update(status="known_divergence",
                     detail=f"[known divergences {' and '.join(d.key for d in divs)}, together] {r['detail']}".strip())
    return rows
