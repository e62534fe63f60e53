"""Forward + backward timings at realistic sizes: the oracle against each framework.

Run: ``pytest tests/benchmarks --benchmark-enable``. One group per layer, members
``oracle``, ``torch``, ``tensorflow``; the ratio oracle/torch is what a slow
oracle costs hypothesis. In the ordinary test run (``--benchmark-disable``)
each member runs once, which keeps the benchmarks working.
"""

import pytest

from gradparity.adapters import ADAPTERS

pytest.importorskip("pytest_benchmark", reason="the benchmarks need pytest-benchmark (the test extra)")

from gradparity.reference import GRAD, LAYERS, Oracle
from gradparity.tests.strategies import fixed_case

# layer -> (dims, attrs[, optional arrays left out]) at a size a real network uses, float64;
# every option a framework may lack (an LSTM projection, PyTorch's extra attention keys,
# a float attention mask) off, so every member runs the same layer.
BENCH = {
    # x (8, 16, 32, 32), 32 filters 3x3 with bias, 'same' padding: out (8, 32, 32, 32)
    "conv2d": ({"N": 8, "G": 1, "Cg": 16, "Og": 32, "kH": 3, "kW": 3, "OH": 32, "OW": 32,
                "slack_h": 0, "slack_w": 0, "pad_mode": 1},
               {"batched": True, "stride_h": 1, "stride_w": 1, "dilation_h": 1, "dilation_w": 1, "groups": 1,
                "padding": "same",
                "pad_top": 0, "pad_bottom": 0, "pad_left": 0, "pad_right": 0}),
    # the same x, ResNet's stem pooling: 3x3 window, stride 2, padding 1: out (8, 16, 16, 16)
    "max_pool2d": ({"N": 8, "C": 16, "kH": 3, "kW": 3, "OH": 16, "OW": 16, "slack_h": 1, "slack_w": 1,
                    "pad_mode": 2},
                   {"batched": True, "kernel_h": 3, "kernel_w": 3, "stride_h": 2, "stride_w": 2, "padding": "explicit",
                    "pad_h": 1, "pad_w": 1, "dilation_h": 1, "dilation_w": 1, "ceil_mode": False}),
    # the same x, training-mode statistics
    "batch_norm": ({"N": 8, "C": 16, "spatial": (32, 32)}, {"eps": 1e-5}),
    # a sequence batch: 16 sequences of 50 steps, 32 features, 64 hidden units
    "lstm": ({"N": 16, "T": 50, "I": 32, "H": 64}, {"proj_size": 0}),
    # self-attention-sized: batch 8, 64 queries and keys, d = 64 in 4 heads of 16, both masks (a third dropped)
    "multi_head_attention": ({"N": 8, "Lq": 64, "Lk": 64, "heads": 4, "D": 16},
                             {"num_heads": 4, "need_weights": False, "add_bias_kv": False, "add_zero_attn": False},
                             ("attn_bias",)),
}

MEMBERS = ["oracle", *ADAPTERS]


@pytest.mark.parametrize("member", MEMBERS)
@pytest.mark.parametrize("layer", list(BENCH))
def test_forward_backward(benchmark, layer, member, runner_for):
    if layer not in LAYERS:
        pytest.skip(f"{layer} is not in the catalogue")
    dims, attrs, *left_out = BENCH[layer]
    case = fixed_case(layer, "float64", dims, attrs)
    if left_out:
        case = case.replace(arrays={k: v for k, v in case.arrays.items() if k not in left_out[0]})
    benchmark.group = layer
    benchmark.name = member
    runner = Oracle() if member == "oracle" else runner_for(member)
    result = benchmark(runner.run, case)
    assert set(result[GRAD]) == set(Oracle().run(case)[GRAD])
