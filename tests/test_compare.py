"""The comparison itself: statuses, NaN/Inf agreement, errors that become rows."""

import json

import numpy as np
import pytest

from gradparity.adapters.base import NotApplicable
from gradparity.reference import GRAD, OUT, Case, Oracle
from gradparity.reports.compare import _failure, check, tensor_errors
from gradparity.reports.conditions import zero_where_nan
from gradparity.reports.divergences import Divergence
from gradparity.reports.tolerances import DEFAULT, EPS


def relu_case(x):
    x = np.asarray(x, dtype=np.float64)
    return Case("relu", "float64", {}, {"x": x}, {"y": np.linspace(-1.0, 2.0, x.size).reshape(x.shape)})


class Scripted:
    """A fake framework that returns the oracle's answer, edited by ``edit``."""

    name, convention = "scripted", staticmethod(lambda layer: None)

    def __init__(self, edit=lambda out, grads: (out, grads)):
        self.edit = edit

    def version(self):
        return "1.0"

    def run(self, case):
        ref = Oracle().run(case)
        out, grads = self.edit(ref[OUT]["y"].copy(), {k: v.copy() for k, v in ref[GRAD].items()})
        return {OUT: {"y": out}, GRAD: grads}


def check_oracle(case, runner):
    return check(case, Oracle(), runner)


def statuses(rows):
    return {r["name"]: r["status"] for r in rows}


def test_exact_answer_passes_with_zero_error():
    rows = check_oracle(relu_case([[1.0, -2.0, 0.0]]), Scripted())
    assert statuses(rows) == {"y": "pass", "x": "pass"}
    assert all(r["max_abs_err"] == 0.0 for r in rows)


def test_error_just_above_tolerance_fails_and_just_below_passes():
    case = relu_case([[1.0, 2.0, 3.0]])
    atol = DEFAULT["float64"].rtol * 2.0  # scale: max|gx| = max|g| = 2

    def nudge(by):
        return Scripted(lambda out, g: (out, {"x": g["x"] + np.array([[by, 0, 0]])}))

    assert statuses(check_oracle(case, nudge(0.5 * atol)))["x"] == "pass"
    assert statuses(check_oracle(case, nudge(2.0 * atol)))["x"] == "fail"


@pytest.mark.parametrize("expected, actual, ok", [
    ([np.nan, 1.0], [np.nan, 1.0], True),        # NaN where the oracle has NaN: agreement
    ([np.nan, 1.0], [0.0, 1.0], False),          # the framework lost a NaN
    ([0.0, 1.0], [np.nan, 1.0], False),          # the framework made a NaN
    ([np.inf, 1.0], [np.inf, 1.0], True),
    ([np.inf, 1.0], [-np.inf, 1.0], False),
    ([1.0, 1.0], [1.0, np.inf], False),
])
def test_non_finite_values_are_compared_position_by_position(expected, actual, ok):
    m = tensor_errors(np.array(expected), np.array(actual), 0.0, "float64", 1e-10)
    assert m["ok"] is ok


def test_what_each_side_returned_and_what_was_flushed_are_said():
    m = tensor_errors(np.array([np.nan, np.inf, 1.0]), np.array([0.0, np.inf, 1.0]), 0.0, "float64", 1e-10)
    assert m["nonfinite"] == "expected 1 NaN, 1 +Inf; got 1 +Inf; 1 position(s) differ"
    assert tensor_errors(np.ones(2), np.ones(2), 0.0, "float64", 1e-10)["nonfinite"] == ""
    tiny = float(np.finfo(np.float32).tiny)
    m = tensor_errors(np.array([tiny / 4, -tiny / 8, 1.0]), np.array([0.0, -tiny / 8, 1.0]), 0.0, "float32", 1e-5)
    assert m["flushed"] == "1 of 2" and m["ok"]  # invisible to the tolerance, said in its own column


def test_an_outcome_divergence_explains_only_where_non_finite_values_land():
    div = Divergence("k", {("relu",): lambda case, ev: True}, outcome=zero_where_nan)
    exact = np.array([np.nan, 1.0])
    for got, explained in [([0.0, 1.0], True), ([0.0, 1.1], False)]:  # a finite position off too: still a failure
        row = {**tensor_errors(exact, np.array(got), 0.0, "float64", 1e-10), "status": "fail"}
        assert div.explains(row, exact, np.array(got)) is explained
    finite_off = tensor_errors(np.array([2.0, 1.0]), np.array([2.0, 1.1]), 0.0, "float64", 1e-10)
    assert not div.explains({**finite_off, "status": "fail"}, np.array([2.0, 1.0]), np.array([2.0, 1.1]))


