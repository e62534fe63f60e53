"""The suite proves it can fail: a gradient perturbed by a small relative amount
must be flagged, for every layer, framework and dtype (for a forward-only entry,
an optimizer trajectory, one of its outputs: a perturbed update)."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gradparity.reference import GRAD, OUT, Oracle, condition
from gradparity.reference.oracle import layer_of
from gradparity.reports.compare import FLOORS, check, scale_of
from gradparity.reports.tolerances import known_divergence
from gradparity.tests.plugin import profile
from gradparity.tests.strategies import cases

# Relative to the gradient's scale: ~840 eps in float32, ~4.5e9 eps in float64.
# Every tolerance, and every bound of a known divergence, must sit below these.
CANARY = {"float32": 1e-4, "float64": 1e-6}


class Perturbed:
    """An adapter that adds ``rel * condition * scale`` (what the comparison measures
    errors against) to the largest finite element of one gradient (``kind`` GRAD)
    or output (OUT); ``perturbed`` says whether it could (not where every value is
    NaN, nor where the scale is 0: all-zero gradients and parameters)."""

    def __init__(self, inner, tensor, rel, kind=GRAD):
        self.inner, self.tensor, self.rel, self.kind = inner, tensor, rel, kind
        self.name = inner.name
        self.version, self.convention = inner.version, inner.convention
        self.perturbed = False

    def run(self, case):
        got = self.inner.run(case)
        original = got[self.kind][self.tensor]
        grad = np.array(original, dtype=np.float64)
        finite = np.isfinite(grad)
        scale = scale_of(grad, FLOORS[self.kind](case))
        self.perturbed = bool(finite.any()) and scale > 0
        i = np.unravel_index(np.argmax(np.where(finite, np.abs(grad), -1.0)), grad.shape)
        grad[i] += self.rel * condition(case) * scale
        return {**got, self.kind: {**got[self.kind], self.tensor: grad.astype(original.dtype)}}


@pytest.mark.gradparity_matrix
@settings(profile(), max_examples=3)
@given(data=st.data())
def test_perturbed_gradient_is_flagged(layer, framework, dtype, data, runner_for):
    adapter = runner_for(framework)
    case = data.draw(cases(layer, dtype), label="case")
    divergence = known_divergence(case, framework)
    # An unbounded divergence may explain any error in its (narrow) cases: nothing to prove there.
    assume(divergence is None or divergence.bound is not None)
    kind = OUT if layer_of(case).vjp is None else GRAD  # a forward-only entry: its outputs are what it checks
    honest = {r["name"]: r["status"] for r in check(case, Oracle(), adapter) if r["kind"] == kind}
    passing = sorted(t for t, s in honest.items() if s in ("pass", "known_divergence"))
    assume(passing)
    tensor = data.draw(st.sampled_from(passing), label="tensor")
    perturbed = Perturbed(adapter, tensor, CANARY[dtype], kind)
    rows = {r["name"]: r for r in check(case, Oracle(), perturbed) if r["kind"] == kind}
    assume(perturbed.perturbed)  # all NaN (Adam, eps 0, zero gradient) or all zero: nothing to measure against
    assert rows[tensor]["status"] == "fail", (
        f"{case.describe()}: {tensor} perturbed by {CANARY[dtype]} of its scale was not flagged: {rows[tensor]}")
