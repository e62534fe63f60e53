"""Whole models: one check of an 8-block MLP and of the small CNN, and its parts.

Run: ``pytest tests/benchmarks/test_models.py --benchmark-enable``. One group per
model, members: ``oracle`` (the exact answer with every layer's output and
cotangent, and the condition number measured by perturbation: the oracle's whole
share of a check), ``torch`` / ``tensorflow`` (the framework's network, one forward
and one backward with the taps), ``localize`` (the oracle recomputing every layer
from a framework's own values, what a case that did not pass adds), and
``check-torch`` / ``check-tensorflow`` (all of it, as the suite runs it).
"""

import pytest

pytest.importorskip("pytest_benchmark", reason="the benchmarks need pytest-benchmark (the test extra)")

from gradparity.adapters import ADAPTERS
from gradparity.reference import COT, GRAD, OUT, Oracle, evaluate
from gradparity.reference.models import local
from gradparity.reports.compare import check
from gradparity.tests.strategies import fixed_case

# model -> (dims, attrs): an MLP of 8 blocks of width 64 on a batch of 32; the zoo's CNN on 8 images 3 x 16 x 16
BENCH = {
    "model_mlp": ({"N": 32, "D": 32, "H": 64, "K": 10, "L": 8}, {"activation": "relu", "residual": False}),
    "model_cnn": ({"N": 8, "C": 3, "H": 16, "W": 16, "F1": 8, "F2": 16, "k1": 3, "k2": 3, "K": 10},
                  {"head": "global_average"}),
}
MEMBERS = ["oracle", *ADAPTERS, "localize", *(f"check-{fw}" for fw in ADAPTERS)]


def _oracle(case):
    truth = evaluate(case)
    return truth.outputs, truth.condition


@pytest.mark.parametrize("member", MEMBERS)
@pytest.mark.parametrize("model", list(BENCH))
def test_model_check(benchmark, model, member, runner_for):
    dims, attrs = BENCH[model]
    case = fixed_case(model, "float32", dims, attrs)
    benchmark.group = model
    benchmark.name = member
    if member == "oracle":
        outputs, kappa = benchmark(_oracle, case)
        assert kappa >= 1 and set(outputs) >= {OUT, GRAD, COT}
    elif member == "localize":
        answer = runner_for("torch").run(case)
        recomputed = benchmark(local, model, case, answer[OUT], answer[COT])
        assert set(recomputed[GRAD]) == set(answer[GRAD])
    elif member.startswith("check-"):
        rows = benchmark(check, case, Oracle(), runner_for(member.removeprefix("check-")))
        assert rows and {r["status"] for r in rows} <= {"pass", "known_divergence"}
    else:
        result = benchmark(runner_for(member).run, case)
        assert set(result[GRAD]) == set(Oracle().run(case)[GRAD])
