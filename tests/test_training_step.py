"""The training-step entries at the edges they exist for, on explicit cases.

The catalogue draws clipping thresholds and optimizer hyperparameters with
their edges; these cases put each edge in on purpose (a norm exactly at the
threshold, all-zero gradients with threshold 0, an infinite threshold) and
check, per framework, what the report will say. They also check that where the
frameworks' conventions can be mapped (eps = 0, no weight decay, float32-exact
hyperparameters), PyTorch and Keras agree with each other directly, step by step.
"""

import numpy as np
import pytest

from gradparity.adapters import ADAPTERS
from gradparity.reference import LAYERS, OUT, Case, Oracle
from gradparity.reports.compare import check
from gradparity.reports.tolerances import DEFAULT, STEP_GROWTH, at_step, step_of
from gradparity.tests.test_canary import CANARY

INF = float("inf")


def statuses(rows):
    return {r["name"]: r["status"] for r in rows}


def clip_case(layer, dtype, c, *gs, error_if_nonfinite=False, route="function"):
    arrays = dict(zip(("g1", "g2"), gs)) if layer == "clip_by_global_norm" else {"g": gs[0]}
    attrs = ({"clip_value": c} if layer == "clip_by_value" else {"max_norm": c, "error_if_nonfinite": error_if_nonfinite})
    attrs["route"] = route
    return Case(layer, dtype, attrs, {k: np.asarray(v, dtype=dtype) for k, v in arrays.items()}, {})


# (name, threshold, gradients): below, exactly at, above the threshold, tiny and zero thresholds, zero gradients
EDGES = [
    ("below", 1.0, [0.3, 0.4], [0.0]),
    ("at", 5.0, [3.0, 4.0], [0.0]),
    ("above", 1.0, [3.0, 4.0], [0.0]),
    ("tiny", 1e-6, [3.0, 4.0], [1.0]),
    ("zero_threshold", 0.0, [3.0, 4.0], [1.0]),
    ("zero_gradients", 1.0, [0.0, 0.0], [0.0]),
    ("zero_gradients_zero_threshold", 0.0, [0.0, 0.0], [0.0]),
    ("infinite_threshold", INF, [3.0, 4.0], [1.0]),
]
KD, NA = "known_divergence", "not_applicable"
# What each framework does at the edges where it is not "pass", as measured (the known
# divergences say why): (framework, route) -> {edge: status}, and the layers it holds for.
NORMS = ("clip_by_norm", "clip_by_global_norm")
EDGE_STATUS = {
    ("torch", "optimizer"): ({e[0]: NA for e in EDGES}, None),  # torch.optim takes no clipping argument
    # 0/0 or inf/inf in tf.clip_by_norm / clip_by_global_norm
    ("tensorflow", "function"): ({"zero_gradients_zero_threshold": KD, "infinite_threshold": KD}, NORMS),
    # Keras' optimizers take a zero threshold as "no clipping", and divide inf/inf as tf does
    ("tensorflow", "optimizer"): ({"zero_threshold": KD, "infinite_threshold": KD}, NORMS),
}
ZERO_OFF = ("tensorflow", "optimizer")  # where a zero threshold turns clipping off: every layer
# Each framework's eps on the clipping norm, as its documentation and code state it.
NORM_EPS = {"torch": 1e-6, "tensorflow": 0.0}


@pytest.mark.parametrize("route", ["function", "optimizer"])
@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layer", ["clip_by_value", "clip_by_norm", "clip_by_global_norm"])
@pytest.mark.parametrize("edge", EDGES, ids=[e[0] for e in EDGES])
def test_clipping_at_its_edges(edge, layer, dtype, framework, route, runner_for):
    name, c, g1, g2 = edge
    case = clip_case(layer, dtype, c, g1, g2, route=route)
    rows = check(case, Oracle(), runner_for(framework))
    off_edges, layers = EDGE_STATUS.get((framework, route), ({}, None))
    applies = layers is None or layer in layers or ((framework, route) == ZERO_OFF and name == "zero_threshold")
    expected = off_edges.get(name, "pass") if applies else "pass"
    if expected == NA:
        assert {r["status"] for r in rows} == {NA}, rows
        return
    clipped = {"g", "g1", "g2"}
    assert {s for n, s in statuses(rows).items() if n in clipped} == {expected}, rows
    assert all(r["status"] == "pass" for r in rows if r["name"] == "norm"), rows  # the norm is always right


@pytest.mark.parametrize("flag", [False, True])
def test_clip_grad_norm_error_if_nonfinite_both_ways(flag, runner_for):
    rows = check(clip_case("clip_by_global_norm", "float64", 1.0, [3.0, 4.0], [1.0], error_if_nonfinite=flag),
                 Oracle(), runner_for("torch"))
    assert all(r["status"] == "pass" for r in rows), rows


