"""The suite: every layer's output and gradients, in every framework and dtype,
against the float64 oracle on the same numbers."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gradparity.reports.compare import check
from gradparity.tests.params import failure_message, layer_framework_dtype
from gradparity.tests.strategies import cases


@pytest.mark.parametrize("layer, framework, dtype", layer_framework_dtype())
@given(data=st.data())
def test_gradients_match_reference(layer, framework, dtype, data, adapter_for, recorder):
    adapter = adapter_for(framework)
    case = data.draw(cases(layer, dtype), label="case")
    rows = recorder.add(check(case, adapter), case)
    bad = [r for r in rows if r["status"] in ("fail", "error")]
    assert not bad, failure_message(case, bad)
