"""Breadth, second pass (issue 22): one test per configuration PyTorch's own samples
have and the catalogue could not express, each against the oracle in every framework
that can run it, or with the framework's reason where it cannot.

The generic suite (test_gradients.py) draws these configurations through the
catalogue's attributes and edges; the tests here pin each item of the issue to a
case of its own, so a regression names the item.
"""

import inspect

import numpy as np
import pytest

from gradparity.adapters import ADAPTERS
from gradparity.adapters.base import NotApplicable
from gradparity.reference import Case, Oracle, evaluate, validate
from gradparity.reports import divergences
from gradparity.reports.compare import check
from gradparity.tests.strategies import fixed_case

FRAMEWORKS = ("torch", "tensorflow")


def _need(framework):
    ok, why = ADAPTERS[framework].available()
    if not ok:
        pytest.skip(why)
    return ADAPTERS[framework]


def _passes(case, framework):
    """Every row of the case in ``framework`` passes (the framework's own answer against the oracle's)."""
    rows = check(case, Oracle(), _need(framework))
    bad = [f"{r['kind']} {r['name']}: {r['status']} {r['detail']}" for r in rows if r["status"] != "pass"]
    assert not bad, f"{case.describe()} in {framework}:\n" + "\n".join(bad)
    return rows


def _refuses(case, framework, words):
    """``framework`` refuses the case's configuration with a reason naming ``words``."""
    runner = _need(framework)
    why = runner.refusal(case)
    assert why is not None and words in why, why
    with pytest.raises(NotApplicable, match=words):
        runner.run(case)


# ---- recurrent: any number of layers, either direction, masks, LSTM projections


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_two_layer_bidirectional_lstm(framework):
    case = fixed_case("stacked_lstm", "float64", {"N": 2, "T": 3, "I": 2, "H": 3, "P": 1},
                      {"num_layers": 2, "bidirectional": True, "proj_size": 0})
    assert case.arrays["h0"].shape == (4, 2, 3) and case.arrays["W_ih_l1_reverse"].shape == (6, 12)
    _passes(case, framework)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_two_layers_one_direction(framework, nonlinearity):
    case = fixed_case("stacked_rnn", "float64", {"N": 2, "T": 4, "I": 3, "H": 2},
                      {"num_layers": 2, "bidirectional": False, "nonlinearity": nonlinearity})
    assert "W_ih_l1_reverse" not in case.arrays
    _passes(case, framework)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_rnn_two_layers_bidirectional(framework):
    case = fixed_case("stacked_rnn", "float32", {"N": 3, "T": 3, "I": 2, "H": 2},
                      {"num_layers": 2, "bidirectional": True, "nonlinearity": "tanh"})
    _passes(case, framework)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_two_layer_bidirectional_gru(framework):
    case = fixed_case("stacked_gru", "float64", {"N": 2, "T": 3, "I": 3, "H": 2},
                      {"num_layers": 2, "bidirectional": True})
    _passes(case, framework)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("layer, attrs", [("masked_stacked_lstm", {"proj_size": 0}), ("masked_stacked_gru", {}),
                                          ("masked_stacked_rnn", {"nonlinearity": "relu"})])
def test_three_layers_both_directions_over_a_padded_batch(framework, layer, attrs):
    case = fixed_case(layer, "float64", {"N": 3, "T": 4, "I": 2, "H": 2, "P": 1},
                      {"num_layers": 3, "bidirectional": True, "route": "mask", **attrs})
    case = case.replace(arrays={**case.arrays, "lengths": np.array([4, 1, 2])})
    assert case.arrays["h0"].shape[0] == 6
    _passes(case, framework)


def test_lstm_projection_in_pytorch_and_keras_refuses_it():
    for layer, dims, attrs in (("lstm", {"N": 2, "T": 3, "I": 2, "H": 3, "P": 2}, {}),
                               ("stacked_lstm", {"N": 2, "T": 3, "I": 2, "H": 3, "P": 1},
                                {"num_layers": 2, "bidirectional": True})):
        case = fixed_case(layer, "float64", dims, {**attrs, "proj_size": dims["P"]})
        w_hr = "W_hr" if layer == "lstm" else "W_hr_l1_reverse"
        assert case.arrays[w_hr].shape == (3, dims["P"]) and case.cotangents["h_n"].shape[-1] == dims["P"]
        _passes(case, "torch")
        _refuses(case, "tensorflow", "keras.layers.LSTM has no projection")


