"""Execution modes: the same layer under torch.compile and tf.function / XLA, as users train.

A compiled mode is the framework's adapter in that mode (``runner("torch.compile")``): the same
builders, conventions and known divergences, its forward and backward compiled. These tests show
that the compiled path is the one that runs (a fault only there is caught there and not in eager;
a hung compiler is an error row; a worker killed inside a compiled call loses no other row), and
that rows and ids say which mode they are.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from gradparity.adapters import ADAPTERS, base, modes_of, register_builder, runner
from gradparity.reference import LAYERS, Array, Case, Int, Layer, Oracle, Real, register
from gradparity.reference.activations import tanh, tanh_vjp
from gradparity.reports.compare import check, with_eager_distance

TRAP = "compiled_path_trap"


def _available(label):
    r = runner(label)
    ok, why = r.mode_available()
    if not ok:
        pytest.skip(why)
    return r


def test_a_mode_is_the_framework_in_that_mode():
    compiled = runner("torch.compile")
    assert compiled.name == "torch" and compiled.mode == "compile" and compiled.label == "torch.compile"
    assert compiled is runner("torch.compile") and runner("torch") is ADAPTERS["torch"]
    assert compiled.builders is ADAPTERS["torch"].builders  # one place per layer, every mode
    assert modes_of("torch") == ("eager", "compile", "inductor")
    assert modes_of("tensorflow") == ("eager", "function", "xla")
    with pytest.raises(KeyError, match="torch has no mode 'xla'; its modes: eager, compile, inductor"):
        runner("torch.xla")


@pytest.mark.parametrize("label", ["torch.compile", "tensorflow.function", "tensorflow.xla"])
def test_rows_say_their_mode_and_measure_their_distance_from_eager(label):
    r = _available(label)
    case = Case("dense", "float32", {}, {"x": np.random.default_rng(0).standard_normal((3, 4)).astype("float32"),
                                          "W": np.random.default_rng(1).standard_normal((4, 2)).astype("float32")},
                {"y": np.random.default_rng(2).standard_normal((3, 2)).astype("float32")})
    rows = with_eager_distance(check(case, Oracle(), r), case, r)
    assert {row["status"] for row in rows} == {"pass"}
    assert {row["framework"] for row in rows} == {label} and {row["mode"] for row in rows} == {label.split(".")[1]}
    assert all(np.isfinite(row["vs_eager_eps"]) and row["vs_eager_eps"] < 64 for row in rows)


def test_xla_runs_its_own_kernels():
    """LSTMs under XLA are a few eps from eager TensorFlow: were the mode quietly eager, it would be 0."""
    r = _available("tensorflow.xla")
    from gradparity.tests.plan import plan

    apart = []
    for case in plan("lstm", r.label, "float32", 10, r).cases:
        rows = with_eager_distance(check(case, Oracle(), r), case, r)
        assert {row["status"] for row in rows} <= {"pass", "known_divergence"}, case.describe()
        apart += [row["vs_eager_eps"] for row in rows]
    assert max(apart) > 0


def test_torch_compile_compiles_once_per_structure():
    r = _available("torch.compile")
    from torch._dynamo.utils import counters

    rng = np.random.default_rng(0)

    def case(seed):
        g = np.random.default_rng(seed)
        return Case("tanh", "float32", {}, {"x": g.standard_normal((3, 5)).astype("float32")},
                    {"y": g.standard_normal((3, 5)).astype("float32")})

    check(case(0), Oracle(), r)
    before = counters["stats"]["unique_graphs"]
    for seed in range(1, 6):  # new values, new modules, the same structure: the same graph
        assert {row["status"] for row in check(case(seed), Oracle(), r)} == {"pass"}
    assert counters["stats"]["unique_graphs"] == before and rng is not None


# ---- a fault that only the compiled path has: user code that behaves differently when compiled


@pytest.fixture
def trap():
    """A layer computing tanh whose gradient is 1 % off only when compiled (torch.compiler.is_compiling(),
    or not tf.executing_eagerly() inside tf.function): the code path a mode must reach."""
    register(Layer(TRAP, tanh, tanh_vjp, dims={"N": Int(1, 3), "D": Int(1, 4)},
                   arrays={"x": Array(lambda d, a: (d.N, d.D), Real(-2.0, 2.0))}))

    def torch_trap(t, a, dtype):
        import torch

        def apply(ts):
            y = torch.tanh(ts["x"])
            if torch.compiler.is_compiling():
                y = y + 0.01 * (y - y.detach())  # the same value, a 1 % larger gradient
            return y
        return base.Built(apply)

    def keras_trap(t, a, dtype):
        import tensorflow as tf

        def apply(ts):
            y = tf.tanh(ts["x"])
            if not tf.executing_eagerly():
                y = y + 0.01 * (y - tf.stop_gradient(y))
            return y
        return base.Built(apply)

    register_builder("torch", TRAP, torch_trap)
    register_builder("tensorflow", TRAP, keras_trap)
    yield
    LAYERS.pop(TRAP)
    for fw in ("torch", "tensorflow"):
        ADAPTERS[fw].builders.forget(TRAP)


@pytest.mark.parametrize("label", ["torch.compile", "tensorflow.function", "tensorflow.xla"])
def test_broken_on_purpose_a_fault_in_the_compiled_path_is_caught_there_and_not_in_eager(label, trap):
    r = _available(label)
    rng = np.random.default_rng(0)
    case = Case(TRAP, "float32", {}, {"x": rng.uniform(-2, 2, (3, 4)).astype("float32")},
                {"y": rng.standard_normal((3, 4)).astype("float32")})
    eager = {row["name"]: row["status"] for row in check(case, Oracle(), runner(label.split(".")[0]))}
    compiled = {(row["kind"], row["name"]): row for row in with_eager_distance(check(case, Oracle(), r), case, r)}
    assert eager == {"y": "pass", "x": "pass"}
    assert compiled["out", "y"]["status"] == "pass" and compiled["grad", "x"]["status"] == "fail"
    assert compiled["grad", "x"]["vs_eager_eps"] > 1e4  # 1 % is ~8e4 float32 eps


def test_a_compiled_case_over_its_time_limit_is_an_error_row(trap, monkeypatch):
    r = _available("torch.compile")
    import time

    import torch

    def slow(t, a, dtype):
        def apply(ts):
            if torch.compiler.is_compiling():
                torch._dynamo.graph_break()
            time.sleep(3)  # a compiler, or a compiled call, that hangs
            return torch.tanh(ts["x"])
        return base.Built(apply)

    ADAPTERS["torch"].builders.forget(TRAP)
    register_builder("torch", TRAP, slow)
    monkeypatch.setattr(base, "COMPILED_CASE_LIMIT", 0.5)
    case = Case(TRAP, "float32", {}, {"x": np.zeros((1, 1), "float32")}, {"y": np.ones((1, 1), "float32")})
    rows = check(case, Oracle(), r)
    assert {row["status"] for row in rows} == {"error"}
    assert "ran longer than 0.5 s (the time limit of a compiled mode)" in rows[0]["detail"]


KILLER = '''
import os


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        from gradparity.adapters import runner

        compiled = runner("{label}")
        original = compiled.run

        def run(case):
            if case.layer == "tanh":  # its process dies in the compiled call, as an aborting compiler would
                compiled.forward_backward = lambda *args, **kwargs: os._exit(1)
            return original(case)

        compiled.run = run
'''


def test_a_worker_killed_inside_a_compiled_call_loses_no_other_rows(tmp_path):
    label = "tensorflow.function"
    _available(label)
    (tmp_path / "killer.py").write_text(KILLER.format(label=label))
    done = subprocess.run(
        [sys.executable, "-m", "gradparity.reports.cli", "run", "-k", "dense- or relu-", "--frameworks",
         "tensorflow", "--modes", "function", "--dtypes", "float32", "-n", "2", "--report-dir",
         str(tmp_path / "r"), "-p", "killer", "--", "-k", "dense- or relu- or tanh-"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
        env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode != 0
    from gradparity.reports.files import read_rows

    rows = read_rows(tmp_path / "r" / "partial")
    assert set(rows["framework"]) == {label} and {"dense", "relu"} <= set(rows["layer"]), done.stdout[-2000:]
    run = json.loads((tmp_path / "r" / "partial" / "meta.json").read_text())["run"]
    assert run["partial"] and any("tanh-tensorflow.function-float32" in m for m in run["missing"])


def test_modes_are_chosen_by_name_and_a_bad_one_is_refused_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "gradparity.reports.cli", "run", "--modes", "turbo", "-k", "nothing"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "--modes turbo: unknown mode turbo; known: eager, compile, inductor, function, " \
                                     "xla, or all" in done.stderr + done.stdout
