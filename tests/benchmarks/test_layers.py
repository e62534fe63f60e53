"""Forward + backward timings at realistic sizes: the oracle against each framework.

Run: ``pytest tests/benchmarks --benchmark-enable``. One group per layer, members
``oracle``, ``torch``, ``tensorflow``; the ratio oracle/torch is what a slow
oracle costs hypothesis. In the ordinary test run (``--benchmark-disable``)
each member runs once, which keeps the benchmarks working.
"""

import pytest

from adapters import ADAPTERS
from reference import LAYERS, evaluate
from tests.strategies import fixed_case

# layer -> (dims, attrs) at a size a real network uses, float64.
BENCH = {
    # ---- convolution and pooling
    # ---- normalization, embedding, dropout
}

MEMBERS = ["oracle", *ADAPTERS]


@pytest.mark.parametrize("member", MEMBERS)
@pytest.mark.parametrize("layer", list(BENCH))
def test_forward_backward(benchmark, layer, member, adapter_for):
    if layer not in LAYERS:
        pytest.skip(f"{layer} is not in the catalogue")
    dims, attrs = BENCH[layer]
    case = fixed_case(layer, "float64", dims, attrs)
    benchmark.group = layer
    benchmark.name = member
    run = evaluate if member == "oracle" else adapter_for(member).run
    result = benchmark(run, case)
    assert set(result.grads) == set(evaluate(case).grads)