def test_pytorch_refuses_a_projection_as_wide_as_the_hidden_state():
    case = fixed_case("lstm", "float64", {"N": 1, "T": 2, "I": 2, "H": 2, "P": 2}, {"proj_size": 2})
    assert validate(case).name == "lstm"  # the oracle answers it
    _refuses(case, "torch", "proj_size has to be smaller than hidden_size")


# ---- attention: PyTorch's extra keys, float masks, dropout


@pytest.mark.parametrize("add_bias_kv, add_zero_attn", [(True, False), (False, True), (True, True)])
@pytest.mark.parametrize("layer", ["multi_head_attention", "multi_head_attention_weights"])
def test_multi_head_attention_extra_keys_in_pytorch(layer, add_bias_kv, add_zero_attn):
    attrs = {"num_heads": 2, "add_bias_kv": add_bias_kv, "add_zero_attn": add_zero_attn}
    if layer == "multi_head_attention":
        attrs["need_weights"] = False
    case = fixed_case(layer, "float64", {"N": 2, "Lq": 3, "Lk": 2, "heads": 2, "D": 2}, attrs)
    rows = {(r["kind"], r["name"]): r for r in _passes(case, "torch")}
    if add_bias_kv:
        assert ("grad", "bias_k") in rows and ("grad", "bias_v") in rows
    if layer == "multi_head_attention_weights":
        assert rows[("out", "weights")]["shape"] == str((2, 3, 2 + add_bias_kv + add_zero_attn))


def test_keras_multi_head_attention_has_no_extra_keys_and_refuses_them():
    """Measured: keras.layers.MultiHeadAttention's constructor and call take neither option
    (nor a float mask), so no exact Keras equivalent exists: each is refused with its reason."""
    keras = pytest.importorskip("keras")
    options = set(inspect.signature(keras.layers.MultiHeadAttention.__init__).parameters)
    options |= set(inspect.signature(keras.layers.MultiHeadAttention.call).parameters)
    assert not {"add_bias_kv", "add_zero_attn", "bias_k", "bias_v"} & options
    for attrs, words in (({"add_bias_kv": True}, "has no add_bias_kv"),
                         ({"add_zero_attn": True}, "has no add_zero_attn")):
        case = fixed_case("multi_head_attention", "float32", {"N": 1, "Lq": 2, "Lk": 2, "heads": 1, "D": 2},
                          {"num_heads": 1, "need_weights": False, "add_bias_kv": False, "add_zero_attn": False,
                           **attrs})
        _refuses(case, "tensorflow", words)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_sdpa_float_additive_mask_beside_a_boolean_one(framework):
    case = fixed_case("scaled_dot_product_attention", "float64",
                      {"N": 2, "Hh": 2, "Lq": 3, "Lk": 4, "E": 2, "Ev": 3},
                      {"causal": True, "scale": 0.5, "dropout_p": 0.0})
    assert {"mask", "bias"} <= set(case.arrays)
    rows = {(r["kind"], r["name"]): r for r in _passes(case, framework)}
    assert ("grad", "bias") in rows  # an additive mask is differentiable in both


def test_multi_head_attention_float_mask_in_pytorch_and_keras_refuses_it():
    case = fixed_case("multi_head_attention", "float64", {"N": 2, "Lq": 3, "Lk": 3, "heads": 1, "D": 2},
                      {"num_heads": 1, "need_weights": True, "add_bias_kv": False, "add_zero_attn": False})
    case = case.replace(arrays={k: v for k, v in case.arrays.items() if k not in ("attn_mask", "key_padding_mask")})
    assert "attn_bias" in case.arrays
    _passes(case, "torch")
    _refuses(case, "tensorflow", "takes a boolean attention_mask only")