def test_shape_mismatch_fails_with_both_shapes():
    m = tensor_errors(np.zeros((2, 3)), np.zeros((3, 2)), 0.0, "float64", 1e-10)
    assert not m["ok"] and "(3, 2)" in m["detail"] and "(2, 3)" in m["detail"]


def test_a_framework_crash_becomes_error_rows_and_does_not_raise():
    def boom(out, grads):
        raise RuntimeError("kernel exploded")

    rows = check_oracle(relu_case([[1.0]]), Scripted(boom))
    assert statuses(rows) == {"y": "error", "x": "error"}
    assert all("kernel exploded" in r["detail"] for r in rows)


def test_a_missing_gradient_is_an_error_row():
    rows = check_oracle(relu_case([[1.0]]), Scripted(lambda out, grads: (out, {})))
    assert statuses(rows) == {"y": "pass", "x": "error"}


def test_not_applicable_is_a_row_with_the_reason():
    def inexpressible(out, grads):
        raise NotApplicable("no such padding here")

    rows = check_oracle(relu_case([[1.0]]), Scripted(inexpressible))
    assert statuses(rows) == {"y": "not_applicable", "x": "not_applicable"}
    assert rows[0]["detail"] == "no such padding here"


def test_rows_carry_the_report_schema():
    row = check_oracle(relu_case([[1.0, -1.0]]), Scripted())[1]
    for column in ["layer", "framework", "framework_version", "reference", "dtype", "case", "kind", "name", "shape",
                   "max_abs_err", "max_rel_err", "err_eps", "atol", "rtol", "status", "detail", "reproduce"]:
        assert column in row
    assert row["err_eps"] == row["max_rel_err"] / EPS["float64"]


def test_one_oracle_forward_per_check(monkeypatch):
    import dataclasses

    from gradparity.reference import LAYERS

    case = relu_case([[1.0, -2.0, 0.0]])
    answer = Oracle().run(case)
    calls = []
    layer = LAYERS["relu"]

    def counted(**kwargs):
        calls.append(1)
        return layer.forward(**kwargs)

    monkeypatch.setitem(LAYERS, "relu", dataclasses.replace(layer, forward=counted))

    class Fixed(Scripted):
        def run(self, case):
            return answer

    assert statuses(check_oracle(case, Fixed())) == {"y": "pass", "x": "pass"}
    assert len(calls) == 1


def test_a_case_that_would_abort_tensorflow_is_not_run_and_says_why():
    from gradparity.adapters import ADAPTERS

    tf = ADAPTERS["tensorflow"]
    if not tf.available()[0]:
        pytest.skip(tf.available()[1])
    rng = np.random.default_rng(0)
    attrs = {"batched": True, "stride": 3, "dilation": 3, "groups": 2, "padding": "valid", "pad_left": 0, "pad_right": 0}
    case = Case("conv1d", "float64", attrs, {"x": rng.standard_normal((1, 4, 11)), "W": rng.standard_normal((4, 2, 2))},
                {"y": rng.standard_normal((1, 4, 3))})
    assert "corrupts memory" in tf.refusal(case)  # the strategies never draw it for TensorFlow
    rows = check(case, Oracle(), tf)  # without the refusal this aborts the process (heap corruption in XLA)
    assert {r["status"] for r in rows} == {"not_applicable"}
    assert all("XLA's CPU gradient of a float64 grouped Conv1D with dilation 3" in r["detail"] for r in rows)


def rnn_case(steps=5):
    rng = np.random.default_rng(3)
    n, i, h = 2, 3, 2
    arrays = {"x": rng.standard_normal((n, steps, i)), "h0": rng.standard_normal((n, h)),
              "W_ih": rng.standard_normal((i, h)), "W_hh": rng.standard_normal((h, h)) / 2,
              "b_ih": rng.standard_normal(h), "b_hh": rng.standard_normal(h)}
    cot = {"y": np.zeros((n, steps, h)), "h_n": rng.standard_normal((n, h))}  # a loss on the last state only
    return Case("rnn", "float64", {"nonlinearity": "tanh"}, arrays, cot)


