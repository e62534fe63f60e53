"""The suite proves it can fail: a gradient perturbed by a small relative amount
must be flagged, for every layer, framework and dtype."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gradparity.reference import GRAD, Oracle, condition
from gradparity.reports.compare import FLOORS, check, scale_of
from gradparity.reports.tolerances import known_divergence
from gradparity.tests.plugin import profile
from gradparity.tests.strategies import cases

# Relative to the gradient's scale: ~840 eps in float32, ~4.5e9 eps in float64.
# Every tolerance, and every bound of a known divergence, must sit below these.
CANARY = {"float32": 1e-4, "float64": 1e-6}


class Perturbed:
    """An adapter that adds ``rel * condition * scale`` (what the comparison measures
    errors against) to the largest element of one gradient."""

    def __init__(self, inner, tensor, rel):
        self.inner, self.tensor, self.rel = inner, tensor, rel
        self.name = inner.name
        self.version, self.convention = inner.version, inner.convention

    def run(self, case):
        got = self.inner.run(case)
        original = got[GRAD][self.tensor]
        grad = np.array(original, dtype=np.float64)
        i = np.unravel_index(np.argmax(np.abs(grad)), grad.shape)
        grad[i] += self.rel * condition(case) * scale_of(grad, FLOORS[GRAD](case))
        return {**got, GRAD: {**got[GRAD], self.tensor: grad.astype(original.dtype)}}


@pytest.mark.gradparity_matrix
@settings(profile(), max_examples=3)
@given(data=st.data())
def test_perturbed_gradient_is_flagged(layer, framework, dtype, data, runner_for):
    adapter = runner_for(framework)
    case = data.draw(cases(layer, dtype), label="case")
    divergence = known_divergence(case, framework)
    # An unbounded divergence may explain any error in its (narrow) cases: nothing to prove there.
    assume(divergence is None or divergence.bound is not None)
    honest = {r["name"]: r["status"] for r in check(case, Oracle(), adapter) if r["kind"] == GRAD}
    passing = sorted(t for t, s in honest.items() if s in ("pass", "known_divergence"))
    assume(passing)
    tensor = data.draw(st.sampled_from(passing), label="tensor")
    rows = {r["name"]: r for r in check(case, Oracle(), Perturbed(adapter, tensor, CANARY[dtype])) if r["kind"] == GRAD}
    assert rows[tensor]["status"] == "fail", (
        f"{case.describe()}: {tensor} perturbed by {CANARY[dtype]} of its scale was not flagged: {rows[tensor]}")