def test_sdpa_dropout_mask_drawn_by_pytorch_is_recovered():
    case = fixed_case("scaled_dot_product_attention", "float32", {"N": 2, "Hh": 2, "Lq": 4, "Lk": 4, "E": 2, "Ev": 2},
                      {"causal": False, "scale": 0.7, "dropout_p": 0.5})
    drawn = ADAPTERS["torch"].run(case)["drawn"]["dropout_mask"]
    assert drawn.shape == (2, 2, 4, 4) and 0 < drawn.sum() < drawn.size  # its own draw, neither all kept nor none
    _passes(case, "torch")
    _refuses(case, "tensorflow", "takes no dropout")


# ---- normalization: every rank, no affine, eps <= 0


def test_batch_norm_on_five_dimensional_input_runs_batchnorm3d():
    """The issue's repro: a 5-d batch norm case was sent to BatchNorm1d and errored."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 2, 2, 2))
    case = Case("batch_norm", "float64", {"eps": 1e-5}, {"x": x, "gamma": np.ones(3), "beta": np.zeros(3)},
                {"y": rng.standard_normal(x.shape)})
    rows = _passes(case, "torch")
    assert max(r["max_abs_err"] for r in rows) < 1e-13
    _passes(case, "tensorflow")


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("kept", [(), ("gamma",)], ids=["not_affine", "affine_not_bias"])
def test_batch_norm_on_n_c_input_in_module_form(framework, kept):
    """PyTorch's BatchNorm1d samples: (N, C) input without affine, and with a weight but no bias."""
    case = fixed_case("batch_norm", "float64", {"N": 4, "C": 5, "spatial": ()}, {"eps": 1e-3})
    case = case.replace(arrays={k: v for k, v in case.arrays.items() if k == "x" or k in kept})
    _passes(case, framework)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("layer, dims", [
    ("group_norm", {"N": 2, "G": 2, "Cg": 2, "spatial": (2, 3, 2)}),
    ("instance_norm", {"N": 2, "C": 3, "spatial": (3,)}),
    ("instance_norm", {"N": 2, "C": 2, "spatial": (2, 3)}),
    ("instance_norm", {"N": 1, "C": 2, "spatial": (2, 2, 3)}),
    ("batch_norm_inference", {"N": 2, "C": 2, "spatial": (2, 2, 2)})])
def test_group_instance_and_inference_norms_over_one_to_three_spatial_axes(framework, layer, dims):
    attrs = {"eps": 1e-3, **({"groups": dims["G"]} if layer == "group_norm" else {})}
    _passes(fixed_case(layer, "float64", dims, attrs), framework)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("eps", [0.0, -1e-4])
@pytest.mark.parametrize("layer, dims, attrs", [
    ("layer_norm", {"shape": (3, 4)}, {"axes": 1}),
    ("rms_norm", {"shape": (3, 4)}, {"axes": 1, "route": "rms_normalization"}),
    ("group_norm", {"N": 2, "G": 2, "Cg": 2, "spatial": (3,)}, {"groups": 2}),
    ("instance_norm", {"N": 2, "C": 2, "spatial": (4,)}, {})])
def test_eps_zero_or_negative_is_the_formula_in_both_frameworks(framework, eps, layer, dims, attrs):
    """Measured: LayerNorm, GroupNorm, RMSNorm, InstanceNorm and their Keras counterparts take
    eps <= 0 and compute the formula (1 / sqrt(var + eps)); the oracle accepts it too."""
    case = fixed_case(layer, "float64", dims, {**attrs, "eps": eps})
    assert all(np.isfinite(v).all() for v in evaluate(case).outputs["out"].values())  # var + eps > 0 here
    _passes(case, framework)


def test_eps_zero_or_negative_where_the_variance_is_zero_gives_nan_in_every_runner():
    x = np.array([[1.0, 1.0, 1.0, 1.0], [0.5, -0.5, 2.0, 1.0]])
    case = Case("layer_norm", "float64", {"axes": 1, "eps": 0.0}, {"x": x}, {"y": np.ones(x.shape) * 0.5})
    y = evaluate(case).outputs["out"]["y"]
    assert np.isnan(y[0]).all() and np.isfinite(y[1]).all()  # 0 * (1 / sqrt(0)) in the constant row
    for framework in FRAMEWORKS:
        _passes(case, framework)


