"""The suite: every layer's outputs and gradients, in every framework and dtype,
against the float64 oracle on the same numbers.

``test_gradients_match_reference`` checks the planned cases of a layer x
framework x dtype (``plan.py``), the framework in each execution mode asked for
(``--modes``; a compiled mode also measures each row's distance from eager):
every declared edge the framework can run,
then configurations not seen yet; every case is checked and every failure
listed, and the group's coverage (real cases, configurations, edges reached)
is held to the profile's floors. ``test_gradients_explore`` lets hypothesis
draw more (the thorough profile), where it can shrink a failure.
"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradparity.reference import Oracle
from gradparity.reports.compare import check, with_eager_distance
from gradparity.reports.coverage import shortfall
from gradparity.tests.plan import plan
from gradparity.tests.plugin import active_profile, failure_message, profile
from gradparity.tests.strategies import cases


def _failing(rows):
    return [r for r in rows if r["status"] in ("fail", "error")]


@pytest.mark.gradparity_matrix
def test_gradients_match_reference(layer, framework, dtype, runner_for, recorder):
    runner = runner_for(framework)
    mode = getattr(runner, "mode", "eager")
    planned = plan(layer, framework, dtype, active_profile().plan_for(mode), runner)
    floors = active_profile().floors_for(mode)
    recorder.census({**planned.census(), "floors": floors})
    if not planned.cases:  # the framework, in this mode, can express none of the layer (the census says why)
        pytest.skip(f"{framework} cannot run {layer}: " + "; ".join(planned.refused))
    failures, checked = [], []
    for case in planned.cases:
        recorder.running(case)
        rows = recorder.add(with_eager_distance(check(case, Oracle(), runner), case, runner), case)
        checked += rows
        if _failing(rows):
            failures.append(failure_message(case, _failing(rows)))
    assert not failures, f"{len(failures)} of {len(planned.cases)} planned cases failed:\n" + "\n".join(failures)
    short = shortfall(checked, planned.census(), floors)
    assert not short, f"coverage below the {active_profile().name} profile's floors: " + "; ".join(short)


@pytest.mark.gradparity_matrix
@pytest.mark.gradparity_explore
@settings(profile(), suppress_health_check=[*profile().suppress_health_check, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_gradients_explore(layer, framework, dtype, data, runner_for, recorder, explored):
    runner = runner_for(framework)
    case = data.draw(cases(layer, dtype, runner=runner), label="case")
    recorder.running(case)
    bad = _failing(explored.add(with_eager_distance(check(case, Oracle(), runner), case, runner), case))
    assert not bad, failure_message(case, bad)
