"""Coverage: every example counts. The plan draws only what a framework can run, reaches
every edge it can, spends its cases on new configurations, and says what it cannot."""

import numpy as np
import pytest

from gradparity.adapters import ADAPTERS
from gradparity.reference import LAYERS, Oracle
from gradparity.reports.compare import check
from gradparity.reports.coverage import group_coverage, shortfall
from gradparity.tests.plan import config_key, plan
from gradparity.tests.plugin import PROFILES
from gradparity.tests.strategies import Refused, Seeded, draw_case

FLOORS = PROFILES["ci"].floors


def _row(case, status="pass", edges="", attrs=None):
    return {"case": case, "status": status, "edges": edges, "attrs": attrs or f"config-{case}"}


def test_shortfall_names_what_a_group_lacks():
    census = {"edges": {"batch_1": "", "unbatched": "Keras layers take a batch axis"}, "planned": 25,
              "exhausted": False}
    rows = [_row(f"c{i}", attrs=f"config-{i % 10}", edges="batch_1" if i == 0 else "") for i in range(18)]
    rows += [_row("n/a", status="not_applicable")]
    short = shortfall(rows, census, FLOORS)
    assert short == ["18 cases really ran (fewer than 20)", "10 distinct configurations among them (fewer than 15)"]
    rows = [_row(f"c{i}", attrs=f"config-{i}") for i in range(25)]
    assert shortfall(rows, census, FLOORS) == ["runnable edges not reached: batch_1"]
    rows[3]["edges"] = "batch_1, subnormal"
    assert shortfall(rows, census, FLOORS) == []
    assert group_coverage(rows, census)["not_runnable"] == {"unbatched": "Keras layers take a batch axis"}


def test_a_small_configuration_space_counts_every_configuration_it_has():
    census = {"edges": {}, "planned": 25, "exhausted": True}
    rows = [_row(f"c{i}", attrs=f"config-{i % 6}") for i in range(25)]
    assert shortfall(rows, census, FLOORS) == []
    assert shortfall(rows, {**census, "exhausted": False}, FLOORS) != []


@pytest.mark.parametrize("layer", ["conv2d", "conv_transpose2d", "max_pool2d", "masked_lstm", "cross_entropy"])
def test_a_plan_draws_only_what_its_framework_can_run_and_reaches_every_edge_it_can(layer):
    for name, runner in ADAPTERS.items():
        p = plan(layer, name, "float32", 25, runner)
        assert len(p.cases) == 25
        assert all(runner.refusal(case) is None for case in p.cases), name
        planned = [e for e, why in p.edges.items() if not why]
        for edge in LAYERS[layer].edges:
            if edge.name in planned:
                assert edge.reached(p.cases[p.slots.index(edge.name)]), (name, edge.name)
        assert len({config_key(c) for c in p.cases}) >= 20, name


def test_an_edge_a_framework_cannot_run_says_why():
    tensorflow = plan("conv2d", "tensorflow", "float32", 25, ADAPTERS["tensorflow"])
    assert "batch axis" in tensorflow.edges["unbatched"] and tensorflow.edges["depthwise"] == ""
    assert any("batch axis" in why for why in tensorflow.refused)
    torch = plan("conv2d", "torch", "float32", 25, ADAPTERS["torch"])
    assert torch.edges["unbatched"] == "" and not torch.refused


@pytest.mark.parametrize("layer, framework, edge, reason", [
    ("avg_pool2d", "tensorflow", "divisor_override_1", "no divisor_override"),
    ("conv_transpose2d", "tensorflow", "grouped", "no groups argument"),
    ("masked_lstm", "torch", "route_masking_layer", "keras.layers.Masking layer"),
    ("masked_lstm", "torch", "padded_output_repeat", "zero_output_for_mask=False")])
def test_an_edge_is_blamed_on_the_reason_all_its_draws_share(layer, framework, edge, reason):
    """Draws for an edge may be refused for other reasons as well (unbatched, say): the edge's
    own reason is the one every draw met, named alone."""
    why = plan(layer, framework, "float32", 25, ADAPTERS[framework]).edges[edge]
    assert reason in why and "draws)" not in why, why
    assert "batch axis" not in why and ("Masking" in why) == (edge == "route_masking_layer"), why


def test_plans_are_the_same_everywhere_and_for_every_framework_that_can_run_them():
    a = plan("dense", "torch", "float64", 25, ADAPTERS["torch"])
    b = plan("dense", "tensorflow", "float64", 25, ADAPTERS["tensorflow"])
    assert [c.id for c in a.cases] == [c.id for c in b.cases]  # no refusal: the same cases for both


def test_drawing_asks_the_runner_before_any_value():
    case = draw_case(Seeded(0), "conv2d", "float32", runner=ADAPTERS["tensorflow"], force={"batched": False})
    assert isinstance(case, Refused) and "batch axis" in case.reason


class _WithoutRefusals:
    """The TensorFlow adapter as a runner that does not say what it cannot express:
    what a strategy that drew unbatched inputs for TensorFlow would spend."""

    name = "tensorflow"

    def __init__(self):
        self.inner = ADAPTERS["tensorflow"]

    def __getattr__(self, attr):
        if attr in ("refusal", "refusals"):
            raise AttributeError(attr)
        return getattr(self.inner, attr)


def test_broken_on_purpose_unbatched_draws_for_tensorflow_fail_the_coverage_check():
    runner = ADAPTERS["tensorflow"]
    if not runner.available()[0]:
        pytest.skip(runner.available()[1])
    careless = plan("adaptive_avg_pool2d", "tensorflow", "float32", 25, _WithoutRefusals())
    rows = [r for case in careless.cases for r in check(case, Oracle(), runner)]
    assert any(r["status"] == "not_applicable" for r in rows)
    short = shortfall(rows, careless.census(), FLOORS)
    assert any("really ran" in s for s in short) and any("unbatched" in s for s in short), short
    careful = plan("adaptive_avg_pool2d", "tensorflow", "float32", 25, runner)
    rows = [r for case in careful.cases for r in check(case, Oracle(), runner)]
    assert shortfall(rows, careful.census(), FLOORS) == []
    assert np.all([r["status"] != "not_applicable" for r in rows])