def test_pytorch_batch_norm_refuses_eps_zero_in_training_and_keras_computes_it():
    case = fixed_case("batch_norm", "float64", {"N": 3, "C": 2, "spatial": (2,)}, {"eps": 0.0})
    _refuses(case, "torch", "batch_norm eps must be positive during training")
    _passes(case, "tensorflow")
    inference = fixed_case("batch_norm_inference", "float64", {"N": 3, "C": 2, "spatial": (2,)}, {"eps": 0.0})
    _passes(inference, "torch")  # eval mode takes eps = 0 and refuses only eps < 0
    _refuses(inference.replace(attrs={"eps": -1e-4}), "torch", "batch_norm eps must be non-negative")


# ---- pooling, losses, dropout


@pytest.mark.parametrize("divisor", [2, -2, 3])
def test_avg_pool_divisor_override_any_nonzero_int(divisor):
    case = fixed_case("avg_pool2d", "float64", {"N": 1, "C": 2, "kH": 2, "kW": 2, "OH": 2, "OW": 2, "slack_h": 0,
                                                 "slack_w": 0, "pad_mode": 0},
                      {"batched": True, "stride_h": 2, "stride_w": 2, "padding": "valid", "pad_h": 0, "pad_w": 0,
                       "ceil_mode": False, "count_include_pad": True, "divisor_override": divisor})
    assert validate(case).name == "avg_pool2d"  # once refused: validation took None or 1 only
    _passes(case, "torch")
    _refuses(case, "tensorflow", "has no divisor_override")
    with pytest.raises(ValueError, match="^divisor_override: expected None or a nonzero int"):
        evaluate(case.replace(attrs={**case.attrs, "divisor_override": 0}))


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("beta", [0.5, 2.0, 0.0])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_smooth_l1_with_beta(framework, beta, reduction):
    case = fixed_case("smooth_l1", "float64", {"N": 3, "D": 4}, {"beta": beta, "reduction": reduction})
    _passes(case, framework)


def test_smooth_l1_is_huber_over_beta():
    pred, target = np.array([[0.1, -2.0, 3.0]]), np.array([[0.0, 0.5, 2.9]])
    for beta in (0.5, 2.0):
        args = {"pred": pred, "target": target}
        smooth = evaluate(Case("smooth_l1", "float64", {"beta": beta, "reduction": "sum"}, args,
                               {"loss": np.array(1.0)})).outputs["out"]["loss"]
        huber = evaluate(Case("huber", "float64", {"delta": beta, "reduction": "sum"}, args,
                              {"loss": np.array(1.0)})).outputs["out"]["loss"]
        assert np.isclose(smooth, huber / beta)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_dropout_p_one_drops_everything(framework):
    case = fixed_case("dropout", "float32", {"shape": (3, 4)}, {"p": 1.0})
    result = ADAPTERS[framework].run(case)
    assert not result["drawn"]["mask"].any()
    assert not result["out"]["y"].any() and not result["grad"]["x"].any()
    _passes(case, framework)


# ---- known divergences of the new configurations


def _explained_by(case, framework, key):
    """Every row of the case in ``framework`` passes or is the known divergence ``key``, and
    some row needs it (so the divergence is real here, and names this behaviour)."""
    rows = check(case, Oracle(), _need(framework))
    unexplained = [f"{r['kind']} {r['name']}: {r['status']} {r['detail']}" for r in rows
                   if r["status"] != "pass" and not (r["status"] == "known_divergence" and r["divergence"] == key)]
    assert not unexplained, "\n".join(unexplained)
    assert any(r["status"] == "known_divergence" for r in rows), f"{case.describe()} no longer diverges in {framework}"


