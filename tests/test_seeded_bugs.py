"""Bugs seeded on purpose where they once went unseen: each fires only at one declared
edge of one framework, or only on the path a training loop reads gradients from
(``loss.backward()`` and each leaf's ``.grad``). The ci profile's planned cases must
catch every one of them."""

import numpy as np
import pytest

from gradparity.reference import GRAD, LAYERS, Oracle
from gradparity.reports.compare import check
from gradparity.tests.plan import plan
from gradparity.tests.plugin import active_profile

SLIP = 1 + 1e-3  # far above every tolerance, far below anything a known divergence explains


class AtEdge:
    """The runner, with every gradient scaled by ``SLIP`` in the cases that reach ``edge``."""

    def __init__(self, inner, edge):
        self.inner, self.edge = inner, edge
        self.name, self.version, self.convention = inner.name, inner.version, inner.convention

    def run(self, case):
        got = self.inner.run(case)
        if not self.edge.reached(case):
            return got
        return {**got, GRAD: {n: (np.asarray(g) * SLIP).astype(g.dtype) for n, g in got[GRAD].items()}}


@pytest.mark.parametrize("layer, framework, edge", [
    ("conv2d", "tensorflow", "batch_1"),
    ("max_pool2d", "tensorflow", "stride_over_kernel"),
    ("conv2d", "torch", "depthwise"),
    ("batch_norm", "torch", "batch_1_spatial")])
def test_broken_on_purpose_a_bug_at_one_edge_is_caught_by_the_planned_cases(layer, framework, edge, runner_for):
    runner = runner_for(framework)
    (at,) = [e for e in LAYERS[layer].edges if e.name == edge]
    planned = plan(layer, framework, "float32", active_profile().plan_for("eager"), runner)
    broken = AtEdge(runner, at)
    caught = [case for case in planned.cases if at.reached(case)
              and any(r["status"] == "fail" for r in check(case, Oracle(), broken) if r["kind"] == GRAD)]
    assert caught, f"no planned {layer} case of {framework} reaches {edge}, or none flags a gradient off by {SLIP}"


def test_broken_on_purpose_a_hook_on_the_accumulated_gradient_is_seen(monkeypatch, runner_for):
    """A hook after AccumulateGrad changes only what ``.grad`` holds, as it would in a user's
    training loop; ``torch.autograd.grad`` would never run it."""
    runner = runner_for("torch")
    original = runner.builders.build["dense"]

    def slip(leaf):
        leaf.grad.mul_(SLIP)

    def hooked(tensors, attrs, dtype):
        built = original(tensors, attrs, dtype)
        for p in built.params:
            p.source.register_post_accumulate_grad_hook(slip)
        return built

    monkeypatch.setitem(runner.builders.build, "dense", hooked)
    planned = plan("dense", "torch", "float64", active_profile().plan_for("eager"), runner)
    rows = [r for case in planned.cases[:5] for r in check(case, Oracle(), runner) if r["kind"] == GRAD]
    assert any(r["status"] == "fail" for r in rows if r["name"] == "W")
    assert {r["status"] for r in rows if r["name"] == "x"} == {"pass"}