def test_torch_clips_a_norm_exactly_at_the_threshold_by_its_eps(runner_for):
    """clip_grad_norm_ scales a norm of exactly c by c / (c + 1e-6): in float64 the exact
    answer (norm_eps = 0) is off by 2e-7 relative, and only the declared convention passes."""
    case = clip_case("clip_by_global_norm", "float64", 5.0, [3.0, 4.0], [0.0])
    torch_ = runner_for("torch")
    got = torch_.run(case)[OUT]["g1"]
    assert np.array_equal(got, np.array([3.0, 4.0]) * (5.0 / (5.0 + 1e-6)))  # its formula, to the last bit
    exact = Oracle({"norm_eps": 0.0}).run(case)[OUT]["g1"]
    assert np.array_equal(exact, [3.0, 4.0])
    assert all(r["status"] == "pass" for r in check(case, Oracle(), torch_))


# ---- mapped hyperparameters: the two frameworks compute the same update

# Float32-exact hyperparameters (Keras holds some in float32), eps = 0 (where Adam's
# epsilon hat and RMSprop's / Adagrad's eps inside the sqrt meet PyTorch's), no
# weight decay (L2 against decoupled), no dampening.
MAPPED = {
    "sgd_step": dict(lr=0.125, weight_decay=0.0),
    "momentum_step": dict(lr=0.125, momentum=0.875, dampening=0.0, nesterov=True, weight_decay=0.0),
    "adam_step": dict(lr=0.125, beta_1=0.875, beta_2=0.998046875, eps=0.0, weight_decay=0.0),
    "adamw_step": dict(lr=0.125, beta_1=0.875, beta_2=0.998046875, eps=0.0, weight_decay=0.0625),
    "rmsprop_step": dict(lr=0.125, alpha=0.9375, eps=0.0, momentum=0.5, centered=True, weight_decay=0.0),
    "adagrad_step": dict(lr=0.125, eps=0.0, initial_accumulator_value=0.125, weight_decay=0.0),
}


def trajectory_case(layer, dtype, attrs, k=10, seed=0):
    rng = np.random.default_rng(seed)
    grads = rng.uniform(-3, 3, (k, 2, 3))
    grads[3] = 0.0  # a zero gradient step
    grads[5, 0] = 1e-10  # tiny gradients, below every eps
    return Case(layer, dtype, attrs, {"w0": rng.uniform(-3, 3, (2, 3)).astype(dtype), "grads": grads.astype(dtype)},
                {})


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layer", sorted(MAPPED))
def test_mapped_hyperparameters_give_the_same_trajectory_in_both_frameworks(layer, dtype, runner_for):
    case = trajectory_case(layer, dtype, MAPPED[layer])
    rows = [r for r in check(case, runner_for("torch"), runner_for("tensorflow")) if r["name"].startswith("w@")]
    assert len(rows) == 10 and all(r["status"] == "pass" for r in rows), [
        (r["name"], r["err_eps"], r["detail"]) for r in rows if r["status"] != "pass"]
    if dtype == "float64":  # about 1e-10 relative, or far better
        assert max(r["max_rel_err"] for r in rows) < 1e-13


@pytest.mark.parametrize("layer", sorted(MAPPED))
def test_unmapped_conventions_differ_and_each_framework_matches_its_own(layer, runner_for):
    """With eps, weight decay and a float64 learning rate that float32 cannot hold, each
    framework matches the oracle under its own convention, and the two conventions give
    measurably different trajectories (the size the report states)."""
    attrs = {**MAPPED[layer], "lr": 0.1}
    attrs.update({k: v for k, v in dict(eps=1e-3, weight_decay=0.05).items() if k in attrs})
    case = trajectory_case(layer, "float64", attrs)
    for fw in ("torch", "tensorflow"):
        rows = check(case, Oracle(), runner_for(fw))
        assert all(r["status"] == "pass" for r in rows), [(r["name"], r["detail"]) for r in rows if r["status"] != "pass"]
    a = Oracle(ADAPTERS["torch"].convention(layer).values).run(case)[OUT]
    b = Oracle(ADAPTERS["tensorflow"].convention(layer).values).run(case)[OUT]
    assert max(float(np.abs(a[n] - b[n]).max()) for n in a if n.startswith("w@")) > 1e-9