def test_an_empty_group_norm_case_carries_no_one_value_divergence():
    case = fixed_case("group_norm", "float64", {"N": 0, "G": 2, "Cg": 2, "spatial": (3,)}, {"groups": 2, "eps": 1e-3})
    matched = divergences.known_divergences(case, "torch", evaluate(case))
    assert "torch-group-norm-one-value" not in [d.key for d in matched]
    one = fixed_case("group_norm", "float64", {"N": 1, "G": 2, "Cg": 1, "spatial": (1,)}, {"groups": 2, "eps": 1e-3})
    _explained_by(one, "torch", "torch-group-norm-one-value")
    two = fixed_case("group_norm", "float64", {"N": 2, "G": 2, "Cg": 1, "spatial": ()}, {"groups": 2, "eps": 1e-3})
    assert "torch-group-norm-one-value" not in [d.key for d in divergences.known_divergences(two, "torch",
                                                                                              evaluate(two))]
    _passes(two, "torch")  # PyTorch refuses one sample of one-value groups only


@pytest.mark.parametrize("n", [2, 0])
def test_pytorch_instance_norm_of_one_position_is_a_known_divergence(n):
    case = fixed_case("instance_norm", "float64", {"N": n, "C": 2, "spatial": (1,)}, {"eps": 1e-3})
    _explained_by(case, "torch", "torch-instance-norm-one-value")
    _passes(case, "tensorflow")


def test_pytorch_affine_instance_norm_of_an_empty_batch_is_a_known_divergence():
    case = fixed_case("instance_norm", "float64", {"N": 0, "C": 2, "spatial": (3,)}, {"eps": 1e-3})
    assert "gamma" in case.arrays
    _explained_by(case, "torch", "torch-instance-norm-affine-empty-batch")
    _passes(case, "tensorflow")
    _passes(case.replace(arrays={"x": case.arrays["x"]}), "torch")  # without affine PyTorch answers


@pytest.mark.parametrize("layer, attrs", [("masked_stacked_gru", {"num_layers": 2, "bidirectional": False}),
                                          ("masked_stacked_rnn", {"num_layers": 3, "bidirectional": True,
                                                                  "nonlinearity": "tanh"}),
                                          ("masked_bidirectional_rnn", {"nonlinearity": "relu"})])
def test_pytorch_packed_stack_of_an_empty_batch_is_a_known_divergence(layer, attrs):
    case = fixed_case(layer, "float64", {"N": 0, "T": 2, "I": 2, "H": 2}, {**attrs, "route": "mask"})
    _explained_by(case, "torch", "torch-pack-empty-batch")
    _passes(case, "tensorflow")


def test_keras_masking_layer_before_a_stack_with_initial_state_is_a_known_divergence():
    case = fixed_case("masked_stacked_lstm", "float64", {"N": 3, "T": 3, "I": 2, "H": 2, "P": 1},
                      {"num_layers": 2, "bidirectional": True, "route": "masking_layer", "proj_size": 0})
    case = case.replace(arrays={**case.arrays, "lengths": np.array([3, 1, 2])})
    _explained_by(case, "tensorflow", "tf-masking-layer-dropped-with-initial-state")
    _passes(case.replace(attrs={**case.attrs, "route": "mask"}), "tensorflow")  # mask= at every level masks


def test_keras_smooth_l1_at_an_infinite_difference_is_huber_s_nan_gradient():
    case = Case("smooth_l1", "float64", {"beta": 0.5, "reduction": "sum"},
                {"pred": np.array([[0.0, 2.4]]), "target": np.array([[-np.inf, 1.0]])}, {"loss": np.array(1.5)})
    _explained_by(case, "tensorflow", "keras-huber-where-nan-gradient")
    _passes(case, "torch")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_eps_zero_on_a_constant_group_gives_nonfinite_values_of_each_one_s_kind(framework):
    """A constant float32 group with eps = 0: 1 / sqrt(0) = Inf meets x - mean, 0 (NaN) or one
    rounding off (+-Inf); the finite answers agree, the non-finite kinds are each one's own."""
    x = np.full((2, 9, 1, 3), 0.8849618, dtype=np.float32)
    g = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    case = Case("group_norm", "float32", {"groups": 3, "eps": 0.0}, {"x": x, "gamma": np.ones(9, np.float32)},
                {"y": g})
    assert np.isnan(evaluate(case).outputs["out"]["y"]).all()
    _explained_by(case, framework, "norm-eps-nonpositive-nonfinite-kind")
