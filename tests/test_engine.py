"""The engine's shapes, on toy layers registered the way a user registers one:
several named outputs each with its own cotangent and packed / shared
parameters (the LSTM's shape), a forward-only trajectory of k steps (an
optimizer's shape), and two frameworks compared without the oracle."""

import numpy as np
import pytest

from gradparity.adapters import ADAPTERS, Built, Param, register_builder
from gradparity.reference import GRAD, LAYERS, OUT, Array, Case, Float, Int, Layer, Oracle, register
from gradparity.reports.compare import check
from gradparity.reports.tolerances import NUMERICAL

torch = pytest.importorskip("torch", reason="the toy builders are PyTorch modules")


# ---- an LSTM-shaped toy: h_t = tanh(x_t W + h_{t-1} U + b_ih + b_hh); outputs y (every h_t),
# h_n (the last) and c_n (the sum of all h_t, standing for a cell state).

def toy_rnn(x, h0, W, U, b_ih, b_hh):
    """Shapes: x (T, N, I), h0 (N, H), W (I, H), U (H, H), b (H,) -> y (T, N, H), h_n, c_n (N, H)."""
    hs, h = [], h0
    for x_t in x:
        h = np.tanh(x_t @ W + h @ U + b_ih + b_hh)
        hs.append(h)
    y = np.stack(hs)
    return {"y": y, "h_n": y[-1], "c_n": y.sum(axis=0)}, (x, h0, W, U, y)


def toy_rnn_vjp(res, g):
    x, h0, W, U, y = res
    grads = {k: np.zeros_like(v) for k, v in (("x", x), ("h0", h0), ("W", W), ("U", U))}
    grads["b"] = np.zeros(W.shape[1])
    carry = g["h_n"]  # d loss / d h_t arriving from later steps, beyond the direct ones
    for t in range(len(x) - 1, -1, -1):
        dh = g["y"][t] + g["c_n"] + carry
        dz = dh * (1.0 - y[t] ** 2)
        h_prev = y[t - 1] if t else h0
        grads["x"][t] = dz @ W.T
        grads["W"] += x[t].T @ dz
        grads["U"] += h_prev.T @ dz
        grads["b"] += dz.sum(axis=0)
        carry = dz @ U.T
    grads["h0"] = carry
    b = grads.pop("b")
    return {**grads, "b_ih": b, "b_hh": b}


def _rnn_builder(t, a, dtype, *, bias_to_canonical):
    """One packed weight (W stacked over U, as torch packs q, k, v) and one bias
    standing for two (as Keras' one LSTM bias stands for PyTorch's b_ih + b_hh)."""
    i = t["W"].shape[0]
    packed = torch.nn.Parameter(torch.cat([t["W"], t["U"]]).detach().clone())
    bias = torch.nn.Parameter((t["b_ih"] + t["b_hh"]).detach().clone())

    def apply(t):
        h, hs = t["h0"], []
        for x_t in t["x"]:
            h = torch.tanh(torch.cat([x_t, h], dim=1) @ packed + bias)
            hs.append(h)
        y = torch.stack(hs)
        return {"y": y, "h_n": y[-1], "c_n": y.sum(dim=0)}

    return Built(apply, (Param(packed, ("W", "U"), lambda g: {"W": g[:i], "U": g[i:]}),
                         Param(bias, ("b_ih", "b_hh"), bias_to_canonical)))


# ---- a trajectory-shaped toy: k steps of SGD with momentum; no cotangent, one output per step

def toy_sgd(w0, grads, *, lr, momentum):
    """v <- momentum v + g_t; w <- w - lr v, for each of the k gradients; outputs w@t and v@t."""
    w, v, out = w0, np.zeros_like(w0), {}
    for step, g in enumerate(grads, 1):
        v = momentum * v + g
        w = w - lr * v
        out[f"w@{step}"], out[f"v@{step}"] = w, v
    return out, None


def _sgd_builder(t, a, dtype, dampening=0.0):
    w = torch.nn.Parameter(t["w0"].detach().clone())
    opt = torch.optim.SGD([w], lr=a["lr"], momentum=a["momentum"], dampening=dampening, nesterov=False,
                          weight_decay=0.0)

    def apply(t):
        out = {}
        for step, g in enumerate(t["grads"], 1):
            w.grad = g.detach().clone()
            opt.step()
            out[f"w@{step}"], out[f"v@{step}"] = w.detach().clone(), opt.state[w]["momentum_buffer"].clone()
        return out

    return Built(apply)


@pytest.fixture
def toys():
    """Register the toy layers and their PyTorch builders; remove them afterwards."""
    register(Layer("toy_rnn", toy_rnn, toy_rnn_vjp, outputs=("y", "h_n", "c_n"),
                   dims={"T": Int(1, 3), "N": Int(1, 2), "I": Int(1, 3), "H": Int(1, 3)},
                   arrays={"x": Array(lambda d, a: (d.T, d.N, d.I)), "h0": Array(lambda d, a: (d.N, d.H)),
                           "W": Array(lambda d, a: (d.I, d.H), param=True),
                           "U": Array(lambda d, a: (d.H, d.H), param=True),
                           "b_ih": Array(lambda d, a: (d.H,), param=True),
                           "b_hh": Array(lambda d, a: (d.H,), param=True)}))
    register(Layer("toy_sgd", toy_sgd, None,
                   dims={"K": Int(1, 10), "D": Int(1, 3)}, attrs={"lr": Float(1e-3, 1.0), "momentum": Float(0.0, 0.99)},
                   arrays={"w0": Array(lambda d, a: (d.D,), param=True), "grads": Array(lambda d, a: (d.K, d.D))}))
    register_builder("torch", "toy_rnn", lambda t, a, dt: _rnn_builder(
        t, a, dt, bias_to_canonical=lambda g: {"b_ih": g, "b_hh": g}))
    register_builder("torch", "toy_sgd", _sgd_builder)
    yield ADAPTERS["torch"]
    for name in ("toy_rnn", "toy_sgd"):
        LAYERS.pop(name)
        ADAPTERS["torch"].builders.forget(name)


