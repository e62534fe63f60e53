"""The suite proves it can fail: a gradient perturbed by a small relative amount
must be flagged, for every layer, framework and dtype (for a forward-only entry,
an optimizer trajectory, one of its outputs: a perturbed update)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gradparity.reference import GRAD, OUT, Oracle, condition, evaluate
from gradparity.reference.oracle import layer_of
from gradparity.reports.compare import FLOORS, UNDERFLOW, check, conventions, scale_of
from gradparity.reports.divergences import known_divergences
from gradparity.tests.plugin import profile
from gradparity.tests.strategies import cases

# Relative to the gradient's scale: ~840 eps in float32, ~4.5e9 eps in float64.
# Every tolerance, and every bound of a known divergence, must sit below these.
CANARY = {"float32": 1e-4, "float64": 1e-6}


class Perturbed:
    """An adapter that adds ``rel * condition * scale`` (what the comparison measures
    errors against) to the largest element of one gradient (``kind`` GRAD) or
    output (OUT) that is finite on both sides; ``perturbed`` says whether it could
    (not where every value is NaN, nor where the scale is 0 or under tiny / eps:
    all-zero or subnormal gradients and parameters)."""

    def __init__(self, inner, tensor, rel, kind=GRAD):
        self.inner, self.tensor, self.rel, self.kind = inner, tensor, rel, kind
        self.name = inner.name
        self.version, self.convention = inner.version, inner.convention
        self.perturbed = False

    def run(self, case):
        got = self.inner.run(case)
        original = got[self.kind][self.tensor]
        grad = np.array(original, dtype=np.float64)
        # where both sides are finite: a NaN or Inf position is compared by kind, not by size
        exact = evaluate(case, conventions(self.inner, case.layer)).outputs[self.kind][self.tensor]
        finite = np.isfinite(grad) & np.isfinite(exact)
        scale = scale_of(grad, FLOORS[self.kind](case))
        # Under tiny / eps no check tells errors apart (the tolerance's floor, see
        # compare.UNDERFLOW): a case whose whole scale is that small proves nothing.
        self.perturbed = bool(finite.any()) and self.rel * condition(case) * scale > UNDERFLOW[case.dtype]
        if not self.perturbed:
            return got
        i = np.unravel_index(np.argmax(np.where(finite, np.abs(grad), -1.0)), grad.shape)
        grad[i] += self.rel * condition(case) * scale
        return {**got, self.kind: {**got[self.kind], self.tensor: grad.astype(original.dtype)}}


@pytest.mark.gradparity_matrix
# Filtering is expected: a framework may express few of a layer's configurations (Keras'
# Conv2DTranspose: no groups, no unbatched input, no stride with dilation).
@settings(profile(), max_examples=3, suppress_health_check=[*profile().suppress_health_check,
                                                            HealthCheck.filter_too_much])
@given(data=st.data())
def test_perturbed_gradient_is_flagged(layer, framework, dtype, data, runner_for):
    adapter = runner_for(framework)
    case = data.draw(cases(layer, dtype), label="case")
    # A divergence that may explain a canary-sized error at a finite position (unbounded, bounded
    # above the canary, or an outcome that marks finite values by where they are) has nothing to prove there.
    mode = getattr(adapter, "mode", "eager")
    assume(all(d.finite_reach < CANARY[dtype] for d in known_divergences(case, adapter.name, evaluate(case), mode)))
    kind = OUT if layer_of(case).vjp is None else GRAD  # a forward-only entry: its outputs are what it checks
    honest = {r["name"]: r["status"] for r in check(case, Oracle(), adapter) if r["kind"] == kind}
    sizes = {n: v.size for n, v in Oracle().run(case)[kind].items()}
    # A zero-size tensor (a batch of 0) has no element to perturb: it cannot be the canary.
    passing = sorted(t for t, s in honest.items() if s in ("pass", "known_divergence") and sizes.get(t, 1) > 0)
    assume(passing)
    tensor = data.draw(st.sampled_from(passing), label="tensor")
    perturbed = Perturbed(adapter, tensor, CANARY[dtype], kind)
    rows = {r["name"]: r for r in check(case, Oracle(), perturbed) if r["kind"] == kind}
    assume(perturbed.perturbed)  # all NaN (Adam, eps 0, zero gradient) or all zero: nothing to measure against
    assert rows[tensor]["status"] == "fail", (
        f"{case.describe()}: {tensor} perturbed by {CANARY[dtype]} of its scale was not flagged: {rows[tensor]}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layer", sorted(__import__("gradparity.reference.precise", fromlist=["PRECISE"]).PRECISE))
@settings(profile(), max_examples=3)
@given(data=st.data())
def test_a_tail_element_off_by_a_few_ulps_is_caught_by_the_precision_check(layer, dtype, data):
    """For every layer with a precision oracle: the correctly rounded answer is judged
    "ok"; the same answer with its smallest normal element (the tail, invisible at the
    tensor's scale) moved by twice the ulp bound is judged "lost", and fails under
    --strict-precision."""
    from gradparity.reference.precise import exact
    from gradparity.reports.compare import enforce_precision, ulp_errors, ulp_of
    from gradparity.reports.tolerances import PRECISION

    case = data.draw(cases(layer, dtype), label="case")
    truth = exact(case)
    assume(truth is not None)  # a configuration the precise oracle does not restate (a weighted loss, say)
    rounded = {k: {n: e.hi.astype(dtype) for n, e in named.items()} for k, named in truth.items()}
    tensors = []
    for kind, named in truth.items():
        for name, e in named.items():
            m = ulp_errors(e.hi, e.hi, e.lo, e.resolved, dtype)
            size = np.where(np.isnan(m["err"]), np.inf, np.abs(e.hi))
            if m["measured"]:
                tensors.append((kind, name, np.unravel_index(int(np.argmin(size)), size.shape)))
    assume(tensors)
    kind, name, at = data.draw(st.sampled_from(tensors), label="tensor")

    class Rounded:
        name, convention, version = "rounded", staticmethod(lambda layer: None), staticmethod(lambda: "1")

        def __init__(self, edit):
            self.edit = edit

        def run(self, case):
            return {k: {n: self.edit(k, n, v.copy()) for n, v in named.items()} for k, named in rounded.items()}

    honest = check(case, Oracle(), Rounded(lambda k, n, v: v))
    assert all(r["precision"] == "ok" and r["max_ulp_err"] <= 0.5 + 1e-6 for r in honest if r["precision"] != "not measured")

    e = truth[kind][name]
    moved = e.hi[at] + 2 * PRECISION.ulps * ulp_of(e.hi[at], e.lo[at], dtype)

    def perturb(k, n, v):
        if (k, n) == (kind, name):
            v = v.astype(np.float64)
            v[at] = moved
            v = v.astype(dtype)
        return v

    rows = {(r["kind"], r["name"]): r for r in check(case, Oracle(), Rounded(perturb))}
    row = rows[(kind, name)]
    assert row["precision"] == "lost", f"{case.describe()}: {kind} {name}{at} moved by {2 * PRECISION.ulps} ulps: {row}"
    assert enforce_precision([row])[0]["status"] in ("fail", "known_divergence")