def test_a_layer_through_time_gets_per_step_gradient_norms_with_both_profiles():
    case = rnn_case()
    gx = Oracle().run(case)[GRAD]["x"]

    def step_two_off(out, grads):  # the gradient reaching step 2 off by 1e-9 of the scale
        grads = dict(grads)
        grads["x"] = gx.copy()
        grads["x"][:, 2] *= 1 + 1e-6
        return out, grads

    runner = Scripted(step_two_off)
    runner.run = lambda c, _run=runner.run: {**_run(c), OUT: Oracle().run(c)[OUT]}
    rows = {(r["kind"], r["name"]): r for r in check_oracle(case, runner)}
    flow = rows[("flow", "x")]
    expected = [float(np.sqrt((gx[:, t] ** 2).sum())) for t in range(5)]
    profile = json.loads(flow["profile"])
    assert profile["reference"] == pytest.approx(expected, rel=1e-5) and flow["shape"] == "(5,)"
    assert profile["candidate"][2] == pytest.approx(expected[2] * (1 + 1e-6), rel=1e-5)
    assert flow["status"] == "fail" and rows[("grad", "x")]["status"] == "fail"
    # a norm over N * I = 6 elements per step: sqrt(6) times the gradient's tolerance, said so
    assert flow["rtol"] == pytest.approx(rows[("grad", "x")]["rtol"] * np.sqrt(6))
    assert "sqrt(6)" in flow["tolerance_reason"]
    assert all(r["profile"] == "" for key, r in rows.items() if key[0] != "flow")


# ---- element-wise precision: errors in ulps of the element itself

def test_an_ulp_is_the_dtype_spacing_at_the_exact_value():
    from gradparity.reports.compare import ulp_of

    assert ulp_of(1.0, 0.0, "float64") == 2.0 ** -52
    assert ulp_of(1.0, -1e-20, "float64") == 2.0 ** -53  # exact a hair below 1: the binade below
    assert ulp_of(-3.0, 0.0, "float32") == 2.0 ** -22
    assert ulp_of(0.75, 1e-30, "float32") == 2.0 ** -24


def test_zeros_subnormals_and_unresolved_elements_are_left_out_and_counted():
    from gradparity.reports.compare import ulp_errors

    hi = np.array([0.0, 1e-310, 1.0, 2.0, 3.0])
    resolved = np.array([True, True, True, False, True])
    got = np.array([1e-300, 0.0, 1.0 + 2.0 ** -52, 5.0, np.nan])
    m = ulp_errors(got, hi, np.zeros(5), resolved, "float64")
    assert (m["zero"], m["subnormal"], m["unresolved"], m["measured"]) == (1, 1, 1, 2)
    assert np.isnan(m["err"][[0, 1, 3]]).all()
    assert m["err"][2] == 1.0 and m["err"][4] == np.inf  # NaN where the exact value is normal: no digit left


class Exactly:
    """A fake framework returning the precision oracle's answer rounded to the case
    dtype, with ``ulps`` ulps added to element ``at`` of tensor (kind, name)."""

    name, convention = "exactly", staticmethod(lambda layer: None)

    def __init__(self, kind=GRAD, name="x", at=None, ulps=0.0):
        self.kind, self.tensor, self.at, self.ulps = kind, name, at, ulps

    def version(self):
        return "1.0"

    def run(self, case):
        from gradparity.reference.precise import exact
        from gradparity.reports.compare import ulp_of

        out = {k: {n: e.hi.astype(case.dtype) for n, e in named.items()} for k, named in exact(case).items()}
        if self.ulps:
            e = exact(case)[self.kind][self.tensor]
            t = out[self.kind][self.tensor].astype(np.float64)
            t[self.at] = e.hi[self.at] + self.ulps * ulp_of(e.hi[self.at], e.lo[self.at], case.dtype)
            out[self.kind][self.tensor] = t.astype(case.dtype)
        return out


def sigmoid_tail_case():
    x = np.array([-30.0, 0.5, 2.0])  # sigma'(-30) = 9.4e-14: a tail element far below the tensor's scale
    return Case("sigmoid", "float64", {}, {"x": x}, {"y": np.array([0.7, -1.3, 0.4])})