def test_every_growth_names_a_trajectory_and_stays_below_the_canary():
    for layer, growth in STEP_GROWTH.items():
        assert layer in LAYERS and LAYERS[layer].vjp is None and growth.reason
        k = LAYERS[layer].dims["K"].hi
        for dtype, tol in DEFAULT.items():
            assert at_step(tol, layer, f"w@{k}").rtol < CANARY[dtype] / 2, (layer, dtype)
    assert step_of("w@3") == 3 and step_of("m@10") == 10 and step_of("w") is None and step_of("@3") is None
    assert at_step(DEFAULT["float32"], "dense", "y") is DEFAULT["float32"]


def test_a_perturbed_update_is_flagged_at_its_step(runner_for):
    """The canary's shape on an explicit trajectory: one step's update off by 1e-9 relative in float64."""
    case = trajectory_case("adam_step", "float64", MAPPED["adam_step"])

    class Late:
        name, version = "torch", ADAPTERS["torch"].version

        def convention(self, layer):
            return ADAPTERS["torch"].convention(layer)

        def run(self, case):
            out = runner_for("torch").run(case)
            out[OUT]["w@7"] = out[OUT]["w@7"] * (1 + 1e-9)
            return out

    got = statuses(check(case, Oracle(), Late()))
    assert got["w@7"] == "fail" and got["w@6"] == "pass" and got["w@8"] == "pass"


def test_the_convention_and_default_tables_measure_what_they_say():
    from gradparity.reports import defaults

    s = defaults.summary(k=10).set_index(["layer", "convention"])
    # the momentum written as a velocity is the same update: no gap at all
    assert s.loc[("momentum_step", "momentum_form"), "|g|~1: step 10"] == 0
    # Adam's epsilon hat matters most for gradients below it; L2 against decoupled decay is larger
    adam_eps = s.loc[("adam_step", "eps_form")]
    assert adam_eps["|g|~1e-06: step 1"] > 10 * adam_eps["|g|~1: step 1"] > 0
    assert s.loc[("adam_step", "decay_form"), "|g|~1: step 10"] > 1e-6
    # errors from conventions grow over the trajectory (L2 vs decoupled decay under momentum)
    assert s.loc[("momentum_step", "decay_form"), "|g|~1: step 10"] > 1e6 * s.loc[("momentum_step", "decay_form"),
                                                                                  "|g|~1: step 1"]
    assert {d["item"] for d in defaults.DEFAULTS} >= set(defaults.OPTIMIZER_DEFAULTS)
    assert all(d["torch"] != d["keras"] or d["setting"] == "lr, betas" for d in defaults.DEFAULTS)


def mlp_case(dtype, optimizer, max_norm, seed=3):
    rng = np.random.default_rng(seed)
    S, N, D, H, K = 5, 4, 3, 5, 3
    attrs = dict(optimizer=optimizer, lr=0.125, momentum=0.0, beta_1=0.0, beta_2=0.0, eps=0.0, max_norm=max_norm)
    attrs.update(dict(momentum=0.875) if optimizer == "sgd_momentum" else dict(beta_1=0.875, beta_2=0.998046875))
    arrays = {"x": rng.uniform(-3, 3, (S, N, D)), "labels": rng.integers(0, K, (S, N)),
              "W1": rng.uniform(-1, 1, (D, H)), "b1": rng.uniform(-1, 1, H), "W2": rng.uniform(-1, 1, (H, K)),
              "b2": rng.uniform(-1, 1, K)}
    return Case("train_step", dtype, attrs, {k: v if k == "labels" else v.astype(dtype) for k, v in arrays.items()},
                {})


@pytest.mark.parametrize("optimizer", ["sgd_momentum", "adam"])
def test_the_whole_loop_agrees_step_by_step_where_mapped(optimizer, runner_for):
    """Five steps of the MLP, no clipping, eps 0, float32-exact hyperparameters: PyTorch
    and Keras agree on every loss, gradient and parameter to float64 rounding."""
    rows = check(mlp_case("float64", optimizer, INF), runner_for("torch"), runner_for("tensorflow"))
    assert len(rows) == 5 * 9 and all(r["status"] == "pass" for r in rows), [
        (r["name"], r["detail"]) for r in rows if r["status"] != "pass"]
    assert max(r["max_rel_err"] for r in rows) < 1e-13


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_the_whole_loop_with_clipping_follows_each_frameworks_norm_eps(framework, runner_for):
    case = mlp_case("float64", "adam", 0.5)  # the gradient norm exceeds 0.5 at every step: clipping acts
    rows = check(case, Oracle(), runner_for(framework))
    assert all(r["status"] == "pass" for r in rows), [(r["name"], r["detail"]) for r in rows if r["status"] != "pass"]
    assert rows[0]["convention"].startswith(f"norm_eps={NORM_EPS[framework]}")