def rnn_case(dtype="float64", seed=0):
    rng = np.random.default_rng(seed)
    T, N, I, H = 3, 2, 3, 2
    shapes = {"x": (T, N, I), "h0": (N, H), "W": (I, H), "U": (H, H), "b_ih": (H,), "b_hh": (H,)}
    arrays = {k: rng.uniform(-1, 1, s).astype(dtype) for k, s in shapes.items()}
    cotangents = {k: rng.standard_normal(s).astype(dtype) for k, s in
                  {"y": (T, N, H), "h_n": (N, H), "c_n": (N, H)}.items()}
    return Case("toy_rnn", dtype, {}, arrays, cotangents)


def by_name(rows):
    return {(r["kind"], r["name"]): r for r in rows}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_several_outputs_and_packed_parameters_compare_name_by_name(toys, dtype):
    rows = by_name(check(rnn_case(dtype), Oracle(), toys))
    assert set(rows) == {(OUT, "y"), (OUT, "h_n"), (OUT, "c_n"), *((GRAD, n) for n in
                                                                   ("x", "h0", "W", "U", "b_ih", "b_hh"))}
    assert all(r["status"] == "pass" for r in rows.values()), [(k, r["detail"]) for k, r in rows.items()]


def test_the_toy_vjp_is_the_derivative(toys):
    from gradparity.reference.numdiff import numerical_gradients

    case = rnn_case()
    numeric, exact = numerical_gradients(case, 1e-5), Oracle().run(case)[GRAD]
    for name, g in exact.items():  # the smooth toy needs no rounding term: the plain numerical tolerance
        scale = max(float(np.abs(g).max()), 1.0)
        assert float(np.abs(g - numeric[name]).max()) <= NUMERICAL.rtol * scale, name


def test_each_cotangent_reaches_its_own_output(toys):
    """Zero every cotangent but one: the gradients must then follow that output alone."""
    case = rnn_case()
    for kept in ("y", "h_n", "c_n"):
        alone = case.replace(cotangents={k: g if k == kept else np.zeros_like(g) for k, g in case.cotangents.items()})
        rows = by_name(check(alone, Oracle(), toys))
        assert all(r["status"] == "pass" for r in rows.values()), kept
        assert rows[(GRAD, "W")]["scale"] > 0


def test_a_wrong_map_of_a_shared_parameter_is_flagged(toys):
    toys.builders.build["toy_rnn"] = lambda t, a, dt: _rnn_builder(t, a, dt, bias_to_canonical=lambda g: {
        "b_ih": g, "b_hh": g / 2})  # as if the framework's one bias were b_ih + 2 b_hh
    rows = by_name(check(rnn_case(), Oracle(), toys))
    assert rows[(GRAD, "b_hh")]["status"] == "fail" and rows[(GRAD, "b_ih")]["status"] == "pass"


def sgd_case(dtype="float64", k=6):
    rng = np.random.default_rng(1)
    grads = rng.standard_normal((k, 3))
    grads[2] = 0.0  # a zero gradient: momentum alone moves the weight
    return Case("toy_sgd", dtype, {"lr": 0.1, "momentum": 0.9},
                {"w0": rng.standard_normal(3).astype(dtype), "grads": grads.astype(dtype)}, {})


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_trajectory_compares_every_step(toys, dtype):
    rows = by_name(check(sgd_case(dtype), Oracle(), toys))
    assert set(rows) == {(OUT, f"{v}@{t}") for v in "wv" for t in range(1, 7)}
    assert all(r["status"] == "pass" for r in rows.values()), [(k, r["detail"]) for k, r in rows.items()]


def test_a_trajectory_that_drifts_is_flagged_at_the_step_it_drifts(toys):
    def dampened(t, a, dt):  # torch's dampening: v <- momentum v + (1 - dampening) g
        return _sgd_builder(t, a, dt, dampening=0.5)

    toys.builders.build["toy_sgd"] = dampened
    rows = by_name(check(sgd_case(), Oracle(), toys))
    # torch's first step takes v = g (no dampening yet): the trajectories part from step 2 on
    assert rows[(OUT, "w@1")]["status"] == "pass" and rows[(OUT, "w@2")]["status"] == "fail"


@pytest.mark.skipif(not all(ADAPTERS[n].available()[0] for n in ("torch", "tensorflow")),
                    reason="needs both frameworks")
def test_two_frameworks_compare_without_the_oracle():
    rng = np.random.default_rng(2)
    dense = Case("dense", "float32", {}, {"x": rng.standard_normal((3, 4)).astype("float32"),
                                          "W": rng.standard_normal((4, 2)).astype("float32")},
                 {"y": rng.standard_normal((3, 2)).astype("float32")})
    rows = check(dense, ADAPTERS["torch"], ADAPTERS["tensorflow"])
    assert {r["reference"] for r in rows} == {"torch"} and all(r["status"] == "pass" for r in rows)
    # SELU at 0: PyTorch takes the left derivative, TensorFlow the right: the two disagree, and say why
    selu = Case("selu", "float64", {}, {"x": np.array([0.0, 1.0])}, {"y": np.array([1.0, 1.0])})
    grad = by_name(check(selu, ADAPTERS["torch"], ADAPTERS["tensorflow"]))[(GRAD, "x")]
    assert grad["status"] == "fail"
    assert "torch: at_zero=left" in grad["convention"] and "tensorflow: at_zero=right" in grad["convention"]