def test_a_few_ulps_on_a_tail_element_are_caught_by_the_precision_check_alone():
    from gradparity.reports.compare import enforce_precision
    from gradparity.reports.tolerances import PRECISION

    case = sigmoid_tail_case()
    exact_rows = {r["name"]: r for r in check_oracle(case, Exactly())}
    assert exact_rows["x"]["precision"] == "ok" and exact_rows["x"]["max_ulp_err"] <= 0.5
    one = {r["name"]: r for r in check_oracle(case, Exactly(at=0, ulps=1.0))}
    assert one["x"]["max_ulp_err"] == pytest.approx(1.0, abs=0.5) and one["x"]["precision"] == "ok"

    k = 2 * PRECISION.ulps  # an error 1e-27 of the tensor's scale: invisible to the ordinary check
    rows = {r["name"]: r for r in check_oracle(case, Exactly(at=0, ulps=k))}
    assert rows["x"]["status"] == "pass"
    assert rows["x"]["precision"] == "lost" and rows["x"]["max_ulp_err"] == pytest.approx(k, abs=0.5)
    assert "at (0,), x=-30" in rows["x"]["ulp_where"]
    assert json.loads(rows["x"]["ulp_lost"])["lost"][0][0] == -30.0
    strict = {r["name"]: r for r in enforce_precision(list(rows.values()))}
    assert strict["x"]["status"] == "fail" and "precision lost" in strict["x"]["detail"]
    assert strict["y"]["status"] == "pass"


def test_float64_checks_of_a_layer_without_a_precision_oracle_say_they_are_not_measured():
    rng = np.random.default_rng(0)
    case = Case("dense", "float64", {}, {"x": rng.standard_normal((2, 3)), "W": rng.standard_normal((3, 2))},
                {"y": rng.standard_normal((2, 2))})
    rows = check_oracle(case, Oracle())
    assert {r["precision"] for r in rows} == {"not measured"}
    assert all(np.isnan(r["max_ulp_err"]) and "no precision oracle" in r["ulp_oracle"] for r in rows)
    as32 = Case("dense", "float32", {}, {k: v.astype("float32") for k, v in case.arrays.items()},
                {"y": case.cotangents["y"].astype("float32")})
    rows32 = check_oracle(as32, Oracle())
    assert {r["precision"] for r in rows32} == {"measured"}  # against the float64 oracle: no verdict


def test_strict_precision_reaches_pytest_and_fails_lost_checks_in_the_recorder(tmp_path):
    from gradparity.reports import cli
    from gradparity.reports.recording import Recorder

    args = cli.run_parser("gradparity run").parse_args(["--strict-precision", "-k", "sigmoid"])
    assert "--strict-precision" in cli.pytest_args(args)
    assert "--strict-precision" not in cli.pytest_args(cli.run_parser("gradparity run").parse_args([]))

    case = sigmoid_tail_case()
    lost = check_oracle(case, Exactly(at=0, ulps=1000.0))
    informational = Recorder(None, "main", tmp_path, tmp_path).add([dict(r) for r in lost], case)
    assert {r["status"] for r in informational} == {"pass"}
    strict = Recorder(None, "main", tmp_path, tmp_path, strict_precision=True).add([dict(r) for r in lost], case)
    assert {r["name"]: r["status"] for r in strict} == {"y": "pass", "x": "fail"}
    assert "gradparity replay" in next(r["reproduce"] for r in strict if r["name"] == "x")


def test_an_error_row_keeps_the_message_a_traced_call_quotes_last():
    """torch.compile quotes the fake-tensor arguments of the call that failed, TensorFlow's graphs
    the user code's frames, both before the framework's own message: the row keeps the message."""
    fake = ", ".join(["FakeTensor(..., size=(1, 4), requires_grad=True)"] * 20)
    dynamo = RuntimeError("RuntimeError when making fake tensor call\n  Explanation: call_function <function "
                          f"batch_norm at 0x7f>(*({fake}, True, 0.1), **{{}}): got ValueError('Expected more "
                          "than 1 value per channel when training')\n  Hint: " + "x" * 600)
    frames = "".join(f'  File "/site/keras/layer{i}.py", line {i}, in call\n            y = f(x)\n' for i in range(20))
    traced = ValueError(f"Exception encountered:\n{frames}Biases must be 1D: [0,8]")
    assert "Expected more than 1 value per channel when training" in _failure(dynamo)
    assert "Biases must be 1D: [0,8]" in _failure(traced) and len(_failure(dynamo)) <= 500
