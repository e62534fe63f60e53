"""Whole models: the oracle's chain across layers, and the first divergent layer named.

A fault put into one layer of a framework's model on purpose (``adapters.base.FAULT``:
that layer's output, or the gradient it sends back, scaled by 1.01 in float32) must be
found at that layer, in that direction, in every model and framework; a known
divergence of a layer inside a model must be carried to the model's rows.
"""

import numpy as np
import pytest

from gradparity.adapters import ADAPTERS, base
from gradparity.reference import COT, GRAD, LAYERS, OUT, Oracle, evaluate
from gradparity.reference.models import exact_kinks, local, steps_of
from gradparity.reports.compare import check
from gradparity.reports.localize import diverging_steps
from gradparity.tests.strategies import fixed_case

MODELS = [name for name, layer in LAYERS.items() if layer.family == "models"]
# A middle step of each model: its inputs and the gradient it receives agree when it is not at fault.
FAULTY = {"model_mlp": "3:dense", "model_cnn": "4:conv2d", "model_resnet": "10:batch_norm",
          "model_sequence": "2:masked_lstm", "model_transformer": "4:dense"}
SIZES = {"model_mlp": {"N": 3, "D": 4, "H": 5, "K": 3, "L": 3},
         "model_cnn": {"N": 2, "C": 2, "H": 6, "W": 6, "F1": 2, "F2": 3, "k1": 3, "k2": 2, "K": 3},
         "model_resnet": {"N": 2, "C": 2, "H": 4, "W": 4, "F": 2, "k": 3, "B": 2, "K": 3},
         "model_sequence": {"N": 2, "T": 5, "V": 6, "E": 3, "H": 4, "K": 3},
         "model_transformer": {"N": 2, "L": 4, "heads": 2, "D": 2, "F": 4, "K": 3}}


ATTRS = {"model_mlp": {"activation": "relu", "residual": False}, "model_cnn": {"head": "flatten"},
         "model_sequence": {"cell": "masked_lstm"}, "model_transformer": {"norm": "layer_norm"}}


def _case(name, dtype="float64", **attrs):
    return fixed_case(name, dtype, SIZES[name], {**ATTRS.get(name, {}), **attrs}, seed=3)


def _runner(framework):
    runner = ADAPTERS[framework]
    ok, why = runner.available()
    if not ok:
        pytest.skip(why)
    return runner


def test_every_model_has_a_step_to_break():
    assert sorted(FAULTY) == sorted(MODELS)
    for name in MODELS:
        case = _case(name)
        assert FAULTY[name] in [s.name for s in steps_of(name, case.arrays, case.attrs)]


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
@pytest.mark.parametrize("name", MODELS)
def test_a_model_agrees_with_the_oracle_and_names_no_divergence(name, framework):
    rows = check(_case(name, "float32"), Oracle(), _runner(framework))
    assert {r["status"] for r in rows} == {"pass"}, [(r["kind"], r["name"], r["detail"]) for r in rows
                                                     if r["status"] != "pass"]
    assert {r["first_divergence"] for r in rows} == {""}
    kinds = {r["kind"] for r in rows}
    assert {OUT, COT, GRAD} <= kinds  # every layer's output and the cotangent arriving there, compared


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
@pytest.mark.parametrize("name", MODELS)
def test_broken_on_purpose_a_faulty_layer_is_named_as_the_first_divergence(name, framework, direction, monkeypatch):
    runner = _runner(framework)
    monkeypatch.setattr(base, "FAULT", {"step": FAULTY[name], "direction": direction, "scale": 1.01})
    rows = check(_case(name, "float32"), Oracle(), runner)
    assert any(r["status"] == "fail" for r in rows)
    assert {r["first_divergence"] for r in rows} == {f"{direction} {FAULTY[name]}"}


def test_the_steps_are_judged_each_on_its_own_inputs():
    """The oracle recomputes each step from the framework's values: a step fed a wrong input by
    the step before, and computing right from it, does not diverge."""
    case = _case("model_mlp")
    truth = evaluate(case)
    steps = truth.residuals["steps"]  # 1:dense 2:relu 3:dense 4:relu 5:dense 6:relu 7:dense 8:cross_entropy
    answer = {kind: dict(truth.outputs[kind]) for kind in (OUT, COT, GRAD)}
    rtol = {(kind, name): 1e-12 for kind in answer for name in answer[kind]}
    assert diverging_steps(steps, local("model_mlp", case, answer[OUT], answer[COT]), answer, rtol) == []

    off = {kind: dict(named) for kind, named in answer.items()}
    off[OUT]["3:dense"] = answer[OUT]["3:dense"] * 1.01  # 3:dense off; 4:relu and the rest follow it exactly
    rest = local("model_mlp", case, off[OUT], off[COT])
    for s in steps[3:7]:  # what the steps after 3:dense compute from its output
        off[OUT][s.name] = rest[OUT][s.name]
    found = diverging_steps(steps, local("model_mlp", case, off[OUT], off[COT]), off, rtol)
    assert [(d, s.name) for d, s in found][:1] == [("forward", "3:dense")]
    assert "4:relu" not in [s.name for d, s in found if d == "forward"]


@pytest.mark.parametrize("name, step, key", [
    ("model_mlp", "2:gelu", "tf-gelu-float32-constants"),
    ("model_transformer", "2:multi_head_attention", "keras-attention-float32-scale")])
def test_a_known_divergence_of_a_layer_inside_a_model_explains_the_model(name, step, key):
    """Keras' gelu rounds its constants to float32, its attention its scale: in float64 models
    everything after that layer is off by ~1e-9, explained there and named."""
    rows = check(_case(name, activation="gelu") if name == "model_mlp" else _case(name), Oracle(),
                 _runner("tensorflow"))
    off = [r for r in rows if r["status"] != "pass"]
    assert off and {r["status"] for r in off} == {"known_divergence"}
    assert {r["divergence"] for r in rows} == {key}
    assert {r["first_divergence"] for r in rows} == {f"forward {step}"}
    assert all(f"of {step}" in r["detail"] for r in off)


def test_broken_on_purpose_a_fault_after_a_known_divergence_still_fails(monkeypatch):
    """The transformer's attention diverges in a known way in float64 TensorFlow; a fault in a
    later layer is a second diverging step, which nothing explains."""
    monkeypatch.setattr(base, "FAULT", {"step": "4:dense", "direction": "forward", "scale": 1 + 1e-3})
    rows = check(_case("model_transformer"), Oracle(), _runner("tensorflow"))
    assert any(r["status"] == "fail" for r in rows)
    assert {r["first_divergence"] for r in rows} == {"forward 2:multi_head_attention"}


def test_an_exact_kink_inside_a_model_is_found():
    """A zero kernel makes a constant channel; batch norm maps it to beta = 0 exactly, on relu's kink."""
    case = _case("model_cnn", head="global_average")
    arrays = dict(case.arrays)
    arrays["4:conv2d.W"] = np.zeros_like(arrays["4:conv2d.W"])
    arrays["5:batch_norm.beta"] = np.zeros_like(arrays["5:batch_norm.beta"])
    kinked = case.replace(arrays=arrays)
    truth = evaluate(kinked)
    assert exact_kinks(truth.residuals, truth.outputs[COT]) == ["6:relu"]
    truth = evaluate(case)
    assert exact_kinks(truth.residuals, truth.outputs[COT]) == []
