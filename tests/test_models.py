"""Whole models: the oracle's chain across layers, and the first divergent layer named.

A fault put into one layer of a framework's model on purpose (``adapters.base.FAULT``:
that layer's output, or the gradient it sends back, scaled by 1.01 in float32) must be
found at that layer, in that direction, in every model and framework; a known
divergence of a layer inside a model must be carried to the model's rows.
"""

import ast

import numpy as np
import pytest

from gradparity.adapters import ADAPTERS, base
from gradparity.reference import COT, GRAD, LAYERS, OUT, Oracle, evaluate
from gradparity.reference.models import exact_kinks, local, steps_of
from gradparity.reports.compare import check
from gradparity.reports.localize import diverging_steps
from gradparity.tests.strategies import fixed_case

MODELS = [name for name, layer in LAYERS.items() if layer.family == "models"]
# Steps of each model to break: the first, one in the middle, one near the loss.
FAULTY = {"model_mlp": ("1:dense", "3:dense", "6:relu"), "model_cnn": ("1:conv2d", "4:conv2d", "7:dense"),
          "model_resnet": ("3:conv2d", "10:batch_norm", "16:dense"),
          "model_sequence": ("1:embedding", "2:masked_lstm", "3:dense"),
          "model_transformer": ("1:layer_norm", "2:multi_head_attention", "6:dense")}
SIZES = {"model_mlp": {"N": 3, "D": 4, "H": 5, "K": 3, "L": 3},
         "model_cnn": {"N": 2, "C": 2, "H": 6, "W": 6, "F1": 2, "F2": 3, "k1": 3, "k2": 2, "K": 3},
         "model_resnet": {"N": 2, "C": 2, "H": 4, "W": 4, "F": 2, "k": 3, "B": 2, "K": 3},
         "model_sequence": {"N": 2, "T": 5, "V": 6, "E": 3, "H": 4, "K": 3},
         "model_transformer": {"N": 2, "L": 4, "heads": 2, "D": 2, "F": 4, "K": 3}}


ATTRS = {"model_mlp": {"activation": "relu", "residual": False}, "model_cnn": {"head": "flatten"},
         "model_sequence": {"cell": "masked_lstm"}, "model_transformer": {"norm": "layer_norm"}}


def _case(name, dtype="float64", **attrs):
    return fixed_case(name, dtype, SIZES[name], {**ATTRS.get(name, {}), **attrs}, seed=3)


def _size(row) -> int:
    return int(np.prod(ast.literal_eval(row["shape"])))


def _runner(framework):
    runner = ADAPTERS[framework]
    ok, why = runner.available()
    if not ok:
        pytest.skip(why)
    return runner


def test_every_model_has_steps_to_break():
    assert sorted(FAULTY) == sorted(MODELS)
    for name in MODELS:
        case = _case(name)
        assert set(FAULTY[name]) <= {s.name for s in steps_of(name, case.arrays, case.attrs)}


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
@pytest.mark.parametrize("name", MODELS)
def test_a_model_agrees_with_the_oracle_and_names_no_divergence(name, framework):
    rows = check(_case(name, "float32"), Oracle(), _runner(framework))
    assert {r["status"] for r in rows} == {"pass"}, [(r["kind"], r["name"], r["detail"]) for r in rows
                                                     if r["status"] != "pass"]
    assert {r["first_divergence"] for r in rows} == {""}
    # The gradient's health on both sides: two norms differ by at most the norm of the difference,
    # which the passing row holds under sqrt(size) x atol.
    assert all(r["norm"] > 0 and abs(r["norm"] - r["reference_norm"]) <= np.sqrt(_size(r)) * r["atol"]
               for r in rows if r["kind"] == COT)
    kinds = {r["kind"] for r in rows}
    assert {OUT, COT, GRAD} <= kinds  # every layer's output and the cotangent arriving there, compared


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
@pytest.mark.parametrize("name, step", [(name, step) for name in MODELS for step in FAULTY[name]])
def test_broken_on_purpose_a_faulty_layer_is_named_as_the_first_divergence(name, step, framework, direction,
                                                                             monkeypatch):
    runner = _runner(framework)
    if direction == "backward" and step == "1:embedding":
        pytest.skip("the embedding's input is token ids: it sends no gradient back")
    monkeypatch.setattr(base, "FAULT", {"step": step, "direction": direction, "scale": 1.01})
    rows = check(_case(name, "float32"), Oracle(), runner)
    off = [r for r in rows if r["status"] != "pass"]
    assert off and {r["status"] for r in off} == {"fail"}
    assert {r["first_divergence"] for r in off} == {f"{step} ({direction})"}
    assert {r["first_divergence"] for r in rows if r["status"] == "pass"} == {""}


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
@pytest.mark.parametrize("name", MODELS)
def test_reading_the_layers_changes_no_gradient(name, framework):
    """The hooks and taps that read every layer's output and cotangent leave the model's own
    gradients exactly as without them."""
    runner, case = _runner(framework), _case(name, "float32")
    build = runner.builders.build[name]

    def untapped(t, a, dtype):
        built = build(t, a, dtype)
        return base.Built(built.apply, built.params)

    tapped = runner.run(case)
    runner.builders.build[name] = untapped
    try:
        untouched = runner.run(case)
    finally:
        runner.builders.build[name] = build
    assert COT in tapped and COT not in untouched
    assert tapped[GRAD].keys() == untouched[GRAD].keys()
    for n in tapped[GRAD]:
        np.testing.assert_array_equal(tapped[GRAD][n], untouched[GRAD][n], err_msg=n)
    np.testing.assert_array_equal(tapped[OUT]["loss"], untouched[OUT]["loss"])


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
    assert {r["first_divergence"] for r in off} == {f"{step} (forward)"}
    assert all(f"explained by {key} at {step}" in r["detail"] for r in off)


def test_broken_on_purpose_a_fault_after_a_known_divergence_still_fails(monkeypatch):
    """The transformer's attention diverges in a known way in float64 TensorFlow; a fault in a
    later layer is a second diverging step, which nothing explains."""
    monkeypatch.setattr(base, "FAULT", {"step": "4:dense", "direction": "forward", "scale": 1 + 1e-3})
    rows = check(_case("model_transformer"), Oracle(), _runner("tensorflow"))
    off = [r for r in rows if r["status"] != "pass"]
    assert off and {r["status"] for r in off} == {"fail"}
    assert {r["first_divergence"] for r in off} == {"2:multi_head_attention (forward)"}


def test_broken_on_purpose_a_step_off_by_more_than_its_divergence_bound_still_fails(monkeypatch):
    """keras-attention-float32-scale explains ~1e-9 in float64 attention (bound 5e-7); the same
    step off by 1e-6 is more than it explains, so the model's rows fail at that step."""
    monkeypatch.setattr(base, "FAULT", {"step": "2:multi_head_attention", "direction": "forward",
                                        "scale": 1 + 1e-6})
    rows = check(_case("model_transformer"), Oracle(), _runner("tensorflow"))
    off = [r for r in rows if r["status"] != "pass"]
    assert off and {r["status"] for r in off} == {"fail"}
    assert {r["first_divergence"] for r in off} == {"2:multi_head_attention (forward)"}


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
