"""The suite: every layer's outputs and gradients, in every framework and dtype,
against the float64 oracle on the same numbers."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradparity.reference import Oracle
from gradparity.reports.compare import check
from gradparity.tests.plugin import failure_message, profile
from gradparity.tests.strategies import cases


@pytest.mark.gradparity_matrix
@settings(profile())
@given(data=st.data())
def test_gradients_match_reference(layer, framework, dtype, data, runner_for, recorder):
    runner = runner_for(framework)
    case = data.draw(cases(layer, dtype), label="case")
    recorder.running(case)
    rows = recorder.add(check(case, Oracle(), runner), case)
    bad = [r for r in rows if r["status"] in ("fail", "error")]
    assert not bad, failure_message(case, bad)
